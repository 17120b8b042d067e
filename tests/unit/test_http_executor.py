"""HttpExecutor against a real HTTP server on 127.0.0.1 (no HTTP mocks). Where a test needs a
host name to resolve to a chosen address (DNS rebinding), a fixed-answer resolver stands in
for DNS; the connection and the server stay real."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from peerd import __version__
from peerd.clock import FakeClock
from peerd.config import build_config
from peerd.core.redact import REDACTED
from peerd.core.targets import TargetPolicy
from peerd.errors import PermissionDenied
from peerd.runner import base
from peerd.runner.base import OUTPUT_TAIL_BYTES, Execution, Outcome
from peerd.runner.http import HttpExecutor
from peerd.runner.http_transport import EnvProxies
from peerd.runner.secrets import SecretStore
from peerd.v1 import scheduler_pb2 as pb

SLOT = datetime(2026, 11, 21, 6, 0, 1, tzinfo=UTC)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])


@dataclass
class Server:
    """A local HTTP server that records requests and answers with a configurable response."""

    url: str
    status: int = 200
    response_body: bytes = b"ok"
    response_headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drip: int = 0  # when > 0: send the body in this many pieces, one every 0.2 s
    echo_header: str = ""  # when set: answer with the value of this request header
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def _make_handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers: dict[str, list[str]] = {}
            for name, value in self.headers.items():
                headers.setdefault(name.lower(), []).append(value)
            state.requests.append(Recorded(self.command, self.path, headers, body))
            response_body = state.response_body
            if state.echo_header:
                response_body = f"got {self.headers.get(state.echo_header)}!".encode()
            if state.delay:
                state.release.wait(state.delay)
            self.send_response(state.status)
            for name, value in state.response_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response_body)))
            self.end_headers()
            try:
                if state.drip:
                    step = max(1, len(response_body) // state.drip)
                    for i in range(0, len(response_body), step):
                        self.wfile.write(response_body[i : i + step])
                        self.wfile.flush()
                        if state.release.wait(0.2):
                            return
                else:
                    self.wfile.write(response_body)
            except OSError:
                pass  # client gave up (timeout tests)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def execution(timeout: float = 5.0, **kw: Any) -> Execution:
    base: dict[str, Any] = {
        "task_id": "nightly-report",
        "scheduled_at": SLOT,
        "attempt": 2,
        "node_id": "node-a",
        "fencing_token": 4711,
        "timeout": timedelta(seconds=timeout),
    }
    base.update(kw)
    return Execution(**base)


def run(target: pb.HttpTarget, ex: Execution, **kw: Any) -> Outcome:
    async def go() -> Outcome:
        executor = HttpExecutor(**kw)
        try:
            return await executor.run_target(target, ex)
        finally:
            await executor.close()

    return asyncio.run(go())


def test_default_post_sends_peerd_headers_and_json_body(server: Server) -> None:
    out = run(pb.HttpTarget(url=server.url + "/hook"), execution())

    assert out.succeeded, out.error
    assert out.http_status == 200
    assert out.error == ""
    assert out.failure == ""
    assert out.output_tail == "ok"
    assert out.started_at <= out.finished_at
    [req] = server.requests
    assert req.method == "POST"
    assert req.path == "/hook"
    expected_key = f"nightly-report/{int(SLOT.timestamp() * 1000)}"
    assert req.header("Idempotency-Key") == [expected_key]
    assert req.header("Peerd-Fencing-Token") == ["4711"]
    assert req.header("User-Agent") == [f"peerd/{__version__}"]
    assert req.header("Content-Type") == ["application/json"]
    assert req.header("Peerd-Cause-Idempotency-Key") == []
    assert json.loads(req.body) == {
        "task_id": "nightly-report",
        "scheduled_at": "2026-11-21T06:00:01.000Z",
        "attempt": 2,
        "node_id": "node-a",
        "fencing_token": 4711,
    }


def test_user_headers_sent_but_cannot_override_peerd_headers(server: Server) -> None:
    target = pb.HttpTarget(
        url=server.url,
        headers={
            "Authorization": "Bearer s3cret",
            "X-Custom": "yes",
            "idempotency-key": "forged",
            "PEERD-FENCING-TOKEN": "999999",
        },
    )
    out = run(target, execution())

    assert out.succeeded, out.error
    [req] = server.requests
    assert req.header("Authorization") == ["Bearer s3cret"]
    assert req.header("X-Custom") == ["yes"]
    assert req.header("Idempotency-Key") == [execution().idempotency_key]
    assert req.header("Peerd-Fencing-Token") == ["4711"]


def test_custom_body_and_method_are_sent_as_given(server: Server) -> None:
    target = pb.HttpTarget(
        method="put",
        url=server.url + "/x",
        body="plain text, not JSON",
        headers={"Content-Type": "text/plain"},
    )
    out = run(target, execution())

    assert out.succeeded, out.error
    [req] = server.requests
    assert req.method == "PUT"
    assert req.body == b"plain text, not JSON"
    assert req.header("Content-Type") == ["text/plain"]
    assert req.header("Idempotency-Key") == [execution().idempotency_key]


def test_empty_custom_body_is_not_replaced_by_json(server: Server) -> None:
    out = run(pb.HttpTarget(url=server.url, body=""), execution())

    assert out.succeeded, out.error
    [req] = server.requests
    assert req.body == b""
    assert req.header("Content-Type") != ["application/json"]


def test_2xx_other_than_200_succeeds(server: Server) -> None:
    server.status = 204
    server.response_body = b""
    out = run(pb.HttpTarget(url=server.url), execution())

    assert out.succeeded, out.error
    assert out.http_status == 204


def test_500_fails_with_status_and_body_tail(server: Server) -> None:
    server.status = 503
    server.response_body = b"backend down"
    out = run(pb.HttpTarget(url=server.url), execution())

    assert not out.succeeded
    assert out.http_status == 503
    assert out.error == "HTTP 503"
    assert out.output_tail == "backend down"


def test_redirect_is_not_followed_and_fails(server: Server) -> None:
    server.status = 302
    server.response_headers = {"Location": "/elsewhere"}
    server.response_body = b""
    out = run(pb.HttpTarget(url=server.url), execution())

    assert not out.succeeded
    assert out.http_status == 302
    assert out.error == "HTTP 302"
    assert [r.path for r in server.requests] == ["/"]


def test_session_is_reused_and_closed(server: Server) -> None:
    async def go() -> None:
        executor = HttpExecutor()
        for _ in range(3):
            out = await executor.run_target(pb.HttpTarget(url=server.url), execution())
            assert out.succeeded, out.error
        lease = executor._sessions.acquire(TargetPolicy())
        await executor._sessions.release(lease)
        await executor.close()
        assert lease.session.closed
        await executor.close()  # idempotent

    asyncio.run(go())
    assert len(server.requests) == 3


def test_output_tail_keeps_last_4kib_of_large_body(server: Server) -> None:
    server.response_body = b"a" * 50_000 + b"b" * 100 + b"THE-END"
    out = run(pb.HttpTarget(url=server.url), execution())

    assert out.succeeded, out.error
    assert len(out.output_tail.encode()) == OUTPUT_TAIL_BYTES
    assert out.output_tail.endswith("b" * 100 + "THE-END")


def test_timeout_bounds_whole_request(server: Server) -> None:
    server.delay = 10.0
    t0 = time.monotonic()
    out = run(pb.HttpTarget(url=server.url), execution(timeout=0.5))
    elapsed = time.monotonic() - t0

    assert not out.succeeded
    assert out.error == "timeout after 0.5s"
    assert out.failure == base.FAILURE_TIMEOUT
    assert out.http_status == 0
    assert elapsed < 3.0
    assert len(server.requests) == 1


def test_timeout_covers_slow_body_after_headers(server: Server) -> None:
    # Each piece arrives well within the timeout; only a whole-request limit catches this.
    server.response_body = b"x" * 30
    server.drip = 30
    t0 = time.monotonic()
    out = run(pb.HttpTarget(url=server.url), execution(timeout=1.0))
    elapsed = time.monotonic() - t0

    assert not out.succeeded
    assert out.error == "timeout after 1.0s"
    assert out.failure == base.FAILURE_TIMEOUT  # not a 2xx success, not a status class
    assert out.http_status == 200  # the response had arrived
    assert 0 < len(out.output_tail) < 30
    assert elapsed < 3.0


def test_connection_refused_is_a_failed_outcome() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run(pb.HttpTarget(url=f"http://127.0.0.1:{port}/"), execution())

    assert not out.succeeded
    assert out.http_status == 0
    assert out.error.startswith("connect error: ")
    assert out.failure == base.FAILURE_CONNECTION


def test_invalid_url_is_a_failed_outcome() -> None:
    out = run(pb.HttpTarget(url="ftp://example.invalid/x"), execution())

    assert not out.succeeded
    assert out.error.startswith("invalid url")
    assert out.failure == base.FAILURE_CONFIG


def test_timestamps_come_from_injected_clock(server: Server) -> None:
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    out = run(pb.HttpTarget(url=server.url), execution(), clock=clock)

    assert out.started_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert out.finished_at == datetime(2030, 1, 1, tzinfo=UTC)


# --- failure classes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (500, base.FAILURE_HTTP_5XX),
        (503, base.FAILURE_HTTP_5XX),
        (599, base.FAILURE_HTTP_5XX),
        (429, base.FAILURE_HTTP_429),
        (400, base.FAILURE_HTTP_4XX),
        (404, base.FAILURE_HTTP_4XX),
        (428, base.FAILURE_HTTP_4XX),
        (302, base.FAILURE_HTTP_4XX),  # any other non-2xx, redirects included
    ],
)
def test_non_2xx_status_sets_failure_class(server: Server, status: int, failure: str) -> None:
    server.status = status
    server.response_body = b""
    server.response_headers = {"Location": "/x"} if 300 <= status < 400 else {}
    out = run(pb.HttpTarget(url=server.url), execution())

    assert not out.succeeded
    assert out.http_status == status
    assert out.error == f"HTTP {status}"
    assert out.failure == failure
    assert out.failure in base.FAILURE_CLASSES


def test_transport_error_after_connect_is_connection_failure() -> None:
    # A server that accepts and closes without answering: a transport error, not a connect one.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def slam() -> None:
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.close()

        thread = threading.Thread(target=slam, daemon=True)
        thread.start()
        out = run(pb.HttpTarget(url=f"http://127.0.0.1:{port}/"), execution())
        thread.join(5)

    assert not out.succeeded
    assert out.http_status == 0
    assert out.error.startswith("request error: ")
    assert out.failure == base.FAILURE_CONNECTION


# --- compensation (cause) ----------------------------------------------------------------------

CAUSE = {
    "task_id": "charge-card",
    "scheduled_at": "2026-11-21T06:00:00Z",
    "status": "FAILED",
    "error": "HTTP 503",
    "idempotency_key": "charge-card/1795068000000",
}


def test_cause_is_added_to_default_body_and_header(server: Server) -> None:
    out = run(pb.HttpTarget(url=server.url), execution(cause_json=json.dumps(CAUSE)))

    assert out.succeeded, out.error
    [req] = server.requests
    doc = json.loads(req.body)
    assert doc["cause"] == CAUSE
    assert doc["task_id"] == "nightly-report"
    assert req.header("Peerd-Cause-Idempotency-Key") == ["charge-card/1795068000000"]
    assert req.header("Idempotency-Key") == [execution().idempotency_key]


def test_cause_key_read_from_camel_case_json_mapping(server: Server) -> None:
    cause = {"taskId": "charge-card", "idempotencyKey": "charge-card/1"}
    out = run(pb.HttpTarget(url=server.url), execution(cause_json=json.dumps(cause)))

    assert out.succeeded, out.error
    [req] = server.requests
    assert req.header("Peerd-Cause-Idempotency-Key") == ["charge-card/1"]
    assert json.loads(req.body)["cause"] == cause


def test_custom_body_is_untouched_but_cause_header_sent_and_unforgeable(server: Server) -> None:
    target = pb.HttpTarget(
        url=server.url,
        body="as given",
        headers={"peerd-cause-idempotency-key": "forged"},
    )
    out = run(target, execution(cause_json=json.dumps(CAUSE)))

    assert out.succeeded, out.error
    [req] = server.requests
    assert req.body == b"as given"
    assert req.header("Peerd-Cause-Idempotency-Key") == ["charge-card/1795068000000"]


def test_user_cannot_send_cause_header_on_a_normal_run(server: Server) -> None:
    target = pb.HttpTarget(url=server.url, headers={"Peerd-Cause-Idempotency-Key": "forged"})
    out = run(target, execution())

    assert out.succeeded, out.error
    [req] = server.requests
    assert req.header("Peerd-Cause-Idempotency-Key") == []


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", '"text"'])
def test_invalid_cause_json_fails_as_config_without_sending(server: Server, bad: str) -> None:
    out = run(pb.HttpTarget(url=server.url), execution(cause_json=bad))

    assert not out.succeeded
    assert out.failure == base.FAILURE_CONFIG
    assert "cause_json" in out.error
    assert server.requests == []


# --- target policy at run time -----------------------------------------------------------------


class FixedDNS(AbstractResolver):
    """A resolver with fixed answers (host -> addresses), counting its lookups."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        pass


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_ip_literal_denied_at_run_time_sends_nothing(server: Server) -> None:
    # The task passed the check on create; the node's policy changed since.
    out = run(pb.HttpTarget(url=server.url), execution(), policy=TargetPolicy(deny=["loopback"]))

    assert not out.succeeded
    assert out.failure == base.FAILURE_CONFIG
    assert out.error == (
        "target refused by this node's policy: address 127.0.0.1 denied by --http-deny loopback"
    )
    assert server.requests == []


