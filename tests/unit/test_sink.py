"""WebhookSink over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from peerd.devtools.sink import Delivery, WebhookSink, format_delivery
from peerd.devtools.spawn import free_port
from tests.helpers import REPO_ROOT, assert_eventually


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        yield client


@pytest.fixture
def running_sink(tmp_path: Path) -> Iterator[WebhookSink]:
    with WebhookSink(jsonl_path=tmp_path / "d.jsonl") as s:
        yield s


def test_records_headers_and_body(running_sink: WebhookSink, http: httpx.Client) -> None:
    before = time.time()
    r = http.post(
        f"{running_sink.url}/hooks/a?x=1",
        content=b'{"task_id": "t1"}',
        headers={
            "Idempotency-Key": "t1/1000",
            "Peerd-Fencing-Token": "42",
            "X-Custom": "yes",
            "Content-Type": "application/json",
        },
    )
    assert r.status_code == 200
    [d] = running_sink.deliveries()
    assert before <= d.received_at <= time.time()
    assert d.method == "POST"
    assert d.path == "/hooks/a"
    assert d.query == "x=1"
    assert d.idempotency_key == "t1/1000"
    assert d.fencing_token == 42
    assert d.headers["x-custom"] == "yes"
    assert d.headers["content-type"] == "application/json"
    assert d.body == '{"task_id": "t1"}'
    assert running_sink.duplicates() == {}


def test_any_method_and_missing_headers(running_sink: WebhookSink, http: httpx.Client) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        assert http.request(method, f"{running_sink.url}/m").status_code == 200
    assert http.head(f"{running_sink.url}/m").status_code == 200
    got = running_sink.deliveries()
    assert [d.method for d in got] == ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    assert all(d.idempotency_key is None and d.fencing_token is None for d in got)
    assert all(d.body == "" for d in got)


def test_bad_fencing_token_is_none(running_sink: WebhookSink, http: httpx.Client) -> None:
    http.post(running_sink.url, headers={"Peerd-Fencing-Token": "abc"})
    [d] = running_sink.deliveries()
    assert d.fencing_token is None
    assert d.headers["peerd-fencing-token"] == "abc"


def test_duplicates(running_sink: WebhookSink, http: httpx.Client) -> None:
    for key in ("a/1", "b/1", "a/1", "c/1", "a/1", "b/1"):
        http.post(f"{running_sink.url}/h", headers={"Idempotency-Key": key}, content=key)
    http.post(f"{running_sink.url}/h")  # no key: never a duplicate
    dups = running_sink.duplicates()
    assert sorted(dups) == ["a/1", "b/1"]
    assert len(dups["a/1"]) == 3 and len(dups["b/1"]) == 2
    assert all(d.body == "a/1" for d in dups["a/1"])
    assert running_sink.summary() == {"total": 7, "unique_keys": 3, "duplicate_keys": 2}


def test_status_default_and_override(tmp_path: Path, http: httpx.Client) -> None:
    with WebhookSink(status=503) as s:
        assert http.post(f"{s.url}/x").status_code == 503
        assert http.post(f"{s.url}/x?status=201").status_code == 201
        assert http.post(f"{s.url}/x?status=204").status_code == 204
        s.status = 200
        assert http.post(f"{s.url}/x").status_code == 200
        assert http.post(f"{s.url}/x?status=bogus").status_code == 200
        assert len(s.deliveries()) == 5  # failed answers are recorded too


def test_delay_override(running_sink: WebhookSink, http: httpx.Client) -> None:
    started = time.monotonic()
    assert http.post(f"{running_sink.url}/slow?delay_s=0.3").status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        http.post(f"{running_sink.url}/slow?delay_s=2", timeout=0.2)


def test_hold_until_released(running_sink: WebhookSink, http: httpx.Client) -> None:
    url = f"{running_sink.url}/held?hold=gate"
    with pytest.raises(httpx.ReadTimeout):  # held: recorded, not answered
        http.post(url, timeout=0.3)
    answers: list[int] = []
    waiter = threading.Thread(target=lambda: answers.append(http.post(url).status_code))
    waiter.start()
    assert_eventually(lambda: len(running_sink.deliveries()) == 2, timeout=5)
    assert answers == []
    running_sink.release("gate")
    waiter.join(timeout=5)
    assert answers == [200]  # the held request was answered on release ...
    assert http.post(url, timeout=2).status_code == 200  # ... and later ones pass at once
    with pytest.raises(httpx.ReadTimeout):  # another name is still held
        http.post(f"{running_sink.url}/held?hold=other", timeout=0.3)


def test_introspection_endpoints(running_sink: WebhookSink, http: httpx.Client) -> None:
    http.post(f"{running_sink.url}/a", headers={"Idempotency-Key": "k1"}, content="one")
    http.post(f"{running_sink.url}/a", headers={"Idempotency-Key": "k1"}, content="two")
    listed = http.get(f"{running_sink.url}/_deliveries").json()
    assert [d["body"] for d in listed] == ["one", "two"]
    assert listed[0]["idempotency_key"] == "k1"
    assert Delivery(**listed[0]) == running_sink.deliveries()[0]
    assert http.get(f"{running_sink.url}/_summary").json() == {
        "total": 2,
        "unique_keys": 1,
        "duplicate_keys": 1,
    }
    assert len(running_sink.deliveries()) == 2  # the GETs above were not recorded
    http.post(f"{running_sink.url}/_summary")  # only GET is special
    assert len(running_sink.deliveries()) == 3


def test_jsonl_file(tmp_path: Path, http: httpx.Client) -> None:
    path = tmp_path / "out" / "d.jsonl"
    with WebhookSink(jsonl_path=path) as s:
        http.post(f"{s.url}/j", headers={"Idempotency-Key": "k", "Peerd-Fencing-Token": "7"})
        http.put(f"{s.url}/j", content="body")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(d["method"], d["fencing_token"], d["body"]) for d in lines] == [
        ("POST", 7, ""),
        ("PUT", None, "body"),
    ]


def test_concurrent_deliveries(running_sink: WebhookSink) -> None:
    def worker(i: int) -> None:
        with httpx.Client(timeout=5.0, trust_env=False) as c:
            for j in range(20):
                c.post(f"{running_sink.url}/c", headers={"Idempotency-Key": f"{i}/{j}"})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert running_sink.summary() == {"total": 160, "unique_keys": 160, "duplicate_keys": 0}


def test_stop_closes_keepalive_connections_and_port(http: httpx.Client) -> None:
    s = WebhookSink()
    s.start()
    url = s.url
    assert http.post(url).status_code == 200  # leaves a keep-alive connection open
    s.stop()
    s.stop()  # idempotent
    with pytest.raises(httpx.TransportError):
        http.post(url)


def test_url_before_start_raises() -> None:
    with pytest.raises(RuntimeError):
        _ = WebhookSink().url


def test_format_delivery() -> None:
    d = Delivery(0.5, "POST", "/h", "t/1", 3, {}, "abc", "status=503")
    assert (
        format_delivery(d) == "1970-01-01T00:00:00.500Z POST /h?status=503 key=t/1 token=3 bytes=3"
    )


def test_cli_prints_deliveries_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    jsonl = tmp_path / "cli.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "peerd.devtools.sink",
            "--listen",
            f"127.0.0.1:{port}",
            "--jsonl",
            str(jsonl),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/cli"

        def post() -> int:
            with httpx.Client(timeout=1.0, trust_env=False) as c:
                try:
                    return c.post(url, headers={"Idempotency-Key": "cli/1"}).status_code
                except httpx.TransportError as exc:
                    raise AssertionError(str(exc)) from exc

        assert assert_eventually(post, timeout=15.0) == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "POST /cli key=cli/1 token=-" in out
    assert "1 deliveries" in err
    assert len(jsonl.read_text().splitlines()) == 1


def test_request_cut_short_is_not_a_delivery() -> None:
    import socket

    with WebhookSink() as sink:
        host, port = sink.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(
                b"POST /x HTTP/1.1\r\nHost: a\r\nIdempotency-Key: t/1\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
        with httpx.Client() as client:  # a whole request afterwards is recorded
            client.post(f"{sink.url}/y", content=b"{}", headers={"Idempotency-Key": "t/2"})
        assert [d.idempotency_key for d in sink.deliveries()] == ["t/2"]
