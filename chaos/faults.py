"""The fault injector: runs one fault at a time against the cluster and logs a FaultEvent each.

Every fault is undone before the method returns (restart, SIGCONT, route removed) and is followed
by a settle period; :meth:`FaultInjector.ensure_healthy` runs before each fault and restarts (and
logs as ``node_crash``) any node that died without being killed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from chaos.checks import FaultEvent
from chaos.cluster import HARNESS_ERRORS, ChaosError, EtcdHandle, NodeProc
from chaos.netns import ETCD_IP, NetnsLab, node_ip
from chaos.profiles import FaultTimings

Say = Callable[[str], None]


class FaultInjector:
    """Injects faults and records them in :attr:`log`.

    Args:
        nodes: the node handles (indices match the namespaces: node ``i`` is ``nodes[i-1]``).
        etcd: the etcd handle.
        lab: the namespaces, or ``None`` on loopback (partition faults are then refused).
        rng: the seeded RNG that picks victims.
        timings: durations.
        say: progress printer.
    """

    def __init__(
        self,
        nodes: list[NodeProc],
        etcd: EtcdHandle,
        lab: NetnsLab | None,
        rng: random.Random,
        timings: FaultTimings,
        say: Say,
    ) -> None:
        self.nodes = nodes
        self.etcd = etcd
        self.lab = lab
        self.rng = rng
        self.t = timings
        self.say = say
        self.log: list[FaultEvent] = []
        self.ready_timeout_s = timings.kill_down_s + 40.0

    # -- helpers ---------------------------------------------------------------------------------

    def live_members(self) -> tuple[str, ...]:
        """Ids of the nodes that run and are not stopped."""
        return tuple(n.node_id for n in self.nodes if n.is_running() and not n.paused)

    def ensure_healthy(self) -> None:
        """Restart (and log) any node that died on its own; wait until all are SERVING."""
        for n in self.nodes:
            if not n.is_running():
                code = n.returncode
                self.say(f"!! {n.node_id} is not running (exit code {code}); restarting it")
                self.log.append(
                    FaultEvent(
                        "node_crash",
                        n.node_id,
                        time.time(),
                        ok=False,
                        note=f"found dead with exit code {code}, see {n.log_path}",
                    )
                )
                n.start(wait=False)
        for n in self.nodes:
            n.wait_ready(self.ready_timeout_s)

    def settle(self, seconds: float) -> None:
        """Let the cluster run undisturbed."""
        time.sleep(seconds)

    def _victim(self) -> tuple[int, NodeProc]:
        i = self.rng.randrange(len(self.nodes))
        return i + 1, self.nodes[i]

    def _restart(self, node: NodeProc) -> str:
        """Start ``node`` and wait until SERVING; returns "" or an error note."""
        try:
            node.start(timeout_s=self.ready_timeout_s)
        except HARNESS_ERRORS as exc:
            return str(exc).splitlines()[0]
        return ""

    # -- faults ----------------------------------------------------------------------------------

    def run(self, kind: str) -> None:
        """Inject one fault of ``kind`` (see :data:`chaos.profiles.ALL_FAULTS`), then settle."""
        handler = getattr(self, f"fault_{kind}", None)
        if handler is None:
            raise ValueError(f"unknown fault {kind!r}")
        self.ensure_healthy()
        handler()

    def fault_kill9(self) -> None:
        """SIGKILL a random node, keep it down past its lease, restart it (same id and port)."""
        _, node = self._victim()
        members = self.live_members()
        at = time.time()
        node.kill()
        self.say(f"kill9 {node.node_id}; down {self.t.kill_down_s:.0f}s")
        time.sleep(self.t.kill_down_s)
        err = self._restart(node)
        self.log.append(FaultEvent("kill9", node.node_id, at, time.time(), members, not err, err))
        self.settle(self.t.settle_s)

    def fault_sigstop(self) -> None:
        """SIGSTOP a random node for longer than the lease TTL, then SIGCONT it."""
        _, node = self._victim()
        members = self.live_members()
        at = time.time()
        node.pause()
        self.say(f"sigstop {node.node_id}; stopped {self.t.stop_s:.0f}s")
        time.sleep(self.t.stop_s)
        node.resume()
        self.log.append(FaultEvent("sigstop", node.node_id, at, time.time(), members))
        self.settle(self.t.settle_s)

    def fault_rolling_restart(self) -> None:
        """SIGTERM each node in turn (expect a drain and exit 0), restart it, wait for SERVING."""
        for node in self.nodes:
            members = self.live_members()
            at = time.time()
            code: int | None
            try:
                code = node.terminate(self.t.terminate_timeout_s)
            except TimeoutError:  # it was SIGKILLed
                code = None
            stopped_s = time.time() - at
            self.say(f"rolling_restart {node.node_id}: exit {code} after {stopped_s:.1f}s")
            notes = []
            if code != 0:
                notes.append(
                    f"exit code {code} after SIGTERM"
                    if code is not None
                    else f"still running {self.t.terminate_timeout_s:.0f}s after SIGTERM"
                )
            err = self._restart(node)
            if err:
                notes.append(err)
            self.log.append(
                FaultEvent(
                    "rolling_restart",
                    node.node_id,
                    at,
                    time.time(),
                    members,
                    not notes,
                    "; ".join(notes) or f"exit 0 after {stopped_s:.1f}s",
                )
            )
            self.settle(self.t.rolling_settle_s)
        self.settle(self.t.settle_s / 2)

    def fault_etcd_restart(self) -> None:
        """Kill etcd (the only member, or a random one of several) and restart it."""
        index = self.rng.randrange(self.etcd.members)
        target = "etcd" if self.etcd.members == 1 else f"etcd[{index}]"
        at = time.time()
        self.etcd.kill(index)
        self.say(f"etcd_restart {target}; down {self.t.etcd_down_s:.0f}s")
        time.sleep(self.t.etcd_down_s)
        err = self._start_etcd(index)
        self.log.append(
            FaultEvent("etcd_restart", target, at, time.time(), self.live_members(), not err, err)
        )
        self.settle(self.t.settle_s)

    def fault_etcd_leader_kill(self) -> None:
        """Kill the etcd leader (several members only), restart it later."""
        index = self.etcd.leader_index()
        at = time.time()
        self.etcd.kill(index)
        self.say(f"etcd_leader_kill etcd[{index}]; down {self.t.leader_down_s:.0f}s")
        time.sleep(self.t.leader_down_s)
        err = self._start_etcd(index)
        self.log.append(
            FaultEvent(
                "etcd_leader_kill", f"etcd[{index}]", at, time.time(), self.live_members(),
                not err, err,
            )
        )  # fmt: skip
        self.settle(self.t.settle_s)

    def fault_partition_node_etcd(self) -> None:
        """Cut a random node off etcd for longer than the lease TTL, then heal."""
        lab = self._lab()
        index, node = self._victim()
        members = self.live_members()
        at = time.time()
        lab.block(index, ETCD_IP)
        self.say(f"partition_node_etcd {node.node_id}; cut {self.t.partition_s:.0f}s")
        time.sleep(self.t.partition_s)
        lab.unblock(index, ETCD_IP)
        self.log.append(FaultEvent("partition_node_etcd", node.node_id, at, time.time(), members))
        self.settle(self.t.settle_s)

    def fault_partition_node_node(self) -> None:
        """Cut a random node off every other node (both directions; etcd stays reachable)."""
        lab = self._lab()
        index, node = self._victim()
        members = self.live_members()
        at = time.time()
        for j in range(1, len(self.nodes) + 1):
            if j != index:
                lab.block(index, node_ip(j))
                lab.block(j, node_ip(index))
        self.say(f"partition_node_node {node.node_id}; cut {self.t.partition_s:.0f}s")
        time.sleep(self.t.partition_s)
        lab.heal_all()
        self.log.append(FaultEvent("partition_node_node", node.node_id, at, time.time(), members))
        self.settle(self.t.settle_s)

    def _lab(self) -> NetnsLab:
        if self.lab is None:
            raise ChaosError("partition faults need network namespaces")
        return self.lab

    def _start_etcd(self, index: int) -> str:
        try:
            self.etcd.start_member(index)
        except Exception as exc:
            return f"etcd restart failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        return ""
