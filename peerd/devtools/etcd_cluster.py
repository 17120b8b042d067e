"""Throw-away N-member etcd cluster for the tests and the chaos harness.

:class:`EtcdCluster` runs one :class:`~peerd.devtools.etcd_server.EmbeddedEtcd` per member
(process hygiene as there: own session, SIGKILL on parent death, so start it from a long-lived
thread), can kill, pause, resume and restart each member on its ports and data, and finds the
raft leader.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from peerd.devtools.etcd_server import BIND_RETRIES, EmbeddedEtcd, find_etcd_binary
from peerd.devtools.spawn import StartStop
from peerd.errors import PeerdError


class _ClusterMember(EmbeddedEtcd):
    """One member of an :class:`EtcdCluster`: an :class:`EmbeddedEtcd` whose
    ``--initial-cluster`` names every member of the cluster."""

    def __init__(
        self,
        data_dir: Path,
        *,
        name: str,
        host: str,
        binary: str | None,
        log_path: Path,
        initial_cluster: Callable[[], str],
        token: str,
    ) -> None:
        super().__init__(data_dir, name=name, host=host, binary=binary, log_path=log_path)
        self._initial_cluster = initial_cluster
        self._token = token

    @property
    def name(self) -> str:
        """The member name (``--name``)."""
        return self._name

    def pick_ports(self, taken: set[int]) -> None:
        """Choose the ports still ``0``, avoiding ``taken`` (the other members'; updated)."""
        self._pick_ports(taken)

    def launch(self, binary: str) -> None:
        """Start the etcd process without waiting for it."""
        self._launch(binary)

    def wait_healthy(self, deadline: float) -> None:
        """Wait until healthy by ``deadline`` (``time.monotonic()``); see
        :meth:`EmbeddedEtcd.start`."""
        self._wait_healthy(deadline)

    def repick_busy_ports(self) -> bool:
        """After a failed start, forget an auto-chosen port the log says etcd could not bind;
        False if none applies."""
        return self._repick(self._launch_log_tail())

    def _cluster_args(self) -> list[str]:
        # On a restart etcd finds its member in the data dir and ignores all three flags, so
        # "new" is right for the first start and harmless afterwards.
        return [
            "--initial-cluster", self._initial_cluster(),
            "--initial-cluster-token", self._token,
            "--initial-cluster-state", "new",
        ]  # fmt: skip


class EtcdCluster(StartStop):
    """A throw-away etcd cluster of ``size`` members on free loopback ports (default 3).

    Each member is an etcd process with its own data dir and log under ``root`` (``member-<i>/``),
    started with ``--initial-cluster`` naming every member and a per-cluster
    ``--initial-cluster-token``. Members are indexed ``0 .. size-1``; each can be killed, paused,
    resumed and restarted on its ports and data (:meth:`kill`, :meth:`pause`, :meth:`resume`,
    :meth:`start_member`). Process hygiene is that of :class:`EmbeddedEtcd` (own session, SIGKILL
    on parent death: start from a long-lived thread).

    The leader is found through each member's v3 HTTP/JSON gateway, ``POST /v3/maintenance/status``
    (etcd 3.4 serves it on the client port): the member whose ``header.member_id`` equals the
    ``leader`` it reports is the leader. (The gateway needs only httpx; the gRPC Maintenance
    stubs would mean importing aetcd outside :mod:`peerd.coord.etcd`.)

    Args:
        size: number of members (>= 1).
        root: parent of the members' data dirs and logs; created if missing and kept by
            :meth:`stop`. It must not hold data of another cluster. ``None`` uses a temporary
            directory that :meth:`stop` removes.
        name: member ``i`` is named ``<name>-<i>``.
        host: the loopback address to listen on.
        binary: the etcd executable (see :func:`find_etcd_binary`); ``None`` = ``etcd`` on PATH.
        token: ``--initial-cluster-token``; ``None`` makes one unique to this instance.

    Raises:
        ValueError: ``size`` < 1.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        root: Path | None = None,
        name: str = "peerd-etcd",
        host: str = "127.0.0.1",
        binary: str | None = None,
        token: str | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"an etcd cluster needs at least one member, not {size}")
        self._given_root = Path(root) if root is not None else None
        self._tmp_root: Path | None = None
        self._name = name
        self._host = host
        self._binary = binary
        self._token = token if token is not None else f"{name}-{os.getpid()}-{id(self):x}"
        self._size = size
        self._members: list[_ClusterMember] = []
        self._member_ids: dict[int, str] = {}
        self._started_once = False

    # ----------------------------------------------------------------------------- properties

    @property
    def size(self) -> int:
        """The number of members."""
        return self._size

    @property
    def members(self) -> list[EmbeddedEtcd]:
        """The members in index order (empty before the first :meth:`start`); each has
        ``endpoint``, ``pid``, ``log_path``, ``log_tail()``, ``is_running()``."""
        return list(self._members)

    @property
    def endpoints(self) -> list[str]:
        """``HOST:PORT`` of every member's client URL, in index order.

        Raises:
            PeerdError: :meth:`start` has not chosen the ports yet.
        """
        if not self._members:
            raise PeerdError("etcd cluster not started yet: call start() first")
        return [m.endpoint for m in self._members]

    @property
    def endpoint_csv(self) -> str:
        """:attr:`endpoints` joined with ``,``: the form ``peerd serve --etcd`` takes.

        Raises:
            PeerdError: :meth:`start` has not chosen the ports yet.
        """
        return ",".join(self.endpoints)

    @property
    def root(self) -> Path | None:
        """The directory holding the members' data and logs (``None`` before :meth:`start` for a
        temporary one)."""
        return self._given_root if self._given_root is not None else self._tmp_root

    def member(self, i: int) -> EmbeddedEtcd:
        """Member ``i``.

        Raises:
            IndexError: no such member (or not started yet).
        """
        return self._members[i]

    def is_running(self, i: int) -> bool:
        """True while member ``i``'s process exists (including while paused)."""
        return self._members[i].is_running()

    # ----------------------------------------------------------------------------- lifecycle

    def start(self, timeout_s: float = 30.0) -> None:
        """Launch every member at once and wait until each answers ``GET /health`` healthy.

        Args:
            timeout_s: seconds to wait for the whole cluster.

        Raises:
            EtcdNotInstalled: the binary cannot be found.
            PeerdError: a member is already running, exited during startup, or the cluster was not
                healthy within ``timeout_s`` (the message carries that member's log tail; every
                member is killed).
        """
        running = [m.name for m in self._members if m.is_running()]
        if running:
            raise PeerdError(f"etcd cluster already running (members {running})")
        binary = find_etcd_binary(self._binary)
        if not self._members:
            self._create_members()
        deadline = time.monotonic() + timeout_s
        # As in EmbeddedEtcd.start: a port taken by someone else before etcd binds it is picked
        # again, but only on the very first start; the failed attempt's data dirs are wiped
        # because they already name the old peer URLs.
        for attempt in range(1, BIND_RETRIES + 1):
            taken: set[int] = set()
            for m in self._members:
                m.pick_ports(taken)
            for m in self._members:
                m.launch(binary)
            try:
                for m in self._members:
                    m.wait_healthy(deadline)
            except PeerdError:
                self._kill_all()
                repicked = [m.repick_busy_ports() for m in self._members]
                if attempt < BIND_RETRIES and not self._started_once and any(repicked):
                    for m in self._members:
                        if m.data_dir is not None:
                            shutil.rmtree(m.data_dir, ignore_errors=True)
                    continue
                raise
            break
        self._started_once = True

    def start_member(self, i: int, timeout_s: float = 20.0) -> None:
        """Restart member ``i`` (after :meth:`kill`) on its ports and data dir and wait until it is
        healthy, which needs a quorum of the cluster to be up.

        etcd ignores ``--initial-cluster*`` when the data dir holds a member, so the member
        rejoins as itself without ``--initial-cluster-state existing``.

        Raises:
            PeerdError: it is running, exited, or was not healthy within ``timeout_s`` seconds
                (then it is killed again).
            IndexError: no such member.
        """
        if not self._started_once:
            raise PeerdError("etcd cluster never started: call start() first")
        self._members[i].start(timeout_s)

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` and reap it; its data, log and ports stay for
        :meth:`start_member`.

        Raises:
            IndexError: no such member.
        """
        self._members[i].kill()

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i``: it stops answering (clients and peers) but keeps its sockets.

        Raises:
            PeerdError: it is not running.
            IndexError: no such member.
        """
        self._members[i].pause()

    def resume(self, i: int) -> None:
        """SIGCONT member ``i`` after :meth:`pause`.

        Raises:
            PeerdError: it is not running.
            IndexError: no such member.
        """
        self._members[i].resume()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every member and remove the temporary directory if this instance made one.

        Paused members are SIGKILLed first: a leader stopping gracefully hands leadership to a
        connected peer, and a frozen one makes that hand-off hang for etcd's request timeout (7 s
        here). The others then get SIGTERM one after the other (SIGKILL after ``timeout_s``
        seconds each). Safe to call more than once.
        """
        for m in self._members:
            if m.is_paused():
                m.kill()
        for m in self._members:
            m.stop(timeout_s)
        if self._tmp_root is not None:
            shutil.rmtree(self._tmp_root, ignore_errors=True)
            self._tmp_root = None
            self._members = []
            self._member_ids = {}
            self._started_once = False

    # ----------------------------------------------------------------------------- raft state

    def status(self, i: int, timeout_s: float = 1.0) -> dict[str, Any]:
        """Member ``i``'s ``Maintenance.Status`` as JSON (``POST /v3/maintenance/status``).

        uint64 fields come as decimal strings (``header.member_id``, ``leader``, ``raftTerm``,
        ...), as the gateway's JSON mapping has them.

        Raises:
            PeerdError: the member did not answer within ``timeout_s`` seconds or answered an
                error (killed, paused, starting).
            IndexError: no such member.
        """
        m = self._members[i]
        try:
            resp = httpx.post(
                f"{m.client_url}/v3/maintenance/status", json={}, timeout=timeout_s, trust_env=False
            )
            resp.raise_for_status()
            body: dict[str, Any] = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PeerdError(f"etcd member {i} ({m.endpoint}): no status: {exc}") from exc
        member_id = str(body.get("header", {}).get("member_id", ""))
        if member_id:
            self._member_ids[i] = member_id
        return body

    def member_id(self, i: int) -> str:
        """Member ``i``'s raft member id (decimal string), as learnt from its status.

        Raises:
            PeerdError: not known yet and the member does not answer.
        """
        if i not in self._member_ids:
            self.status(i)
        return self._member_ids[i]

    def leader_index(self, timeout_s: float = 1.0) -> int:
        """The index of the member that currently leads.

        Every running member is asked (each for at most ``timeout_s`` seconds); the leader is the
        one that reports itself as leader. When two do (an old leader cut off from the others),
        the one with the higher raft term wins.

        Raises:
            PeerdError: no answering member is leader (an election is in progress, or no quorum).
        """
        best: tuple[int, int] | None = None  # (raft term, index)
        errors = []
        for i, m in enumerate(self._members):
            if not m.is_running():
                continue
            try:
                st = self.status(i, timeout_s)
            except PeerdError as exc:
                errors.append(str(exc))
                continue
            leader = str(st.get("leader", "0"))
            if leader != "0" and leader == self._member_ids.get(i):
                term = int(st.get("raftTerm", 0))
                if best is None or term > best[0]:
                    best = (term, i)
        if best is None:
            detail = f" ({'; '.join(errors)})" if errors else ""
            raise PeerdError(f"no etcd member is leader{detail}")
        return best[1]

    def wait_for_leader(self, timeout_s: float = 10.0, *, other_than: int | None = None) -> int:
        """Poll :meth:`leader_index` until a leader (other than member ``other_than``) is known.

        Returns:
            The leader's index.

        Raises:
            PeerdError: none within ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            try:
                i = self.leader_index()
                if i != other_than:
                    return i
                last = f"member {i} still leads"
            except PeerdError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise PeerdError(f"no etcd leader within {timeout_s:.1f}s: {last}")
            time.sleep(0.05)

    def move_leader(self, i: int, timeout_s: float = 10.0) -> None:
        """Hand leadership to member ``i`` (``POST /v3/maintenance/transfer-leadership`` on the
        current leader) and wait until it leads.

        Raises:
            PeerdError: the transfer failed, or member ``i`` did not lead within ``timeout_s``
                seconds.
            IndexError: no such member.
        """
        deadline = time.monotonic() + timeout_s
        target = self.member_id(i)
        while True:
            current = self.wait_for_leader(max(0.1, deadline - time.monotonic()))
            if current == i:
                return
            url = f"{self._members[current].client_url}/v3/maintenance/transfer-leadership"
            try:
                resp = httpx.post(url, json={"targetID": target}, timeout=5.0, trust_env=False)
                error = "" if resp.status_code == 200 else f"HTTP {resp.status_code}: {resp.text}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise PeerdError(f"leadership not moved to etcd member {i}: {error or 'timeout'}")
            time.sleep(0.05)

    def __repr__(self) -> str:
        eps = ",".join(m.endpoint if m.client_port else "?" for m in self._members)
        return f"EtcdCluster(size={self._size}, endpoints={eps or '?'})"

    # ----------------------------------------------------------------------------- internals

    def _create_members(self) -> None:
        root = self._given_root
        if root is None:
            self._tmp_root = root = Path(tempfile.mkdtemp(prefix="peerd-etcd-cluster-"))
        root.mkdir(parents=True, exist_ok=True)

        def initial_cluster() -> str:
            return ",".join(f"{m.name}={m.peer_url}" for m in self._members)

        self._members = [
            _ClusterMember(
                root / f"member-{i}" / "data",
                name=f"{self._name}-{i}",
                host=self._host,
                binary=self._binary,
                log_path=root / f"member-{i}" / "etcd.log",
                initial_cluster=initial_cluster,
                token=self._token,
            )
            for i in range(self._size)
        ]

    def _kill_all(self) -> None:
        for m in self._members:
            m.kill()


__all__ = ["EtcdCluster"]
