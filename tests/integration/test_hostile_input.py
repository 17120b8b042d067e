"""Hostile input against a real node on real etcd: every public RPC, fed random and malformed
messages (hypothesis), answers a documented status, and a rejected request changes nothing in
etcd. Also the message-size limit and the per-caller rate limit.

Requests are sent as raw bytes through a gRPC channel without serializers, so they can be what
no protobuf library would build: invalid UTF-8 in strings, wrong wire types, truncated or deeply
nested data, unknown enum numbers, huge repeated fields, extreme timestamps and durations.

Every example: snapshot the cluster's keyspace (keys, values, mod revisions), call, snapshot
again. INTERNAL, UNKNOWN and UNIMPLEMENTED are failures; any status but OK must leave the
snapshot unchanged. Accepted tasks are created paused (the structured strategy sets it; the raw
one cannot produce a valid target) and only the prepared task ``fz-trigger`` is ever triggered,
so nothing writes behind the test's back. The node only calls ``http://127.0.0.1:*``.

Cost: the profile in tests/conftest.py (``peerd``: derandomized, :data:`EXAMPLES` per RPC, about
30 s in all); ``pytest --hypothesis-profile long`` runs many more, randomized.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peerd.client import SchedulerClient
from peerd.devtools.etcd_server import EmbeddedEtcd
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import PeerdNode, assert_eventually

SERVICE = pb.DESCRIPTOR.services_by_name["Scheduler"]
METHODS: list[MethodDescriptor] = list(SERVICE.methods)
TRIGGER_ID = "fz-trigger"

ACCEPTED = {grpc.StatusCode.OK}
REJECTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAUTHENTICATED,
}
"""The documented statuses of a refused request (docs/security.md, "Hostile input")."""


# --- the node ----------------------------------------------------------------------------------


class Keyspace:
    """Reads the cluster's keyspace through etcd's JSON gateway (no client state to manage)."""

    def __init__(self, etcd: EmbeddedEtcd, cluster: str) -> None:
        self._url = f"{etcd.client_url}/v3/kv/range"
        prefix = f"/peerd/{cluster}/".encode()
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        self._body = json.dumps(
            {"key": base64.b64encode(prefix).decode(), "range_end": base64.b64encode(end).decode()}
        ).encode()

    def snapshot(self) -> list[tuple[str, str, str]]:
        request = urllib.request.Request(self._url, data=self._body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            kvs = json.load(answer).get("kvs", [])
        return [(kv["key"], kv.get("value", ""), kv["mod_revision"]) for kv in kvs]


@pytest.fixture(scope="module")
def fuzz_node(
    etcd_server: EmbeddedEtcd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[grpc.Channel, Keyspace, PeerdNode]]:
    cluster = f"fz-{uuid.uuid4().hex[:8]}"
    node = PeerdNode(
        "fz1",
        etcd_server.endpoint,
        cluster,
        tmp_path_factory.mktemp("fuzz"),
        extra_args=[
            "--api-rate-limit", "0",
            "--http-allow", "http://127.0.0.1:*",
            "--http-allow", "127.0.0.1",
        ],
    )  # fmt: skip
    node.start()
    try:
        with SchedulerClient(node.address) as client:
            spec = pb.TaskSpec(
                id=TRIGGER_ID, paused=True, python=pb.PythonTarget(name="peerd.echo")
            )
            spec.schedule.cron = "0 0 1 1 *"
            client.create_task(spec)
        with grpc.insecure_channel(node.address) as channel:
            yield channel, Keyspace(etcd_server, cluster), node
    finally:
        node.kill()


# --- raw wire format -----------------------------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def delimited(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


INTS = [0, 1, -1, 7, 100, 2**31 - 1, -(2**31), 2**32, 2**53, 2**63 - 1, -(2**63), 2**64 - 1]
SECONDS = [0, 1, -1, 60, 253402300799, 253402300800, -62135596800, -62135596801, 2**63 - 1,
           -(2**63), 10**12, 4102444800]  # fmt: skip
NANOS = [0, 1, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31)]
STRINGS = [b"", b"a", b"fz-1", b"Bad ID!", b"\xff\xfe\xfd", b"\xc3\x28", b"\x00", b"x" * 70_000,
           "é🙂".encode(), b"../../etc/passwd", b"%s%n", b"0 0 * * *x"]  # fmt: skip
MANY = 2000
"""Copies of a small value in a "huge" repeated field."""
MAX_DRAWN_BYTES = 256 * 1024
"""A drawn message stops growing past this (the size limit itself has its own test)."""
WIRE_TYPES = {
    FieldDescriptor.TYPE_DOUBLE: 1,
    FieldDescriptor.TYPE_FIXED64: 1,
    FieldDescriptor.TYPE_SFIXED64: 1,
    FieldDescriptor.TYPE_FLOAT: 5,
    FieldDescriptor.TYPE_FIXED32: 5,
    FieldDescriptor.TYPE_SFIXED32: 5,
}


@st.composite
def scalar(draw: st.DrawFn, field: FieldDescriptor) -> bytes:
    n = field.number
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        raw = draw(st.one_of(st.sampled_from(STRINGS), st.binary(max_size=30),
                             st.text(max_size=30).map(str.encode)))  # fmt: skip
        return delimited(n, raw)
    wire_type = WIRE_TYPES.get(field.type, 0)
    if wire_type == 1:
        return tag(n, 1) + struct.pack("<d", draw(st.floats(allow_nan=True)))
    if wire_type == 5:
        return tag(n, 5) + struct.pack("<f", draw(st.floats(width=32, allow_nan=True)))
    return tag(n, 0) + varint(draw(st.one_of(st.sampled_from(INTS), st.integers(-5, 20))))


@st.composite
def timestamp_like(draw: st.DrawFn) -> bytes:
    seconds = draw(st.one_of(st.sampled_from(SECONDS), st.integers(-(2**63), 2**63 - 1)))
    nanos = draw(st.sampled_from(NANOS))
    return tag(1, 0) + varint(seconds) + tag(2, 0) + varint(nanos)


@st.composite
def wire_message(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> bytes:
    """A random encoding of ``descriptor``: each field present or not, repeated fields from one
    to :data:`MANY` copies, nested messages to depth 3, extreme values, sometimes an unknown
    field."""
    out = bytearray()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            name = field.message_type.full_name
            if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
                value = delimited(field.number, draw(timestamp_like()))
            elif depth >= 3:
                value = delimited(field.number, b"")
            else:
                value = delimited(field.number, draw(wire_message(field.message_type, depth + 1)))
        else:
            value = draw(scalar(field))
        copies = 1
        if field.is_repeated:
            copies = draw(st.sampled_from([1, 2, 3, MANY if len(value) <= 64 else 3]))
        out += value * copies
        if len(out) > MAX_DRAWN_BYTES:
            break
    if draw(st.integers(0, 7)) == 0:
        out += delimited(draw(st.integers(100, 536_870_911)), draw(st.binary(max_size=20)))
    return bytes(out)


def deep_nesting(depth: int, closed: bool) -> bytes:
    """``depth`` nested groups of an unknown field (protobuf parses groups recursively)."""
    return tag(99, 3) * depth + (tag(99, 4) * depth if closed else b"")


BROKEN = [
    deep_nesting(150, True),
    deep_nesting(150, False),
    deep_nesting(50, True),
    b"\x0a\xff\xff\xff\xff\x0f",  # a length past the end
    b"\x08" + b"\xff" * 11,  # a varint longer than 10 bytes
]


BROKEN = [
    deep_nesting(150, True),
    deep_nesting(150, False),
    deep_nesting(50, True),
    b"\x0a\xff\xff\xff\xff\x0f",  # a length past the end
    b"\x08" + b"\xff" * 11,  # a varint longer than 10 bytes
]


def malformed(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Bytes that are not a valid encoding, or only just one."""
    return st.one_of(
        st.binary(max_size=200),
        wire_message(descriptor).map(lambda b: b[: max(0, len(b) - 1)]),  # truncated
        st.sampled_from(BROKEN),
    )


