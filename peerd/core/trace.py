"""W3C Trace Context for runs, derived from the run itself (pure: no I/O, no randomness).

Every attempt of a slot carries a ``traceparent`` (W3C Trace Context, Level 1,
https://www.w3.org/TR/trace-context/ section 3.2): ``00-<trace-id>-<parent-id>-01``.

==============  ==================================================================================
field           derivation
==============  ==================================================================================
version         ``00``
trace-id        the first 16 bytes (32 lowercase hex) of BLAKE2b over the idempotency key
                ``<task_id>/<slot epoch ms>``, ``digest_size=16``, ``person=b"peerd.trace"``
parent-id       8 bytes (16 hex) of BLAKE2b over ``<idempotency key>#<attempt>``,
                ``digest_size=8``, ``person=b"peerd.span"``
trace-flags     ``01`` (sampled): the target may record the trace
==============  ==================================================================================

So every attempt of a slot, on whichever node and however often it is retried or taken over,
shares one trace id (the slot's trace), and each attempt is its own span in it: a target (or a
log search) can join all deliveries of a slot without peerd storing anything. An all-zero id is
invalid in the spec; a digest that is all zeros (probability 2^-128 / 2^-64) becomes ``...01``.

The same trace id is bound to the node's log lines about the run (``trace_id``), sent as the
``traceparent`` header of HTTP runs, set as ``TRACEPARENT`` for shell runs and given to Python
callables as ``TaskContext.traceparent``.
"""

from __future__ import annotations

import hashlib
import re

VERSION = "00"
FLAGS_SAMPLED = "01"
TRACEPARENT_RE = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
"""A valid version-00 ``traceparent`` (non-zero ids, lowercase hex)."""


def _hex(data: str, size: int, person: bytes) -> str:
    digest = hashlib.blake2b(data.encode(), digest_size=size, person=person).hexdigest()
    return digest if digest.strip("0") else digest[:-1] + "1"


def trace_id(idempotency_key: str) -> str:
    """The 32-hex trace id of a slot (every attempt of it shares it).

    Args:
        idempotency_key: ``<task_id>/<slot epoch ms>`` (:func:`peerd.core.records.
            idempotency_key`).
    """
    return _hex(idempotency_key, 16, b"peerd.trace")


def span_id(idempotency_key: str, attempt: int) -> str:
    """The 16-hex span (parent) id of one attempt of a slot.

    Raises:
        ValueError: ``attempt`` < 1.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    return _hex(f"{idempotency_key}#{attempt}", 8, b"peerd.span")


def traceparent(idempotency_key: str, attempt: int) -> str:
    """``00-<trace id>-<span id>-01`` of one attempt (see the module table).

    Raises:
        ValueError: ``attempt`` < 1.
    """
    return (
        f"{VERSION}-{trace_id(idempotency_key)}-{span_id(idempotency_key, attempt)}-{FLAGS_SAMPLED}"
    )
