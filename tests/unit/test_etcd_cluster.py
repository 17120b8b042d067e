"""EtcdCluster against the real etcd binary: replication, leader election, restart, pause."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from peerd.coord.etcd import Etcd
from peerd.devtools.etcd_cluster import EtcdCluster
from peerd.errors import PeerdError, Unavailable
from tests.helpers import REPO_ROOT, assert_eventually
from tests.unit.test_etcd_server import _gone, needs_etcd


async def _aput(endpoint: str, key: bytes, value: bytes, timeout_s: float = 5.0) -> None:
    etcd = Etcd(endpoint.split(","), timeout_s=timeout_s)
    await etcd.connect()
    try:
        await etcd.put(key, value)
    finally:
        await etcd.close()


async def _aget(endpoint: str, key: bytes) -> bytes | None:
    etcd = Etcd(endpoint.split(","), timeout_s=5.0)
    await etcd.connect()
    try:
        kv = await etcd.get(key)
        return None if kv is None else kv.value
    finally:
        await etcd.close()


def put(endpoint: str, key: bytes, value: bytes) -> None:
    asyncio.run(_aput(endpoint, key, value))


def get(endpoint: str, key: bytes) -> bytes | None:
    return asyncio.run(_aget(endpoint, key))


def _revision(cluster: EtcdCluster, i: int) -> int:
    return int(cluster.status(i)["header"]["revision"])


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    c = EtcdCluster(3)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EtcdCluster(0)


def test_endpoints_before_start_raise() -> None:
    with pytest.raises(PeerdError, match="start"):
        _ = EtcdCluster().endpoints


@needs_etcd
def test_put_through_one_member_read_through_the_others(cluster: EtcdCluster) -> None:
    eps = cluster.endpoints
    assert len(eps) == 3 and len(set(eps)) == 3
    assert cluster.endpoint_csv == ",".join(eps)
    assert all(ep.startswith("127.0.0.1:") for ep in eps)
    assert len({cluster.member_id(i) for i in range(3)}) == 3
    put(eps[0], b"k", b"from-0")
    assert get(eps[1], b"k") == b"from-0"
    assert get(eps[2], b"k") == b"from-0"
    # The multi-endpoint client (ipv4:A,B,C, pick_first) sees the same data.
    assert asyncio.run(_aget(cluster.endpoint_csv, b"k")) == b"from-0"


@needs_etcd
def test_leader_kill_elects_a_new_leader_and_a_killed_member_rejoins(
    cluster: EtcdCluster,
) -> None:
    leader = cluster.leader_index()
    assert 0 <= leader < 3
    cluster.kill(leader)
    assert not cluster.is_running(leader)
    new_leader = cluster.wait_for_leader(10.0, other_than=leader)
    assert new_leader != leader
    survivors = [i for i in range(3) if i != leader]
    for i in survivors:  # writes still work through every surviving member
        put(cluster.endpoints[i], f"after-kill-{i}".encode(), b"v")
    for i in survivors:
        assert get(cluster.endpoints[i], f"after-kill-{survivors[0]}".encode()) == b"v"

    # Restart on the same ports and data dir (flags still say "new": ignored with existing data).
    old_id = cluster.member_id(leader)
    cluster.start_member(leader)
    assert cluster.member_id(leader) == old_id
    assert get(cluster.endpoints[leader], f"after-kill-{survivors[1]}".encode()) == b"v"
    assert_eventually(
        lambda: _revision(cluster, leader) == _revision(cluster, new_leader),
        timeout=10.0,
        message="restarted member did not catch up",
    )
    assert cluster.leader_index() in range(3)


@needs_etcd
def test_move_leader_and_kill_a_follower(cluster: EtcdCluster) -> None:
    cluster.move_leader(2)
    assert cluster.leader_index() == 2
    cluster.kill(0)
    assert cluster.leader_index() == 2  # losing a follower changes nothing
    put(cluster.endpoints[1], b"k", b"v")
    assert get(cluster.endpoints[2], b"k") == b"v"
    with pytest.raises(PeerdError):
        cluster.status(0, timeout_s=0.5)


@needs_etcd
def test_pause_follower_keeps_quorum_and_pause_majority_blocks(cluster: EtcdCluster) -> None:
    leader = cluster.leader_index()
    f1, f2 = (i for i in range(3) if i != leader)
    cluster.pause(f1)
    put(cluster.endpoints[leader], b"k", b"1")
    cluster.pause(f2)  # no quorum: a write through the leader cannot commit
    with pytest.raises(Unavailable):
        asyncio.run(_aput(cluster.endpoints[leader], b"k", b"blocked", timeout_s=1.0))
    cluster.resume(f1)
    cluster.resume(f2)
    assert_eventually(lambda: cluster.leader_index() in range(3), timeout=10.0)
    put(cluster.endpoints[f2], b"k", b"2")
    assert get(cluster.endpoints[f1], b"k") == b"2"


@needs_etcd
def test_kill_all_then_start_again_keeps_data() -> None:
    with EtcdCluster(3) as c:
        eps = c.endpoints
        put(eps[0], b"k", b"kept")
        for i in range(3):
            c.kill(i)
        c.start()
        assert c.endpoints == eps
        assert get(eps[2], b"k") == b"kept"


@needs_etcd
def test_stop_ends_every_member_and_removes_the_temp_dir() -> None:
    c = EtcdCluster(3)
    c.start()
    pids = [m.pid for m in c.members]
    root = c.root
    assert root is not None and root.is_dir()
    c.pause(1)  # a paused member must stop too
    c.stop()
    assert all(pid is not None and _gone(pid) for pid in pids)
    assert not root.exists()
    c.stop()  # idempotent


@needs_etcd
def test_given_root_is_kept(tmp_path: Path) -> None:
    with EtcdCluster(1, root=tmp_path / "etcd") as c:
        put(c.endpoints[0], b"k", b"v")
        assert c.leader_index() == 0
    assert (tmp_path / "etcd" / "member-0" / "data" / "member").is_dir()
    assert (tmp_path / "etcd" / "member-0" / "etcd.log").is_file()


@needs_etcd
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_members_die_with_their_parent() -> None:
    script = textwrap.dedent(
        """
        import time
        from peerd.devtools.etcd_cluster import EtcdCluster
        c = EtcdCluster(3)
        c.start()
        print(" ".join(str(m.pid) for m in c.members), c.root, flush=True)
        time.sleep(60)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
    )
    pids: list[int] = []
    root: Path | None = None
    try:
        assert parent.stdout is not None
        *pid_texts, root_text = parent.stdout.readline().split()
        pids, root = [int(p) for p in pid_texts], Path(root_text)
        assert len(pids) == 3 and not any(_gone(p) for p in pids)
        parent.kill()
        parent.wait()
        assert_eventually(lambda: all(_gone(p) for p in pids), timeout=10.0)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for p in pids:
            if not _gone(p):
                os.kill(p, signal.SIGKILL)
        if root is not None and root.name.startswith("peerd-etcd-cluster-"):
            shutil.rmtree(root, ignore_errors=True)