# --- structured requests (reach validation and the store) -----------------------------------

CREATE_IDS = ["fz-1", "fz-2", "fz-3", "", "Bad ID", "x" * 200]
READ_IDS = [*CREATE_IDS, TRIGGER_ID, "nx-1"]
NEVER_IDS = ["nx-1", "nx-2", "", "Bad ID", "x" * 200]
URLS = ["http://127.0.0.1:9/hook", "http://127.0.0.1:1/", "http://169.254.169.254/latest/",
        "http://[::ffff:169.254.169.254]/", "http://[fd00:ec2::254]/", "ftp://127.0.0.1/",
        "http://2130706433/", "http://metadata.google.internal/", "not a url", ""]  # fmt: skip
CRONS = ["* * * * *", "0 6 * * 1-5", "61 * * * *", "@daily", "@every 5s", "*/0 * * * *", "",
         "0 0 30 2 *", "* * * * * * *"]  # fmt: skip
ZONES = ["", "UTC", "Europe/Berlin", "Mars/Olympus", "../../etc/passwd", "America/New_York"]
HEADER_NAMES = ["X-A", "Authorization", "Idempotency-Key", "bad name", "", "X-\u00e9"]


def _duration(d: Any, draw: st.DrawFn) -> None:
    d.seconds = draw(st.sampled_from([0, 1, 5, 60, -5, 86400, 10**10, 315_576_000_000]))
    d.nanos = draw(st.sampled_from([0, 1, 999_999_999, -1]))


