"""Secret references: names in a task spec, values only on the nodes (pure).

A task refers to a secret by name (``HttpTarget.header_secrets``, ``ShellTarget.env_secrets``);
the executing node looks the name up at run time (:func:`lookup`):

1. in its secrets file (``--secrets-file``, TOML: ``NAME = "value"`` at the top level), else
2. in its environment variable ``PEERD_SECRET_<NAME>`` (:data:`ENV_PREFIX`).

Only variables carrying the prefix are reachable: a task author cannot read the node's other
environment variables (its cloud credentials, etcd password, ...) by naming them as secrets.
The file wins over the environment so that a rotated file takes effect without a restart.
Nothing here does I/O; :mod:`peerd.runner.secrets` reads the file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping

SECRET_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
"""A secret name: letters, digits and ``_``, not starting with a digit, at most 128 characters
(so ``PEERD_SECRET_<NAME>`` is a valid environment variable name)."""

ENV_PREFIX = "PEERD_SECRET_"
"""The environment variable of secret ``NAME`` is ``PEERD_SECRET_NAME``."""


class SecretsFileError(ValueError):
    """A secrets file that cannot be used; the message says where and why, never a value."""


def env_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """The secrets an environment provides: ``{NAME: value}`` of every non-empty
    ``PEERD_SECRET_<NAME>`` whose ``NAME`` is a valid secret name."""
    out = {}
    for var, value in env.items():
        name = var[len(ENV_PREFIX) :]
        if var.startswith(ENV_PREFIX) and value and SECRET_NAME_RE.match(name):
            out[name] = value
    return out


def parse_secrets_file(text: str, source: str) -> dict[str, str]:
    """The secrets of a secrets file's text: a TOML document of ``NAME = "value"`` pairs.

    Raises:
        SecretsFileError: not TOML, a key that is not a secret name (:data:`SECRET_NAME_RE`) or a
            value that is not a non-empty string (the message names ``source`` and the key).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SecretsFileError(f"{source}: not TOML: {exc}") from None
    out = {}
    for name, value in doc.items():
        if not SECRET_NAME_RE.match(name):
            raise SecretsFileError(f"{source}: {name[:60]!r} is not a secret name")
        if not isinstance(value, str) or not value:
            raise SecretsFileError(f"{source}: {name} must be a non-empty string")
        out[name] = value
    return out


def lookup(name: str, file_values: Mapping[str, str], env_values: Mapping[str, str]) -> str | None:
    """The value of secret ``name``: the file's, else the environment's, else ``None``."""
    value = file_values.get(name)
    return value if value is not None else env_values.get(name)


__all__ = [
    "ENV_PREFIX",
    "SECRET_NAME_RE",
    "SecretsFileError",
    "env_secrets",
    "lookup",
    "parse_secrets_file",
]
