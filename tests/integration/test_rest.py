"""The HTTP/JSON API (docs/http-api.md) of a real node on real etcd, over HTTPS with mutual TLS
and an auth policy: every call goes through the node's own gRPC server, so the policy, the
validation and the error mapping are gRPC's.

One node for the module. Principals: ``writer`` (operator on every task), ``viewer`` (viewer on
every task); every request presents a client certificate of the cluster CA that the policy
does not list (it admits the connection, as on gRPC), and a bearer token names the principal.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from peerd.core.policy import token_sha256
from peerd.devtools.etcd_server import EmbeddedEtcd
from peerd.http.rest_routes import ROUTES
from peerd.security.authn import new_token
from peerd.security.certs import write_set
from peerd.security.tls import ClientTls
from tests.helpers import PeerdNode, assert_eventually

TIMEOUT_S = 10.0


@dataclass
class Api:
    """A REST client of the module's node."""

    base: str
    etcd: str
    tokens: dict[str, str]
    with_cert: ssl.SSLContext
    without_cert: ssl.SSLContext

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = "writer",
        cert: bool = True,
        raw: bytes | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """``(status, JSON answer, headers)`` of one request."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {self.tokens.get(token, token)}")
        context = self.with_cert if cert else self.without_cert
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as resp:
                return resp.status, json.loads(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)

    def ok(self, method: str, path: str, body: Any = None, token: str = "writer") -> Any:
        status, answer, _ = self.call(method, path, body, token)
        assert status == 200, (method, path, status, answer)
        return answer


def _policy(tokens: dict[str, str]) -> str:
    def principal(name: str, role: str) -> str:
        return (
            f'[[principals]]\nname = "{name}"\ntoken_sha256 = ["{token_sha256(tokens[name])}"]\n'
            f'grants = [{{ role = "{role}", tasks = ["*"] }}]\n'
        )

    return principal("writer", "operator") + principal("viewer", "viewer")


@pytest.fixture(scope="module")
def api(etcd_server: EmbeddedEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("rest")
    pki = root / "pki"
    write_set(pki, datetime.now(UTC), nodes={"r1": []}, clients=["gateway"])
    tokens = {name: new_token() for name in ("writer", "viewer")}
    policy = root / "policy.toml"
    policy.write_text(_policy(tokens))
    settings = {
        "tls_cert": str(pki / "r1.pem"),
        "tls_key": str(pki / "r1-key.pem"),
        "tls_client_ca": str(pki / "ca.pem"),
        "auth_policy": str(policy),
        "http_tls": "true",
    }
    node = PeerdNode(
        "r1",
        etcd_server.endpoint,
        f"rest-{uuid.uuid4().hex[:8]}",
        root,
        settings=settings,
        http_port=0,
        tls=ClientTls(pki / "ca.pem", pki / "r1.pem", pki / "r1-key.pem"),
    )
    node.start()
    try:
        assert node.http_address is not None
        without_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with_cert.load_cert_chain(Path(pki / "gateway.pem"), Path(pki / "gateway-key.pem"))
        base = f"https://{node.http_address}"
        yield Api(base, etcd_server.endpoint, tokens, with_cert, without_cert)
    finally:
        node.stop()


def spec(task_id: str, team: str = "a") -> dict[str, Any]:
    return {
        "id": task_id,
        "schedule": {"cron": "0 0 1 1 *"},
        "python": {"name": "peerd.echo"},
        "labels": {"team": team},
    }


def test_create_get_list_with_paging_and_labels(api: Api) -> None:
    for task_id, team in (("rl-a1", "a"), ("rl-a2", "a"), ("rl-b1", "b")):
        created = api.ok("POST", "/v1/tasks", spec(task_id, team))
        assert created["id"] == task_id and created["labels"] == {"team": team}
    got = api.ok("GET", "/v1/tasks/rl%2Da1")  # percent-encoded id
    assert got["id"] == "rl-a1" and got["schedule"] == {"cron": "0 0 1 1 *"}
    assert int(got["revision"]) > 0  # int64 in protobuf's JSON mapping is a string

    first = api.ok("GET", "/v1/tasks?pageSize=2&labelSelector=team%20in%20(a,b)")
    assert len(first["tasks"]) == 2 and first["nextPageToken"]
    query = urllib.parse.urlencode({"page_size": 2, "pageToken": first["nextPageToken"]})
    rest = api.ok("GET", f"/v1/tasks?{query}&labelSelector=team%20in%20(a,b)")
    ids = [t["id"] for t in first["tasks"] + rest["tasks"]]
    assert sorted(ids) == ["rl-a1", "rl-a2", "rl-b1"]
    only_a = api.ok("GET", "/v1/tasks?labelSelector=team%3Da")
    assert sorted(t["id"] for t in only_a["tasks"]) == ["rl-a1", "rl-a2"]


def test_update_pause_resume_delete(api: Api) -> None:
    created = api.ok("POST", "/v1/tasks", spec("ru-1"))
    changed = {**spec("ru-1"), "schedule": {"cron": "0 0 2 1 *"}}
    stale = {"task": changed, "expectedRevision": str(int(created["revision"]) - 1)}
    status, answer, _ = api.call("PATCH", "/v1/tasks/ru-1", stale)
    assert (status, answer["status"]) == (409, "ABORTED"), answer
    assert api.ok("GET", "/v1/tasks/ru-1")["schedule"]["cron"] == "0 0 1 1 *"  # unchanged
    current = {"task": changed, "expectedRevision": created["revision"]}
    assert api.ok("PATCH", "/v1/tasks/ru-1", current)["schedule"]["cron"] == "0 0 2 1 *"
    other = {"task": {**changed, "id": "ru-2"}}
    status, answer, _ = api.call("PATCH", "/v1/tasks/ru-1", other)
    assert status == 400 and "task.id" in answer["message"], answer

    paused = api.ok("POST", "/v1/tasks/ru-1:pause", {"note": "maintenance"})
    assert paused["paused"] is True and paused["pauseNote"] == "maintenance"
    assert "paused" not in api.ok("POST", "/v1/tasks/ru-1:resume")  # false: left out
    assert api.ok("DELETE", "/v1/tasks/ru-1") == {}
    status, answer, _ = api.call("GET", "/v1/tasks/ru-1")
    assert (status, answer["code"], answer["status"]) == (404, 5, "NOT_FOUND"), answer


def etcd_watchers(api: Api) -> int:
    """Watchers etcd serves now (its ``etcd_debugging_mvcc_watcher_total`` gauge)."""
    with urllib.request.urlopen(f"http://{api.etcd}/metrics", timeout=TIMEOUT_S) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("etcd_debugging_mvcc_watcher_total "):
                return int(float(line.split()[1]))
    raise AssertionError("etcd exports no etcd_debugging_mvcc_watcher_total")


def test_trigger_shows_in_runs_and_in_the_event_stream(api: Api) -> None:
    api.ok("POST", "/v1/tasks", spec("rt-1"))
    before = etcd_watchers(api)
    request = urllib.request.Request(
        f"{api.base}/v1/tasks/rt-1/runs:watch?replay=5",
        headers={"Authorization": f"Bearer {api.tokens['viewer']}"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=api.with_cert) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        run = api.ok("POST", "/v1/tasks/rt-1:trigger")
        assert run["taskId"] == "rt-1" and run["manual"] is True
        token = run["fencingToken"]
        events: list[dict[str, Any]] = []
        while not any(e["status"] == "SUCCEEDED" for e in events):
            line = stream.readline().decode()
            assert line, "the event stream ended"
            if line.startswith("event: "):
                assert line == "event: run\n"
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
        assert {e["fencingToken"] for e in events} == {token}
        assert {e["taskId"] for e in events} == {"rt-1"}
        assert_eventually(lambda: etcd_watchers(api) == before + 1, timeout=TIMEOUT_S)
    # The client went away: the node cancels its watch (no leaked watch).
    assert_eventually(lambda: etcd_watchers(api) == before, timeout=TIMEOUT_S)

    def succeeded() -> None:
        runs = api.ok("GET", "/v1/tasks/rt-1/runs?pageSize=10")["runs"]
        assert [(r["fencingToken"], r["status"]) for r in runs] == [(token, "SUCCEEDED")]

    assert_eventually(succeeded, timeout=TIMEOUT_S)


def test_errors_name_the_field(api: Api) -> None:
    bad_cron = {**spec("re-1"), "schedule": {"cron": "61 * * * *"}}
    status, answer, _ = api.call("POST", "/v1/tasks", bad_cron)
    assert (status, answer["code"], answer["status"]) == (400, 3, "INVALID_ARGUMENT")
    assert answer["message"].startswith("task.schedule.cron:"), answer
    status, answer, _ = api.call("POST", "/v1/tasks", {**spec("re-1"), "colour": "red"})
    assert status == 400 and '"colour"' in answer["message"], answer
    status, answer, _ = api.call("POST", "/v1/tasks", raw=b'{"id": "re-1",')
    assert status == 400 and answer["message"].startswith("body: not valid JSON"), answer
    status, answer, _ = api.call("GET", "/v1/tasks?pageSise=5")
    assert status == 400 and answer["message"].startswith("pageSise:"), answer
    status, answer, headers = api.call("PUT", "/v1/tasks/re-1")
    assert status == 405 and headers["Allow"] == "DELETE, GET, PATCH", answer
    status, answer, _ = api.call("GET", "/v1/nothing-here")
    assert status == 404, answer
    status, answer, _ = api.call("GET", "/v1/tasks/re-1")
    assert status == 404 and answer["message"] == "task 're-1' not found", answer


def test_auth_is_grpcs(api: Api) -> None:
    status, answer, headers = api.call("GET", "/v1/tasks", token=None)
    assert (status, answer["status"]) == (401, "UNAUTHENTICATED"), answer
    assert headers["WWW-Authenticate"] == "Bearer"
    status, answer, _ = api.call("GET", "/v1/tasks", token="peerd_not-a-known-token")
    assert status == 401, answer
    status, answer, _ = api.call("GET", "/v1/tasks", token="viewer", cert=False)
    assert status == 401 and "client certificate" in answer["message"], answer

    assert api.ok("GET", "/v1/whoami", token="viewer")["principal"] == "viewer"
    status, answer, _ = api.call("POST", "/v1/tasks", spec("ra-1"), token="viewer")
    assert (status, answer["status"]) == (403, "PERMISSION_DENIED"), answer
    assert "lacks permission 'write'" in answer["message"]
    status, _, _ = api.call("GET", "/v1/tasks/ra-1", token="viewer")
    assert status == 404  # the viewer's refused create wrote nothing
    api.ok("POST", "/v1/tasks", spec("ra-1"), token="writer")
    assert api.ok("GET", "/v1/tasks/ra-1", token="viewer")["id"] == "ra-1"


def test_openapi_document_lists_every_route(api: Api) -> None:
    doc = api.ok("GET", "/v1/openapi.json")
    validate(doc)  # OpenAPI 3.1 structure, $refs resolve
    served = {(verb, path) for path, ops in doc["paths"].items() for verb in ops}
    assert served == {(r.verb.lower(), r.path) for r in ROUTES}
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) == len(ROUTES)
    create = doc["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"] == {"$ref": "#/components/schemas/peerd.v1.TaskSpec"}
    listed = {p["name"] for p in doc["paths"]["/v1/tasks"]["get"]["parameters"]}
    assert {"pageSize", "pageToken", "labelSelector"} <= listed
