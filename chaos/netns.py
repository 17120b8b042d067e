"""Network namespaces for partition faults (root and iproute2 only).

Layout (all in ``10.213.0.0/24``; nothing outside it is ever touched or routed):

* bridge ``pdchaos0`` in the root namespace with ``10.213.0.1`` (the harness and the webhook sink)
  and ``10.213.0.2`` (etcd, every member on its own port);
* node *i* (1-based) in namespace ``pdchaos-n<i>``, veth ``pdcv<i>`` (bridge side) /
  ``pdcp<i>`` (namespace side) with ``10.213.0.<10+i>``. The namespaces get no default route.

Partitions are blackhole routes inside a namespace: ``blackhole 10.213.0.2/32`` cuts the node off
etcd (the sink stays reachable, so a cut-off node can still deliver what it already claimed), a
blackhole to a peer's IP (in both namespaces) cuts node to node. Healing deletes the routes.

:meth:`NetnsLab.setup` first removes leftovers of a crashed earlier run (``pdchaos-*``
namespaces, ``pdchaos0``, ``pdcv*`` links); a lock file keeps two runs from sharing the names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from typing import IO

BRIDGE = "pdchaos0"
NS_PREFIX = "pdchaos-n"
VETH_HOST = "pdcv"
VETH_NS = "pdcp"
BRIDGE_IP = "10.213.0.1"
ETCD_IP = "10.213.0.2"
PREFIX_LEN = 24
LOCK_PATH = "/tmp/peerd-chaos-netns.lock"


class NetnsError(RuntimeError):
    """A namespace command failed."""


def node_ip(index: int) -> str:
    """The address of node ``index`` (1-based): ``10.213.0.<10+index>``."""
    if not 1 <= index <= 200:
        raise ValueError(f"node index {index} out of range")
    return f"10.213.0.{10 + index}"


def availability() -> tuple[bool, str]:
    """``(True, "")`` when namespaces can be used, else ``(False, reason)``."""
    if os.geteuid() != 0:
        return False, "not running as root"
    if shutil.which("ip") is None:
        return False, "iproute2 'ip' not found"
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return False, f"'ip netns list' failed: {res.stderr.strip()}"
    return True, ""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=15)
    if check and res.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {res.stderr.strip() or res.returncode}")
    return res


class NetnsLab:
    """The bridge and one namespace per node. Use :meth:`setup`, then :meth:`teardown` (safe to
    call twice, also after a failed setup).

    Args:
        nodes: how many node namespaces.
    """

    def __init__(self, nodes: int) -> None:
        self.nodes = nodes
        self.blocked: set[tuple[str, str]] = set()
        self._lock: IO[str] | None = None
        self._up = False

    @staticmethod
    def namespace(index: int) -> str:
        """The namespace name of node ``index`` (1-based)."""
        return f"{NS_PREFIX}{index}"

    def setup(self) -> None:
        """Clean leftovers, create the bridge and the namespaces.

        Raises:
            NetnsError: another run holds the lock, or a command failed (whatever was created is
                removed again).
        """
        self._lock = open(LOCK_PATH, "w")  # noqa: SIM115 - held for the lab's lifetime
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock.close()
            self._lock = None
            raise NetnsError(f"another chaos run holds {LOCK_PATH}") from exc
        self._up = True
        try:
            cleanup_stale()
            _ip("link", "add", BRIDGE, "type", "bridge")
            _ip("addr", "add", f"{BRIDGE_IP}/{PREFIX_LEN}", "dev", BRIDGE)
            _ip("addr", "add", f"{ETCD_IP}/{PREFIX_LEN}", "dev", BRIDGE)
            _ip("link", "set", BRIDGE, "up")
            for i in range(1, self.nodes + 1):
                ns, host_if, ns_if = self.namespace(i), f"{VETH_HOST}{i}", f"{VETH_NS}{i}"
                _ip("netns", "add", ns)
                _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
                _ip("link", "set", ns_if, "netns", ns)
                _ip("link", "set", host_if, "master", BRIDGE, "up")
                _ip("-n", ns, "addr", "add", f"{node_ip(i)}/{PREFIX_LEN}", "dev", ns_if)
                _ip("-n", ns, "link", "set", ns_if, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except Exception:
            self.teardown()
            raise

    def block(self, index: int, address: str) -> None:
        """Blackhole ``address`` inside node ``index``'s namespace."""
        _check_ours(address)
        ns = self.namespace(index)
        _ip("-n", ns, "route", "add", "blackhole", f"{address}/32")
        self.blocked.add((ns, address))

    def unblock(self, index: int, address: str) -> None:
        """Remove a blackhole added by :meth:`block` (no error if it is gone)."""
        ns = self.namespace(index)
        _ip("-n", ns, "route", "del", "blackhole", f"{address}/32", check=False)
        self.blocked.discard((ns, address))

    def heal_all(self) -> None:
        """Remove every blackhole still in place."""
        for ns, address in list(self.blocked):
            _ip("-n", ns, "route", "del", "blackhole", f"{address}/32", check=False)
            self.blocked.discard((ns, address))

    def teardown(self) -> None:
        """Delete the namespaces and the bridge, release the lock; never raises."""
        if not self._up:
            return
        self._up = False
        with contextlib.suppress(Exception):
            cleanup_stale()
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                self._lock.close()
            self._lock = None


def cleanup_stale() -> list[str]:
    """Remove every ``pdchaos-n*`` namespace, ``pdcv*`` link and the ``pdchaos0`` bridge.

    Returns:
        What was removed (for the run log).
    """
    removed: list[str] = []
    res = _ip("netns", "list", check=False)
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NS_PREFIX):
            _ip("netns", "del", name, check=False)
            removed.append(f"netns {name}")
    res = _ip("-o", "link", "show", check=False)
    for line in res.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@", 1)[0]
        if name.startswith(VETH_HOST) or name == BRIDGE:
            _ip("link", "del", name, check=False)
            removed.append(f"link {name}")
    return removed


def _check_ours(address: str) -> None:
    if not address.startswith("10.213.0."):
        raise ValueError(f"refusing to touch {address}: outside 10.213.0.0/24")
