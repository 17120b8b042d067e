"""``peerd cluster``, ``peerd version`` and ``peerd tzdata pin|unpin|status``: the commands that
read or set cluster-wide state (rendered by :mod:`peerd.cli_output_cluster`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from peerd import __version__
from peerd.cli_auth import api_client
from peerd.cli_doc import print_result
from peerd.cli_output import NONE
from peerd.cli_output_cluster import cluster_text, tzdata_lines
from peerd.cli_spec import Parser
from peerd.config import tzdata_rules
from peerd.exitcodes import EXIT_OK
from peerd.v1 import scheduler_pb2 as pb

TZDATA_EPILOG = """Only nodes running the agreed tzdata version own tasks whose slots depend on
time-zone rules (cron in a zone other than UTC). Unpinned, the cluster keeps the agreed version
while a live node runs it, then takes the version most live nodes run. To upgrade the rules:
upgrade tzdata on every node (pip install -U tzdata; restart), or upgrade them all and then
'peerd tzdata pin NEW'. See docs/scheduling.md, 'Time-zone rules'."""


def register(sub: Any, common: Parser, add: Any) -> None:
    """Add ``cluster``, ``version`` and ``tzdata pin|unpin|status`` to the top-level subcommands
    ``sub`` (``add`` is :func:`peerd.cli.build_parser`'s helper)."""
    add(sub, "cluster", _cmd_cluster, "show cluster members")
    ver = add(sub, "version", _cmd_version, "show the versions of peerd and its tzdata")
    ver.add_argument("--client", action="store_true", help="this process only (no server call)")
    ver.add_argument(
        "--tzdata",
        metavar="package|system|PATH",
        help="the time-zone rules this process reads (default: $PEERD_TZDATA, then package)",
    )
    tz = sub.add_parser("tzdata", parents=[common], help="the cluster's time-zone rules")
    tz.epilog = TZDATA_EPILOG
    tz.formatter_class = argparse.RawDescriptionHelpFormatter
    tzsub = tz.add_subparsers(dest="tzdata_command", required=True, metavar="COMMAND")
    pin = add(tzsub, "pin", _cmd_tzdata_pin, "pin the tzdata version the cluster computes with")
    pin.add_argument("version", metavar="VERSION")
    pin.add_argument(
        "--force", action="store_true", help="even if no live node runs it (then none claims)"
    )
    add(tzsub, "unpin", _cmd_tzdata_unpin, "let the cluster choose its tzdata version again")
    add(tzsub, "status", _cmd_tzdata_status, "show the agreed tzdata version and each node's")


def _cmd_cluster(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with api_client(args) as client:
        view = client.get_cluster()
    print_result(args, view, lambda: cluster_text(view))
    return EXIT_OK


def _cmd_version(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    rules = tzdata_rules(args.tzdata, env)
    client = {"peerd": __version__, "tzdata": rules.version, "tzdata_source": rules.where}
    out: dict[str, Any] = {"client": client}
    if args.output != "json":
        print(f"client: peerd {__version__}, tzdata {rules.describe()}", flush=True)
    if not args.client:
        with api_client(args) as conn:
            view = conn.get_cluster()
        me = next((m for m in view.members if m.node_id == view.node_id), pb.Member())
        out["server"] = {
            "node_id": view.node_id,
            "peerd": me.version,
            "tzdata": me.tzdata_version,
            "tzdata_source": me.tzdata_source,
        }
        out["cluster"] = {"tzdata": view.tzdata_version, "tzdata_pinned": view.tzdata_pinned}
        if args.output != "json":
            print(
                f"server: peerd {me.version or NONE} on {view.node_id}, tzdata "
                f"{me.tzdata_version or NONE} ({me.tzdata_source or NONE})"
            )
            print("\n".join(tzdata_lines(view)))
    if args.output == "json":
        print(json.dumps(out, indent=2))
    return EXIT_OK


def _cmd_tzdata_pin(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with api_client(args) as client:
        resp = client.pin_tzdata(args.version, force=args.force)
    print_result(args, resp, lambda: f"tzdata {resp.version} pinned")
    return EXIT_OK


def _cmd_tzdata_unpin(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with api_client(args) as client:
        resp = client.pin_tzdata(unpin=True)
    print_result(args, resp, lambda: f"tzdata unpinned (agreed: {resp.version or NONE})")
    return EXIT_OK


def _cmd_tzdata_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with api_client(args) as client:
        view = client.get_cluster()
    rows = [
        f"{m.node_id}: tzdata {m.tzdata_version or NONE} ({m.tzdata_source or NONE})"
        for m in sorted(view.members, key=lambda m: m.node_id)
    ]
    print_result(args, view, lambda: "\n".join([*tzdata_lines(view), *rows]))
    return EXIT_OK
