"""NodeConfig: the executor pool limits, the catch-up rate, and reloading on SIGHUP."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from peerd.config import build_config, changed_fields, reload_config
from peerd.errors import InvalidArgument
from peerd.node_config import RELOADABLE, NodeConfig

FLAGS: dict[str, Any] = {"node_id": "n1"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "peerd.toml"
    path.write_text(text)
    return path


# --- new fields ----------------------------------------------------------------------------------


def test_pool_limits_and_catch_up_rate_defaults() -> None:
    cfg = build_config(FLAGS, {})

    assert (cfg.max_http_runs, cfg.max_shell_runs, cfg.max_python_runs) == (256, 32, 64)
    assert cfg.catch_up_rate == 50.0


def test_pool_limits_and_rate_from_env_file_and_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "max_http_runs = 10\nmax_shell_runs = 2\ncatch_up_rate = 0.5\n")
    env = {"PEERD_MAX_SHELL_RUNS": "3", "PEERD_MAX_PYTHON_RUNS": "4", "PEERD_CATCH_UP_RATE": "7"}

    cfg = build_config({**FLAGS, "max_python_runs": 5}, env, path)

    assert cfg.max_http_runs == 10  # file
    assert cfg.max_shell_runs == 3  # env over file
    assert cfg.max_python_runs == 5  # flag over env
    assert cfg.catch_up_rate == 7.0  # env over file


@pytest.mark.parametrize(
    ("name", "value", "flag"),
    [
        ("max_http_runs", 0, "--max-http-runs"),
        ("max_shell_runs", -1, "--max-shell-runs"),
        ("max_python_runs", "many", "--max-python-runs"),
        ("catch_up_rate", 0, "--catch-up-rate"),
        ("catch_up_rate", -2.5, "--catch-up-rate"),
        ("catch_up_rate", "fast", "--catch-up-rate"),
        ("catch_up_rate", "nan", "--catch-up-rate"),
        ("catch_up_rate", "inf", "--catch-up-rate"),
        ("catch_up_rate", True, "--catch-up-rate"),
    ],
)
def test_invalid_limits_and_rate_name_the_flag(name: str, value: Any, flag: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        build_config({**FLAGS, name: value}, {})

    assert err.value.field == flag


def test_catch_up_rate_accepts_fractions() -> None:
    assert build_config({**FLAGS, "catch_up_rate": "0.25"}, {}).catch_up_rate == 0.25


# --- reload ------------------------------------------------------------------------------------


def test_reloadable_names_are_fields() -> None:
    names = {f.name for f in fields(NodeConfig)}

    assert names >= RELOADABLE
    assert "listen" not in RELOADABLE and "node_id" not in RELOADABLE


def test_reload_applies_reloadable_fields_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "runs_keep = 10\n")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('TOKEN = "t"\n')
    current = build_config(FLAGS, {}, path)
    path.write_text(
        'allow_shell = ["/bin/true"]\n'
        "runs_keep = 20\n"
        "max_concurrent_runs = 8\n"
        "max_http_runs = 4\n"
        "max_shell_runs = 2\n"
        "max_python_runs = 3\n"
        "catch_up_rate = 1.5\n"
        'misfire_threshold = "30s"\n'
        'log_level = "debug"\n'
        "drain_grace_s = 5\n"
        'runs_max_age = "1d"\n'
        'etcd_compaction_interval = "0s"\n'
        'http_allow = ["*.example.com"]\n'
        'http_deny = ["private"]\n'
        f"secrets_file = {json.dumps(str(secrets))}\n"
        "api_rate_limit = 7\n"
        "api_burst = 8\n"
    )

    new, warnings = reload_config(current, FLAGS, {}, path)

    assert warnings == []
    assert new.allow_shell == ("/bin/true",)
    assert new.runs_keep == 20
    assert (new.max_concurrent_runs, new.max_http_runs) == (8, 4)
    assert (new.max_shell_runs, new.max_python_runs) == (2, 3)
    assert new.catch_up_rate == 1.5
    assert new.misfire_threshold == timedelta(seconds=30)
    assert new.log_level == "debug"
    assert new.drain_grace_s == 5.0
    assert new.runs_max_age == timedelta(days=1)
    assert new.etcd_compaction_interval == timedelta(0)
    assert (new.http_allow, new.http_deny) == (("*.example.com",), ("private",))
    assert new.secrets_file == str(secrets)
    assert (new.api_rate_limit, new.api_burst) == (7.0, 8)
    assert changed_fields(current, new) == sorted(RELOADABLE)


def test_reload_keeps_non_reloadable_fields_and_warns_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:7070"\ncluster = "blue"\n')
    current = build_config(FLAGS, {}, path)
    path.write_text('listen = "127.0.0.1:7171"\ncluster = "green"\nruns_keep = 7\n')

    new, warnings = reload_config(current, FLAGS, {}, path)

    assert new.listen == "127.0.0.1:7070"
    assert new.cluster == "blue"
    assert new.runs_keep == 7
    assert warnings == [
        "cluster changed in the file; restart to apply",
        "listen changed in the file; restart to apply",
    ]
    assert changed_fields(current, new) == ["runs_keep"]


def test_reload_flags_and_env_keep_precedence_over_the_file(tmp_path: Path) -> None:
    flags = {**FLAGS, "allow_shell": ["/usr/bin/backup *"]}
    env = {"PEERD_RUNS_KEEP": "42"}
    path = write(tmp_path, "")
    current = build_config(flags, env, path)
    path.write_text('allow_shell = ["*"]\nruns_keep = 1\nmax_shell_runs = 9\n')

    new, warnings = reload_config(current, flags, env, path)

    assert new.allow_shell == ("/usr/bin/backup *",)
    assert new.runs_keep == 42
    assert new.max_shell_runs == 9
    assert warnings == []


def test_reload_of_unchanged_file_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, 'allow_shell = ["/bin/echo *"]\nmax_http_runs = 3\n')
    current = build_config(FLAGS, {}, path)

    new, warnings = reload_config(current, FLAGS, {}, path)

    assert new == current
    assert warnings == []


def test_reload_without_a_file_reapplies_flags_and_env() -> None:
    current = build_config(FLAGS, {"PEERD_RUNS_KEEP": "5"})

    new, warnings = reload_config(current, FLAGS, {"PEERD_RUNS_KEEP": "5"}, None)

    assert new == current
    assert warnings == []


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("runs_keep = [", "--config"),  # not TOML
        ("no_such_key = 1\n", "--config"),
        ("max_shell_runs = 0\n", "--max-shell-runs"),
        ("catch_up_rate = -1\n", "--catch-up-rate"),
        ('log_level = "loud"\n', "--log-level"),
        ('listen = "nonsense"\n', "--listen"),  # invalid even though not reloadable
    ],
)
def test_reload_rejects_an_invalid_file(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, "")
    current = build_config(FLAGS, {}, path)
    path.write_text(text)

    with pytest.raises(InvalidArgument) as err:
        reload_config(current, FLAGS, {}, path)

    assert err.value.field == field


def test_reload_of_a_deleted_file_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    current = build_config(FLAGS, {}, path)
    path.unlink()

    with pytest.raises(InvalidArgument, match="cannot read"):
        reload_config(current, FLAGS, {}, path)


# --- log level at runtime ----------------------------------------------------------------------


def test_set_level_applies_to_loggers_bound_before_the_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import structlog

    from peerd.log import configure_logging, get_level, set_level

    configure_logging("json", "info")
    try:
        bound = structlog.get_logger("peerd.test").bind(node_id="n1")
        bound.debug("hidden_debug")
        bound.info("shown_info")
        set_level("debug")
        bound.debug("shown_debug")
        set_level("WARNING")
        bound.info("hidden_info")
        bound.warning("shown_warning")
        bound.error("shown_error")
        assert get_level() == "warning"
        with pytest.raises(ValueError):
            set_level("verbose")
        assert get_level() == "warning"
    finally:
        set_level("info")
        structlog.reset_defaults()

    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["shown_info", "shown_debug", "shown_warning", "shown_error"]


# --- Node.reload (no etcd needed: nothing but the config is touched) --------------------------


class FakeEngine:
    def __init__(self, fail: bool = False) -> None:
        self.applied: list[NodeConfig] = []
        self.fail = fail

    def apply_config(self, cfg: NodeConfig) -> None:
        if self.fail:
            raise RuntimeError("no")
        self.applied.append(cfg)


def make_node(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Any:
    from peerd.node import Node

    path = write(tmp_path, text)
    flags = {"node_id": "n1", "etcd": "127.0.0.1:9"}
    cfg = build_config(flags, {}, path)
    node = Node(cfg, reload_source=(flags, {}, path), **kw)
    monkeypatch.setattr(node, "engine", FakeEngine())
    return node, path


def test_node_reload_applies_new_config_to_engine_and_log_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peerd.log import get_level, set_level

    node, path = make_node(tmp_path, "runs_keep = 5\n", monkeypatch)
    old = node.cfg
    path.write_text('runs_keep = 6\nlog_level = "debug"\nallow_shell = ["/bin/true"]\n')
    try:
        assert node.reload() is True
        assert get_level() == "debug"
    finally:
        set_level("info")

    assert node.cfg.runs_keep == 6
    assert node.cfg.allow_shell == ("/bin/true",)
    assert node.engine.applied == [node.cfg]
    assert node.cfg.node_id == old.node_id


def test_node_reload_rejects_invalid_file_and_keeps_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, path = make_node(tmp_path, "runs_keep = 5\n", monkeypatch)
    old = node.cfg
    path.write_text("runs_keep = 0\n")

    assert node.reload() is False
    assert node.cfg is old
    assert node.engine.applied == []


def test_node_reload_keeps_config_when_engine_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, path = make_node(tmp_path, "runs_keep = 5\n", monkeypatch)
    old = node.cfg
    node.engine.fail = True
    path.write_text("runs_keep = 6\n")

    assert node.reload() is False
    assert node.cfg is old


def test_node_without_reload_source_rejects_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    from peerd.node import Node

    cfg = build_config({"node_id": "n1"}, {})
    node = Node(cfg)
    monkeypatch.setattr(node, "engine", FakeEngine())

    assert node.reload() is False
    assert node.engine.applied == []


def test_max_http_runs_is_capped_by_the_http_clients_in_flight_limit() -> None:
    from peerd.errors import InvalidArgument
    from peerd.node_config import MAX_HTTP_IN_FLIGHT
    from peerd.runner.http import MAX_IN_FLIGHT

    assert MAX_HTTP_IN_FLIGHT == MAX_IN_FLIGHT
    assert build_config({"node_id": "n1", "max_http_runs": 256}, {}).max_http_runs == 256
    with pytest.raises(InvalidArgument, match=r"--max-http-runs.*<= 256"):
        build_config({"node_id": "n1", "max_http_runs": 257}, {})
