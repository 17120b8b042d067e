"""structlog set-up: JSON lines, or a console renderer on a terminal.

Event names are stable snake_case (``member_registered``, ``run_failed``); ``node_id``,
``task_id`` and ``scheduled_at`` are bound where they apply. Configured by the process entry
point (``peerd serve``), never at import time.

Credentials never reach the output: :func:`redact_event` (a processor, after the exception is
formatted) replaces the value of every credential-named key (:func:`peerd.core.redact.
is_sensitive_name`, except the keys in :data:`NOT_SECRET_KEYS` such as ``fencing_token``) and
every occurrence of a secret value this process holds (:func:`set_redacted_values`, fed by the
executors' secret stores) in any string of the event, nested dicts and lists included.

The level can change while the process runs (:func:`set_level`, on SIGHUP). Loggers bound before
the change (``log.bind(node_id=...)``) are cached by structlog with their wrapper class, so the
level is not baked into that class: the first processor drops events below the current level.
An event below the level costs one processor call.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from peerd.core.redact import MIN_FRAGMENT, REDACTED, is_sensitive_name, redact_values

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
"""Level of each structlog logging method; methods not listed (``msg``) are never dropped."""

_threshold = logging.INFO


def set_level(level: str) -> None:
    """Drop events below ``level`` from now on, in every logger (bound ones included).

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error`` (case-insensitive).

    Raises:
        ValueError: any other value.
    """
    global _threshold
    try:
        _threshold = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"log level must be debug, info, warning or error, got {level!r}"
        ) from None


def get_level() -> str:
    """The current level name, e.g. ``"info"``."""
    return next(name for name, value in _LEVELS.items() if value == _threshold)


def _filter_level(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: drop the event when its method's level is below the current one."""
    if _METHOD_LEVELS.get(method_name, logging.CRITICAL) < _threshold:
        raise structlog.DropEvent
    return event_dict


NOT_SECRET_KEYS = frozenset(
    {
        "fencing_token",
        "fencing_tokens",
        "registered_token",
        "idempotency_key",
        "cause_idempotency_key",
        "key",
        "page_token",
        "next_page_token",
    }
)
"""Event keys that look credential-named but hold no credential (logged as they are)."""

_redacted_by_source: dict[str, frozenset[str]] = {}
_redacted: tuple[str, ...] = ()


def set_redacted_values(source: str, values: Iterable[str]) -> None:
    """Replace the secret values ``source`` (e.g. ``"http"``, one executor's secret store)
    registered: from now on their occurrences in log events are shown as ``<redacted>``.
    Values shorter than :data:`~peerd.core.redact.MIN_FRAGMENT` are ignored."""
    global _redacted
    _redacted_by_source[source] = frozenset(v for v in values if len(v) >= MIN_FRAGMENT)
    _redacted = tuple(sorted(set().union(*_redacted_by_source.values()), key=len, reverse=True))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact_values(value, _redacted) if _redacted else value
    if isinstance(value, dict):
        return {k: REDACTED if _secret_key(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _secret_key(key: object) -> bool:
    return isinstance(key, str) and key not in NOT_SECRET_KEYS and is_sensitive_name(key)


def redact_event(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: credential-named keys and registered secret values redacted (module
    docstring)."""
    for key, value in event_dict.items():
        event_dict[key] = REDACTED if _secret_key(key) and value else _scrub(value)
    return event_dict


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog for this process.

    Args:
        fmt: ``json``, ``console`` or ``auto`` (console when stderr is a terminal).
        level: ``debug``, ``info``, ``warning`` or ``error``; unknown values mean ``info``.
            Change it later with :func:`set_level`.
    """
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    set_level(level if level.lower() in _LEVELS else "info")
    structlog.configure(
        processors=[
            _filter_level,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        # Everything reaches the processors; _filter_level applies the (changeable) level.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
