"""The one place peerd talks to etcd.

aetcd supplies etcd's v3 gRPC API (generated stubs in ``aetcd.rpc``) and its watch multiplexer
(``aetcd.watcher.Watcher``). We build the gRPC channels ourselves (:mod:`.etcd_channel`): several
endpoints with failover, TLS, and etcd's auth token on every call. aetcd's own ``Client`` is not
used: it builds only insecure channels (aetcd 1.0.0 has no TLS arguments and calls
``insecure_channel`` in ``connect``), so TLS needed no subclass of it here.

Auth: with ``--etcd-user`` the node authenticates (``Auth.Authenticate``) before its first call
and again whenever etcd answers UNAUTHENTICATED (the token expired, or etcd restarted and forgot
it): that call is retried once at once; a watch or keepalive that fails so reports Unavailable
and its loop retries with a new token. A refused user or password is
:class:`peerd.errors.Unauthenticated`, which a node treats as fatal at start.

Every etcd error is translated here: UNAVAILABLE, DEADLINE_EXCEEDED, a broken or refused
connection and a watch stream that ends all become :class:`peerd.errors.Unavailable`; etcd's
"database space exceeded" (the NOSPACE alarm) becomes :class:`peerd.errors.ResourceExhausted`;
anything else becomes :class:`peerd.errors.PeerdError`. Requests are built, and answers read,
without I/O in :mod:`.etcd_messages` (with aetcd's generated message types); no other module
imports aetcd.

Maintenance is here too (status, alarms, compact, defragment: used by :mod:`.alarms` and
:mod:`.compaction`); status and defragment act on the member the request reaches, so they can go
to one endpoint over a channel of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import grpc
from aetcd import exceptions as aetcd_exceptions
from aetcd import rpc
from aetcd.watcher import Watcher

from peerd.coord.etcd_channel import EtcdSecurity, TokenInterceptor, host_of, open_channel, target
from peerd.coord.etcd_messages import (
    alarm_of,
    kv_of,
    member_status,
    range_request,
    user_add_request,
)
from peerd.coord.etcd_values import KV, Alarm, Event, MemberStatus, prefix_end
from peerd.core.backoff import Backoff
from peerd.errors import PeerdError, ResourceExhausted, Unauthenticated, Unavailable

_UNAVAILABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
}

NOSPACE = "NOSPACE"
"""etcd's alarm for a database that reached ``--quota-backend-bytes``."""
_NOSPACE_DETAIL = "database space exceeded"
_COMPACTED = "required revision has been compacted"
WATCH_CANCEL_S = 1.0
"""How long closing a watch waits for etcd to confirm the cancel (seconds)."""
STATUS_TIMEOUT_S = 2.0
"""Deadline of one Status call (seconds): the member answers it locally, no consensus round."""
DEFRAGMENT_TIMEOUT_S = 300.0
"""Deadline of one Defragment (seconds). etcd copies the member's live data to a new file and
blocks that member meanwhile: well under a second for tens of MiB, minutes for many GiB."""
COMPACT_TIMEOUT_S = 60.0
"""Deadline of one physical compaction (seconds): etcd deletes old revisions in batches of
1,000 keys before it answers."""
RETRY_INITIAL_S = 0.2
"""First delay (seconds) before retrying etcd after an error: the channel's own first reconnect
attempt (``grpc.initial_reconnect_backoff_ms`` above) is due by then."""
RETRY_MAX_S = 2.0
"""Cap (seconds) of the delay between retries of etcd: a loop waiting for an unreachable etcd
tries at most every 2 s, and notices a recovered etcd within 2 s."""


def retry_backoff() -> Backoff:
    """A fresh backoff for a loop that retries etcd: 0.2, 0.4, 0.8, 1.6, 2, 2, ... seconds
    (:data:`RETRY_INITIAL_S` doubling to :data:`RETRY_MAX_S`, no jitter)."""
    return Backoff(RETRY_INITIAL_S, RETRY_MAX_S)


