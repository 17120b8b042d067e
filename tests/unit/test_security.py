"""Certificates, TLS files, authentication and the security settings (no network)."""

from __future__ import annotations

import asyncio
import io
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from peerd.client import open_channel
from peerd.config import build_config, check_security
from peerd.core.policy import UNRESTRICTED, Permission, token_sha256
from peerd.errors import InvalidArgument, Unauthenticated
from peerd.node_servers import is_loopback
from peerd.rpc.auth import SCHEDULER
from peerd.security.authn import Authenticator, bearer_token, new_token
from peerd.security.certs import node_uri, write_set
from peerd.security.tls import ClientTls, ServerTls, load_pair
from peerd.v1 import scheduler_pb2 as pb

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    write_set(d, NOW, nodes={"node0": ["peerd1"]}, clients=["alice"], servers={"etcd": ["etcd1"]})
    return d


def test_node_certificate_shape(pki: Path) -> None:
    cert = x509.load_pem_x509_certificate((pki / "node0.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [node_uri("node0")]
    assert {"node0", "localhost", "peerd1"} <= set(san.get_values_for_type(x509.DNSName))
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    client = x509.load_pem_x509_certificate((pki / "alice.pem").read_bytes())
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert stat.S_IMODE((pki / "alice-key.pem").stat().st_mode) == 0o600
    assert cert.not_valid_before_utc < NOW  # a little clock skew is tolerated


def test_write_set_reuses_the_ca(pki: Path) -> None:
    ca_before = (pki / "ca.pem").read_bytes()
    made, files = write_set(pki, NOW, clients=["bob"])
    assert not made and (pki / "ca.pem").read_bytes() == ca_before
    bob = x509.load_pem_x509_certificate(files["bob"].cert.read_bytes())
    assert bob.issuer == x509.load_pem_x509_certificate(ca_before).subject


def test_load_pair_names_the_flag(pki: Path, tmp_path: Path) -> None:
    flags = ("--tls-cert", "--tls-key", "--tls-client-ca")
    pair = load_pair(pki / "node0.pem", pki / "node0-key.pem", pki / "ca.pem", flags)
    assert pair.ca_pem == (pki / "ca.pem").read_bytes()
    with pytest.raises(InvalidArgument, match="not the key of the certificate") as info:
        load_pair(pki / "node0.pem", pki / "alice-key.pem", None, flags)
    assert info.value.field == "--tls-key"
    with pytest.raises(InvalidArgument, match="cannot read") as info:
        load_pair(tmp_path / "missing.pem", pki / "node0-key.pem", None, flags)
    assert info.value.field == "--tls-cert"
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(InvalidArgument, match="not a PEM certificate") as info:
        load_pair(pki / "node0.pem", pki / "node0-key.pem", junk, flags)
    assert info.value.field == "--tls-client-ca"


def test_server_tls_reload_is_fetched_once_and_rejects_bad_files(pki: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "n.pem", tmp_path / "n-key.pem"
    cert.write_bytes((pki / "node0.pem").read_bytes())
    key.write_bytes((pki / "node0-key.pem").read_bytes())
    tls = ServerTls(cert, key, pki / "ca.pem")
    assert tls.mutual and tls.fetch() is None
    _, files = write_set(tmp_path / "other", NOW, nodes={"node0": []})
    cert.write_bytes(files["node0"].cert.read_bytes())
    key.write_bytes(files["node0"].key.read_bytes())
    tls.reload()
    assert tls.pair.cert_pem == files["node0"].cert.read_bytes()
    assert tls.fetch() is not None and tls.fetch() is None  # handed to gRPC once
    key.write_bytes((pki / "alice-key.pem").read_bytes())  # a half-finished rotation
    with pytest.raises(InvalidArgument):
        tls.reload()
    assert tls.pair.cert_pem == files["node0"].cert.read_bytes() and tls.fetch() is None


def test_new_token() -> None:
    token = new_token(lambda n: bytes(range(n)))
    assert token.startswith("peerd_") and len(token) == 49
    assert new_token() != new_token()


def test_bearer_token_metadata() -> None:
    assert bearer_token([("x-other", "1"), ("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("authorization", b"bearer  abc ")]) == "abc"
    assert bearer_token([]) is None
    with pytest.raises(Unauthenticated, match="Bearer"):
        bearer_token([("authorization", "Basic dXNlcjpwdw==")])


def _write_policy(path: Path, extra: str = "") -> str:
    token = new_token()
    path.write_text(
        f'[[principals]]\nname = "ci"\ntoken_sha256 = ["{token_sha256(token)}"]\n'
        'grants = [{ role = "viewer", tasks = ["*"] }]\n'
        '[[principals]]\nname = "alice"\ncertificate = ["alice"]\n'
        'grants = [{ role = "admin", tasks = ["*"] }]\n' + extra
    )
    return token


def test_authenticator(tmp_path: Path) -> None:
    async def main() -> None:
        assert await Authenticator(None).authenticate([], []) is UNRESTRICTED
        policy = tmp_path / "policy.toml"
        token = _write_policy(policy)
        authn = Authenticator(policy)
        by_token = await authn.authenticate([("authorization", f"Bearer {token}")], ["alice"])
        assert by_token.name == "ci"  # a token names the principal over the certificate
        by_cert = await authn.authenticate([], ["alice", "alice.example"])
        assert (by_cert.name, by_cert.source) == ("alice", "certificate")
        stranger = await authn.authenticate([], ["mallory"])
        assert stranger.name == "mallory" and not stranger.may(Permission.READ)
        with pytest.raises(Unauthenticated, match="unknown bearer token"):
            await authn.authenticate([("authorization", "Bearer nope")], ["alice"])
        with pytest.raises(Unauthenticated, match="no credentials"):
            await authn.authenticate([], [])
        policy.write_text("[[principals]]\nname = 1\n")
        with pytest.raises(InvalidArgument, match=r"principals\[0\]\.name"):
            authn.reload()
        still = await authn.authenticate([("authorization", f"Bearer {token}")], [])
        assert still.name == "ci"  # the old policy stays in force

    asyncio.run(main())


def test_jwt_verified_against_a_jwks_file(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
    policy = tmp_path / "policy.toml"
    _write_policy(
        policy,
        f'[jwt]\njwks_file = "{tmp_path / "jwks.json"}"\nissuer = "https://idp"\n'
        'audience = "peerd"\n[[principals]]\nname = "payments-team"\n'
        'jwt_claims = { groups = "payments" }\n'
        'grants = [{ role = "operator", tasks = ["payments-"] }]\n',
    )
    authn = Authenticator(policy)
    now = datetime.now(UTC)

    def token(**claims: object) -> list[tuple[str, str]]:
        body = {"sub": "dana", "iss": "https://idp", "aud": "peerd", "groups": ["payments"]}
        body["exp"] = now + timedelta(minutes=5)
        body.update(claims)
        signed = jwt.encode(body, key, algorithm="ES256", headers={"kid": "k1"})
        return [("authorization", f"Bearer {signed}")]

    async def main() -> None:
        dana = await authn.authenticate(token(), [])
        assert (dana.name, dana.source) == ("dana", "jwt")
        assert dana.may(Permission.WRITE, "payments-x") and not dana.may(Permission.READ, "b")
        with pytest.raises(Unauthenticated, match="invalid JWT"):
            await authn.authenticate(token(aud="other"), [])
        with pytest.raises(Unauthenticated, match="invalid JWT"):
            await authn.authenticate(token(exp=now - timedelta(minutes=5)), [])
        with pytest.raises(Unauthenticated, match="match no principal"):
            await authn.authenticate(token(groups=["web"]), [])
        other = ec.generate_private_key(ec.SECP256R1())
        forged = jwt.encode(
            {"sub": "x", "iss": "https://idp", "aud": "peerd", "exp": now + timedelta(1)},
            other,
            algorithm="ES256",
            headers={"kid": "k1"},
        )
        with pytest.raises(Unauthenticated, match="invalid JWT"):
            await authn.authenticate([("authorization", f"Bearer {forged}")], [])

    asyncio.run(main())


def test_security_settings_that_need_a_partner() -> None:
    base = {"node_id": "n1"}
    with pytest.raises(InvalidArgument, match="needs --tls-key") as info:
        check_security(build_config({**base, "tls_cert": "c.pem"}, {}))
    assert info.value.field == "--tls-cert"
    with pytest.raises(InvalidArgument, match="needs --tls-client-ca") as info:
        check_security(
            build_config({**base, "tls_cert": "c", "tls_key": "k", "auth_policy": "p"}, {})
        )
    assert info.value.field == "--auth-policy"
    with pytest.raises(InvalidArgument) as info:
        check_security(build_config({**base, "etcd_user": "peerd"}, {}))
    assert info.value.field == "--etcd-user"
    cfg = build_config(base, {"PEERD_TLS_CERT": "c", "PEERD_TLS_KEY": "k", "PEERD_AUTH_POLICY": "p",
                              "PEERD_TLS_CLIENT_CA": "ca"})  # fmt: skip
    assert (cfg.tls_cert, cfg.tls_client_ca, cfg.auth_policy) == ("c", "ca", "p")
    check_security(cfg)


def test_client_options_and_plaintext_tokens(pki: Path) -> None:
    assert ClientTls.from_options(None, None, None, {}) is None
    tls = ClientTls.from_options(None, None, None, {"PEERD_CA": str(pki / "ca.pem")})
    assert tls is not None and tls.ca == pki / "ca.pem" and tls.cert is None
    with pytest.raises(InvalidArgument, match="together"):
        ClientTls.from_options(None, str(pki / "alice.pem"), None, {})
    with pytest.raises(InvalidArgument, match="needs TLS") as info:
        open_channel("10.1.2.3:7070", None, "secret")
    assert info.value.field == "--token"
    open_channel("127.0.0.1:7070", None, "secret").close()  # loopback: allowed
    open_channel("10.1.2.3:7070", tls, "secret").close()


def test_loopback_detection() -> None:
    assert (
        is_loopback("127.0.0.1:7070") and is_loopback("localhost:1") and is_loopback("[::1]:7070")
    )
    assert not is_loopback("0.0.0.0:7070") and not is_loopback("10.0.0.5:7070")
    assert not is_loopback("node-a.example:7070")


def test_every_scheduler_method_has_an_authorisation_rule() -> None:
    methods = set(pb.DESCRIPTOR.services_by_name["Scheduler"].methods_by_name)
    assert set(SCHEDULER) == methods
    writes = {m for m, rule in SCHEDULER.items() if rule.write}
    assert writes == {
        "CreateTask", "CreateTasks", "UpdateTask", "ApplyTasks", "DeleteTask", "PauseTask",
        "ResumeTask", "TriggerTask", "PinTzdata",
    }  # fmt: skip
    assert SCHEDULER["PinTzdata"].permission is Permission.ADMIN
    assert all(SCHEDULER[m].permission is Permission.READ for m in methods - writes - {"WhoAmI"})


def test_apply_names_every_task_it_creates_updates_or_deletes() -> None:
    request = pb.ApplyTasksRequest(
        create=[pb.TaskSpec(id="a")],
        update=[pb.UpdateTaskRequest(task=pb.TaskSpec(id="b"))],
        delete=[pb.TaskRef(id="c")],
    )
    assert [t for t, _ in SCHEDULER["ApplyTasks"].targets(request)] == ["a", "b", "c"]


def test_cli_hash_token_and_certs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from peerd.cli import main

    assert main(["-o", "json", "auth", "hash-token"], env={}) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["token"].startswith("peerd_") and out["token_sha256"] == token_sha256(out["token"])
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["auth", "hash-token", "--stdin"], env={}) == 2
    assert "too short" in capsys.readouterr().err
    mine = "x" * 40
    monkeypatch.setattr("sys.stdin", io.StringIO(mine + "\n"))
    assert main(["auth", "hash-token", "--stdin"], env={}) == 0
    text = capsys.readouterr().out
    assert token_sha256(mine) in text and mine not in text  # never echoes the secret
    argv = ["auth", "certs", str(tmp_path), "--node", "n1=10.0.0.5", "--client", "ci"]
    assert main(argv, env={}) == 0
    assert "new CA" in capsys.readouterr().out
    node = x509.load_pem_x509_certificate((tmp_path / "n1.pem").read_bytes())
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.0.0.5" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    assert (tmp_path / "ci-key.pem").exists()
    assert main(["auth", "certs", str(tmp_path), "--client", "../evil"], env={}) == 2
    assert main(["--server", "10.9.9.9:7070", "--token", "t", "cluster"], env={}) == 2
    assert "--token: needs TLS" in capsys.readouterr().err
