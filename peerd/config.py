"""Node configuration: flags override ``PEERD_*`` environment variables, which override an
optional TOML file, which overrides the defaults. Nothing is read at import time; the environment
is passed in as a mapping so tests never touch ``os.environ``.

The settings themselves are the fields of :class:`~peerd.node_config.NodeConfig` (one field
each); this module merges their sources (:func:`build_config`), re-reads them on SIGHUP
(:func:`reload_config`), checks the settings that mean nothing alone (:func:`check_security`)
and regenerates the docs table (``python -m peerd.config --markdown`` prints it,
``--update docs/configuration.md`` rewrites it).
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from peerd.core.tzrules import TimeZoneRules
from peerd.errors import InvalidArgument
from peerd.node_config import RELOADABLE, SETTINGS, NodeConfig
from peerd.settings import markdown_table, replace_table


def build_config(
    flags: Mapping[str, Any], env: Mapping[str, str], config_file: Path | None = None
) -> NodeConfig:
    """Merge flags (highest), ``PEERD_*`` env, a TOML file and defaults into a :class:`NodeConfig`.

    Args:
        flags: field name -> value for flags the user gave (omit, ``None`` or an empty list for
            not given); strings as argparse gives them, or values of the field's type.
        env: the process environment (pass ``os.environ``); empty variables count as unset.
        config_file: optional TOML file whose top-level keys are field names.

    Raises:
        InvalidArgument: naming the field (``--flag`` spelling) and the reason; ``--config``
            when the file cannot be read or has unknown keys.
    """
    raw: dict[str, Any] = {}
    if config_file is not None:
        try:
            raw.update(tomllib.loads(config_file.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidArgument("--config", f"cannot read {config_file}: {exc}") from exc
        unknown = set(raw) - {s.name for s in SETTINGS}
        if unknown:
            raise InvalidArgument("--config", f"unknown keys {sorted(unknown)}")
    for s in SETTINGS:
        from_env = s.from_env(env)
        if from_env is not None:
            raw[s.name] = from_env
        given = flags.get(s.name)
        if given is not None and given != [] and given != ():
            raw[s.name] = given
    kw: dict[str, Any] = {}
    for s in SETTINGS:
        if s.name in raw:
            kw[s.name] = s.parse(raw[s.name])
        elif s.required:
            raise InvalidArgument(s.flag, f"required (or set {s.env})")
    return NodeConfig(**kw)


_TOGETHER = [
    ("--tls-cert", "tls_cert", "--tls-key", "tls_key"),
    ("--tls-key", "tls_key", "--tls-cert", "tls_cert"),
    ("--tls-client-ca", "tls_client_ca", "--tls-cert", "tls_cert"),
    ("--http-tls", "http_tls", "--tls-cert", "tls_cert"),
    ("--http-tls", "http_tls", "--http-listen", "http_listen"),
    ("--etcd-cert", "etcd_cert", "--etcd-key", "etcd_key"),
    ("--etcd-key", "etcd_key", "--etcd-cert", "etcd_cert"),
    ("--etcd-user", "etcd_user", "--etcd-password-file", "etcd_password_file"),
    ("--etcd-password-file", "etcd_password_file", "--etcd-user", "etcd_user"),
]
"""``(flag, field, needs flag, needs field)``: settings that mean nothing alone."""


def check_security(cfg: NodeConfig) -> None:
    """Refuse security settings that mean nothing alone (a node checks this before it starts;
    each setting on its own is checked by :func:`build_config`).

    An auth policy over TLS also needs the cluster CA: Peer calls are authorised by node
    certificates, and without ``--tls-client-ca`` no client presents one.

    Raises:
        InvalidArgument: naming the flag given without its partner.
    """
    for flag, name, needs_flag, needs in _TOGETHER:
        if getattr(cfg, name) and not getattr(cfg, needs):
            raise InvalidArgument(flag, f"needs {needs_flag} too")
    if cfg.auth_policy and cfg.tls_cert and not cfg.tls_client_ca:
        raise InvalidArgument(
            "--auth-policy",
            "over TLS it needs --tls-client-ca (the cluster CA): nodes prove to each other "
            "that they are nodes with certificates it signed",
        )


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
        f"{name} changed in the file; restart to apply"
        for name in changed_fields(current, fresh)
        if name not in RELOADABLE
    ]
    return replace(current, **changes), warnings


def changed_fields(old: NodeConfig, new: NodeConfig) -> list[str]:
    """Names of the fields whose values differ between ``old`` and ``new``, sorted."""
    return sorted(
        f.name for f in fields(NodeConfig) if getattr(old, f.name) != getattr(new, f.name)
    )


def tzdata_rules(flag: str | None, env: Mapping[str, str]) -> TimeZoneRules:
    """The time-zone rules of a process that is not a node (the CLI): the ``--tzdata`` value
    ``flag``, else ``PEERD_TZDATA`` in ``env``, else the node default (``package``).

    Raises:
        InvalidArgument: naming ``--tzdata`` (see :meth:`TimeZoneRules.load`).
    """
    setting = next(s for s in SETTINGS if s.name == "tzdata")
    raw = flag or setting.from_env(env) or setting.default
    return TimeZoneRules.load(setting.parse(raw))


def _main(argv: list[str]) -> int:
    """``--markdown``: print the settings table; ``--update FILE``: rewrite the table in FILE."""
    if argv == ["--markdown"]:
        print(markdown_table(SETTINGS), end="")
        return 0
    if len(argv) == 2 and argv[0] == "--update":
        page = Path(argv[1])
        page.write_text(replace_table(page.read_text(), markdown_table(SETTINGS)))
        return 0
    print("usage: python -m peerd.config --markdown | --update FILE", file=sys.stderr)
    return 2


__all__ = [
    # Defined in peerd.node_config; node.py, engine/ and rpc/service.py import them from here.
    "RELOADABLE",
    "SETTINGS",
    "NodeConfig",
    "build_config",
    "changed_fields",
    "check_security",
    "reload_config",
    "tzdata_rules",
]

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
