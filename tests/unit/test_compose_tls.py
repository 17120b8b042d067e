"""The Compose TLS variant (``docker-compose.tls.yml`` over ``docker-compose.yml``), checked
without a Docker engine: a real Compose implementation accepts the pair when one is on PATH;
``scripts/compose-tls.sh`` runs for real and makes every file the overlay mounts, with
certificates valid for the names the services dial; the peerd environments merged from both
files are node configurations peerd accepts, security included; etcd serves only TLS with client
certificates, and its one-shot auth setup matches the nodes' etcd user and cluster."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from peerd.config import build_config, check_security
from peerd.core.policy import token_sha256
from peerd.security.authn import load_policy
from tests.helpers import REPO_ROOT

BASE = REPO_ROOT / "docker-compose.yml"
OVERLAY = REPO_ROOT / "docker-compose.tls.yml"
SCRIPT = REPO_ROOT / "scripts" / "compose-tls.sh"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compose") / "tls"
    env = {**os.environ, "PEERD": f"{sys.executable} -m peerd"}
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert f"export PEERD_CA={out}/ca.pem" in proc.stdout.splitlines()
    return out


def test_compose_cli_accepts_the_pair() -> None:
    cli = ["docker-compose"] if shutil.which("docker-compose") else None
    if cli is None:
        pytest.skip("docker-compose is not on PATH")
    proc = subprocess.run(
        [*cli, "-f", str(BASE), "-f", str(OVERLAY), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_mounted_file_is_made_by_the_script(tls_dir: Path) -> None:
    referenced = set(re.findall(r"/tls/([\w.-]+)", OVERLAY.read_text()))
    assert referenced, "the overlay mounts nothing?"
    missing = sorted(name for name in referenced if not (tls_dir / name).exists())
    assert missing == []
    mode = (tls_dir / "ca-key.pem").stat().st_mode & 0o077
    assert mode == 0, "the CA key must stay private"
    assert (tls_dir / "peerd1-key.pem").stat().st_mode & 0o004, "uid 10001 reads node keys"


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.UniformResourceIdentifier)
    }


def _cn(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return str(cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value)


def test_certificates_match_the_names_services_dial(tls_dir: Path) -> None:
    assert {"etcd1", "etcd2", "etcd3"} <= _sans(tls_dir / "etcd.pem")
    for node in ("peerd1", "peerd2", "peerd3"):
        assert {node, "localhost", f"spiffe://peerd/node/{node}"} <= _sans(tls_dir / f"{node}.pem")
    assert _cn(tls_dir / "root.pem") == "root"
    assert _cn(tls_dir / "admin.pem") == "admin"


def test_policy_and_token(tls_dir: Path) -> None:
    policy = load_policy(tls_dir / "auth-policy.toml")
    token = (tls_dir / "admin.token").read_text().strip()
    admin = policy.by_token(token)
    assert admin is not None and admin.name == "admin"
    assert policy.rules[0].token_sha256 == (token_sha256(token),)
    assert policy.by_certificate(["admin"]) is not None


def test_merged_peerd_environments_are_secure_node_configs(tls_dir: Path) -> None:
    base, overlay = _load(BASE)["services"], _load(OVERLAY)["services"]
    peerd = [name for name, svc in base.items() if "build" in svc]
    assert sorted(peerd) == ["peerd1", "peerd2", "peerd3"]
    for name in peerd:
        env = {**base[name]["environment"], **overlay[name]["environment"]}
        cfg = build_config({}, {k: str(v) for k, v in env.items()})
        check_security(cfg)
        assert cfg.tls_cert == f"/tls/{name}.pem" and cfg.tls_client_ca == "/tls/ca.pem"
        assert cfg.auth_policy and cfg.etcd_cacert and cfg.etcd_cert == "/tls/peerd.pem"
        assert overlay[name]["depends_on"]["etcd-auth"]["condition"] == (
            "service_completed_successfully"
        )
        etcd_user = _cn(tls_dir / Path(cfg.etcd_cert).name)
        auth = overlay["etcd-auth"]["command"]
        assert f"--user={etcd_user}" in auth and f"--cluster={cfg.cluster}" in auth


def test_etcd_serves_only_tls_with_client_certificates() -> None:
    overlay = _load(OVERLAY)["services"]
    for name in ("etcd1", "etcd2", "etcd3"):
        argv = overlay[name]["command"]
        flags = dict(a.removeprefix("--").partition("=")[::2] for a in argv[1:])
        assert flags["listen-client-urls"].startswith("https://")
        assert flags["advertise-client-urls"] == f"https://{name}:2379"
        assert "client-cert-auth" in flags and "peer-client-cert-auth" in flags
        assert all(url.split("=", 1)[1].startswith("https://")
                   for url in flags["initial-cluster"].split(","))  # fmt: skip
        health = overlay[name]["healthcheck"]["test"]
        assert "--endpoints=https://127.0.0.1:2379" in health and "--cert=/tls/root.pem" in health
