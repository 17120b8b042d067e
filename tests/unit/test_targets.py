"""The HTTP target policy (peerd.core.targets) and the URL/secret checks of task validation."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime

import pytest

from peerd.config import build_config
from peerd.core.targets import (
    TargetError,
    TargetPolicy,
    parse_address,
    parse_rule,
    parse_target,
)
from peerd.core.validate import validate_task
from peerd.errors import InvalidArgument
from peerd.v1 import scheduler_pb2 as pb
from tests.helpers import RULES

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# --- URLs ------------------------------------------------------------------------------------


def test_parse_target_normalises_scheme_host_and_default_port() -> None:
    t = parse_target("HTTPS://User:pw@API.Example.COM.:443/a/../hooks?x=1")
    assert (t.scheme, t.host, t.port, t.address) == ("https", "api.example.com", 443, None)
    assert t.normalised == "https://api.example.com/hooks?x=1"
    assert parse_target("http://h:8080").normalised == "http://h:8080/"


def test_ip_literal_hosts_are_addresses_and_mapped_ipv6_is_unwrapped() -> None:
    assert parse_target("http://169.254.169.254/latest").address == ip("169.254.169.254")
    assert parse_target("http://[::ffff:169.254.169.254]/").address == ip("169.254.169.254")
    assert parse_target("http://[fd00:ec2::254]/").address == ip("fd00:ec2::254")
    assert parse_address("fe80::1%eth0") == ip("fe80::1")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme must be http or https"),
        ("http:///x", "has no host"),
        ("http://2130706433/", "not a canonical IPv4 address"),
        ("http://0x7f.1/", "not a canonical IPv4 address"),
        ("http://127.1/", "not a canonical IPv4 address"),
        ("http://exa mple.com/", "not a valid host name"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(TargetError, match=reason):
        parse_target(url)


# --- rules -----------------------------------------------------------------------------------


def test_rule_kinds() -> None:
    assert parse_rule("10.0.0.0/8", "--http-deny").kind == "cidr"
    assert parse_rule("10.1.2.3", "--http-deny").networks == (ipaddress.ip_network("10.1.2.3/32"),)
    assert parse_rule("::ffff:169.254.0.0/112", "--http-deny").networks == (
        ipaddress.ip_network("169.254.0.0/16"),
    )
    assert parse_rule("private", "--http-deny").kind == "cidr"
    assert parse_rule("https://*.Example.com/hooks/*", "--http-allow").pattern == (
        "https://*.example.com/hooks/*"
    )
    assert parse_rule("*.Example.com.", "--http-allow").pattern == "*.example.com"


@pytest.mark.parametrize("bad", ["", "10.0.0.0/33", "ftp://*", "fe80::zz"])
def test_bad_rules_are_refused(bad: str) -> None:
    with pytest.raises(TargetError):
        parse_rule(bad, "--http-deny")


def test_bad_rule_refuses_the_configuration_naming_the_flag() -> None:
    with pytest.raises(InvalidArgument, match=re.escape("--http-deny: '10.0.0.0/33'")):
        build_config({"node_id": "n1", "http_deny": ["10.0.0.0/33"]}, {})
    cfg = build_config({"node_id": "n1"}, {"PEERD_HTTP_ALLOW": "*.example.com;10.0.0.0/8"})
    assert cfg.http_allow == ("*.example.com", "10.0.0.0/8")


# --- decisions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.0.0/16"),
        ("http://[::ffff:169.254.169.254]/", "169.254.0.0/16"),
        ("http://[fe80::1]/", "fe80::/10"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal"),
        ("http://METADATA.google.internal./", "metadata.google.internal"),
    ],
)
def test_builtin_denies_name_the_rule(url: str, rule: str) -> None:
    decision = TargetPolicy().check_url(url)
    assert not decision.allowed
    assert f"denied by --http-deny {rule} (built-in" in decision.reason


def test_builtin_denies_cannot_be_lifted_by_an_allow() -> None:
    policy = TargetPolicy(allow=["169.254.169.254", "link-local"])
    assert not policy.check_url("http://169.254.169.254/").allowed
    assert not policy.check_address(ip("169.254.1.1")).allowed


def test_default_allows_loopback_private_and_public() -> None:
    policy = TargetPolicy()
    for url in ("http://127.0.0.1:8080/", "http://10.1.2.3/", "https://example.com/"):
        assert policy.check_url(url).allowed, url
    assert policy.check_address(ip("127.0.0.1")).allowed
    assert policy.check_address(ip("192.168.1.1")).allowed


def test_named_sets_deny_loopback_private_including_unspecified() -> None:
    policy = TargetPolicy(deny=["loopback", "private"])
    for address in ("127.0.0.1", "::1", "0.0.0.0", "10.0.0.1", "172.31.0.1", "fd12::1"):
        decision = policy.check_address(ip(address))
        assert not decision.allowed, address
        assert f"address {address} denied by --http-deny" in decision.reason
    assert policy.check_address(ip("8.8.8.8")).allowed


def test_deny_wins_over_allow() -> None:
    policy = TargetPolicy(allow=["*.example.com"], deny=["https://admin.example.com/*"])
    assert policy.check_url("https://api.example.com/x").allowed
    decision = policy.check_url("https://admin.example.com/x")
    assert not decision.allowed
    assert decision.reason == "denied by --http-deny https://admin.example.com/*"


def test_name_allow_list_restricts_urls_but_not_addresses() -> None:
    policy = TargetPolicy(allow=["https://*.example.com/hooks/*"])
    assert policy.check_url("https://a.example.com/hooks/1").allowed
    refused = policy.check_url("https://a.example.com/admin")
    assert not refused.allowed
    assert refused.reason == "matches no --http-allow URL or host rule"
    assert not policy.check_url("http://a.example.com/hooks/1").allowed  # scheme is part of it
    assert policy.check_address(ip("203.0.113.9")).allowed  # address layer open


def test_cidr_allow_list_restricts_addresses_but_not_names() -> None:
    policy = TargetPolicy(allow=["10.0.0.0/8"])
    assert policy.check_url("https://anything.example/").allowed  # decided per address
    assert policy.check_address(ip("10.2.3.4")).allowed
    refused = policy.check_address(ip("203.0.113.9"))
    assert not refused.allowed
    assert refused.reason == "address 203.0.113.9 matches no --http-allow CIDR rule"
    assert not policy.check_url("http://203.0.113.9/").allowed  # an IP literal is decided now


def test_both_layers_must_pass() -> None:
    policy = TargetPolicy(allow=["*.internal", "10.0.0.0/8"])
    assert policy.check_url("http://hooks.internal/").allowed
    assert not policy.check_url("http://hooks.example.com/").allowed
    assert policy.check_address(ip("10.0.0.5")).allowed
    assert not policy.check_address(ip("192.168.0.5")).allowed


def test_decisions_are_remembered_per_target() -> None:
    policy = TargetPolicy(deny=["*.bad"])
    target = parse_target("http://x.bad/")
    first = policy.check_target(target)
    assert policy.check_target(parse_target("http://x.bad/")) is first


# --- validation of secret references ---------------------------------------------------------


def _spec(**target: object) -> pb.TaskSpec:
    spec = pb.TaskSpec(id="t1", schedule=pb.Schedule(cron="* * * * *"))
    if "argv" in target:
        spec.shell.CopyFrom(pb.ShellTarget(**target))  # type: ignore[arg-type]
    else:
        spec.http.CopyFrom(pb.HttpTarget(url="https://example.com/", **target))  # type: ignore[arg-type]
    return spec


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"header_secrets": {"Bad Name": "X"}}, "task.http.header_secrets: 'Bad Name' is not"),
        ({"header_secrets": {"Idempotency-Key": "X"}}, "'Idempotency-Key' is set by peerd"),
        ({"header_secrets": {"Authorization": "1X"}}, "secret name '1X' of 'Authorization'"),
        (
            {"header_secrets": {"authorization": "X"}, "headers": {"Authorization": "b"}},
            "'authorization' is also a literal header",
        ),
        ({"argv": ["/bin/true"], "env_secrets": {"A-B": "X"}}, "task.shell.env_secrets: 'A-B'"),
        (
            {"argv": ["/bin/true"], "env": {"TOKEN": "1"}, "env_secrets": {"TOKEN": "X"}},
            "'TOKEN' is also a literal variable",
        ),
        ({"argv": ["/bin/true"], "env_secrets": {"TOKEN": "bad-name"}}, "secret name 'bad-name'"),
    ],
)
def test_bad_secret_references_are_refused(target: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate_task(_spec(**target), NOW, rules=RULES)


def test_good_secret_references_pass() -> None:
    validate_task(_spec(header_secrets={"Authorization": "PAYMENTS_TOKEN"}), NOW, rules=RULES)
    validate_task(
        _spec(argv=["/bin/true"], env_secrets={"DB_PASSWORD": "db_password"}), NOW, rules=RULES
    )


def test_task_url_is_checked_by_the_same_parser() -> None:
    with pytest.raises(InvalidArgument, match=r"task\.http\.url: .*not a canonical IPv4"):
        spec = pb.TaskSpec(
            id="t",
            schedule=pb.Schedule(cron="* * * * *"),
            http=pb.HttpTarget(url="http://2130706433/"),
        )
        validate_task(spec, NOW, rules=RULES)