def _time(t: Any, draw: st.DrawFn) -> None:
    t.seconds = draw(st.sampled_from([*SECONDS[:-3], -(2**62), 2**62, 4102444800]))
    t.nanos = draw(st.sampled_from([0, 999_999_999]))


@st.composite
def task_spec(draw: st.DrawFn) -> pb.TaskSpec:
    spec = pb.TaskSpec(id=draw(st.sampled_from(CREATE_IDS)), paused=True)
    kind = draw(st.sampled_from(["cron", "every", "at", "none"]))
    if kind == "cron":
        spec.schedule.cron = draw(st.sampled_from(CRONS))
    elif kind == "every":
        _duration(spec.schedule.every, draw)
    elif kind == "at":
        _time(spec.schedule.at, draw)
    spec.schedule.time_zone = draw(st.sampled_from(ZONES))
    for name in ("start_at", "end_at"):
        if draw(st.booleans()):
            _time(getattr(spec.schedule, name), draw)
    if draw(st.booleans()):
        _duration(spec.schedule.jitter, draw)
    spec.schedule.dst_nonexistent = draw(st.integers(-2, 5))  # type: ignore[assignment]
    spec.schedule.dst_ambiguous = draw(st.integers(-2, 5))  # type: ignore[assignment]
    target = draw(st.sampled_from(["http", "shell", "python", "none"]))
    if target == "http":
        spec.http.url = draw(st.sampled_from(URLS))
        spec.http.method = draw(st.sampled_from(["", "GET", "post", "TRACE"]))
        for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=3)):
            spec.http.headers[name] = draw(st.sampled_from(["v", "a\r\nb", "Bearer x"]))
        for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=2)):
            spec.http.header_secrets[name] = draw(st.sampled_from(["TOKEN", "1bad", ""]))
    elif target == "shell":
        spec.shell.argv.extend(draw(st.lists(st.sampled_from(["/bin/true", "", "a\x00b"]))))
        spec.shell.env_secrets["X"] = draw(st.sampled_from(["TOKEN", "bad-name"]))
    elif target == "python":
        spec.python.name = draw(st.sampled_from(["peerd.echo", "", "no.such", "a b"]))
        spec.python.args_json = draw(st.sampled_from(["", "{}", "[1]", "{bad", '{"a": 1}']))
    if draw(st.booleans()):
        _duration(spec.timeout, draw)
    spec.overlap = draw(st.integers(-2, 7))  # type: ignore[assignment]
    spec.catch_up = draw(st.integers(-2, 7))  # type: ignore[assignment]
    spec.on_owner_lost = draw(st.integers(-2, 5))  # type: ignore[assignment]
    spec.priority = draw(st.sampled_from([0, 100, 101, -101, 2**31 - 1]))
    if draw(st.booleans()):
        r = spec.retry
        r.max_attempts = draw(st.sampled_from([0, 1, 3, 100, 101, -1]))
        r.multiplier = draw(st.sampled_from([0.0, 2.0, -1.0, float("nan"), float("inf")]))
        r.retry_on.extend(draw(st.lists(st.integers(-1, 9), max_size=3)))  # type: ignore[arg-type]
        _duration(r.initial_backoff, draw)
        _duration(r.deadline, draw)
    if draw(st.booleans()):
        _duration(spec.misfire_threshold, draw)
        _duration(spec.catch_up_window, draw)
    spec.on_failure = draw(st.sampled_from(["", "fz-1", "Bad ID", spec.id]))
    return spec


def _preview(spec: pb.TaskSpec, count: int, by_id: bool) -> pb.PreviewScheduleRequest:
    if by_id:
        return pb.PreviewScheduleRequest(task_id=spec.id, count=count)
    return pb.PreviewScheduleRequest(schedule=spec.schedule, count=count)


def structured(method: str) -> st.SearchStrategy[bytes] | None:
    """Well-formed requests for ``method`` (most fail validation, some succeed)."""
    ids, never = st.sampled_from(READ_IDS), st.sampled_from(NEVER_IDS)
    sizes = st.sampled_from([0, 1, 5, 1000, 1001, -1])
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "CreateTask": st.builds(pb.CreateTaskRequest, task=task_spec()),
        "CreateTasks": st.builds(pb.CreateTasksRequest, tasks=st.lists(task_spec(), max_size=4)),
        "GetTask": st.builds(pb.GetTaskRequest, id=ids),
        "DeleteTask": st.builds(pb.DeleteTaskRequest, id=st.sampled_from([*CREATE_IDS, "nx-1"])),
        "PauseTask": st.builds(
            pb.PauseTaskRequest, id=ids, note=st.sampled_from(["", "why", "n" * 1025])
        ),
        "ResumeTask": st.builds(pb.ResumeTaskRequest, id=never),
        "TriggerTask": st.builds(
            pb.TriggerTaskRequest, id=st.sampled_from([TRIGGER_ID, *NEVER_IDS])
        ),
        "ListRuns": st.builds(
            pb.ListRunsRequest,
            task_id=ids,
            page_size=sizes,
            page_token=st.sampled_from(["", "12", "x"]),
        ),
        "ListTasks": st.builds(
            pb.ListTasksRequest, page_size=sizes, page_token=st.sampled_from(["", "fz-1", "!"])
        ),
        "AuditTask": st.builds(pb.AuditTaskRequest, task_id=ids),
        "WatchRuns": st.builds(pb.WatchRunsRequest, task_id=ids, replay=sizes),
        "PreviewSchedule": st.builds(_preview, task_spec(), sizes, st.booleans()),
    }
    strategy = strategies.get(method)
    return strategy.map(lambda m: m.SerializeToString()) if strategy is not None else None


