"""Safe targets and secrets on a real 3-node cluster: a metadata-address webhook is refused, a
name that resolves to a denied address is refused when it runs, and a secret reaches the target
but never etcd, ``task get`` or the run records."""

from __future__ import annotations

import json
import uuid

from peerd.client import SchedulerClient
from peerd.devtools.sink import WebhookSink
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import PeerdNode, assert_eventually, cli, keyspace


def final_run(node: PeerdNode, task_id: str) -> pb.RunRecord:
    def done() -> pb.RunRecord:
        with SchedulerClient(node.address) as client:
            [run] = client.list_runs(task_id, 1)
        assert run.status in (pb.SUCCEEDED, pb.FAILED), pb.RunStatus.Name(run.status)
        return run

    return assert_eventually(done, timeout=20)


def test_targets_policy_and_secrets_on_three_nodes(  # type: ignore[no-untyped-def]
    nodes, sink: WebhookSink, etcd_endpoint: str, cluster_name: str
) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    env = {"PEERD_SECRET_PAYMENTS_TOKEN": secret}
    n1, n2 = nodes(2, env=env)
    [strict] = nodes(1, env=env, extra_args=["--http-deny", "loopback"])
    prefix = f"/peerd/{cluster_name}/".encode()

    # 1. A webhook to the cloud metadata address is refused on create, naming the rule, and
    # nothing is written.
    before = keyspace(etcd_endpoint, prefix)
    meta = cli(n1, "task", "create", "meta", "--every", "1h",
               "--http-post", "http://169.254.169.254/latest/meta-data/iam/")  # fmt: skip
    assert meta.returncode == 6, meta.stderr  # PERMISSION_DENIED
    assert "task.http.url:" in meta.stderr
    assert "denied by --http-deny 169.254.0.0/16 (built-in: link-local, cloud metadata)" in (
        meta.stderr
    )
    aws6 = cli(
        n2, "task", "create", "meta6", "--every", "1h", "--http-post", "http://[fd00:ec2::254]/"
    )
    assert aws6.returncode == 6 and "fd00:ec2::254" in aws6.stderr, aws6.stderr
    local = cli(strict, "task", "create", "loc", "--every", "1h",
                "--http-post", f"http://127.0.0.1:{sink.port}/x")  # fmt: skip
    assert local.returncode == 6 and "denied by --http-deny loopback" in local.stderr
    assert keyspace(etcd_endpoint, prefix) == before

    # 2. A secret header: sent by the node that runs it, stored nowhere.
    created = cli(n1, "task", "create", "charge", "--every", "1h",
                  "--http-post", f"{sink.url}/charge",
                  "--header-secret", "Authorization=PAYMENTS_TOKEN",
                  "--header", "X-Api-Key: literal-key-123")  # fmt: skip
    assert created.returncode == 0, created.stderr
    trigger = cli(n2, "task", "trigger", "charge")
    assert trigger.returncode == 0, trigger.stderr
    assert final_run(n2, "charge").status == pb.SUCCEEDED
    [delivery] = [d for d in sink.deliveries() if d.path == "/charge"]
    assert delivery.headers["authorization"] == secret
    assert delivery.headers["x-api-key"] == "literal-key-123"

    shown = [cli(node, "task", "get", "charge", *fmt) for node in (n1, strict)
             for fmt in ((), ("-o", "json"))]  # fmt: skip
    for out in shown:
        assert out.returncode == 0, out.stderr
        assert secret not in out.stdout
        assert "literal-key-123" not in out.stdout  # a credential-named literal: redacted
    assert "header Authorization:  <secret PAYMENTS_TOKEN>" in shown[0].stdout
    assert "header X-Api-Key:      <redacted>" in shown[0].stdout
    doc = json.loads(shown[1].stdout)
    assert doc["http"]["header_secrets"] == {"Authorization": "PAYMENTS_TOKEN"}
    assert doc["http"]["headers"] == {"X-Api-Key": "<redacted>"}
    listed = cli(n2, "task", "list", "-o", "json")
    assert secret not in listed.stdout and "literal-key-123" not in listed.stdout
    runs = cli(n1, "runs", "charge", "-o", "json")
    assert runs.returncode == 0 and secret not in runs.stdout

    values = b"\n".join(value for _, value, _ in keyspace(etcd_endpoint, prefix))
    assert secret.encode() not in values
    assert b"PAYMENTS_TOKEN" in values  # the reference is stored, the value is not
    assert b"literal-key-123" in values  # literal values are stored (that is what secrets fix)
    for node in (n1, n2, strict):
        assert secret not in node.log_text()

    # 3. A host name that resolves to a denied address passes the check on create (names are
    # not resolved then) and is refused when it runs, after DNS resolution: not retried.
    created = cli(n1, "task", "create", "via-name", "--every", "1h", "--max-attempts", "3",
                  "--http-post", f"http://localhost:{sink.port}/via-name")  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert cli(strict, "task", "trigger", "via-name").returncode == 0
    run = final_run(strict, "via-name")
    assert run.status == pb.FAILED
    assert run.attempt == 1  # a policy refusal is a config failure: never retried
    assert "target refused by this node's policy: localhost: address" in run.error
    assert "denied by --http-deny loopback" in run.error
    assert [d for d in sink.deliveries() if d.path == "/via-name"] == []
