"""Node configuration: flags override ``PEERD_*`` environment variables, which override an
optional TOML file, which overrides the defaults. Nothing is read at import time; the environment
is passed in as a mapping so tests never touch ``os.environ``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from peerd.errors import InvalidArgument

NODE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
CLUSTER_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MIN_LEASE_TTL_S = 2
MAX_HTTP_IN_FLIGHT = 256
"""Upper bound of ``max_http_runs``: :data:`peerd.runner.http.MAX_IN_FLIGHT` (kept equal by a
test). More requests in flight per node queue inside httpcore, whose pool scan is quadratic."""

DEFAULT_LISTEN = "127.0.0.1:7070"
DEFAULT_ETCD = "127.0.0.1:2379"


@dataclass(frozen=True)
class NodeConfig:
    """Everything one ``peerd serve`` process needs.

    Durations carry their unit in the name (``_s`` = seconds) or are ``timedelta``.
    """

    node_id: str
    """Unique name of this node in the cluster, ``[a-z0-9][a-z0-9._-]{0,62}``."""
    listen: str = DEFAULT_LISTEN
    """HOST:PORT the gRPC server binds (public API and, later, peer traffic)."""
    advertise: str = ""
    """HOST:PORT other nodes and clients should dial; defaults to ``listen``."""
    etcd: tuple[str, ...] = (DEFAULT_ETCD,)
    """etcd client endpoints, HOST:PORT each; the client fails over between them."""
    cluster: str = "default"
    """Cluster name; all keys live under ``/peerd/<cluster>/``."""
    lease_ttl_s: int = 10
    """Membership lease TTL in seconds (>= 2). Keepalives are sent every TTL/3."""
    allow_shell: tuple[str, ...] = ()
    """Glob patterns (fnmatch) matched against the shlex-joined argv of shell tasks. Empty = the
    shell executor is off."""
    misfire_threshold: timedelta = timedelta(seconds=5)
    """A slot later than this when planned is a misfire: of a run of misfires only the most recent
    one fires; the others are recorded SKIPPED."""
    runs_keep: int = 100
    """Run records kept per task; older ones are deleted."""
    max_concurrent_runs: int = 512
    """Executions running at once on this node; further claimed runs wait (lateness grows)."""
    max_http_runs: int = 256
    """HTTP executions running at once on this node (within ``max_concurrent_runs``)."""
    max_shell_runs: int = 32
    """Shell executions (child processes) running at once on this node."""
    max_python_runs: int = 64
    """Python-callable executions running at once on this node."""
    catch_up_rate: float = 50.0
    """Cluster-wide cap on replayed missed slots (``CATCH_UP_RUN_ALL``), slots per second,
    shared by the nodes; > 0."""
    drain_grace_s: float = 30.0
    """On SIGTERM, seconds running executions get to finish after the node handed its tasks
    over; then the lease is revoked and the process exits 0."""
    claim_batch: int = 64
    """Slots claimed per etcd transaction (nested transactions; etcd allows 128 ops)."""
    log_format: str = "auto"
    """``json``, ``console`` or ``auto`` (console on a terminal, JSON otherwise)."""
    log_level: str = "info"

    @property
    def address(self) -> str:
        """The address published in this node's member key."""
        return self.advertise or self.listen

    @property
    def prefix(self) -> str:
        """Key prefix, e.g. ``/peerd/default/``."""
        return f"/peerd/{self.cluster}/"


_ENV = {
    "node_id": "PEERD_NODE_ID",
    "listen": "PEERD_LISTEN",
    "advertise": "PEERD_ADVERTISE",
    "etcd": "PEERD_ETCD",
    "cluster": "PEERD_CLUSTER",
    "lease_ttl_s": "PEERD_LEASE_TTL",
    "allow_shell": "PEERD_ALLOW_SHELL",
    "misfire_threshold": "PEERD_MISFIRE_THRESHOLD",
    "runs_keep": "PEERD_RUNS_KEEP",
    "max_concurrent_runs": "PEERD_MAX_CONCURRENT_RUNS",
    "max_http_runs": "PEERD_MAX_HTTP_RUNS",
    "max_shell_runs": "PEERD_MAX_SHELL_RUNS",
    "max_python_runs": "PEERD_MAX_PYTHON_RUNS",
    "catch_up_rate": "PEERD_CATCH_UP_RATE",
    "log_format": "PEERD_LOG_FORMAT",
    "log_level": "PEERD_LOG_LEVEL",
    "drain_grace_s": "PEERD_DRAIN_GRACE",
}
"""Environment variable for each field. ``PEERD_ALLOW_SHELL`` holds patterns separated by ``;``
and ``PEERD_ETCD`` endpoints separated by ``,``."""


