"""ShellExecutor running real processes."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from peerd.core.redact import REDACTED
from peerd.runner import base, process_group
from peerd.runner import shell as shell_mod
from peerd.runner.base import OUTPUT_TAIL_BYTES, Execution, Outcome
from peerd.runner.secrets import SecretStore
from peerd.runner.shell import ShellAllowList, ShellExecutor
from peerd.v1 import scheduler_pb2 as pb

SLOT = datetime(2026, 11, 21, 6, 0, 1, tzinfo=UTC)
SH = shutil.which("sh") or "/bin/sh"
ALLOW_ALL = ShellAllowList(["*"])


def execution(timeout: float = 10.0, **kw: Any) -> Execution:
    base: dict[str, Any] = {
        "task_id": "backup",
        "scheduled_at": SLOT,
        "attempt": 3,
        "node_id": "node-b",
        "fencing_token": 99,
        "timeout": timedelta(seconds=timeout),
    }
    base.update(kw)
    return Execution(**base)


def sh(script: str, **kw: Any) -> pb.ShellTarget:
    return pb.ShellTarget(argv=[SH, "-c", script], **kw)


def run(
    target: pb.ShellTarget,
    ex: Execution | None = None,
    allow: ShellAllowList = ALLOW_ALL,
    **kw: Any,
) -> Outcome:
    return asyncio.run(ShellExecutor(allow, **kw).run_target(target, ex or execution()))


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (zombies may linger without a reaping init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def wait_gone(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


# --- allow-list --------------------------------------------------------------------------------


def test_allow_list_matches_shlex_joined_command_line() -> None:
    allow = ShellAllowList(["/usr/bin/backup *", "/bin/sh -c 'echo *'"])

    assert allow.enabled
    assert allow.allows(["/usr/bin/backup", "--full", "/data"])
    assert allow.allows(["/bin/sh", "-c", "echo hello world"])
    assert not allow.allows(["/usr/bin/backup"])  # pattern needs a space and arguments
    assert not allow.allows(["/usr/bin/rm", "-rf", "/"])
    assert not allow.allows(["/bin/sh", "-c", "rm -rf /"])
    assert not allow.allows(["/USR/BIN/BACKUP", "x"])  # case-sensitive
    assert not allow.allows([])
    assert "/usr/bin/backup *" in str(allow)


def test_empty_allow_list_allows_nothing() -> None:
    allow = ShellAllowList([])

    assert not allow.enabled
    assert not allow.allows(["true"])
    assert not allow.allows([""])
    assert "disabled" in str(allow)


def test_denied_command_is_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = run(
        pb.ShellTarget(argv=["touch", str(marker)]),
        allow=ShellAllowList(["/usr/bin/backup *"]),
    )

    assert not out.succeeded
    assert out.exit_code is None
    assert out.error == (
        f"shell command not allowed on node node-b: touch {marker}; "
        "start the node with --allow-shell PATTERN"
    )
    assert out.failure == base.FAILURE_CONFIG
    assert not marker.exists()


def test_allowed_command_runs() -> None:
    out = run(sh("echo hello"), allow=ShellAllowList([f"{SH} -c 'echo *'"]))

    assert out.succeeded, out.error
    assert out.exit_code == 0
    assert out.error == ""
    assert out.failure == ""
    assert out.output_tail == "hello\n"


# --- environment, cwd, output ------------------------------------------------------------------


def test_peerd_env_vars_target_env_and_base_env() -> None:
    script = (
        'echo "key=$PEERD_IDEMPOTENCY_KEY"; echo "token=$PEERD_FENCING_TOKEN"; '
        'echo "task=$PEERD_TASK_ID"; echo "at=$PEERD_SCHEDULED_AT"; '
        'echo "attempt=$PEERD_ATTEMPT"; echo "node=$PEERD_NODE_ID"; '
        'echo "mine=$MY_VAR"; echo "base=$BASE_VAR"; echo "path=$PATH"'
    )
    target = sh(script, env={"MY_VAR": "from-target", "PEERD_FENCING_TOKEN": "forged"})
    out = run(target, base_env={"BASE_VAR": "from-base", "PATH": "/usr/bin:/bin"})

    assert out.succeeded, out.error
    lines = out.output_tail.splitlines()
    assert lines == [
        f"key=backup/{int(SLOT.timestamp() * 1000)}",
        "token=99",
        "task=backup",
        "at=2026-11-21T06:00:01.000Z",
        "attempt=3",
        "node=node-b",
        "mine=from-target",
        "base=from-base",
        "path=/usr/bin:/bin",
    ]


CAUSE_JSON = '{"task_id":"charge-card","status":"FAILED","error":"exit code 1"}'


def test_cause_json_is_passed_to_compensation_runs() -> None:
    target = sh('printf "%s" "$PEERD_CAUSE_JSON"', env={"PEERD_CAUSE_JSON": "forged"})
    out = run(target, execution(cause_json=CAUSE_JSON))

    assert out.succeeded, out.error
    assert out.output_tail == CAUSE_JSON


def test_cause_json_is_unset_on_normal_runs_even_if_inherited_or_set_by_target() -> None:
    target = sh('echo "${PEERD_CAUSE_JSON-unset}"', env={"PEERD_CAUSE_JSON": "forged"})
    out = run(target, base_env={"PEERD_CAUSE_JSON": "inherited", "PATH": "/usr/bin:/bin"})

    assert out.succeeded, out.error
    assert out.output_tail == "unset\n"


def test_allow_list_can_be_replaced_for_later_runs() -> None:
    executor = ShellExecutor(ShellAllowList([]))
    target = sh("echo hi")

    denied = asyncio.run(executor.run_target(target, execution()))
    executor.allow_list = ShellAllowList([f"{SH} -c *"])
    allowed = asyncio.run(executor.run_target(target, execution()))

    assert denied.failure == base.FAILURE_CONFIG
    assert allowed.succeeded, allowed.error
    assert executor.allow_list.patterns == (f"{SH} -c *",)


def test_base_env_defaults_to_os_environ_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEERD_TEST_CAPTURED", "captured")
    executor = ShellExecutor(ALLOW_ALL)
    monkeypatch.setenv("PEERD_TEST_CAPTURED", "changed-later")

    out = asyncio.run(executor.run_target(sh('echo "$PEERD_TEST_CAPTURED"'), execution()))
    assert out.output_tail == "captured\n"


def test_stdout_and_stderr_are_merged_and_stdin_is_empty() -> None:
    out = run(sh("echo out; echo err >&2; cat; echo done"))

    assert out.succeeded, out.error
    assert out.output_tail == "out\nerr\ndone\n"


def test_working_dir_is_honoured(tmp_path: Path) -> None:
    out = run(pb.ShellTarget(argv=["pwd"], working_dir=str(tmp_path)))

    assert out.succeeded, out.error
    assert out.output_tail.strip() == str(tmp_path.resolve())


def test_missing_working_dir_fails_without_running(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    out = run(pb.ShellTarget(argv=["true"], working_dir=str(missing)))

    assert not out.succeeded
    assert out.exit_code is None
    assert str(missing) in out.error
    assert "does not exist" in out.error
    assert out.failure == base.FAILURE_CONNECTION


def test_output_tail_is_last_4kib_of_big_output() -> None:
    # ~20 MB of output: must be streamed, keeping only the tail.
    script = "head -c 20000000 /dev/zero | tr '\\0' a; echo; echo THE-END"
    out = run(sh(script))

    assert out.succeeded, out.error
    assert len(out.output_tail.encode()) == OUTPUT_TAIL_BYTES
    assert out.output_tail.endswith("a\nTHE-END\n")
    assert set(out.output_tail[: -len("\nTHE-END\n")]) == {"a"}


# --- failures ----------------------------------------------------------------------------------


def test_non_zero_exit_is_failure_with_code_and_output() -> None:
    out = run(sh("echo boom; exit 3"))

    assert not out.succeeded
    assert out.exit_code == 3
    assert out.error == "exit code 3"
    assert out.failure == base.FAILURE_NONZERO_EXIT
    assert out.output_tail == "boom\n"


def test_killed_by_signal_reports_negative_code() -> None:
    out = run(sh("kill -KILL $$"))

    assert not out.succeeded
    assert out.exit_code == -9
    assert out.error == "killed by signal SIGKILL"
    assert out.failure == base.FAILURE_NONZERO_EXIT


def test_missing_binary_fails_cleanly() -> None:
    out = run(pb.ShellTarget(argv=["/nonexistent/peerd-no-such-binary", "x"]))

    assert not out.succeeded
    assert out.exit_code is None
    assert out.error.startswith("cannot execute /nonexistent/peerd-no-such-binary: ")
    assert "No such file" in out.error
    assert out.failure == base.FAILURE_CONNECTION


def test_non_executable_file_fails_cleanly(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    out = run(pb.ShellTarget(argv=[str(script)]))

    assert not out.succeeded
    assert out.error.startswith(f"cannot execute {script}: ")
    assert "Permission denied" in out.error
    assert out.failure == base.FAILURE_CONNECTION


def test_empty_argv_fails() -> None:
    out = run(pb.ShellTarget(argv=[]))

    assert not out.succeeded
    assert "empty argv" in out.error
    assert out.failure == base.FAILURE_CONFIG


# --- timeout and cancellation ------------------------------------------------------------------


def test_timeout_kills_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"sleep 100 & echo $! > {pidfile}; echo started; wait"
    t0 = time.monotonic()
    # 1.5 s: the shell must have started its child and written the pid before SIGTERM arrives,
    # even on a busy CI machine (0.5 s flaked under load).
    out = run(sh(script), execution(timeout=1.5))
    elapsed = time.monotonic() - t0

    assert not out.succeeded
    assert out.error == "timeout after 1.5s; process group killed"
    assert out.failure == base.FAILURE_TIMEOUT
    assert out.exit_code == -15  # sh dies on SIGTERM
    assert out.output_tail == "started\n"
    grandchild = int(pidfile.read_text())
    assert wait_gone(grandchild), f"grandchild {grandchild} survived the timeout"
    assert elapsed < 5.0


def test_timeout_escalates_to_sigkill_when_sigterm_ignored(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # Both the shell and its child ignore SIGTERM (ignored signals are inherited).
    script = f"trap '' TERM; sleep 100 & echo $! > {pidfile}; wait; wait"
    t0 = time.monotonic()
    # 1.5 s, not less: the shell must have run `trap` before SIGTERM arrives, even on a busy CI.
    out = run(sh(script), execution(timeout=1.5))
    elapsed = time.monotonic() - t0

    assert out.error == "timeout after 1.5s; process group killed"
    assert out.failure == base.FAILURE_TIMEOUT
    assert out.exit_code == -9
    assert wait_gone(int(pidfile.read_text()))
    # The lower bound is the grace period; the upper one only tells SIGKILL from the child's own
    # end (`sleep 100`), wide enough for a busy machine.
    assert 1.5 + process_group.KILL_GRACE_SECONDS <= elapsed < 60.0


def test_cancellation_kills_process_group_and_reraises(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"sleep 100 & echo $! > {pidfile}; wait"

    async def go() -> None:
        task = asyncio.create_task(ShellExecutor(ALLOW_ALL).run_target(sh(script), execution()))
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    grandchild = int(pidfile.read_text())
    assert wait_gone(grandchild), f"grandchild {grandchild} survived cancellation"


def test_background_child_holding_output_does_not_hang_run(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # The command exits at once but leaves a child holding stdout open.
    script = f"sleep 30 & echo $! > {pidfile}; echo bye"
    t0 = time.monotonic()
    out = run(sh(script), execution(timeout=20))
    elapsed = time.monotonic() - t0
    os.kill(int(pidfile.read_text()), 9)

    assert out.succeeded, out.error
    assert out.output_tail == "bye\n"
    assert elapsed < process_group.DRAIN_GRACE_SECONDS + 2.0


# --- run_as ------------------------------------------------------------------------------------


def test_run_as_unknown_user_fails_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = run(pb.ShellTarget(argv=["touch", str(marker)], run_as="peerd-no-such-user-xyz"))

    assert not out.succeeded
    assert out.error == "cannot run as user peerd-no-such-user-xyz: no such user"
    assert out.failure == base.FAILURE_CONFIG
    assert not marker.exists()


def test_run_as_current_user_needs_no_switch() -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    out = run(pb.ShellTarget(argv=["id", "-u"], run_as=me))

    assert out.succeeded, out.error
    assert out.output_tail.strip() == str(os.geteuid())


def test_run_as_other_user_when_not_root_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        # Simulate a non-root node by making the executor see nobody's uid.
        nobody_uid = pwd.getpwnam("nobody").pw_uid
        monkeypatch.setattr(shell_mod.os, "geteuid", lambda: nobody_uid)
    me = pwd.getpwuid(shell_mod.os.geteuid()).pw_name
    out = run(pb.ShellTarget(argv=["true"], run_as="root"))

    assert not out.succeeded
    assert out.exit_code is None
    assert out.error == f"cannot run as user root: node runs as {me} (not root)"
    assert out.failure == base.FAILURE_CONFIG


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
def test_run_as_switches_user_and_groups_when_root() -> None:
    nobody = pwd.getpwnam("nobody")
    out = run(pb.ShellTarget(argv=["id"], run_as="nobody", working_dir="/"))

    assert out.succeeded, out.error
    ident = out.output_tail.strip()
    assert ident.startswith(f"uid={nobody.pw_uid}(nobody) gid={nobody.pw_gid}")
    assert "0(root)" not in ident  # root's supplementary groups were dropped


# --- secrets ------------------------------------------------------------------------------------


def test_env_secret_is_set_and_redacted_from_the_output() -> None:
    secrets = SecretStore("", {"PEERD_SECRET_DB": "db-pass-98765"}, "test-shell")
    target = sh('echo "pw=$DB_PASSWORD"', env_secrets={"DB_PASSWORD": "DB"})
    out = run(target, secrets=secrets, base_env={"PATH": os.environ.get("PATH", "")})

    assert out.succeeded, out.error
    assert out.output_tail == f"pw={REDACTED}\n"


def test_node_secrets_are_not_inherited_by_commands() -> None:
    target = sh('echo "[$PEERD_SECRET_DB]"')
    out = run(target, base_env={"PATH": os.environ.get("PATH", ""), "PEERD_SECRET_DB": "x"})

    assert out.succeeded, out.error
    assert out.output_tail == "[]\n"


def test_missing_env_secret_fails_as_config_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = run(sh(f"touch {marker}", env_secrets={"TOKEN": "NOPE"}))

    assert not out.succeeded
    assert out.failure == base.FAILURE_CONFIG
    assert "secret 'NOPE' is not set on this node" in out.error
    assert not marker.exists()


def test_literal_credential_env_is_redacted_from_the_output() -> None:
    out = run(sh('echo "$API_TOKEN"', env={"API_TOKEN": "tok-abcdef"}))

    assert out.succeeded, out.error
    assert out.output_tail == f"{REDACTED}\n"