def test_name_rebinding_to_metadata_is_refused_at_connect(server: Server) -> None:
    dns = FixedDNS({"hooks.test": ["169.254.169.254"]})
    out = run(
        pb.HttpTarget(url=f"http://hooks.test:{_port(server)}/x"),
        execution(),
        resolver_factory=lambda: dns,
    )

    assert not out.succeeded
    assert out.failure == base.FAILURE_CONFIG  # not retried
    assert "hooks.test: address 169.254.169.254 denied by --http-deny 169.254.0.0/16" in out.error
    assert dns.lookups == ["hooks.test"]


def test_answer_with_one_denied_address_is_refused_whole(server: Server) -> None:
    dns = FixedDNS({"hooks.test": ["127.0.0.1", "169.254.169.254"]})
    out = run(
        pb.HttpTarget(url=f"http://hooks.test:{_port(server)}/x"),
        execution(),
        resolver_factory=lambda: dns,
    )

    assert out.failure == base.FAILURE_CONFIG
    assert server.requests == []


def test_vetted_address_is_the_one_connected_to(server: Server) -> None:
    dns = FixedDNS({"hooks.test": ["127.0.0.1"]})
    out = run(
        pb.HttpTarget(url=f"http://hooks.test:{_port(server)}/x"),
        execution(),
        resolver_factory=lambda: dns,
    )

    assert out.succeeded, out.error
    [req] = server.requests
    assert req.path == "/x"
    assert req.header("Host") == [f"hooks.test:{_port(server)}"]


