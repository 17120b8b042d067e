"""Secure by default (issue 11, items 1-3): 3 real nodes serving mutual TLS under an auth
policy, on a real etcd that requires client certificates, TLS and auth, the nodes logging in as
an etcd user limited to their cluster's prefix.

Principals: tokens (viewer, payments operator, admin) presented over a client certificate that
the policy does not list (it only admits the connection), and a certificate principal (alice,
admin). A second CA stands for an outsider.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from peerd.client import SchedulerClient
from peerd.coord.etcd import Etcd
from peerd.coord.etcd_channel import EtcdSecurity
from peerd.core.policy import token_sha256
from peerd.devtools.etcd_server import EtcdServerTls
from peerd.errors import PeerdError, Unavailable
from peerd.security.authn import new_token
from peerd.security.certs import write_set
from peerd.security.tls import ClientTls
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import peer_pb2_grpc as ppb_grpc
from peerd.v1 import scheduler_pb2 as pb
from tests.conftest import running_etcd
from tests.helpers import PeerdNode, assert_eventually

CLUSTER = "sec"
PREFIX = f"/peerd/{CLUSTER}/".encode()
NODES = ("node0", "node1", "node2")
ETCD_PASSWORD = "peerd-password"


@dataclasses.dataclass
class Secure:
    """The running secure cluster and its credentials."""

    pki: Path
    rogue: Path
    nodes: list[PeerdNode]
    tokens: dict[str, str]
    etcd_endpoint: str
    etcd_security: EtcdSecurity

    def tls(self, name: str, pki: Path | None = None) -> ClientTls:
        d = pki or self.pki
        return ClientTls(self.pki / "ca.pem", d / f"{name}.pem", d / f"{name}-key.pem")

    def client(
        self, token: str | None = None, cert: str = "gateway", node: int = 0
    ) -> SchedulerClient:
        tok = self.tokens[token] if token is not None else None
        return SchedulerClient(self.nodes[node].address, 10.0, self.tls(cert), tok)


def _policy(tokens: dict[str, str]) -> str:
    def principal(name: str, role: str, tasks: str, cred: str) -> str:
        grant = f'grants = [{{ role = "{role}", tasks = ["{tasks}"] }}]'
        return f'[[principals]]\nname = "{name}"\n{cred}\n{grant}\n'

    def token(name: str) -> str:
        return f'token_sha256 = ["{token_sha256(tokens[name])}"]'

    return "\n".join(
        [
            principal("viewer-bot", "viewer", "*", token("viewer")),
            principal("payments-ci", "operator", "payments-", token("payments")),
            principal("ops", "admin", "*", token("admin")),
            principal("alice", "admin", "*", 'certificate = ["alice"]'),
        ]
    )


def _node_settings(pki: Path, node: str, policy: Path, password: Path) -> dict[str, str]:
    return {
        "tls_cert": str(pki / f"{node}.pem"),
        "tls_key": str(pki / f"{node}-key.pem"),
        "tls_client_ca": str(pki / "ca.pem"),
        "auth_policy": str(policy),
        "etcd_cacert": str(pki / "ca.pem"),
        "etcd_cert": str(pki / "peerd.pem"),
        "etcd_key": str(pki / "peerd-key.pem"),
        "etcd_user": "peerd",
        "etcd_password_file": str(password),
    }


async def _lock_down_etcd(endpoint: str, pki: Path) -> None:
    """As root (client certificate CN=root): user ``peerd`` limited to the prefix, auth on."""
    root = Etcd(
        [endpoint], security=EtcdSecurity(pki / "ca.pem", pki / "root.pem", pki / "root-key.pem")
    )
    try:
        await root.add_prefix_user("peerd", ETCD_PASSWORD, PREFIX)
        await root.enable_auth("root-password")
    finally:
        await root.close()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    root = tmp_path_factory.mktemp("secure")
    pki, rogue, now = root / "pki", root / "rogue", datetime.now(UTC)
    write_set(pki, now, nodes={n: [] for n in NODES}, servers={"etcd": []},
              clients=["alice", "gateway", "root", "peerd"])  # fmt: skip
    write_set(rogue, now, nodes={"node9": []}, clients=["mallory"], ca_name="rogue CA")
    tokens = {name: new_token() for name in ("viewer", "payments", "admin")}
    policy = root / "policy.toml"
    policy.write_text(_policy(tokens))
    password = root / "etcd-password"
    password.write_text(ETCD_PASSWORD + "\n")
    etcd_tls = EtcdServerTls(pki / "ca.pem", pki / "etcd.pem", pki / "etcd-key.pem", True,
                             pki / "root.pem", pki / "root-key.pem")  # fmt: skip
    with running_etcd(root / "etcd", name="peerd-secure", tls=etcd_tls) as etcd:
        asyncio.run(_lock_down_etcd(etcd.endpoint, pki))
        nodes = [
            PeerdNode(n, etcd.endpoint, CLUSTER, root, allow_shell=["/bin/true*"],
                      settings=_node_settings(pki, n, policy, password),
                      tls=ClientTls(pki / "ca.pem", pki / f"{n}.pem", pki / f"{n}-key.pem"))
            for n in NODES
        ]  # fmt: skip
        try:
            for node in nodes:
                node.start(wait=False)
            for node in nodes:
                node.wait_ready(30)
            security = EtcdSecurity(pki / "ca.pem", pki / "peerd.pem",
                                    pki / "peerd-key.pem", "peerd", password)  # fmt: skip
            yield Secure(pki, rogue, nodes, tokens, etcd.endpoint, security)
        finally:
            for node in nodes:
                node.stop(10)


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    err = info.value
    assert isinstance(err, grpc.Call)
    return err.code(), err.details() or ""


def _http(task_id: str) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url="http://127.0.0.1:9/hook"), paused=True)
    spec.schedule.every.FromSeconds(60)
    return spec


def _shell(task_id: str) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, shell=pb.ShellTarget(argv=["/bin/true"]), paused=True)
    spec.schedule.every.FromSeconds(60)
    return spec


def test_the_cluster_forms_over_mutual_tls_on_a_locked_down_etcd(secure: Secure) -> None:
    with secure.client("admin") as admin:

        def all_alive() -> None:
            members = admin.get_cluster().members
            assert sorted(m.node_id for m in members) == list(NODES)
            assert not any(m.suspected_dead for m in members)

        assert_eventually(all_alive, timeout=15)
        me = admin.who_am_i()
        assert (me.principal, me.source) == ("ops", "token")
    with secure.client(cert="alice") as alice:
        me = alice.who_am_i()
        assert (me.principal, me.source) == ("alice", "certificate")
        alice.create_task(_shell("alice-shell"))  # an admin may create shell tasks
        alice.delete_task("alice-shell")


def test_plaintext_and_certificateless_clients_are_refused(secure: Secure) -> None:
    address = secure.nodes[0].address
    with SchedulerClient(address, 5.0) as plain:
        code, _ = _code(plain.get_cluster)
    assert code == grpc.StatusCode.UNAVAILABLE
    no_cert = ClientTls(secure.pki / "ca.pem")
    with SchedulerClient(address, 5.0, no_cert, secure.tokens["admin"]) as client:
        code, _ = _code(client.get_cluster)
    assert code == grpc.StatusCode.UNAVAILABLE
    outsider = ClientTls(secure.pki / "ca.pem", secure.rogue / "mallory.pem",
                         secure.rogue / "mallory-key.pem")  # fmt: skip
    with SchedulerClient(address, 5.0, outsider, secure.tokens["admin"]) as client:
        code, _ = _code(client.get_cluster)
    assert code == grpc.StatusCode.UNAVAILABLE


def test_unauthenticated_and_grantless_callers(secure: Secure) -> None:
    with secure.client() as gateway:  # a certificate of the cluster CA the policy does not list
        code, details = _code(gateway.list_tasks)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "principal 'gateway' lacks permission 'read'" in details
    with SchedulerClient(secure.nodes[1].address, 5.0, secure.tls("gateway"), "peerd_wrong") as c:
        code, details = _code(c.list_tasks)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "unknown bearer token" in details


def test_a_viewer_cannot_create(secure: Secure) -> None:
    with secure.client("admin") as admin:
        admin.create_task(_http("viewer-sees-this"))
    with secure.client("viewer") as viewer:
        assert "viewer-sees-this" in [t.id for t in viewer.list_tasks()]
        code, details = _code(lambda: viewer.create_task(_http("viewer-made")))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == "principal 'viewer-bot' lacks permission 'write' on task 'viewer-made'"
        code, _ = _code(lambda: viewer.delete_task("viewer-sees-this"))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    with secure.client("admin") as admin:
        assert "viewer-made" not in [t.id for t in admin.list_tasks()]
        admin.delete_task("viewer-sees-this")


def test_a_scoped_operator_cannot_touch_another_teams_tasks(secure: Secure) -> None:
    with secure.client("admin", node=1) as admin:
        admin.create_task(_http("billing-export"))
        admin.create_task(_shell("payments-shell"))
    with secure.client("payments", node=2) as ops:
        ops.create_task(_http("payments-nightly"))
        ops.pause_task("payments-nightly", "maintenance")
        assert [t.id for t in ops.list_tasks()] == ["payments-nightly", "payments-shell"]
        for call in (
            lambda: ops.get_task("billing-export"),
            lambda: ops.delete_task("billing-export"),
            lambda: ops.pause_task("billing-export"),
            lambda: ops.trigger_task("billing-export"),
            lambda: ops.list_runs("billing-export", 5),
            lambda: ops.create_task(_http("billing-sneaky")),
        ):
            code, details = _code(call)
            assert code == grpc.StatusCode.PERMISSION_DENIED, details
            assert "principal 'payments-ci' lacks permission" in details and "billing-" in details
        # operators run no commands: neither a new shell task nor an admin's one
        code, details = _code(lambda: ops.create_task(_shell("payments-sh")))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == "principal 'payments-ci' lacks permission 'shell' on task 'payments-sh'"
        code, details = _code(lambda: ops.trigger_task("payments-shell"))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "'shell'" in details
        ops.delete_task("payments-nightly")
    with secure.client("admin") as admin:
        admin.delete_task("billing-export")
        admin.delete_task("payments-shell")
    log = secure.nodes[2].log_text()
    assert '"principal": "payments-ci"' in log and '"event": "api_write"' in log
    assert '"method": "PauseTask", "task_ids": ["payments-nightly"]' in log


def test_watch_is_filtered_to_the_callers_tasks(secure: Secure) -> None:
    with secure.client("admin") as admin:
        admin.create_task(_http("billing-watched"))
        admin.create_task(_http("payments-watched"))
        admin.trigger_task("billing-watched")  # written first: replayed first
        admin.trigger_task("payments-watched")
    seen: list[str] = []
    with secure.client("payments") as ops:
        stream = ops.watch_runs("", 1000)
        for record in stream:
            seen.append(record.task_id)
            if record.task_id == "payments-watched":
                stream.cancel()
                break
    assert "payments-watched" in seen and not any(t.startswith("billing-") for t in seen)
    with secure.client("admin") as admin:
        admin.delete_task("billing-watched")
        admin.delete_task("payments-watched")


def _ping(address: str, tls: ClientTls, from_node: str) -> tuple[grpc.StatusCode, str]:
    with grpc.secure_channel(address, tls.credentials()) as channel:
        stub = ppb_grpc.PeerStub(channel)
        try:
            stub.Ping(ppb.PingRequest(from_node=from_node), timeout=5)
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def test_only_node_certificates_of_the_cluster_ca_speak_peer(secure: Secure) -> None:
    address = secure.nodes[0].address
    assert _ping(address, secure.tls("node1"), "node1")[0] == grpc.StatusCode.OK
    code, details = _ping(address, secure.tls("node1"), "node2")
    assert code == grpc.StatusCode.PERMISSION_DENIED and "cannot speak for 'node2'" in details
    code, details = _ping(address, secure.tls("alice"), "node1")  # a user, not a node
    assert code == grpc.StatusCode.UNAUTHENTICATED and "node certificate" in details
    code, _ = _ping(address, secure.tls("node9", secure.rogue), "node9")
    assert code == grpc.StatusCode.UNAVAILABLE  # refused in the TLS handshake


def test_a_peer_with_a_certificate_from_another_ca_cannot_join(
    secure: Secure, tmp_path: Path
) -> None:
    rogue, pki = secure.rogue, secure.pki
    settings = _node_settings(pki, "node0", Path(secure.nodes[0].settings["auth_policy"]),
                              Path(secure.nodes[0].settings["etcd_password_file"]))  # fmt: skip
    settings.update(
        tls_cert=str(rogue / "node9.pem"),
        tls_key=str(rogue / "node9-key.pem"),
        tls_client_ca=str(rogue / "ca.pem"),
    )
    intruder = PeerdNode("node9", secure.etcd_endpoint, CLUSTER, tmp_path, settings=settings,
                         tls=ClientTls(rogue / "ca.pem", rogue / "node9.pem",
                                       rogue / "node9-key.pem"))  # fmt: skip
    intruder.start(wait=True, timeout_s=30)
    try:
        with secure.client("admin") as admin:

            def shunned() -> None:
                members = {m.node_id: m for m in admin.get_cluster().members}
                assert "node9" in members, "it holds the cluster's etcd credentials"
                assert members["node9"].suspected_dead  # no peer accepts it or reaches it
                assert members["node9"].owned_tasks == 0

            assert_eventually(shunned, timeout=20)
    finally:
        intruder.stop(10)


def test_etcd_user_is_limited_to_the_prefix(secure: Secure) -> None:
    async def main() -> None:
        etcd = Etcd([secure.etcd_endpoint], security=secure.etcd_security)
        try:
            assert await etcd.get(PREFIX + b"members/node0") is not None
            with pytest.raises(PeerdError, match="permission denied"):
                await etcd.put(b"/peerd/other-cluster/x", b"1")
            with pytest.raises(PeerdError, match="permission denied"):
                await etcd.get(b"/elsewhere")
        finally:
            await etcd.close()
        plain = Etcd([secure.etcd_endpoint], timeout_s=2.0)
        try:
            with pytest.raises(Unavailable):  # no TLS, no client certificate: refused
                await plain.get(PREFIX)
        finally:
            await plain.close()

    asyncio.run(main())
