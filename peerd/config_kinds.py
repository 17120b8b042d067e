"""The value kinds of node settings that check the host, beyond :mod:`peerd.settings`' pure ones.

Each is a :class:`peerd.settings.Kind` used by a :class:`peerd.node_config.NodeConfig` field:
the time-zone rules' source, the OTLP endpoint (its SDK must be installed), the HTTP target
rules and the secrets file (read and checked when the configuration is built, at start and on
SIGHUP). Errors are :class:`~peerd.errors.InvalidArgument` naming the flag.
"""

from __future__ import annotations

import importlib.util
from typing import Any
from urllib.parse import urlsplit

from peerd.core.secrets import SecretsFileError
from peerd.core.targets import TargetError, validate_rules
from peerd.core.tzrules import SOURCES
from peerd.errors import InvalidArgument
from peerd.runner.secrets import read_secrets_file
from peerd.settings import GLOB_LIST, Kind


def _tzdata_source(value: Any, flag: str) -> str:
    text = str(value).strip()
    if not text:
        raise InvalidArgument(flag, "must be package, system or a directory")
    return text.lower() if text.lower() in SOURCES else text


TZDATA_SOURCE = Kind("package, system or a directory", "package|system|PATH", _tzdata_source)
"""Where time-zone rules come from (:meth:`peerd.core.tzrules.TimeZoneRules.load` reads them)."""


OTEL_PACKAGES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
"""What ``--otel-endpoint`` needs installed: the ``otel`` extra (``pip install 'peerd[otel]'``)."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _otel_endpoint(value: Any, flag: str) -> str:
    """Empty, or the base ``http(s)://HOST[:PORT][/PATH]`` of an OTLP/HTTP receiver."""
    text = str(value).strip().rstrip("/")
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(flag, f"{text!r} must be an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise InvalidArgument(flag, f"{text!r}: a base URL takes no query or fragment")
    if parts.path.endswith("/v1/traces"):
        raise InvalidArgument(flag, f"{text!r}: give the base URL; peerd adds /v1/traces")
    missing = [m for m in OTEL_PACKAGES if not _installed(m)]
    if missing:
        raise InvalidArgument(
            flag, f"needs {', '.join(missing)}: pip install 'peerd[otel]' (docs/observability.md)"
        )
    return text


OTEL_ENDPOINT = Kind("URL or empty", "URL", _otel_endpoint)
"""The base URL of an OTLP/HTTP receiver; the SDK must be installed (checked, not imported)."""


def _target_rules(value: Any, flag: str) -> tuple[str, ...]:
    try:
        return validate_rules(GLOB_LIST.parse(value, flag), flag)
    except TargetError as exc:
        raise InvalidArgument(flag, str(exc)) from None


def _secrets_file(value: Any, flag: str) -> str:
    path = str(value).strip()
    if path:
        try:
            read_secrets_file(path)
        except SecretsFileError as exc:
            raise InvalidArgument(flag, str(exc)) from None
    return path


TARGET_RULES = Kind(
    "list of URL patterns, host patterns or CIDRs", "RULE", _target_rules, env_sep=";", repeat=True
)
SECRETS_FILE = Kind("path or empty", "FILE.toml", _secrets_file)
"""A secrets file, read and checked when the configuration is built (start and SIGHUP), so a
broken file refuses the start or the reload instead of failing runs."""


__all__ = ["OTEL_ENDPOINT", "OTEL_PACKAGES", "SECRETS_FILE", "TARGET_RULES", "TZDATA_SOURCE"]
