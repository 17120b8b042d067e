"""Secure by default (issue 11, items 1-3): 3 real nodes serving mutual TLS under an auth
policy, on a real etcd that requires client certificates, TLS and auth, the nodes logging in as
an etcd user limited to their cluster's prefix.

Principals: tokens (viewer, payments operator, admin) presented over a client certificate that
the policy does not list (it only admits the connection), and a certificate principal (alice,
admin). A second CA stands for an outsider. The nodes keep the default target policy (link-local
and cloud metadata addresses denied) and read the secret ``PAYMENTS_TOKEN`` from a secrets file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import uuid
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
from peerd.devtools.sink import WebhookSink
from peerd.errors import PeerdError, Unavailable
from peerd.security.authn import new_token
from peerd.security.certs import write_set
from peerd.security.tls import ClientTls
from peerd.v1 import peer_pb2 as ppb
from peerd.v1 import peer_pb2_grpc as ppb_grpc
from peerd.v1 import scheduler_pb2 as pb
from tests.conftest import running_etcd
from tests.helpers import PeerdNode, assert_eventually, cli, keyspace

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
    secret: str
    """The value of the secret ``PAYMENTS_TOKEN`` in every node's secrets file."""

    def tls(self, name: str, pki: Path | None = None) -> ClientTls:
        d = pki or self.pki
        return ClientTls(self.pki / "ca.pem", d / f"{name}.pem", d / f"{name}-key.pem")

    def client(
        self, token: str | None = None, cert: str = "gateway", node: int = 0
    ) -> SchedulerClient:
        tok = self.tokens[token] if token is not None else None
        return SchedulerClient(self.nodes[node].address, 10.0, self.tls(cert), tok)

    def cli_env(self, token: str) -> dict[str, str]:
        """The environment of a ``peerd`` CLI calling with the gateway certificate and ``token``."""
        tls = self.tls("gateway")
        return {"PEERD_CA": str(tls.ca), "PEERD_CERT": str(tls.cert), "PEERD_KEY": str(tls.key),
                "PEERD_TOKEN": self.tokens[token]}  # fmt: skip

    def whole_etcd(self) -> list[tuple[bytes, bytes, int]]:
        """Every key in etcd, read as etcd's root user (client certificate CN=root)."""
        root = EtcdSecurity(self.pki / "ca.pem", self.pki / "root.pem", self.pki / "root-key.pem")
        return keyspace(self.etcd_endpoint, b"", root)


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
    secret = f"tok-{uuid.uuid4().hex}"
    secrets = root / "secrets.toml"
    secrets.write_text(f'PAYMENTS_TOKEN = "{secret}"\n')
    secrets.chmod(0o600)
    etcd_tls = EtcdServerTls(pki / "ca.pem", pki / "etcd.pem", pki / "etcd-key.pem", True,
                             pki / "root.pem", pki / "root-key.pem")  # fmt: skip
    with running_etcd(root / "etcd", name="peerd-secure", tls=etcd_tls) as etcd:
        asyncio.run(_lock_down_etcd(etcd.endpoint, pki))
        nodes = [
            PeerdNode(n, etcd.endpoint, CLUSTER, root, allow_shell=["/bin/true*"],
                      settings={**_node_settings(pki, n, policy, password),
                                "secrets_file": str(secrets)},
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
            yield Secure(pki, rogue, nodes, tokens, etcd.endpoint, security, secret)
        finally:
            for node in nodes:
                node.stop(10)


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    err = info.value
    assert isinstance(err, grpc.Call)
    return err.code(), err.details() or ""


def _http(task_id: str, url: str = "http://127.0.0.1:9/hook") -> pb.TaskSpec:
    spec = pb.TaskSpec(id=task_id, http=pb.HttpTarget(url=url), paused=True)
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


METADATA_RULE = "denied by --http-deny 169.254.0.0/16 (built-in: link-local, cloud metadata)"


def test_a_metadata_address_webhook_is_rejected(secure: Secure) -> None:
    aws = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    with secure.client("payments", node=1) as ops, secure.client("admin", node=2) as admin:
        code, details = _code(lambda: ops.create_task(_http("payments-meta", aws)))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details.startswith("task.http.url:") and METADATA_RULE in details
        # the policy is the node's, not the caller's: an admin is refused too
        code, details = _code(lambda: admin.create_task(_http("meta6", "http://[fd00:ec2::254]/")))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "fd00:ec2::254" in details
        # checked again on update: an allowed webhook cannot be pointed at the metadata address
        created = ops.create_task(_http("payments-hook"))
        moved = _http("payments-hook", aws)
        code, details = _code(lambda: ops.update_task(moved, created.revision))
        assert code == grpc.StatusCode.PERMISSION_DENIED and METADATA_RULE in details
        assert ops.get_task("payments-hook").http.url == "http://127.0.0.1:9/hook"
        for task_id in ("payments-meta", "meta6"):
            assert _code(functools.partial(admin.get_task, task_id))[0] == grpc.StatusCode.NOT_FOUND
        ops.delete_task("payments-hook")
    stored = b"\n".join(key + b"=" + value for key, value, _ in secure.whole_etcd())
    assert b"169.254.169.254" not in stored and b"fd00:ec2::254" not in stored


def test_a_secret_never_appears_in_etcd_or_task_get(secure: Secure, sink: WebhookSink) -> None:
    secret, literal = secure.secret, f"Bearer lit-{uuid.uuid4().hex}"
    charge = _http("payments-charge", f"{sink.url}/charge")
    charge.http.header_secrets["Authorization"] = "PAYMENTS_TOKEN"
    legacy = _http("payments-legacy", f"{sink.url}/legacy")
    legacy.http.headers["Authorization"] = literal
    with secure.client("payments", node=0) as ops:
        ops.create_task(charge)
        ops.create_task(legacy)
        for node in (1, 2):  # a trigger runs on the answering node: each reads its own file
            with secure.client("payments", node=node) as there:
                there.trigger_task("payments-charge")

        def delivered() -> list[pb.RunRecord]:
            runs = ops.list_runs("payments-charge", 10)
            assert [pb.RunStatus.Name(r.status) for r in runs] == ["SUCCEEDED"] * 2, runs
            return runs

        runs = assert_eventually(delivered, timeout=20)
        assert sorted(r.node_id for r in runs) == ["node1", "node2"]
        deliveries = [d for d in sink.deliveries() if d.path == "/charge"]
        assert [d.headers["authorization"] for d in deliveries] == [secret, secret]

        answer = ops.get_task("payments-charge")
        assert dict(answer.http.header_secrets) == {"Authorization": "PAYMENTS_TOKEN"}
        assert "authorization" not in {h.lower() for h in answer.http.headers}
        answers = [answer, *ops.list_tasks()]
        assert secret.encode() not in b"".join(m.SerializeToString() for m in [*answers, *runs])

    # task get through the CLI, as the operator: the reference, never the value
    shown = cli(secure.nodes[1], "task", "get", "payments-charge", "-o", "json",
                env=secure.cli_env("payments"))  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert secret not in shown.stdout
    assert json.loads(shown.stdout)["http"]["header_secrets"] == {"Authorization": "PAYMENTS_TOKEN"}

    # a literal credential: stored (it has to be sent) but shown in full to admins only
    for who in ("payments", "viewer"):
        with secure.client(who, node=2) as reader:
            assert reader.get_task("payments-legacy").http.headers["Authorization"] == "<redacted>"
    with secure.client("admin") as admin, secure.client(cert="alice", node=1) as alice:
        for reader in (admin, alice):
            assert reader.get_task("payments-legacy").http.headers["Authorization"] == literal

        stored = b"\n".join(key + b"=" + value for key, value, _ in secure.whole_etcd())
        assert b"PAYMENTS_TOKEN" in stored and literal.encode() in stored  # the tasks are there
        assert secret.encode() not in stored  # ... and the secret is not
        admin.delete_task("payments-charge")
        admin.delete_task("payments-legacy")
    for node in secure.nodes:
        assert secret not in node.log_text()


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
