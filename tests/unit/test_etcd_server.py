"""EmbeddedEtcd against the real etcd binary."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aetcd
import httpx
import pytest

from peerd.devtools.etcd_server import (
    INSTALL_HINT,
    EmbeddedEtcd,
    EtcdNotInstalled,
    find_etcd_binary,
)
from peerd.devtools.spawn import free_port
from peerd.errors import PeerdError
from tests.helpers import REPO_ROOT, assert_eventually

try:
    find_etcd_binary()
    HAVE_ETCD = True
except EtcdNotInstalled:
    HAVE_ETCD = False

needs_etcd = pytest.mark.skipif(not HAVE_ETCD, reason=INSTALL_HINT)


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


async def _put(endpoint: str, key: bytes, value: bytes) -> None:
    host, port = _split(endpoint)
    client = aetcd.Client(host, port)
    try:
        await client.put(key, value)
    finally:
        await client.close()


async def _get(endpoint: str, key: bytes) -> bytes | None:
    host, port = _split(endpoint)
    client = aetcd.Client(host, port)
    try:
        result = await client.get(key)
        return None if result is None else bytes(result.value)
    finally:
        await client.close()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _healthy(etcd: EmbeddedEtcd, timeout_s: float = 0.5) -> bool:
    try:
        r = httpx.get(f"{etcd.client_url}/health", timeout=timeout_s, trust_env=False)
    except httpx.HTTPError:
        return False
    return bool(r.status_code == 200 and r.json().get("health") == "true")


def test_find_etcd_binary_missing_from_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EtcdNotInstalled) as info:
        find_etcd_binary()
    assert str(info.value) == (
        "etcd not found on PATH; install it with: "
        "sudo apt-get update && sudo apt-get install -y etcd-server"
    )
    assert isinstance(info.value, PeerdError)


def test_find_etcd_binary_explicit_path(tmp_path: Path) -> None:
    missing = tmp_path / "etcd"
    with pytest.raises(EtcdNotInstalled, match="apt-get install -y etcd-server"):
        find_etcd_binary(str(missing))
    missing.write_text("#!/bin/sh\n")
    with pytest.raises(EtcdNotInstalled, match="not executable"):
        find_etcd_binary(str(missing))
    missing.chmod(0o755)
    assert find_etcd_binary(str(missing)) == str(missing)


def test_start_with_missing_binary_raises(tmp_path: Path) -> None:
    etcd = EmbeddedEtcd(binary=str(tmp_path / "nope"))
    with pytest.raises(EtcdNotInstalled):
        etcd.start()
    etcd.stop()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_endpoint_before_start_raises() -> None:
    with pytest.raises(PeerdError, match="start"):
        _ = EmbeddedEtcd().endpoint


@needs_etcd
def test_start_put_get_kill_restart_stop() -> None:
    etcd = EmbeddedEtcd()
    try:
        etcd.start()
        endpoint = etcd.endpoint
        host, port = _split(endpoint)
        assert host == "127.0.0.1" and port > 0
        first_pid = etcd.pid
        assert first_pid is not None
        data_dir = etcd.data_dir
        assert data_dir is not None and (data_dir / "member").is_dir()
        tmp_root = data_dir.parent

        asyncio.run(_put(endpoint, b"k", b"v"))
        assert asyncio.run(_get(endpoint, b"k")) == b"v"

        etcd.kill()
        assert etcd.pid is None
        assert _gone(first_pid)
        assert data_dir.is_dir()

        etcd.start()
        assert etcd.endpoint == endpoint  # same ports after restart
        assert etcd.pid not in (None, first_pid)
        assert asyncio.run(_get(endpoint, b"k")) == b"v"  # same data after restart
        second_pid = etcd.pid
        assert second_pid is not None
    finally:
        etcd.stop()
    assert etcd.pid is None
    assert _gone(second_pid)
    assert not tmp_root.exists()  # the temp dir it created is gone


@needs_etcd
def test_given_data_dir_is_kept_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "etcd-data"
    log_path = tmp_path / "etcd.log"
    with EmbeddedEtcd(data_dir, name="keep", log_path=log_path) as etcd:
        asyncio.run(_put(etcd.endpoint, b"durable", b"yes"))
        client_port, peer_port = etcd.client_port, etcd.peer_port
    assert (data_dir / "member").is_dir()
    assert log_path.is_file()

    again = EmbeddedEtcd(
        data_dir, name="keep", log_path=log_path, client_port=client_port, peer_port=peer_port
    )
    with again:
        assert again.endpoint == f"127.0.0.1:{client_port}"
        assert asyncio.run(_get(again.endpoint, b"durable")) == b"yes"
    assert data_dir.is_dir()


@needs_etcd
def test_pause_and_resume() -> None:
    with EmbeddedEtcd() as etcd:
        etcd.pause()
        assert etcd.pid is not None  # still exists while stopped
        assert not _healthy(etcd)
        etcd.resume()
        assert_eventually(lambda: _healthy(etcd), timeout=10.0)


@needs_etcd
def test_stop_while_paused() -> None:
    etcd = EmbeddedEtcd()
    etcd.start()
    pid = etcd.pid
    assert pid is not None
    etcd.pause()
    started = time.monotonic()
    etcd.stop(timeout_s=5.0)
    assert time.monotonic() - started < 5.0  # SIGTERM + SIGCONT ends it without the SIGKILL path
    assert _gone(pid)


@needs_etcd
def test_start_failure_reports_log_tail() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        etcd = EmbeddedEtcd(client_port=taken)  # explicit port: no retry on other ports
        try:
            with pytest.raises(PeerdError, match="address already in use"):
                etcd.start(timeout_s=10.0)
            assert etcd.pid is None
        finally:
            etcd.stop()


@needs_etcd
def test_start_twice_raises() -> None:
    with EmbeddedEtcd() as etcd, pytest.raises(PeerdError, match="already running"):
        etcd.start()


@needs_etcd
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_etcd_dies_with_its_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from peerd.devtools.etcd_server import EmbeddedEtcd
        etcd = EmbeddedEtcd()
        etcd.start()
        print(etcd.pid, etcd.data_dir.parent, flush=True)
        time.sleep(60)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
    )
    etcd_pid: int | None = None
    tmp_root: Path | None = None
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        pid_text, _, root_text = line.strip().partition(" ")
        assert pid_text.isdigit(), f"parent printed {line!r}"
        etcd_pid, tmp_root = int(pid_text), Path(root_text)
        assert not _gone(etcd_pid)
        parent.kill()  # SIGKILL: no cleanup code runs in the parent
        parent.wait()
        assert_eventually(lambda: _gone(etcd_pid), timeout=10.0, message="etcd outlived parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if etcd_pid is not None and not _gone(etcd_pid):
            os.kill(etcd_pid, signal.SIGKILL)
        if tmp_root is not None and tmp_root.name.startswith("peerd-etcd-"):
            shutil.rmtree(tmp_root, ignore_errors=True)