def test_cidr_allow_list_applies_to_resolved_addresses(server: Server) -> None:
    dns = FixedDNS({"hooks.test": ["127.0.0.1"]})
    out = run(
        pb.HttpTarget(url=f"http://hooks.test:{_port(server)}/x"),
        execution(),
        policy=TargetPolicy(allow=["10.0.0.0/8"]),
        resolver_factory=lambda: dns,
    )

    assert out.failure == base.FAILURE_CONFIG
    assert "address 127.0.0.1 matches no --http-allow CIDR rule" in out.error


def test_policy_reload_drops_cached_resolutions_and_pooled_connections(
    server: Server, tmp_path: Any
) -> None:
    dns = FixedDNS({"hooks.test": ["127.0.0.1"]})
    target = pb.HttpTarget(url=f"http://hooks.test:{_port(server)}/x")

    async def go() -> tuple[Outcome, Outcome]:
        executor = HttpExecutor(resolver_factory=lambda: dns)
        try:
            first = await executor.run_target(target, execution())
            executor.configure(build_config({"node_id": "n1", "http_deny": ["loopback"]}, {}))
            second = await executor.run_target(target, execution())
            return first, second
        finally:
            await executor.close()

    first, second = asyncio.run(go())
    assert first.succeeded, first.error
    # Without the new session, the DNS cache (10 s) and the keep-alive connection of the first
    # request would carry the second one to 127.0.0.1.
    assert second.failure == base.FAILURE_CONFIG
    assert "address 127.0.0.1 denied by --http-deny loopback" in second.error
    assert dns.lookups == ["hooks.test", "hooks.test"]
    assert len(server.requests) == 1


