"""NOSPACE surfaces clearly: etcd's error mapped once, its status code, exit code and CLI text,
the alarm parsed from Status, and the two compaction settings validated."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from peerd.cli_output_cluster import cluster_text
from peerd.client import exit_code_for_status
from peerd.config import build_config
from peerd.coord.compaction import space_hint
from peerd.coord.etcd import Alarm, _map_error
from peerd.coord.etcd_messages import parse_alarm
from peerd.errors import InvalidArgument, PeerdError, ResourceExhausted
from peerd.exitcodes import EXIT_NO_SPACE, exit_code_for_error
from peerd.rpc.errors import status_for
from peerd.v1 import scheduler_pb2 as pb


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def test_nospace_maps_to_resource_exhausted_with_cause_hint_and_fix() -> None:
    hint = space_hint(timedelta(minutes=5), timedelta(minutes=5))
    exc = rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
    err = _map_error(exc, hint)
    assert isinstance(err, ResourceExhausted)
    message = str(err)
    assert "NOSPACE" in message and "database space exceeded" in message
    assert "every 5m" in message and "keeping 5m" in message
    assert "docs/operations.md" in message and "etcdctl alarm disarm" in message
    assert status_for(err) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert exit_code_for_error(err) == EXIT_NO_SPACE
    assert exit_code_for_status(grpc.StatusCode.RESOURCE_EXHAUSTED) == EXIT_NO_SPACE


def test_other_resource_exhausted_is_not_nospace() -> None:
    err = _map_error(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "message larger than max"))
    assert type(err) is PeerdError


def test_space_hint_when_compaction_is_off() -> None:
    hint = space_hint(timedelta(0), timedelta(minutes=5))
    assert "off" in hint and "etcd_compaction_interval 0" in hint


def test_alarms_parsed_from_status_errors() -> None:
    assert parse_alarm("memberID:10276657743932975437 alarm:NOSPACE ") == Alarm(
        10276657743932975437, "NOSPACE"
    )
    assert parse_alarm("memberID:7 alarm:CORRUPT") == Alarm(7, "CORRUPT")
    assert parse_alarm("etcdserver: no leader") is None
    assert parse_alarm("") is None


def test_cluster_text_shows_alarms_and_database_size() -> None:
    resp = pb.GetClusterResponse(
        cluster="c",
        node_id="n1",
        etcd_db_size_bytes=16 * 1024 * 1024,
        etcd_db_size_in_use_bytes=4 * 1024 * 1024,
        etcd_compactor="n2",
    )
    resp.etcd_alarms.add(member_id=0xABC, alarm="NOSPACE")
    text = cluster_text(resp)
    assert "etcd: database 16.0 MiB (4.0 MiB in use), compactor n2" in text
    assert "ALARM NOSPACE on etcd member abc" in text and "docs/operations.md" in text
    assert "ALARM" not in cluster_text(pb.GetClusterResponse(cluster="c", node_id="n1"))


def test_compaction_settings_defaults_env_and_flags() -> None:
    cfg = build_config({"node_id": "n1"}, {})
    assert cfg.etcd_compaction_interval == timedelta(minutes=5)
    assert cfg.etcd_compaction_retention == timedelta(minutes=5)
    env = {"PEERD_ETCD_COMPACTION_INTERVAL": "0", "PEERD_ETCD_COMPACTION_RETENTION": "1h"}
    cfg = build_config({"node_id": "n1"}, env)
    assert cfg.etcd_compaction_interval == timedelta(0)
    assert cfg.etcd_compaction_retention == timedelta(hours=1)
    cfg = build_config({"node_id": "n1", "etcd_compaction_interval": "30s"}, env)
    assert cfg.etcd_compaction_interval == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("name", "value", "flag"),
    [
        ("etcd_compaction_interval", "-1s", "--etcd-compaction-interval"),
        ("etcd_compaction_interval", "soon", "--etcd-compaction-interval"),
        ("etcd_compaction_retention", "-5m", "--etcd-compaction-retention"),
    ],
)
def test_compaction_settings_rejected_with_the_flag(name: str, value: str, flag: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        build_config({"node_id": "n1", name: value}, {})
    assert info.value.field == flag
