"""The Docker packaging, checked without a Docker engine.

``docker-compose.yml`` is validated twice: by a real Compose implementation (``docker-compose``
1.29 from Debian, or the ``docker compose`` v2 plugin) running ``config -q`` when one is on PATH,
and always by parsing the YAML and checking what a working 3 + 3 cluster needs (a consistent
static etcd ``--initial-cluster``, peerd environments that peerd's own config parser accepts,
healthchecks, loopback-only distinct ports, a drain-sized stop grace period). The ``Dockerfile``
is parsed for its entry point, exposed port, user and HEALTHCHECK; that health check command and
``python -m peerd.healthcheck`` run against a real node.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from grpc_health.v1 import health_pb2

from peerd.config import build_config
from peerd.devtools.spawn import free_port
from peerd.healthcheck import default_address
from peerd.node_config import NODE_ID_RE
from tests.conftest import NodesFactory
from tests.helpers import REPO_ROOT, health_server

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
PUBLISHED_PEERD_PORTS = [7070, 7071, 7072]
CLI_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------------------------
# helpers


def _load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose.get("services")
    assert isinstance(services, dict) and services, "no services in docker-compose.yml"
    return services


def _etcd_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in _services(compose).items()
        if "etcd" in str(svc.get("image", "")).rsplit("/", 1)[-1]
    }


def _peerd_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _services(compose).items() if "build" in svc}


def _argv(command: Any) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"command must be a list or a string, got {command!r}"
    return [str(part) for part in command]


def _flags(argv: list[str]) -> dict[str, str]:
    """``--name=value`` and ``--name value`` (the etcd command line) as a dict."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            if not sep and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
                i += 1
            assert name not in flags, f"flag --{name} given twice"
            flags[name] = value
        i += 1
    return flags


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _seconds(duration: Any) -> float:
    """A Compose duration (``40s``, ``1m30s``, ``500ms``, or a number of seconds)."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), f"bad duration {duration}"
    return sum(float(n) * units[u] for n, u in parts)


def _ports(svc: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(host_ip, published, target)`` of each published port, short or long syntax."""
    out = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            host_ip = str(entry.get("host_ip", ""))
            published, target = int(entry["published"]), int(entry["target"])
        else:
            parts = str(entry).split("/", 1)[0].rsplit(":", 2)
            host_ip = parts[0] if len(parts) == 3 else ""  # no IP: every interface
            published = int(parts[-2]) if len(parts) >= 2 else 0  # no host port: a random one
            target = int(parts[-1])
        out.append((host_ip, published, target))
    return out


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def _url_hostport(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.scheme in ("http", "https"), f"{url!r} is not an http(s) URL"
    assert parts.hostname is not None and parts.port is not None, f"{url!r} lacks host or port"
    return parts.hostname, parts.port


def _dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return instructions


def _instruction(name: str) -> list[str]:
    return [args for keyword, args in _dockerfile() if keyword == name]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _image_healthcheck() -> list[str]:
    (args,) = _instruction("HEALTHCHECK")
    options, sep, command = args.partition("CMD ")
    assert sep, f"HEALTHCHECK must run a command: {args!r}"
    for option in options.split():
        assert re.fullmatch(r"--(interval|timeout|start-period|retries)=\S+", option), option
    return _exec_form(command.strip())


def _exposed_ports() -> set[int]:
    return {int(p.split("/")[0]) for args in _instruction("EXPOSE") for p in args.split()}


def _compose_clis() -> list[list[str]]:
    clis = []
    if shutil.which("docker-compose"):
        clis.append(["docker-compose"])
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=CLI_TIMEOUT_S
        )
        if probe.returncode == 0:
            clis.append(["docker", "compose"])
    return clis


# --------------------------------------------------------------------------------------------
# docker-compose.yml through a real Compose implementation