def requests(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    options = [wire_message(method.input_type), malformed(method.input_type)]
    if (good := structured(method.name)) is not None:
        options.append(good)
    return st.one_of(options)


# --- the property ----------------------------------------------------------------------------


def call(channel: grpc.Channel, method: MethodDescriptor, payload: bytes) -> grpc.StatusCode:
    """The status the node answers ``payload`` with (a stream: its first message or end)."""
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(payload, timeout=0.5)
            try:
                next(iter(stream), None)
            finally:
                stream.cancel()
        else:
            channel.unary_unary(path)(payload, timeout=20)
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.CANCELLED and method.server_streaming:
            return grpc.StatusCode.OK
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and method.server_streaming:
            return grpc.StatusCode.OK  # a valid stream with nothing to send yet
        assert code in REJECTED, f"{method.name}: {code.name}: {exc.details()}"
        return code  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def settle_trigger(channel: grpc.Channel, node: PeerdNode) -> None:
    """Wait until the newest run of the trigger task is final (its record is the last write)."""

    def final() -> None:
        with SchedulerClient(node.address) as client:
            runs = client.list_runs(TRIGGER_ID, 1)
        assert runs and runs[0].status in (pb.SUCCEEDED, pb.FAILED), runs

    assert_eventually(final, timeout=20)


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_every_rpc_answers_a_documented_status_and_a_refusal_writes_nothing(
    fuzz_node: tuple[grpc.Channel, Keyspace, PeerdNode], method: MethodDescriptor
) -> None:
    channel, keyspace, node = fuzz_node

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(payload=requests(method))
    def check(payload: bytes) -> None:
        before = keyspace.snapshot()
        code = call(channel, method, payload)
        if code != grpc.StatusCode.OK:
            assert keyspace.snapshot() == before, f"{method.name} refused ({code.name}) but wrote"
        elif method.name == "TriggerTask":
            settle_trigger(channel, node)

    check()


# --- limits ------------------------------------------------------------------------------------


def test_oversized_and_deeply_nested_requests_are_refused(
    fuzz_node: tuple[grpc.Channel, Keyspace, PeerdNode],
) -> None:
    channel, keyspace, _ = fuzz_node
    create = channel.unary_unary(f"/{SERVICE.full_name}/CreateTask")
    before = keyspace.snapshot()
    with pytest.raises(grpc.RpcError) as big:
        create(delimited(1, b"x" * (5 * 1024 * 1024)), timeout=20)
    assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as deep:
        create(deep_nesting(200, True), timeout=20)
    assert deep.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request: not a valid peerd.v1.CreateTaskRequest message" in deep.value.details()
    with pytest.raises(grpc.RpcError) as utf8:
        create(delimited(1, delimited(1, b"\xff\xfe")), timeout=20)  # task.id
    assert utf8.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert keyspace.snapshot() == before


def test_rate_limit_per_caller(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "peerd.toml"
    config.write_text("api_rate_limit = 0.001\napi_burst = 3\n")  # one token per 1000 s
    [node] = nodes(1, extra_args=["--config", str(config)])
    codes: list[grpc.StatusCode] = []
    details = ""
    with grpc.insecure_channel(node.address) as channel:
        cluster = channel.unary_unary(f"/{SERVICE.full_name}/GetCluster")
        for _ in range(6):
            try:
                cluster(b"", timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                details = exc.details()
        assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
        assert details.startswith("rate limit: ipv4:127.0.0.1 made more requests than this node")
        assert node.health() == "SERVING"  # health checks (and peer probes) are never limited

        # The limit is reloadable: SIGHUP with a higher rate admits the caller again.
        config.write_text("api_rate_limit = 1000\napi_burst = 3\n")
        os.kill(node.pid, signal.SIGHUP)

        def admitted() -> None:
            try:
                cluster(b"", timeout=10)
            except grpc.RpcError as exc:
                raise AssertionError(exc.details()) from None

        assert_eventually(admitted, timeout=10, message="GetCluster after SIGHUP")
