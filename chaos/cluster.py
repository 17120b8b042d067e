"""Process handles: ``peerd serve`` nodes and etcd (one member, or a 3-member cluster).

:class:`NodeProc` runs one node with a stable id, address and log file across restarts
(optionally inside a network namespace, through ``ip netns exec``, which execs in place so the
pid is the node's). :class:`EtcdHandle` gives the fault injector one interface over
:class:`peerd.devtools.etcd_server.EmbeddedEtcd` and the (lazily imported)
:class:`peerd.devtools.etcd_cluster.EtcdCluster`.

Every child runs in its own session and gets SIGKILL if the harness dies
(:func:`peerd.devtools.spawn.parent_death_preexec`); spawn from the main thread.
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Any

from peerd.devtools.etcd_server import EmbeddedEtcd
from peerd.devtools.process import PeerdProcess, ProcessError


class ChaosError(RuntimeError):
    """The harness itself could not do what it needed (not a finding about peerd)."""


HARNESS_ERRORS = (ChaosError, ProcessError, TimeoutError)
"""What the harness raises when it cannot go on: its own errors, and a node that will not start
(:class:`ProcessError`: exited while starting; :class:`TimeoutError`: not SERVING in time)."""


_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy")


class NodeProc(PeerdProcess):
    """One ``peerd serve`` process of a chaos run, optionally inside a network namespace.

    It adds to :class:`PeerdProcess` the namespace (``ip netns exec NAME`` in front of the
    command; the node then listens on and advertises the namespace's address), JSON logs, no
    HTTP proxy variables in the node's environment (deliveries go straight to the sink), and the
    ``--- chaos: starting ...`` banner that :func:`chaos.report.scan_log` skips.

    Args:
        node_id: ``--node-id``.
        host: address to listen on and advertise (loopback, or the namespace's IP).
        port: gRPC port, the same on every restart.
        etcd_csv: ``--etcd``.
        cluster: ``--cluster``.
        lease_ttl_s: ``--lease-ttl``.
        workdir: where the log goes (and the node's working directory).
        runs_keep: ``--runs-keep`` (large enough to hold the whole run).
        netns: run inside this network namespace (``ip netns exec``), or ``None``.
    """

    def __init__(
        self,
        node_id: str,
        host: str,
        port: int,
        etcd_csv: str,
        cluster: str,
        lease_ttl_s: int,
        workdir: Path,
        runs_keep: int,
        netns: str | None = None,
    ) -> None:
        super().__init__(
            node_id,
            etcd_csv,
            cluster,
            workdir,
            lease_ttl_s=lease_ttl_s,
            host=host,
            port=port,
            settings={"advertise": f"{host}:{port}", "runs_keep": runs_keep, "log_format": "json"},
            env=dict.fromkeys(_PROXY_VARS),
            command_prefix=["ip", "netns", "exec", netns] if netns is not None else [],
            label="chaos",
            cwd=workdir,
        )
        self.netns = netns


class EtcdHandle:
    """etcd for a chaos run: one :class:`EmbeddedEtcd`, or an ``EtcdCluster`` of ``members``.

    ``EtcdCluster`` is imported only when more than one member is asked for; when it cannot be
    imported or built, :attr:`fallback_reason` says why and a single member is used instead.

    Args:
        members: 1 or 3.
        host: the address etcd listens on.
        workdir: data and logs go under ``workdir/etcd``.
    """

    def __init__(self, members: int, host: str, workdir: Path) -> None:
        self.host = host
        self.workdir = workdir
        self.fallback_reason = ""
        self._single: EmbeddedEtcd | None = None
        self._cluster: Any = None
        if members > 1:
            try:
                self._cluster = _make_cluster(members, host, workdir / "etcd")
            except Exception as exc:  # ImportError, or an API still in flux
                self.fallback_reason = f"EtcdCluster unavailable ({type(exc).__name__}: {exc})"
        if self._cluster is None:
            self._single = self._make_single()

    @property
    def members(self) -> int:
        """How many members actually run."""
        return 1 if self._cluster is None else len(self.endpoints)

    @property
    def endpoints(self) -> list[str]:
        """Client endpoints, ``HOST:PORT`` each."""
        if self._cluster is not None:
            return list(self._cluster.endpoints)
        assert self._single is not None
        return [self._single.endpoint]

    @property
    def endpoint_csv(self) -> str:
        """The endpoints joined with commas, for ``--etcd``."""
        return ",".join(self.endpoints)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every member and wait until healthy.

        A cluster that fails to start is stopped and replaced by a single member
        (:attr:`fallback_reason` says why).
        """
        if self._cluster is not None:
            try:
                self._cluster.start(timeout_s=timeout_s)
                return
            except Exception as exc:
                with contextlib.suppress(Exception):
                    self._cluster.stop()
                self._cluster = None
                self.fallback_reason = f"EtcdCluster failed to start ({type(exc).__name__}: {exc})"
                self._single = self._make_single()
        assert self._single is not None
        self._single.start(timeout_s=timeout_s)

    def _make_single(self) -> EmbeddedEtcd:
        return EmbeddedEtcd(
            self.workdir / "etcd-single" / "data",
            name="chaos",
            host=self.host,
            log_path=self.workdir / "etcd.log",
        )

    def stop(self) -> None:
        """Stop every member (data is kept in the workdir); never raises."""
        with contextlib.suppress(Exception):
            if self._cluster is not None:
                self._cluster.stop()
            elif self._single is not None:
                self._single.stop()

    def leader_index(self) -> int:
        """The index of the current leader (0 with a single member)."""
        return int(self._cluster.leader_index()) if self._cluster is not None else 0

    def kill(self, index: int) -> None:
        """SIGKILL one member (the only one when single)."""
        if self._cluster is not None:
            self._cluster.kill(index)
        else:
            assert self._single is not None
            self._single.kill()

    def start_member(self, index: int, timeout_s: float = 30.0) -> None:
        """Restart a killed member on its old ports and data."""
        if self._cluster is not None:
            if "timeout_s" in inspect.signature(self._cluster.start_member).parameters:
                self._cluster.start_member(index, timeout_s=timeout_s)
            else:
                self._cluster.start_member(index)
        else:
            assert self._single is not None
            self._single.start(timeout_s=timeout_s)


def _make_cluster(members: int, host: str, root: Path) -> Any:
    """Build an ``EtcdCluster``, passing only the keyword arguments its signature accepts."""
    from peerd.devtools.etcd_cluster import EtcdCluster as cls

    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "host" in params:
        kwargs["host"] = host
    elif host != "127.0.0.1":
        raise TypeError("EtcdCluster takes no host= argument; cannot listen on the bridge")
    for name in ("root", "data_dir", "base_dir", "workdir", "root_dir"):
        if name in params:
            kwargs[name] = root
            break
    for name in ("log_dir",):
        if name in params:
            kwargs[name] = root
    for name in ("n", "size", "members"):
        if name in params:
            kwargs[name] = members
            return cls(**kwargs)
    return cls(members, **kwargs)