class Compacted(PeerdError):
    """The watch's start revision has been compacted: re-list, then watch again."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted at {compact_revision}")
        self.compact_revision = compact_revision


def _refused_token(exc: BaseException) -> bool:
    """etcd answered UNAUTHENTICATED: its auth token is invalid or expired."""
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAUTHENTICATED


def _map_error(exc: BaseException, space_hint: str = "") -> PeerdError:
    if isinstance(exc, PeerdError):  # raised on our side, e.g. by the token interceptor
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        if exc.code() in _UNAVAILABLE:
            return Unavailable(f"etcd unavailable: {exc.code().name}: {exc.details()}")
        details = exc.details() or ""
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _NOSPACE_DETAIL in details:
            return ResourceExhausted(f"etcd said: {details}", space_hint)
        if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
            return PeerdError(
                f"etcd refused the call: {details} (the etcd user lacks a permission; the role "
                "peerd needs is in docs/security.md)"
            )
        return PeerdError(f"etcd error: {exc.code().name}: {details}")
    if isinstance(exc, aetcd_exceptions.RevisionCompactedError):
        return Compacted(exc.compacted_revision)
    if isinstance(exc, aetcd_exceptions.ClientError | OSError | asyncio.TimeoutError):
        return Unavailable(f"etcd unavailable: {exc}")
    return PeerdError(f"etcd error: {exc!r}")


class EtcdObserver(Protocol):
    """Told about every etcd request and watch restart (the node's metrics implement it)."""

    def request(self, method: str, duration_s: float, ok: bool) -> None:
        """One unary call (or one keepalive) took ``duration_s``; ``method`` is etcd's gRPC
        method name (``Txn``, ``Range``, ``LeaseKeepAlive``...); ``ok``: it answered."""

    def watch_restarted(self, watch: str, reason: str) -> None:
        """The list-then-watch loop ``watch`` re-listed; ``reason``: compacted or broken."""


class _NoObserver:
    def request(self, method: str, duration_s: float, ok: bool) -> None:
        pass

    def watch_restarted(self, watch: str, reason: str) -> None:
        pass


class Etcd:
    """An etcd client over one gRPC channel.

    Args:
        endpoints: ``HOST:PORT`` strings.
        timeout_s: deadline in seconds for each unary call (not for watches).
        space_hint: added to the message of :class:`peerd.errors.ResourceExhausted`: what this
            node does about a full etcd (e.g. how often it compacts).
        security: TLS files and etcd user (:class:`peerd.coord.etcd_channel.EtcdSecurity`).
        observer: told the duration of every request (default: nobody). Durations are measured
            on ``time.monotonic`` here, at the I/O boundary, not by logic.

    All methods raise :class:`peerd.errors.Unavailable` when etcd cannot be reached in time,
    :class:`peerd.errors.ResourceExhausted` for a write refused by the NOSPACE alarm and
    :class:`peerd.errors.PeerdError` for other etcd errors.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        timeout_s: float = 5.0,
        space_hint: str = "",
        security: EtcdSecurity | None = None,
        observer: EtcdObserver | None = None,
    ) -> None:
        self.observer: EtcdObserver = observer if observer is not None else _NoObserver()
        self.endpoints = tuple(endpoints)
        self.timeout_s = timeout_s
        self.space_hint = space_hint
        self.security = security or EtcdSecurity()
        self._auth: TokenInterceptor | None = None
        if self.security.user:
            self._auth = TokenInterceptor(self._authenticate)
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[str, Any] = {}
        self._watcher: Watcher | None = None
        self._member_channels: dict[str, grpc.aio.Channel] = {}

    async def connect(self) -> None:
        """Open the channel (lazy: no round trip).

        Raises:
            Unavailable: a name cannot resolve.
            InvalidArgument: a TLS file cannot be read.
        """
        if self._channel is not None:
            return
        override = host_of(self.endpoints[0]) if len(self.endpoints) > 1 else ""
        self._channel = self._open(target(self.endpoints), override)
        self._stubs = {
            "kv": rpc.KVStub(self._channel),
            "lease": rpc.LeaseStub(self._channel),
            "maintenance": rpc.MaintenanceStub(self._channel),
            "cluster": rpc.ClusterStub(self._channel),
        }
        self._watcher = Watcher(rpc.WatchStub(self._channel))

    def _open(self, target_: str, name_override: str = "") -> grpc.aio.Channel:
        return open_channel(target_, self.security, self._auth, name_override)

    async def _authenticate(self) -> str:
        """A new auth token for ``security.user`` (called by the token interceptor).

        Raises:
            Unauthenticated: etcd refused the user or password.
            Unavailable: etcd cannot be reached.
        """
        assert self._channel is not None
        req = rpc.AuthenticateRequest(name=self.security.user, password=self.security.password())
        try:
            resp = await rpc.AuthStub(self._channel).Authenticate(req, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _UNAVAILABLE:
                raise _map_error(exc) from exc
            raise Unauthenticated(
                f"etcd refused user {self.security.user!r}: {exc.details()}"
            ) from exc
        return str(resp.token)

    def _error(self, exc: BaseException) -> PeerdError:
        """:func:`_map_error`, and a refused token forgotten (the next call authenticates)."""
        if _refused_token(exc) and self._auth is not None:
            self._auth.invalidate()
            return Unavailable("etcd refused the auth token; authenticating again")
        return _map_error(exc, self.space_hint)

    async def close(self) -> None:
        """Close watches and the channels."""
        if self._watcher is not None:
            await self._watcher.shutdown()
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        for channel in self._member_channels.values():
            await channel.close()
        self._member_channels = {}

    # -- KV ------------------------------------------------------------------------------------

    async def get(self, key: bytes) -> KV | None:
        """The key's current value, or None if absent."""
        kvs, _, _ = await self.range(key)
        return kvs[0] if kvs else None

    async def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        limit: int = 0,
        descending: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> tuple[list[KV], int, int]:
        """Read ``[key, range_end)`` (just ``key`` when ``range_end`` is empty), sorted by key.

        Returns:
            ``(kvs, count, revision)``: at most ``limit`` key-values (0 = no limit), the total
            number of keys in the range, and the store revision the read was served at.
        """
        req = range_request(
            key, range_end, limit=limit, descending=descending, keys_only=keys_only,
            count_only=count_only,
        )  # fmt: skip
        resp = await self._call("kv", "Range", req)
        return [kv_of(m) for m in resp.kvs], resp.count, resp.header.revision

    async def range_all(self, key: bytes, range_end: bytes, chunk: int) -> tuple[list[KV], int]:
        """Read every key of ``[key, range_end)`` in one read, sorted by key: ``(kvs,
        revision)``. The key-values are converted ``chunk`` at a time, yielding to the event
        loop between chunks: a 100,000-key list converted in one go stalled a restarted node
        for 0.4 s idle and a second under load (docs/performance.md, Part 2, fourth round).
        """
        resp = await self._call("kv", "Range", range_request(key, range_end))
        msgs = resp.kvs
        kvs: list[KV] = []
        for start in range(0, len(msgs), chunk):
            if start:
                await asyncio.sleep(0)  # a yield, not a wait
            kvs.extend(kv_of(m) for m in msgs[start : start + chunk])
        return kvs, int(resp.header.revision)

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Write ``key``; returns the revision of the write."""
        resp = await self._call("kv", "Put", rpc.PutRequest(key=key, value=value, lease=lease))
        return int(resp.header.revision)

    async def txn(self, req: Any, timeout_s: float | None = None) -> Any:
        """Run a prepared ``rpc.TxnRequest`` (built with :mod:`peerd.coord.etcd_messages`);
        returns the TxnResponse.

        ``timeout_s`` overrides the client's deadline for this call."""
        return await self._call("kv", "Txn", req, timeout_s)

    # -- leases --------------------------------------------------------------------------------

    async def lease_grant(self, ttl_s: int) -> int:
        """Grant a lease of ``ttl_s`` seconds; returns its id."""
        resp = await self._call("lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl_s))
        return int(resp.ID)

    async def lease_keepalive(self, lease_id: int, timeout_s: float | None = None) -> int:
        """Refresh a lease once. Returns the new TTL in seconds; 0 or less means it has expired."""
        await self.connect()
        started, ok = time.monotonic(), False
        try:
            stream = self._stubs["lease"].LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]), timeout=timeout_s or self.timeout_s
            )
            async for reply in stream:
                ok = True
                return int(reply.TTL)
        except Exception as exc:
            raise self._error(exc) from exc
        finally:
            self.observer.request("LeaseKeepAlive", time.monotonic() - started, ok)
        raise Unavailable("etcd closed the keepalive stream")

    async def lease_revoke(self, lease_id: int) -> None:
        """Revoke a lease, deleting every key attached to it."""
        await self._call("lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id))

    # -- watch ---------------------------------------------------------------------------------

    async def watch_prefix(self, prefix: bytes, start_revision: int) -> AsyncIterator[Event]:
        """Yield events for keys under ``prefix`` from ``start_revision`` (inclusive).

        Raises:
            Compacted: ``start_revision`` is older than the last compaction.
            Unavailable: the stream broke (etcd went away); the caller re-lists and re-watches.
        """
        assert self._watcher is not None, "connect() first"
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def callback(item: Any) -> None:
            await queue.put(item)

        try:
            cb = await asyncio.wait_for(
                self._watcher.add_callback(
                    prefix, callback, range_end=prefix_end(prefix), start_revision=start_revision
                ),
                self.timeout_s,
            )
        except Exception as exc:
            raise self._error(exc) from exc
        if cb.watch_id is not None and cb.watch_id < 0:
            # etcd refused the watch (created and cancelled at once, id -1); aetcd takes that
            # for a watch that never sends anything.
            raise PeerdError(
                f"etcd refused the watch on {prefix!r} (permission denied): with "
                "--client-cert-auth etcd authorises watches as the certificate's CN, which must "
                "be the etcd user (docs/security.md)"
            )
        try:
            while True:
                item = await queue.get()
                if item is None:
                    raise Unavailable("etcd watch stream closed")
                if isinstance(item, BaseException):
                    raise self._error(item)
                kind = "put" if item.kind == "PUT" else "delete"
                yield Event(kind, kv_of(item.kv), item.kv.mod_revision)
        finally:
            if cb.watch_id is not None:
                # Bounded: aetcd waits for etcd's answer to the cancel, which may never come
                # (the stream gone, etcd busy); an unbounded wait here hung a stopping member.
                with contextlib.suppress(Exception):  # the stream may be gone already
                    await asyncio.wait_for(self._watcher.cancel(cb.watch_id), WATCH_CANCEL_S)

    # -- maintenance ---------------------------------------------------------------------------

    async def status(self, endpoint: str = "") -> MemberStatus:
        """``Maintenance.Status`` of the member ``endpoint`` (``HOST:PORT``; "" = the member the
        client is connected to). Answered locally by that member: cheap, no consensus round.
        Its alarms are the cluster's (alarms are replicated through raft)."""
        resp = await self._call(
            "maintenance", "Status", rpc.StatusRequest(), STATUS_TIMEOUT_S, endpoint
        )
        return member_status(endpoint, resp)

    async def alarms(self) -> list[Alarm]:
        """Every active alarm of the cluster (``Maintenance.Alarm`` GET; linearizable: etcd 3.4
        sends it through raft, so prefer :meth:`status` for frequent polls)."""
        resp = await self._call(
            "maintenance", "Alarm", rpc.AlarmRequest(action=rpc.AlarmRequest.GET)
        )
        return [alarm_of(a) for a in resp.alarms]

    async def disarm(self, alarm: Alarm) -> None:
        """Deactivate one alarm. etcd raises NOSPACE again on the next write that does not fit."""
        req = rpc.AlarmRequest(
            action=rpc.AlarmRequest.DEACTIVATE,
            memberID=alarm.member_id,
            alarm=rpc.AlarmType.Value(alarm.kind),
        )
        await self._call("maintenance", "Alarm", req)

    async def compact(self, revision: int, timeout_s: float = COMPACT_TIMEOUT_S) -> bool:
        """Drop the history older than ``revision`` (physical: returns once the backend deleted
        it); watches from below it then get :class:`Compacted`. Returns False when ``revision``
        was compacted already (by anyone): nothing to do. Raises PeerdError for a future one."""
        await self.connect()
        req = rpc.CompactionRequest(revision=revision, physical=True)
        try:
            await self._stubs["kv"].Compact(req, timeout=timeout_s)
        except Exception as exc:
            details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else ""
            if _COMPACTED in (details or ""):  # OUT_OF_RANGE "mvcc: required revision has been ..."
                return False
            raise self._error(exc) from exc
        return True

    async def defragment(self, endpoint: str, timeout_s: float = DEFRAGMENT_TIMEOUT_S) -> None:
        """Defragment the member at ``endpoint`` (``HOST:PORT``): it rewrites its database file
        without the free pages, so ``db_size`` falls to ``db_size_in_use``. The member answers
        nothing else meanwhile (see :data:`DEFRAGMENT_TIMEOUT_S`)."""
        await self._call("maintenance", "Defragment", rpc.DefragmentRequest(), timeout_s, endpoint)

    async def member_endpoints(self) -> dict[int, list[str]]:
        """``{member id: [HOST:PORT, ...]}``: each member's advertised client URLs
        (``Cluster.MemberList``), scheme stripped."""
        resp = await self._call("cluster", "MemberList", rpc.MemberListRequest())
        return {
            int(m.ID): [url.split("://", 1)[-1].rstrip("/") for url in m.clientURLs]
            for m in resp.members
        }

    async def add_prefix_user(self, user: str, password: str, prefix: bytes) -> None:
        """Create etcd user ``user`` with role ``user`` that may read and write the keys under
        ``prefix`` and nothing else (the role docs/security.md gives peerd); ``password`` ""
        makes a user that logs in only by client certificate (CN = ``user``; etcd >= 3.5).
        Needs root. What exists already is kept, so running it again changes nothing. For
        ``peerd dev``, the tests and ``python -m peerd.devtools.etcd_auth``.

        Raises:
            PeerdError: etcd refused.
        """
        rw, end = rpc.Permission.READWRITE, prefix_end(prefix)
        perm = rpc.Permission(permType=rw, key=prefix, range_end=end)
        await self._auth_calls(
            ("RoleAdd", rpc.AuthRoleAddRequest(name=user)),
            ("RoleGrantPermission", rpc.AuthRoleGrantPermissionRequest(name=user, perm=perm)),
            ("UserAdd", user_add_request(user, password)),
            ("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=user, role=user)),
        )

    async def enable_auth(self, root_password: str) -> None:
        """Create user ``root`` (role ``root``; ``root_password`` "" = certificate only) and turn
        etcd's auth on, as ``etcdctl auth enable`` does; again, a no-op. Raises PeerdError if
        refused."""
        await self._auth_calls(
            ("UserAdd", user_add_request("root", root_password)),
            ("UserGrantRole", rpc.AuthUserGrantRoleRequest(user="root", role="root")),
            ("AuthEnable", rpc.AuthEnableRequest()),
        )

    async def _auth_calls(self, *calls: tuple[str, Any]) -> None:
        await self.connect()
        stub = rpc.AuthStub(self._channel)
        for method, req in calls:
            try:
                await getattr(stub, method)(req, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as exc:
                if "already" not in (exc.details() or ""):  # "user name already exists", ...
                    raise self._error(exc) from exc
            except Exception as exc:
                raise self._error(exc) from exc

    async def _call(
        self, stub: str, method: str, req: Any, timeout_s: float | None = None, endpoint: str = ""
    ) -> Any:
        await self.connect()
        service = self._stubs[stub]
        if endpoint:  # a channel to that member alone (kept until close()); maintenance only
            if endpoint not in self._member_channels:
                self._member_channels[endpoint] = self._open(endpoint)
            service = rpc.MaintenanceStub(self._member_channels[endpoint])
        call = getattr(service, method)
        started, ok = time.monotonic(), False
        try:
            try:
                answer = await call(req, timeout=timeout_s or self.timeout_s)
            except Exception as exc:
                error = self._error(exc)
                if not _refused_token(exc):
                    raise error from exc
                # the token was refused: once more with a new one
                answer = await call(req, timeout=timeout_s or self.timeout_s)
            ok = True
            return answer
        except PeerdError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        finally:
            self.observer.request(method, time.monotonic() - started, ok)
