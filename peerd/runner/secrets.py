"""The secrets one node holds: its ``--secrets-file`` and its ``PEERD_SECRET_*`` environment.

Names are resolved by :func:`peerd.core.secrets.lookup` (file first, then environment). The
file is read when the store is built and again whenever its modification time or size changes
(checked with one ``stat`` per run that uses secrets), so a rotated file applies to the next
run without a reload. A re-read that fails (a half-written file) keeps the values read last
and logs ``secrets_file_unreadable``; a file readable by group or others logs
``secrets_file_permissive`` once per read.

Every value the store holds is registered with the log redaction (:func:`peerd.log.
set_redacted_values`), so it never appears in a log line; executors redact them from run
outputs themselves (:func:`peerd.core.redact.redact_values`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

import structlog

from peerd.core.secrets import SecretsFileError, env_secrets, lookup, parse_secrets_file
from peerd.log import set_redacted_values

log = structlog.get_logger(__name__)


class MissingSecret(LookupError):
    """A referenced secret this node does not have.

    Attributes:
        name: the secret's name (never its value).
    """

    def __init__(self, name: str) -> None:
        super().__init__(
            f"secret {name!r} is not set on this node (add it to --secrets-file or set "
            f"PEERD_SECRET_{name})"
        )
        self.name = name


def read_secrets_file(path: str) -> dict[str, str]:
    """The secrets of the file at ``path`` (:func:`peerd.core.secrets.parse_secrets_file`).

    Raises:
        SecretsFileError: unreadable or malformed (the message names the file, not a value).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretsFileError(f"cannot read {path}: {exc}") from None
    return parse_secrets_file(text, path)


class SecretStore:
    """Resolves secret names to values for one executor.

    Args:
        path: the secrets file ("" = none).
        env: the process environment (its ``PEERD_SECRET_*`` variables are read once, here).
        owner: names this store's values in the log redaction (one store per executor).

    Raises:
        SecretsFileError: ``path`` is set and cannot be read (at construction only; later
            re-reads keep the old values).
    """

    def __init__(self, path: str, env: Mapping[str, str], owner: str) -> None:
        self._env = env_secrets(env)
        self._owner = owner
        self._path = ""
        self._file: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        self.set_path(path, strict=True)

    def set_path(self, path: str, *, strict: bool = False) -> None:
        """Use the secrets file at ``path`` ("" = none) from now on (config reload).

        Raises:
            SecretsFileError: only when ``strict`` and the file cannot be read.
        """
        self._path, self._file, self._stamp = path, {}, None
        self._refresh(strict)
        self._register()

    def _register(self) -> None:
        set_redacted_values(self._owner, [*self._file.values(), *self._env.values()])

    def _refresh(self, strict: bool = False) -> None:
        """Re-read the file when its modification time or size changed."""
        if not self._path:
            return
        try:
            st = os.stat(self._path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            values = read_secrets_file(self._path)
        except (OSError, SecretsFileError) as exc:
            if strict:
                raise SecretsFileError(str(exc)) from None
            log.error("secrets_file_unreadable", path=self._path, error=str(exc))
            return
        self._file, self._stamp = values, stamp
        if stat.S_IMODE(st.st_mode) & 0o077:
            log.warning("secrets_file_permissive", path=self._path, mode=oct(st.st_mode))
        self._register()

    def resolve(self, refs: Mapping[str, str]) -> dict[str, str]:
        """``{key: value}`` for ``refs`` (``{header or variable: secret name}``).

        Raises:
            MissingSecret: the first secret this node does not have.
        """
        if not refs:
            return {}
        self._refresh()
        out = {}
        for key, name in refs.items():
            value = lookup(name, self._file, self._env)
            if value is None:
                raise MissingSecret(name)
            out[key] = value
        return out


__all__ = ["MissingSecret", "SecretStore", "read_secrets_file"]
