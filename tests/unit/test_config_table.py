"""The settings table: every node setting is defined once (a NodeConfig field) and its flag,
environment variable, TOML key, bounds, reload behaviour, ``--help`` and docs come from it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from peerd.cli import build_parser, main, parse_args, serve_flags
from peerd.config import build_config, reload_config
from peerd.errors import InvalidArgument
from peerd.node_config import RELOADABLE, SETTINGS, NodeConfig
from peerd.settings import INTEGER, Setting, markdown_table, replace_table, setting, settings_of

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

SECRETS_SAMPLE = str(Path(__file__).with_name("secrets_sample.toml"))
SAMPLES: dict[str, tuple[str, Any]] = {
    "node_id": ("n2", "n2"),
    "listen": ("127.0.0.1:7171", "127.0.0.1:7171"),
    "advertise": ("10.0.0.5:7070", "10.0.0.5:7070"),
    "etcd": ("10.0.0.1:2379,[::1]:2379", ("10.0.0.1:2379", "[::1]:2379")),
    "cluster": ("blue", "blue"),
    "labels": ("zone=eu-1", ("zone=eu-1",)),
    "lease_ttl_s": ("5", 5),
    "allow_shell": ("/bin/echo *", ("/bin/echo *",)),
    "misfire_threshold": ("30s", timedelta(seconds=30)),
    "claim_ahead": ("1s", timedelta(seconds=1)),
    "tzdata": ("System", "system"),
    "runs_keep": ("7", 7),
    "runs_max_age": ("1d", timedelta(days=1)),
    "max_concurrent_runs": ("8", 8),
    "max_http_runs": ("4", 4),
    "max_shell_runs": ("2", 2),
    "max_python_runs": ("3", 3),
    "catch_up_rate": ("0.5", 0.5),
    "drain_grace_s": ("1m30s", 90.0),
    "claim_batch": ("32", 32),
    "etcd_compaction_interval": ("0", timedelta(0)),
    "etcd_compaction_retention": ("1h", timedelta(hours=1)),
    "tls_cert": ("/etc/peerd/node.pem", "/etc/peerd/node.pem"),
    "tls_key": ("/etc/peerd/node-key.pem", "/etc/peerd/node-key.pem"),
    "tls_client_ca": ("/etc/peerd/ca.pem", "/etc/peerd/ca.pem"),
    "auth_policy": ("/etc/peerd/policy.toml", "/etc/peerd/policy.toml"),
    "etcd_cacert": ("/etc/etcd/ca.pem", "/etc/etcd/ca.pem"),
    "etcd_cert": ("/etc/etcd/peerd.pem", "/etc/etcd/peerd.pem"),
    "etcd_key": ("/etc/etcd/peerd-key.pem", "/etc/etcd/peerd-key.pem"),
    "etcd_user": ("peerd", "peerd"),
    "etcd_password_file": ("/etc/etcd/password", "/etc/etcd/password"),
    "http_listen": ("127.0.0.1:9464", "127.0.0.1:9464"),
    "http_tls": ("yes", True),
    "metrics_per_task": ("yes", True),
    "otel_endpoint": ("http://collector:4318/", "http://collector:4318"),
    "log_format": ("json", "json"),
    "log_level": ("DEBUG", "debug"),
    "http_allow": ("*.example.com", ("*.example.com",)),
    "http_deny": ("10.0.0.0/8", ("10.0.0.0/8",)),
    "secrets_file": (SECRETS_SAMPLE, SECRETS_SAMPLE),
    "max_message_size": ("1048576", 1048576),
    "api_rate_limit": ("2.5", 2.5),
    "api_burst": ("9", 9),
}
"""Per setting: a non-default value as text (flag, env, TOML string) and its parsed value."""

BY_NAME = {s.name: s for s in SETTINGS}


def test_samples_cover_every_setting_with_non_default_values() -> None:
    assert set(SAMPLES) == set(BY_NAME)
    for name, (_, value) in SAMPLES.items():
        assert value != BY_NAME[name].default, name


def test_every_field_has_a_distinct_flag_and_env_name() -> None:
    names = [f.name for f in dataclasses.fields(NodeConfig)]
    assert [s.name for s in SETTINGS] == names
    for s in SETTINGS:
        assert re.fullmatch(r"--[a-z][a-z0-9-]+", s.flag), s.name
        assert re.fullmatch(r"PEERD_[A-Z][A-Z0-9_]+", s.env), s.name
        assert s.help.strip(), s.name
    assert len({s.flag for s in SETTINGS}) == len(SETTINGS)
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)


def test_a_field_without_a_setting_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Half:
        a: int = setting(1, help="a", flag="--a", env="PEERD_A", kind=INTEGER)
        b: int = 2

    with pytest.raises(TypeError, match=r"Half\.b is not a setting"):
        settings_of(Half)


def test_serve_has_exactly_one_flag_per_setting() -> None:
    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    serve = commands.choices["serve"]
    flags = {o for a in serve._actions for o in a.option_strings if o.startswith("--")}
    client = {"--ca", "--cert", "--key", "--token"}  # the CLI's credentials, on every command
    flags -= {"--help", "--output", "--server", "--config", *client}
    assert flags == {s.flag for s in SETTINGS}
    assert "--claim-batch" in flags


def test_flags_parse_into_the_field_types() -> None:
    argv = ["serve"]
    for name, (text, _) in SAMPLES.items():
        argv += [BY_NAME[name].flag, text]
    argv += ["--allow-shell", "/usr/bin/backup *"]

    cfg = build_config(serve_flags(parse_args(argv)), {})

    for name, (_, value) in SAMPLES.items():
        if name == "allow_shell":
            value = ("/bin/echo *", "/usr/bin/backup *")
        assert getattr(cfg, name) == value, name
        assert type(getattr(cfg, name)) is type(value), name


def test_environment_sets_every_setting() -> None:
    env = {BY_NAME[name].env: text for name, (text, _) in SAMPLES.items()}
    env["PEERD_ALLOW_SHELL"] = "/bin/echo *;;/usr/bin/backup *"

    cfg = build_config({}, env)

    for name, (_, value) in SAMPLES.items():
        if name == "allow_shell":
            value = ("/bin/echo *", "/usr/bin/backup *")
        assert getattr(cfg, name) == value, name


def test_empty_environment_variables_count_as_unset() -> None:
    cfg = build_config({"node_id": "n1"}, {s.env: "" for s in SETTINGS})

    assert cfg == NodeConfig(node_id="n1")


def test_node_id_is_required() -> None:
    with pytest.raises(InvalidArgument) as err:
        build_config({}, {})

    assert err.value.field == "--node-id"
    assert "PEERD_NODE_ID" in err.value.reason


def out_of_bounds(s: Setting) -> list[Any]:
    """Values just outside the bounds of ``s``, in its type."""
    step: Any = timedelta(milliseconds=1) if isinstance(s.default, timedelta) else 1
    if isinstance(s.default, float):
        step = 0.5
    found = []
    if s.minimum is not None:
        found.append(s.minimum - step)
    if s.exclusive_minimum is not None:
        found.append(s.exclusive_minimum)
    if s.maximum is not None:
        found.append(s.maximum + step)
    return found


BOUNDED = [(s, value) for s in SETTINGS for value in out_of_bounds(s)]


@pytest.mark.parametrize(("s", "value"), BOUNDED, ids=[f"{s.name}={v}" for s, v in BOUNDED])
def test_out_of_bounds_values_name_the_flag(s: Setting, value: Any) -> None:
    with pytest.raises(InvalidArgument) as err:
        build_config({"node_id": "n1", s.name: value}, {})

    assert err.value.field == s.flag
    assert re.match(r"must be [<>]=? ", err.value.reason), err.value.reason


EDGES = [(s, edge) for s in SETTINGS for edge in (s.minimum, s.maximum) if edge is not None]


@pytest.mark.parametrize(("s", "edge"), EDGES, ids=[f"{s.name}={v}" for s, v in EDGES])
def test_the_bounds_themselves_are_accepted(s: Setting, edge: Any) -> None:
    assert getattr(build_config({"node_id": "n1", s.name: edge}, {}), s.name) == edge


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--claim-batch", "128"], "--claim-batch: must be <= 127 (etcd's 128 operations per txn)"),
        (["--claim-batch", "0"], "--claim-batch: must be >= 1, got 0"),
        (["--lease-ttl", "1"], "--lease-ttl: must be >= 2, got 1"),
        (["--lease-ttl", "ten"], "--lease-ttl: expected an integer, got 'ten'"),
        (["--runs-max-age", "59s"], "--runs-max-age: must be >= 1m, got 59s"),
        (["--etcd-compaction-interval", "soon"], "--etcd-compaction-interval: 'soon' is not a"),
        (["--catch-up-rate", "0"], "--catch-up-rate: must be > 0, got 0"),
        (["--log-format", "xml"], "--log-format: must be auto, json or console"),
        (["--metrics-per-task", "maybe"], "--metrics-per-task: expected true or false, got"),
        (["--http-listen", "9464"], "--http-listen: expected HOST:PORT, got '9464'"),
    ],
)
def test_serve_rejects_bad_flags_with_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.setattr("peerd.node.run_node", lambda *_: pytest.fail("a node was started"))

    code = main(["serve", "--node-id", "n1", *argv], env={})

    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith(f"peerd: error: {message}"), err


def test_reloadable_set_is_the_intended_one() -> None:
    intended = {
        "allow_shell",
        "misfire_threshold",
        "runs_keep",
        "runs_max_age",
        "max_concurrent_runs",
        "max_http_runs",
        "max_shell_runs",
        "max_python_runs",
        "catch_up_rate",
        "drain_grace_s",
        "etcd_compaction_interval",
        "log_level",
        "http_allow",
        "http_deny",
        "secrets_file",
        "api_rate_limit",
        "api_burst",
    }
    assert set(RELOADABLE) == intended


@pytest.mark.parametrize("name", list(SAMPLES))
def test_reload_applies_exactly_the_reloadable_settings(tmp_path: Path, name: str) -> None:
    path = tmp_path / "peerd.toml"
    path.write_text('node_id = "n1"\n')
    current = build_config({}, {}, path)
    text, value = SAMPLES[name]
    keys = {"node_id": "n1", name: text}
    path.write_text("".join(f"{key} = {json.dumps(v)}\n" for key, v in keys.items()))

    new, warnings = reload_config(current, {}, {}, path)

    if name in RELOADABLE:
        assert (getattr(new, name), warnings) == (value, [])
    else:
        assert new == current
        assert warnings == [f"{name} changed in the file; restart to apply"]


def serve_help(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["serve", "--help"], env={}) == 0
    return " ".join(capsys.readouterr().out.split())


def test_serve_help_shows_defaults_with_units(capsys: pytest.CaptureFixture[str]) -> None:
    text = serve_help(capsys)

    for expected in (
        "--node-id ID Unique name of this node in the cluster. (required; env PEERD_NODE_ID)",
        "(default 10 s; >= 2; env PEERD_LEASE_TTL)",
        "(default 30 s; >= 0; env PEERD_DRAIN_GRACE)",
        "(default 50 slots/s; > 0; env PEERD_CATCH_UP_RATE)",
        "(default 64 slots; 1..127; env PEERD_CLAIM_BATCH)",
        "(default 7d; >= 1m; env PEERD_RUNS_MAX_AGE)",
        "(default 5m; >= 0s; env PEERD_ETCD_COMPACTION_INTERVAL)",
        "(default none; env PEERD_ALLOW_SHELL)",
    ):
        assert expected in text


def test_serve_help_covers_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    text = serve_help(capsys)

    for s in SETTINGS:
        assert f"{s.flag} {s.kind.metavar}" in text
        assert f"env {s.env})" in text
        if not s.required and s.default_text():
            assert f"(default {s.default_text()}" in text


def test_docs_page_matches_the_table() -> None:
    page = DOCS.read_text()

    assert replace_table(page, markdown_table(SETTINGS)) == page, (
        "docs/configuration.md is stale: run python -m peerd.config --update docs/configuration.md"
    )
    for s in SETTINGS:
        assert f"| `{s.flag}` | `{s.env}` | `{s.name}` |" in page


def test_readme_links_the_docs_page() -> None:
    readme = (DOCS.parents[1] / "README.md").read_text()

    assert "(docs/configuration.md)" in readme