def test_check_on_create_names_the_field_and_rule() -> None:
    executor = HttpExecutor(policy=TargetPolicy(deny=["*.internal"]))
    executor.node_id = "n7"
    spec = pb.TaskSpec(http=pb.HttpTarget(url="http://169.254.169.254/latest/meta-data/"))
    with pytest.raises(PermissionDenied) as err:
        executor.check(spec, "task")
    assert str(err.value) == (
        "task.http.url: 'http://169.254.169.254/latest/meta-data/' address 169.254.169.254 "
        "denied by --http-deny 169.254.0.0/16 (built-in: link-local, cloud metadata) (node n7)"
    )
    with pytest.raises(PermissionDenied, match=r"denied by --http-deny \*\.internal"):
        executor.check(pb.TaskSpec(http=pb.HttpTarget(url="https://db.internal/")), "task")
    executor.check(pb.TaskSpec(http=pb.HttpTarget(url="https://example.com/")), "task")


# --- secrets and redaction -----------------------------------------------------------------------


def test_secret_header_is_sent_and_redacted_from_the_output(server: Server) -> None:
    server.echo_header = "Authorization"
    secrets = SecretStore("", {"PEERD_SECRET_PAY": "Bearer pay-0123456789"}, "test-http")
    target = pb.HttpTarget(url=server.url, header_secrets={"Authorization": "PAY"})
    out = run(target, execution(), secrets=secrets)

    assert out.succeeded, out.error
    [req] = server.requests
    assert req.header("Authorization") == ["Bearer pay-0123456789"]
    assert out.output_tail == f"got {REDACTED}!"