def test_compose_config_accepted_by_compose_cli() -> None:
    clis = _compose_clis()
    if not clis:
        pytest.skip("neither docker-compose nor the docker compose plugin is on PATH")
    for cli in clis:
        proc = subprocess.run(
            [*cli, "-f", str(COMPOSE_FILE), "config", "-q"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        assert proc.returncode == 0, f"{' '.join(cli)} config -q failed:\n{proc.stderr}"


# --------------------------------------------------------------------------------------------
# docker-compose.yml, semantically


def test_three_etcd_members_and_three_peerd_nodes() -> None:
    compose = _load_compose()
    etcd, peerd = _etcd_services(compose), _peerd_services(compose)
    assert len(etcd) == 3, f"expected 3 etcd services, got {sorted(etcd)}"
    assert len(peerd) == 3, f"expected 3 peerd services, got {sorted(peerd)}"
    assert set(_services(compose)) == set(etcd) | set(peerd), "unexpected extra services"
    for name, svc in etcd.items():
        image = str(svc["image"])
        assert re.fullmatch(r"(quay\.io/coreos|gcr\.io/etcd-development)/etcd:v3\.5\.\d+", image), (
            f"{name}: etcd image must be a pinned v3.5.x release, got {image}"
        )
    for name, svc in peerd.items():
        build = svc["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (COMPOSE_FILE.parent / context / dockerfile).resolve() == DOCKERFILE, name


def test_etcd_static_initial_cluster_is_consistent() -> None:
    etcd = _etcd_services(_load_compose())
    clusters, tokens, data_volumes = set(), set(), []
    for name, svc in etcd.items():
        argv = _argv(svc.get("command") or [])
        assert argv and argv[0].rsplit("/", 1)[-1] == "etcd", f"{name}: command must run etcd"
        flags = _flags(argv[1:])
        assert flags.get("name") == name, f"{name}: --name must be the service name"
        assert flags.get("initial-cluster-state") == "new", name
        clusters.add(flags["initial-cluster"])
        tokens.add(flags.get("initial-cluster-token"))

        members = dict(m.split("=", 1) for m in flags["initial-cluster"].split(","))
        assert set(members) == set(etcd), f"{name}: --initial-cluster must name every member"
        for member, peer_url in members.items():
            assert _url_hostport(peer_url) == (member, ETCD_PEER_PORT), (member, peer_url)
        assert flags["initial-advertise-peer-urls"] == members[name], name
        assert _url_hostport(flags["advertise-client-urls"]) == (name, ETCD_CLIENT_PORT), name
        assert _url_hostport(flags["listen-client-urls"]) == ("0.0.0.0", ETCD_CLIENT_PORT), name
        assert _url_hostport(flags["listen-peer-urls"]) == ("0.0.0.0", ETCD_PEER_PORT), name

        data_dir = flags["data-dir"]
        mounts = [str(v).split(":")[:2] for v in svc.get("volumes") or []]
        (volume,) = [src for src, dst in mounts if dst == data_dir]
        data_volumes.append(volume)
    assert len(clusters) == 1, f"members disagree on --initial-cluster: {clusters}"
    assert len(tokens) == 1 and None not in tokens, f"--initial-cluster-token differs: {tokens}"
    assert len(set(data_volumes)) == 3, f"each member needs its own data volume: {data_volumes}"


def test_etcd_members_share_a_stated_space_quota() -> None:
    """Each member's quota counts its own file: the same explicit size on every member
    (docs/operations.md sizes it), within what etcd supports well (<= 8 GiB)."""
    quotas = {
        name: _flags(_argv(svc.get("command") or [])[1:]).get("quota-backend-bytes")
        for name, svc in _etcd_services(_load_compose()).items()
    }
    assert None not in quotas.values(), f"--quota-backend-bytes missing: {quotas}"
    (quota,) = set(quotas.values())
    assert quota is not None and 0 < int(quota) <= 8 * 1024**3, quotas


def test_peerd_environment_is_a_valid_node_config() -> None:
    compose = _load_compose()
    etcd, peerd = _etcd_services(compose), _peerd_services(compose)
    want_etcd = {(name, ETCD_CLIENT_PORT) for name in etcd}
    node_ids, clusters = [], set()
    for name, svc in peerd.items():
        env = _environment(svc)
        assert NODE_ID_RE.match(env.get("PEERD_NODE_ID", "")), f"{name}: bad PEERD_NODE_ID"
        cfg = build_config({}, env)  # peerd's own parser: raises on anything it would reject
        node_ids.append(cfg.node_id)
        clusters.add(cfg.cluster)
        assert env.get("PEERD_CLUSTER") == "compose", name
        assert {_hostport(ep) for ep in cfg.etcd} == want_etcd, (
            f"{name}: PEERD_ETCD must list every etcd member on its client port: {cfg.etcd}"
        )
        listen_host, listen_port = _hostport(cfg.listen)
        assert listen_host == "0.0.0.0", f"{name}: must listen on all interfaces"
        assert listen_port in _exposed_ports(), f"{name}: listen port not EXPOSEd"
        assert cfg.advertise == f"{name}:{listen_port}", f"{name}: PEERD_ADVERTISE"
    assert len(set(node_ids)) == 3, f"PEERD_NODE_ID must be distinct: {node_ids}"
    assert len(clusters) == 1, f"all nodes must join one cluster: {clusters}"


def test_peerd_waits_for_every_etcd_member_healthy() -> None:
    compose = _load_compose()
    etcd = set(_etcd_services(compose))
    for name, svc in _peerd_services(compose).items():
        depends = svc.get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on needs the long form (conditions)"
        assert set(depends) >= etcd, f"{name}: must depend on {sorted(etcd)}"
        for member in etcd:
            assert depends[member].get("condition") == "service_healthy", (name, member)


def test_every_service_has_a_healthcheck() -> None:
    compose = _load_compose()
    for name, svc in _services(compose).items():
        check = svc.get("healthcheck")
        assert not (check or {}).get("disable"), f"{name}: healthcheck disabled"
        if name in _etcd_services(compose):
            assert check, f"{name}: etcd needs a healthcheck"
            test = _argv(check["test"])
            assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: {test}"
            command = test[1:] if test[0] == "CMD" else shlex.split(test[1])
            assert command[0].rsplit("/", 1)[-1] == "etcdctl", f"{name}: {command}"
            assert command[-2:] == ["endpoint", "health"], f"{name}: {command}"
        elif not check:  # peerd without an override: the image's HEALTHCHECK applies
            assert "peerd.healthcheck" in _image_healthcheck(), f"{name}: no healthcheck"
        else:  # peerd: ready per /readyz on its HTTP port
            assert _peerd_healthcheck(svc) == [
                "python", "-m", "peerd.healthcheck", "--http", "/readyz", "--timeout", "3"
            ], name  # fmt: skip
            http_port = _hostport(build_config({}, _environment(svc)).http_listen)[1]
            assert http_port in _exposed_ports(), f"{name}: HTTP port not EXPOSEd"


def _peerd_healthcheck(svc: dict[str, Any]) -> list[str]:
    test = _argv(svc["healthcheck"]["test"])
    assert test[0] == "CMD", test
    return test[1:]


def test_published_ports_loopback_only_and_distinct() -> None:
    compose = _load_compose()
    published: list[int] = []
    for name, svc in _services(compose).items():
        for host_ip, port, _target in _ports(svc):
            assert host_ip == "127.0.0.1", f"{name}: port {port} must bind 127.0.0.1 only"
            published.append(port)
    assert len(published) == len(set(published)), f"published ports collide: {published}"
    peerd_ports = []
    for name, svc in _peerd_services(compose).items():
        listen_port = _hostport(build_config({}, _environment(svc)).listen)[1]
        ((_, port, target),) = _ports(svc)
        assert target == listen_port, f"{name}: publishes {target}, listens on {listen_port}"
        peerd_ports.append(port)
    assert sorted(peerd_ports) == PUBLISHED_PEERD_PORTS


def test_peerd_stop_grace_period_covers_the_drain() -> None:
    for name, svc in _peerd_services(_load_compose()).items():
        drain_s = build_config({}, _environment(svc)).drain_grace_s
        grace_s = _seconds(svc.get("stop_grace_period", "10s"))
        assert grace_s >= drain_s + 5, (
            f"{name}: stop_grace_period {grace_s}s < drain {drain_s}s + 5s"
        )


# --------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_builds_a_non_root_peerd_image() -> None:
    instructions = _dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    (entrypoint,) = _instruction("ENTRYPOINT")
    assert _exec_form(entrypoint) == ["peerd"]
    (cmd,) = _instruction("CMD")
    assert _exec_form(cmd) == ["serve"]
    assert 7070 in _exposed_ports()
    assert any("pip install --no-cache-dir ." in run for run in _instruction("RUN"))
    users = _instruction("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), "must run as non-root"
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.index("USER") > max(
        i for i, keyword in enumerate(keywords) if keyword == "RUN"
    ), "every RUN happens before switching to the non-root user"
    assert _image_healthcheck()[1:3] == ["-m", "peerd.healthcheck"]


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"} <= patterns
    assert "**/__pycache__" in patterns or "__pycache__" in patterns
    for needed in ("pyproject.toml", "README.md", "peerd"):
        assert needed not in patterns, f"{needed} is needed by pip install ."


# --------------------------------------------------------------------------------------------
# python -m peerd.healthcheck


def _run_healthcheck(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peerd.healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


@pytest.mark.integration
def test_healthcheck_passes_against_a_serving_node(nodes: NodesFactory) -> None:
    (node,) = nodes(1)
    proc = _run_healthcheck(node.address)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""

    # The image's HEALTHCHECK command exactly, finding the port through PEERD_LISTEN.
    command = _image_healthcheck()
    assert command[0] == "python"
    env = {**os.environ, "PEERD_LISTEN": f"0.0.0.0:{node.port}"}
    image_check = subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, text=True, timeout=30, env=env
    )
    assert image_check.returncode == 0, image_check.stderr


@pytest.mark.integration
def test_compose_healthcheck_passes_against_a_ready_node(nodes: NodesFactory) -> None:
    (node,) = nodes(1, http_port=0)
    [svc, *_] = _peerd_services(_load_compose()).values()
    command = _peerd_healthcheck(svc)
    env = {**os.environ, "PEERD_HTTP_LISTEN": f"0.0.0.0:{node.http_port}"}
    check = subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, text=True, timeout=30, env=env
    )
    assert check.returncode == 0, check.stderr
    live = _run_healthcheck(str(node.http_address), "--http", "/livez")
    assert live.returncode == 0, live.stderr
    missing = _run_healthcheck(str(node.http_address), "--http", "/nothing")
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr, missing.stderr


def test_healthcheck_fails_against_a_closed_port() -> None:
    proc = _run_healthcheck(f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "UNAVAILABLE" in lines[0], proc.stderr


@pytest.fixture
def not_serving_server() -> Iterator[str]:
    """A gRPC server whose overall health is NOT_SERVING (as a draining or starting node)."""
    with health_server({"": health_pb2.HealthCheckResponse.NOT_SERVING}) as (address, _):
        yield address


def test_healthcheck_fails_when_not_serving(not_serving_server: str) -> None:
    proc = _run_healthcheck(not_serving_server)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"peerd.healthcheck: {not_serving_server}: NOT_SERVING"


def test_healthcheck_usage_error_exits_2() -> None:
    proc = _run_healthcheck("--timeout", "0")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        (None, "127.0.0.1:7070"),
        ("0.0.0.0:7071", "127.0.0.1:7071"),
        ("[::]:7072", "[::1]:7072"),
        ("10.0.0.5:7070", "10.0.0.5:7070"),
    ],
)
def test_healthcheck_default_address(listen: str | None, expected: str) -> None:
    env = {} if listen is None else {"PEERD_LISTEN": listen}
    assert default_address(env) == expected
