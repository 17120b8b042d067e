"""Redaction of credentials in what peerd shows: task specs, run outputs, logs (pure).

Two mechanisms:

* **By name.** A literal HTTP header or shell environment value whose *name* looks like a
  credential (:func:`is_sensitive_name`: ``Authorization``, ``Proxy-Authorization``, ``Cookie``,
  or a name containing ``token``, ``secret``, ``key``, ``password``, ``passwd`` or
  ``credential``, case-insensitive), and the password of a URL's user info, are shown as
  :data:`REDACTED` (:func:`redact_spec`). The stored spec keeps the value (it must: the node
  sends it); secret references (``header_secrets``, ``env_secrets``) keep credentials out of
  etcd altogether.
* **By value.** Output tails and errors of a run, and log events, have every occurrence of a
  known credential value replaced (:func:`redact_values`): the values of the secrets a run
  resolved and of its literal credential-named headers and variables. For ``Authorization:
  Bearer abc...`` both the whole value and the part after the scheme are replaced
  (:func:`credential_fragments`), since a target may echo either.

A spec shown redacted and sent back (``peerd task get -o json`` edited, then applied) carries
:data:`REDACTED` where the credential was; :func:`restore_redacted` puts the stored values back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from urllib.parse import urlsplit, urlunsplit

from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb

REDACTED = "<redacted>"
"""What a redacted value is shown as."""

SENSITIVE_PARTS = (
    "authorization",
    "cookie",
    "token",
    "secret",
    "key",
    "password",
    "passwd",
    "credential",
)
"""A name containing one of these (lower-case) is credential-named."""
MIN_FRAGMENT = 4
"""A credential fragment shorter than this (the ``abc`` of ``Bearer abc``) is not searched for
in outputs: replacing every ``abc`` of a tail would hide more than it protects. Whole values of
declared secrets are always replaced, whatever their length."""


def is_sensitive_name(name: str) -> bool:
    """Whether a header or variable named ``name`` holds a credential (module docstring)."""
    lowered = name.lower()
    return any(part in lowered for part in SENSITIVE_PARTS)


def redact_url(url: str) -> str:
    """``url`` with the password of its user info replaced by :data:`REDACTED`; unchanged when
    it has none or cannot be parsed."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{name}:{REDACTED}@{host}"))


def _redact_map(values: MutableMapping[str, str]) -> None:
    for name in list(values):
        if is_sensitive_name(name) and values[name]:
            values[name] = REDACTED


def needs_redaction(spec: pb.TaskSpec) -> bool:
    """Whether :func:`redact_spec` would change ``spec``."""
    kind = spec.WhichOneof("target")
    if kind == "http":
        h = spec.http
        return redact_url(h.url) != h.url or any(
            is_sensitive_name(n) and v for n, v in h.headers.items()
        )
    if kind == "shell":
        return any(is_sensitive_name(n) and v for n, v in spec.shell.env.items())
    return False


def redact_spec(spec: pb.TaskSpec) -> pb.TaskSpec:
    """``spec`` as it may be shown: credential-named literal header and environment values and
    a URL's password replaced by :data:`REDACTED`. Returns ``spec`` itself when nothing needs
    redacting, else a copy (``spec`` is never modified)."""
    if not needs_redaction(spec):
        return spec
    shown = pb.TaskSpec()
    shown.CopyFrom(spec)
    if shown.WhichOneof("target") == "http":
        shown.http.url = redact_url(shown.http.url)
        _redact_map(shown.http.headers)
    else:
        _redact_map(shown.shell.env)
    return shown


def _restore_map(
    new: MutableMapping[str, str], stored: Mapping[str, str], field: str, what: str
) -> None:
    for name, value in new.items():
        if value != REDACTED:
            continue
        if name not in stored or not is_sensitive_name(name):
            raise InvalidArgument(
                field, f"{what} {name!r} is {REDACTED!r} but the stored task has no value to keep"
            )
        new[name] = stored[name]


def restore_redacted(new: pb.TaskSpec, stored: pb.TaskSpec, field: str = "task") -> None:
    """Put the stored credentials back where an update (a redacted spec edited and sent back)
    carries :data:`REDACTED`: header and environment values of the same name, and the URL when
    it equals the stored URL redacted. Modifies ``new`` in place.

    Raises:
        InvalidArgument: a :data:`REDACTED` value with no stored value to keep (naming
            ``<field>.http.headers``, ``<field>.shell.env`` or ``<field>.http.url``).
    """
    kind = new.WhichOneof("target")
    if kind == "http":
        old = stored.http if stored.WhichOneof("target") == "http" else pb.HttpTarget()
        if REDACTED in new.http.url:
            if new.http.url != redact_url(old.url) or old.url == new.http.url:
                raise InvalidArgument(
                    f"{field}.http.url", f"contains {REDACTED!r}: give the URL's password"
                )
            new.http.url = old.url
        _restore_map(new.http.headers, old.headers, f"{field}.http.headers", "header")
    elif kind == "shell":
        old_env = stored.shell.env if stored.WhichOneof("target") == "shell" else {}
        _restore_map(new.shell.env, old_env, f"{field}.shell.env", "variable")


def credential_fragments(value: str) -> list[str]:
    """The strings of one credential value to search outputs for: the value itself and, for a
    ``Scheme credentials`` value (``Bearer abc...``, ``Basic dXNl...``), the part after the
    scheme when it is at least :data:`MIN_FRAGMENT` characters."""
    out = [value] if value else []
    scheme, sep, rest = value.strip().partition(" ")
    if sep and scheme.isalpha() and len(rest.strip()) >= MIN_FRAGMENT:
        out.append(rest.strip())
    return out


def literal_credentials(values: Mapping[str, str]) -> list[str]:
    """The fragments (:func:`credential_fragments`) of every credential-named entry of
    ``values`` (headers or environment) at least :data:`MIN_FRAGMENT` characters long."""
    out: list[str] = []
    for name, value in values.items():
        if is_sensitive_name(name) and len(value) >= MIN_FRAGMENT:
            out.extend(credential_fragments(value))
    return out


def redact_values(text: str, values: Iterable[str]) -> str:
    """``text`` with every occurrence of each non-empty string of ``values`` replaced by
    :data:`REDACTED`, longest first (so a value containing another is replaced whole)."""
    for value in sorted({v for v in values if v}, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


__all__ = [
    "MIN_FRAGMENT",
    "REDACTED",
    "SENSITIVE_PARTS",
    "credential_fragments",
    "is_sensitive_name",
    "literal_credentials",
    "needs_redaction",
    "redact_spec",
    "redact_url",
    "redact_values",
    "restore_redacted",
]
