"""SIGHUP: a running node re-reads its configuration, its TLS files and its auth policy.

Each of the three is all or nothing on its own: a configuration the engine refuses, a TLS pair
that does not match, or a policy that does not parse is rejected with a log line naming the
reason, and the node keeps what it had. The lease, the registration and the tasks are never
touched. Log lines name files and fields, never their contents or values (docs/security.md).

Part of the composition root with :mod:`peerd.node`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerd.config import changed_fields, reload_config
from peerd.coord.compaction import space_hint
from peerd.errors import InvalidArgument
from peerd.log import set_level

if TYPE_CHECKING:
    from peerd.node import Node

ReloadSource = tuple[Mapping[str, Any], Mapping[str, str], Path | None]
"""What a node's configuration was built from: ``(flags, env, config_file)`` as passed to
:func:`peerd.config.build_config`; SIGHUP re-reads it (:func:`peerd.config.reload_config`)."""


def reload_node(node: Node, source: ReloadSource | None) -> bool:
    """Re-read the TLS files and the auth policy (:func:`reload_security`), then the
    configuration, and apply its reloadable fields to ``node``.

    Re-reads the config file with the flags and environment the node started with (they keep
    precedence). Everything is checked before anything changes: the engine and executors take
    the new values all together, or the reload is rejected and nothing changes. Logs
    ``config_reloaded`` with the names of the changed fields (never their values), and one
    ``config_reload_restart_needed`` per non-reloadable field that changed in the file.

    Args:
        node: the running node (its ``cfg`` is replaced on success).
        source: what ``node.cfg`` was built from; ``None`` rejects every reload.

    Returns:
        True when the new configuration is in force; False when it was rejected (logged as
        ``config_reload_rejected`` with the reason) and the old one is kept.
    """
    logger = node.logger
    reload_security(node)
    if source is None:
        logger.error(
            "config_reload_rejected", reason="node was started without a reloadable source"
        )
        return False
    flags, env, config_file = source
    try:
        new, warnings = reload_config(node.cfg, flags, env, config_file)
    except InvalidArgument as exc:
        logger.error("config_reload_rejected", reason=str(exc), file=str(config_file))
        return False
    try:
        node.engine.apply_config(new)  # checks everything first: all or nothing
    except Exception as exc:
        logger.error(
            "config_reload_rejected",
            reason=f"engine refused it: {type(exc).__name__}: {exc}",
            file=str(config_file),
        )
        return False
    for warning in warnings:
        logger.warning("config_reload_restart_needed", detail=warning)
    changed = changed_fields(node.cfg, new)
    node.cfg = new
    set_level(new.log_level)
    node.compactor.set_interval(new.etcd_compaction_interval)
    node.etcd.space_hint = space_hint(new.etcd_compaction_interval, new.etcd_compaction_retention)
    logger.info("config_reloaded", changed=changed, file=str(config_file))
    return True


def reload_security(node: Node) -> None:
    """Re-read ``node``'s TLS files and auth policy, each all or nothing; logs
    ``tls_reloaded``/``tls_reload_rejected`` and ``auth_policy_reloaded``/
    ``auth_policy_reload_rejected`` (file names and reasons, never contents). New connections
    use new TLS material; peers are dialled again."""
    logger = node.logger
    if node.tls is not None:
        try:
            node.tls.reload()
        except InvalidArgument as exc:
            logger.error("tls_reload_rejected", reason=str(exc))
        else:
            node.peer_client.reset()
            logger.info("tls_reloaded", not_after=node.tls.pair.not_after.isoformat())
    if node.authn.policy_file is not None:
        try:
            node.authn.reload()
        except InvalidArgument as exc:
            logger.error("auth_policy_reload_rejected", reason=str(exc))
        else:
            logger.info("auth_policy_reloaded", file=str(node.authn.policy_file))