def test_echoed_token_part_of_a_literal_credential_is_redacted(server: Server) -> None:
    server.echo_header = "X-Api-Key"
    target = pb.HttpTarget(url=server.url, headers={"X-Api-Key": "key-abcdef"})
    out = run(target, execution())

    assert out.succeeded, out.error
    assert out.output_tail == f"got {REDACTED}!"


def test_missing_secret_fails_as_config_without_sending(server: Server) -> None:
    target = pb.HttpTarget(url=server.url, header_secrets={"Authorization": "NOT_THERE"})
    out = run(target, execution())

    assert not out.succeeded
    assert out.failure == base.FAILURE_CONFIG
    assert "secret 'NOT_THERE' is not set on this node" in out.error
    assert server.requests == []


def test_cookies_set_by_one_target_are_never_sent(server: Server) -> None:
    server.response_headers = {"Set-Cookie": "session=abc; Path=/"}

    async def go() -> None:
        executor = HttpExecutor()
        try:
            for _ in range(2):
                out = await executor.run_target(pb.HttpTarget(url=server.url), execution())
                assert out.succeeded, out.error
        finally:
            await executor.close()

    asyncio.run(go())
    assert [r.header("Cookie") for r in server.requests] == [[], []]


# --- proxies -------------------------------------------------------------------------------------


def test_env_proxies_follow_no_proxy() -> None:
    from peerd.core.targets import parse_target

    proxies = EnvProxies(
        {"HTTP_PROXY": "http://proxy.corp:3128", "no_proxy": "internal.example,localhost"}
    )
    assert proxies.hosts == frozenset({"proxy.corp"})
    assert proxies.proxy_for(parse_target("http://api.example.com/")) == "http://proxy.corp:3128"
    assert proxies.proxy_for(parse_target("http://internal.example/")) is None
    assert proxies.proxy_for(parse_target("https://api.example.com/")) is None  # no https_proxy


def test_proxied_request_goes_to_the_proxy_which_resolves_the_name(server: Server) -> None:
    dns = FixedDNS({})  # the node resolves nothing: the proxy would
    out = run(
        pb.HttpTarget(url="http://never-resolved.test/hook"),
        execution(),
        proxies=EnvProxies({"http_proxy": server.url}),
        resolver_factory=lambda: dns,
    )

    assert out.succeeded, out.error
    [req] = server.requests
    assert req.path == "http://never-resolved.test/hook"  # absolute form: a proxy request
    assert dns.lookups == []