def parse_hostport(value: str, field_name: str) -> str:
    """Validate ``HOST:PORT`` (IPv6 as ``[::1]:PORT``) and return it unchanged.

    Raises:
        InvalidArgument: naming ``field_name`` when the value is not HOST:PORT with a port 0-65535.
    """
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(field_name, f"expected HOST:PORT, got {value!r}")
    return value.strip()


def _as_seconds(value: Any, field_name: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    from peerd.core.durations import parse_duration

    if isinstance(value, int | float):
        return timedelta(seconds=value)
    return parse_duration(str(value), field_name)


def build_config(
    flags: Mapping[str, Any], env: Mapping[str, str], config_file: Path | None = None
) -> NodeConfig:
    """Merge flags (highest), ``PEERD_*`` env, a TOML file and defaults into a :class:`NodeConfig`.

    Args:
        flags: field name -> value for flags the user gave (omit or ``None`` for not given).
        env: the process environment (pass ``os.environ``).
        config_file: optional TOML file whose top-level keys are field names.

    Raises:
        InvalidArgument: naming the field (``--flag`` spelling) and the reason.
    """
    raw: dict[str, Any] = {}
    if config_file is not None:
        try:
            raw.update(tomllib.loads(config_file.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidArgument("--config", f"cannot read {config_file}: {exc}") from exc
        unknown = set(raw) - {f.name for f in fields(NodeConfig)}
        if unknown:
            raise InvalidArgument("--config", f"unknown keys {sorted(unknown)}")
    for name, var in _ENV.items():
        if env.get(var):
            value: Any = env[var]
            if name == "allow_shell":
                value = [p for p in value.split(";") if p.strip()]
            raw[name] = value
    for name, value in flags.items():
        if value is not None and value != [] and value != ():
            raw[name] = value
    return _validate(raw)


def _flag(name: str) -> str:
    return "--" + name.removesuffix("_s").replace("_", "-")


def _validate(raw: dict[str, Any]) -> NodeConfig:
    kw: dict[str, Any] = {}
    node_id = str(raw.get("node_id") or "")
    if not NODE_ID_RE.match(node_id):
        raise InvalidArgument(
            "--node-id",
            f"{node_id!r} must match [a-z0-9][a-z0-9._-]{{0,62}} (or set PEERD_NODE_ID)",
        )
    kw["node_id"] = node_id
    if "listen" in raw:
        kw["listen"] = parse_hostport(str(raw["listen"]), "--listen")
    if raw.get("advertise"):
        kw["advertise"] = parse_hostport(str(raw["advertise"]), "--advertise")
    if "etcd" in raw:
        value = raw["etcd"]
        parts = value.split(",") if isinstance(value, str) else list(value)
        endpoints = tuple(parse_hostport(p, "--etcd") for p in parts if p.strip())
        if not endpoints:
            raise InvalidArgument("--etcd", "at least one HOST:PORT is required")
        kw["etcd"] = endpoints
    if "cluster" in raw:
        cluster = str(raw["cluster"])
        if not CLUSTER_RE.match(cluster):
            raise InvalidArgument(
                "--cluster", f"{cluster!r} must match [a-z0-9][a-z0-9._-]{{0,62}}"
            )
        kw["cluster"] = cluster
    for name, minimum in (
        ("lease_ttl_s", MIN_LEASE_TTL_S),
        ("runs_keep", 1),
        ("max_concurrent_runs", 1),
        ("max_http_runs", 1),
        ("max_shell_runs", 1),
        ("max_python_runs", 1),
        ("claim_batch", 1),
    ):
        if name in raw:
            try:
                number = int(raw[name])
            except (TypeError, ValueError):
                raise InvalidArgument(
                    _flag(name), f"expected an integer, got {raw[name]!r}"
                ) from None
            if number < minimum:
                raise InvalidArgument(_flag(name), f"must be >= {minimum}, got {number}")
            kw[name] = number
    if kw.get("max_http_runs", 1) > MAX_HTTP_IN_FLIGHT:
        raise InvalidArgument(
            "--max-http-runs",
            f"must be <= {MAX_HTTP_IN_FLIGHT} (the HTTP client's requests in flight per node), "
            f"got {kw['max_http_runs']}",
        )
    if kw.get("claim_batch", 1) > 127:
        raise InvalidArgument("--claim-batch", "must be <= 127 (etcd's 128 operations per txn)")
    if "allow_shell" in raw:
        value = raw["allow_shell"]
        kw["allow_shell"] = tuple([value] if isinstance(value, str) else value)
    if "catch_up_rate" in raw:
        value = raw["catch_up_rate"]
        try:
            if isinstance(value, bool):
                raise TypeError
            rate = float(value)
        except (TypeError, ValueError):
            raise InvalidArgument(
                "--catch-up-rate", f"expected slots per second (a number), got {value!r}"
            ) from None
        if not math.isfinite(rate) or rate <= 0:
            raise InvalidArgument("--catch-up-rate", f"must be a number > 0, got {value!r}")
        kw["catch_up_rate"] = rate
    if "drain_grace_s" in raw:
        kw["drain_grace_s"] = _as_seconds(raw["drain_grace_s"], "--drain-grace").total_seconds()
    if "misfire_threshold" in raw:
        kw["misfire_threshold"] = _as_seconds(raw["misfire_threshold"], "--misfire-threshold")
    if "log_format" in raw:
        if raw["log_format"] not in ("auto", "json", "console"):
            raise InvalidArgument("--log-format", "must be auto, json or console")
        kw["log_format"] = raw["log_format"]
    if "log_level" in raw:
        level = str(raw["log_level"]).lower()
        if level not in ("debug", "info", "warning", "error"):
            raise InvalidArgument("--log-level", "must be debug, info, warning or error")
        kw["log_level"] = level
    return NodeConfig(**kw)


RELOADABLE = frozenset(
    {
        "allow_shell",
        "max_concurrent_runs",
        "max_http_runs",
        "max_shell_runs",
        "max_python_runs",
        "catch_up_rate",
        "misfire_threshold",
        "log_level",
        "drain_grace_s",
        "runs_keep",
    }
)
"""Fields a running node applies on SIGHUP (:func:`reload_config`); the others need a restart."""


def reload_config(
    current: NodeConfig,
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config_file: Path | None,
) -> tuple[NodeConfig, list[str]]:
    """Re-read the configuration of a running node (SIGHUP) and keep what may change live.

    The merge is the one :func:`build_config` does at start, with the same ``flags`` and ``env``
    (so they keep precedence over the file) and a fresh read of ``config_file``.

    Args:
        current: the configuration the node runs with.
        flags: the flags the node was started with (as given to :func:`build_config`).
        env: the environment the node was started with.
        config_file: the ``--config`` file (``None``: only flags/env/defaults, nothing to re-read).

    Returns:
        ``(new, warnings)``: ``new`` equals ``current`` except for the :data:`RELOADABLE` fields,
        which take their re-read values; ``warnings`` has one message per other field whose
        re-read value differs, e.g. ``"listen changed in the file; restart to apply"`` (field
        names only, never values), sorted by field name.

    Raises:
        InvalidArgument: the file cannot be read or parsed, has unknown keys, or a value is
            invalid (including a non-reloadable one); the caller keeps ``current``.
    """
    fresh = build_config(flags, env, config_file)
    changes = {name: getattr(fresh, name) for name in RELOADABLE}
    warnings = [
        f"{f.name} changed in the file; restart to apply"
        for f in sorted(fields(NodeConfig), key=lambda f: f.name)
        if f.name not in RELOADABLE and getattr(fresh, f.name) != getattr(current, f.name)
    ]
    return replace(current, **changes), warnings


def changed_fields(old: NodeConfig, new: NodeConfig) -> list[str]:
    """Names of the fields whose values differ between ``old`` and ``new``, sorted."""
    return sorted(
        f.name for f in fields(NodeConfig) if getattr(old, f.name) != getattr(new, f.name)
    )


__all__ = [
    "DEFAULT_ETCD",
    "DEFAULT_LISTEN",
    "RELOADABLE",
    "NodeConfig",
    "build_config",
    "changed_fields",
    "parse_hostport",
    "reload_config",
]
