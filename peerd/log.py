"""structlog set-up: JSON lines, or a console renderer on a terminal.

Event names are stable snake_case (``member_registered``, ``run_failed``); ``node_id``,
``task_id`` and ``scheduled_at`` are bound where they apply. Configured by the process entry
point (``peerd serve``), never at import time.
"""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog for this process.

    Args:
        fmt: ``json``, ``console`` or ``auto`` (console when stderr is a terminal).
        level: ``debug``, ``info``, ``warning`` or ``error``.
    """
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
