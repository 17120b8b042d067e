"""Labels and label selectors: Kubernetes syntax and limits, the selector grammar and meaning,
task validation and the node's ``--label`` setting (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerd.config import build_config
from peerd.core.labels import (
    MAX_LABELS,
    LabelError,
    Requirement,
    Selector,
    check_key,
    check_value,
    compile_selector,
    format_labels,
    parse_labels,
    parse_selector,
    selector_matches,
)
from peerd.core.validate import validate_task
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES
from tests.unit.test_validate import NOW
from tests.unit.test_validate import base as http_spec

NAME63 = "a" + "b" * 61 + "c"
PREFIX253 = ".".join(["d" * 63] * 3 + ["e" * 61])


@pytest.mark.parametrize(
    "key",
    ["zone", "Zone_1", "a", "a.b-c_d", NAME63, "example.com/zone", f"{PREFIX253}/x", "a-1.b/c"],
)
def test_valid_keys(key: str) -> None:
    check_key(key)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty key"),
        ("-zone", "must begin and end with [A-Za-z0-9]"),
        ("zone.", "must begin and end"),
        ("zo ne", "contain only"),
        (NAME63 + "x", "the name is 64 characters, at most 63"),
        ("/zone", "the prefix before '/' is empty"),
        ("example.com/", "the name is empty"),
        ("Example.com/zone", "the prefix must be a DNS subdomain"),
        ("ex_ample.com/zone", "DNS subdomain"),
        ("-a.com/zone", "DNS subdomain"),
        (f"{PREFIX253}x/zone", "the prefix is 254 characters, at most 253"),
        ("a/b/c", "the prefix must be a DNS subdomain"),
    ],
)
def test_invalid_keys(key: str, reason: str) -> None:
    with pytest.raises(LabelError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        check_key(key)


@pytest.mark.parametrize("value", ["", "eu-1", "A", "v1.2_3", NAME63])
def test_valid_values(value: str) -> None:
    check_value(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (NAME63 + "x", "value is 64 characters, at most 63"),
        ("-x", "must be empty or begin and end"),
        ("a,b", "contain only"),
        ("a b", "contain only"),
        ("a/b", "contain only"),
    ],
)
def test_invalid_values(value: str, reason: str) -> None:
    with pytest.raises(LabelError, match=reason):
        check_value(value)


@pytest.mark.parametrize(
    ("text", "requirements"),
    [
        ("", ()),
        ("zone=eu-1", (Requirement("zone", "=", ("eu-1",)),)),
        ("zone == eu-1", (Requirement("zone", "=", ("eu-1",)),)),
        ("zone!=eu-1", (Requirement("zone", "!=", ("eu-1",)),)),
        ("zone=", (Requirement("zone", "=", ("",)),)),
        ("disk in (nvme, ssd,ssd)", (Requirement("disk", "in", ("nvme", "ssd")),)),
        ("disk notin (hdd)", (Requirement("disk", "notin", ("hdd",)),)),
        ("gpu", (Requirement("gpu", "exists"),)),
        ("!spot", (Requirement("spot", "!"),)),
        (
            " team=payments , env!=dev,example.com/tier in (a,b),!x ",
            (
                Requirement("team", "=", ("payments",)),
                Requirement("env", "!=", ("dev",)),
                Requirement("example.com/tier", "in", ("a", "b")),
                Requirement("x", "!"),
            ),
        ),
    ],
)
def test_selector_grammar(text: str, requirements: tuple[Requirement, ...]) -> None:
    assert parse_selector(text) == Selector(requirements)


def test_selector_text_is_canonical() -> None:
    assert str(parse_selector(" a==1, b in (y,x),!c,d ,e!=")) == "a=1,b in (x,y),!c,d,e!="


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("zone in (a,b", "expected ',' or ')' at position 13, found the end"),
        ("zone in a", "expected '(' at position 9, found 'a'"),
        ("zone in ()", "expected a label value at position 10, found ')'"),
        ("zone=a,", "expected a requirement after ',' at position 8, found the end"),
        (",zone", "expected a label key at position 1, found ','"),
        ("zone=a b", "expected ',' at position 8, found 'b'"),
        ("zone=a=b", "expected ',' at position 7, found '='"),
        ("zone<3", "the name must begin and end"),
        ("!zone=a", "expected ',' or the end after !zone at position 6, found '='"),
        ("zone foo", "expected =, ==, !=, in, notin, ',' or the end after key 'zone'"),
        ("zone=-a", "must be empty or begin and end"),
        ("Bad_Prefix/x=1", "DNS subdomain"),
        ("x" * 4097, "4097 characters, at most 4096"),
    ],
)
def test_selector_errors_say_where_and_why(text: str, reason: str) -> None:
    with pytest.raises(LabelError) as exc:
        parse_selector(text)
    assert reason in str(exc.value)
    with pytest.raises(InvalidArgument) as err:
        compile_selector(text, "label_selector")
    assert err.value.field == "label_selector" and reason in err.value.reason


@pytest.mark.parametrize(
    ("selector", "matching", "not_matching"),
    [
        ("", [{}, {"a": "1"}], []),
        ("zone=b", [{"zone": "b"}, {"zone": "b", "x": ""}], [{}, {"zone": "a"}, {"zone": ""}]),
        ("zone!=b", [{}, {"zone": "a"}], [{"zone": "b"}]),
        ("zone in (a,b)", [{"zone": "a"}, {"zone": "b"}], [{}, {"zone": "c"}]),
        ("zone notin (a,b)", [{}, {"zone": "c"}], [{"zone": "a"}]),
        ("gpu", [{"gpu": ""}, {"gpu": "a100"}], [{}]),
        ("!gpu", [{}, {"zone": "a"}], [{"gpu": ""}]),
        ("zone=a,disk in (ssd,nvme),!spot", [{"zone": "a", "disk": "ssd"}],
         [{"zone": "a", "disk": "ssd", "spot": "1"}, {"zone": "a", "disk": "hdd"}]),
    ],
)  # fmt: skip
def test_selector_meaning(
    selector: str, matching: list[dict[str, str]], not_matching: list[dict[str, str]]
) -> None:
    for labels in matching:
        assert selector_matches(selector, labels), labels
    for labels in not_matching:
        assert not selector_matches(selector, labels), labels


def test_an_unreadable_selector_matches_nothing() -> None:
    assert not selector_matches("zone in (", {"zone": "a"})
    assert not selector_matches("zone in (", {})


def test_parse_labels() -> None:
    assert parse_labels(["zone=eu-1", " disk = ssd ", "empty="], "--label") == {
        "zone": "eu-1",
        "disk": "ssd",
        "empty": "",
    }
    assert format_labels({"zone": "b", "disk": "ssd"}) == "disk=ssd,zone=b"
    for items, reason in (
        (["zone"], "expected KEY=VALUE, got 'zone'"),
        (["zone=a", "zone=b"], "label 'zone' given twice"),
        (["zone=a b"], "contain only"),
        ([f"k{i}=v" for i in range(MAX_LABELS + 1)], "65 labels, at most 64"),
    ):
        with pytest.raises(InvalidArgument) as err:
            parse_labels(items, "--label")
        assert err.value.field == "--label" and reason in err.value.reason


def test_task_labels_and_selector_are_validated_naming_the_field() -> None:
    spec = http_spec()
    spec.labels.update({"team": "payments", "example.com/env": "dev"})
    spec.node_selector = "zone in (a,b),!spot"
    validate_task(spec, NOW, rules=RULES)
    bad = [
        ({"team": "pay ments"}, "", "task.labels", "value 'pay ments' of 'team'"),
        ({"-team": "x"}, "", "task.labels", "key '-team'"),
        ({}, "zone in (a", "task.node_selector", "'zone in (a': expected ',' or ')'"),
    ]
    for labels, selector, field, reason in bad:
        spec = http_spec()
        spec.labels.update(labels)
        spec.node_selector = selector
        with pytest.raises(InvalidArgument) as err:
            validate_task(spec, NOW, rules=RULES)
        assert (err.value.field, reason in err.value.reason) == (field, True), err.value


def test_node_labels_setting_from_flags_env_and_toml(tmp_path: Path) -> None:
    flags = {"node_id": "n1", "labels": ["zone=eu-1", "disk=ssd,gpu="]}
    cfg = build_config(flags, {})
    assert cfg.labels == ("disk=ssd", "gpu=", "zone=eu-1")
    assert cfg.label_map == {"disk": "ssd", "gpu": "", "zone": "eu-1"}
    env = {"PEERD_NODE_ID": "n1", "PEERD_LABELS": "zone=eu-1,disk=ssd"}
    assert build_config({}, env).label_map == {"zone": "eu-1", "disk": "ssd"}
    table = tmp_path / "table.toml"
    table.write_text('node_id = "n1"\n[labels]\nzone = "eu-1"\n"example.com/rack" = "r7"\n')
    assert build_config({}, {}, table).label_map == {"zone": "eu-1", "example.com/rack": "r7"}
    listed = tmp_path / "list.toml"
    listed.write_text('node_id = "n1"\nlabels = ["zone=eu-1"]\n')
    assert build_config({}, {}, listed).labels == ("zone=eu-1",)
    assert build_config({"node_id": "n1"}, {}).label_map == {}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (["zone"], "expected KEY=VALUE, got 'zone'"),
        (["zone=a", "zone=b"], "label 'zone' given twice"),
        (["Zone/x=1"], "DNS subdomain"),
        ({"zone": 1}, "expected a table of strings"),
        ([1], "expected KEY=VALUE strings"),
    ],
)
def test_bad_node_labels_name_the_flag(raw: object, reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        build_config({"node_id": "n1", "labels": raw}, {})
    assert err.value.field == "--label" and reason in err.value.reason


def test_member_key_carries_the_labels() -> None:
    cfg = build_config({"node_id": "n1", "labels": ["zone=b"]}, {})
    member = pb.Member(node_id=cfg.node_id, labels=cfg.label_map)
    assert pb.Member.FromString(member.SerializeToString()).labels == {"zone": "b"}
