"""Shell executor: run a task's argv as a child process (no shell involved).

Shell execution is off on a node unless the node allow-lists command lines with
``--allow-shell PATTERN``. Each run gets its own session/process group so a timeout or a
cancellation can kill the command together with everything it spawned
(:mod:`peerd.runner.process_group` waits for it, reads its output and kills the group). Run
failures never raise; they are reported in the returned :class:`~peerd.runner.base.Outcome`
with a failure class (:data:`~peerd.runner.base.FAILURE_CLASSES`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import pwd
import shlex
import signal
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from peerd.clock import Clock, SystemClock
from peerd.core.records import rfc3339
from peerd.core.redact import credential_fragments, literal_credentials
from peerd.core.secrets import ENV_PREFIX
from peerd.errors import PermissionDenied
from peerd.runner.base import (
    FAILURE_CONFIG,
    FAILURE_CONNECTION,
    FAILURE_NONZERO_EXIT,
    FAILURE_TIMEOUT,
    Execution,
    Outcome,
    OutputTail,
)
from peerd.runner.process_group import supervise
from peerd.runner.secrets import MissingSecret, SecretStore
from peerd.v1 import scheduler_pb2 as pb

if TYPE_CHECKING:
    from peerd.node_config import NodeConfig

log = structlog.get_logger(__name__)


class ShellAllowList:
    """Which command lines a node may run.

    Each pattern is matched with :func:`fnmatch.fnmatchcase` against ``shlex.join(argv)``, e.g.
    ``"/usr/bin/backup *"`` or ``"/bin/sh -c *"``. Note that ``*`` also matches spaces, so a
    pattern constrains the whole command line, arguments included. An empty list allows
    nothing (shell execution disabled).
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns = tuple(patterns)

    @property
    def patterns(self) -> tuple[str, ...]:
        """The configured patterns, in order."""
        return self._patterns

    @property
    def enabled(self) -> bool:
        """True when at least one pattern is configured."""
        return bool(self._patterns)

    def allows(self, argv: Sequence[str]) -> bool:
        """Whether ``argv`` matches any pattern. An empty ``argv`` is never allowed."""
        if not argv:
            return False
        line = shlex.join(argv)
        return any(fnmatch.fnmatchcase(line, pattern) for pattern in self._patterns)

    def __str__(self) -> str:
        if not self._patterns:
            return "shell disabled"
        return ", ".join(repr(p) for p in self._patterns)

    def __repr__(self) -> str:
        return f"ShellAllowList({list(self._patterns)!r})"


CAUSE_ENV = "PEERD_CAUSE_JSON"
"""Environment variable holding the failed run (``RunRecord`` JSON) for a compensation run."""


class _Refused(Exception):
    """A run refused before anything was started; the message is the Outcome error.

    Attributes:
        failure: the failure class (:data:`FAILURE_CONFIG` unless the node could retry it).
    """

    def __init__(self, message: str, failure: str = FAILURE_CONFIG) -> None:
        super().__init__(message)
        self.failure = failure


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class ShellExecutor:
    """Runs :class:`pb.ShellTarget` tasks as child processes.

    Args:
        allow: the node's allow-list; commands not matching it are refused without running.
        clock: source of ``started_at``/``finished_at`` (default :class:`SystemClock`).
            Timeouts are enforced by the event loop, not by this clock.
        base_env: environment every command starts from; defaults to a copy of
            ``os.environ`` taken at construction. Its ``PEERD_SECRET_*`` variables are left
            out: a command gets only the secrets its task refers to (``env_secrets``).
        secrets: where ``env_secrets`` are read (default: none, every secret is missing).
    """

    def __init__(
        self,
        allow: ShellAllowList,
        clock: Clock | None = None,
        base_env: Mapping[str, str] | None = None,
        secrets: SecretStore | None = None,
    ) -> None:
        self._allow = allow
        self._clock: Clock = clock if clock is not None else SystemClock()
        env = base_env if base_env is not None else os.environ
        self._base_env = {k: v for k, v in env.items() if not k.startswith(ENV_PREFIX)}
        self._secrets = secrets or SecretStore("", {}, "shell")

    kind: ClassVar[str] = "shell"
    """The ``TaskSpec.target`` this executor runs (and the name of its pool)."""
    node_id = ""
    """The node it runs on (named in API errors)."""
    limit_setting: ClassVar[str] = "max_shell_runs"
    """The node setting that caps its concurrent runs."""

    @classmethod
    def from_config(cls, cfg: NodeConfig, clock: Clock) -> ShellExecutor:
        """The executor a node with ``cfg`` runs (its ``--allow-shell`` patterns)."""
        secrets = SecretStore(cfg.secrets_file, os.environ, "shell")
        executor = cls(ShellAllowList(cfg.allow_shell), clock=clock, secrets=secrets)
        executor.node_id = cfg.node_id
        return executor

    def check(self, spec: pb.TaskSpec, field: str) -> None:
        """API validation on the answering node: the command must match its allow-list.

        Raises:
            PermissionDenied: naming ``{field}.shell.argv``, the command and the node's flag.
        """
        if not self._allow.allows(spec.shell.argv):
            raise PermissionDenied(
                f"{field}.shell.argv: command {shlex.join(spec.shell.argv)[:200]!r} is not "
                f"allowed on node {self.node_id} (start nodes with --allow-shell PATTERN)"
            )

    def configure(self, cfg: NodeConfig) -> None:
        """Use the reloaded allow-list and secrets file for runs that start from now on."""
        self._allow = ShellAllowList(cfg.allow_shell)
        self._secrets.set_path(cfg.secrets_file)

    async def close(self) -> None:
        """Nothing to release (each run's process group is gone when it ends)."""

    async def run(self, spec: pb.TaskSpec, execution: Execution) -> Outcome:
        """Run one attempt of ``spec`` (its ``shell`` target): see :meth:`run_target`."""
        return await self.run_target(spec.shell, execution)

    @property
    def allow_list(self) -> ShellAllowList:
        """The allow-list this executor enforces. Assigning a new one (config reload) applies to
        runs that start afterwards; running commands are not affected."""
        return self._allow

    @allow_list.setter
    def allow_list(self, allow: ShellAllowList) -> None:
        self._allow = allow

    async def run_target(self, target: pb.ShellTarget, execution: Execution) -> Outcome:
        """Run ``target.argv`` for ``execution`` and report how it went.

        The command runs without a shell, in a new session (its own process group), with stdin
        from ``/dev/null`` and stdout+stderr merged; only the last :data:`OUTPUT_TAIL_BYTES` of
        output are kept, with the run's secrets and credential-named variables redacted.
        Environment: ``base_env``, then ``target.env``, then the resolved ``target.env_secrets``,
        then the ``PEERD_*``
        variables (``PEERD_IDEMPOTENCY_KEY``, ``PEERD_FENCING_TOKEN``, ``PEERD_TASK_ID``,
        ``PEERD_SCHEDULED_AT`` (RFC 3339), ``PEERD_ATTEMPT``, ``PEERD_NODE_ID``, ``TRACEPARENT``
        (W3C, :mod:`peerd.core.trace`), and for a
        compensation run ``PEERD_CAUSE_JSON``: the failed run as JSON), which the target cannot
        override (``PEERD_CAUSE_JSON`` is removed when the run is not a compensation).
        ``target.working_dir`` (if set) must exist.

        ``target.run_as`` switches user (plus its primary and supplementary groups, and
        ``HOME``/``USER``/``LOGNAME``) only when the node runs as root; otherwise such a run
        fails. ``execution.timeout`` bounds the run: on expiry the process group gets SIGTERM,
        then SIGKILL after :data:`~peerd.runner.process_group.KILL_GRACE_SECONDS`
        (:func:`~peerd.runner.process_group.supervise`).

        Success means exit code 0. Never raises for a failed run: those are returned as
        ``Outcome(succeeded=False, error=..., failure=...)`` with ``failure``
        :data:`FAILURE_NONZERO_EXIT` (non-zero exit or killed by a signal),
        :data:`FAILURE_TIMEOUT`, :data:`FAILURE_CONNECTION` (could not be started: missing
        binary, not executable, missing working directory) or :data:`FAILURE_CONFIG` (not
        allow-listed, empty argv, a secret the node does not have, unknown ``run_as`` user or
        a switch the node cannot make).
        On ``asyncio.CancelledError`` the process group is killed (same SIGTERM/SIGKILL
        sequence) before the cancellation propagates.
        """
        started = self._clock.now()
        argv = list(target.argv)
        try:
            spawn_kwargs, hidden = self._prepare(target, execution, argv)
        except _Refused as exc:
            return self._outcome(started, error=str(exc), failure=exc.failure)

        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                **spawn_kwargs,
            )
        except OSError as exc:
            return self._outcome(
                started, error=f"cannot execute {argv[0]}: {exc}", failure=FAILURE_CONNECTION
            )

        log.info(
            "shell.started", task_id=execution.task_id, attempt=execution.attempt, pid=proc.pid
        )
        return await self._supervise(proc, execution, started, hidden)

    def _prepare(
        self, target: pb.ShellTarget, execution: Execution, argv: list[str]
    ) -> tuple[dict[str, Any], list[str]]:
        """Validate the target and build the keyword arguments for the spawn, and the
        credentials to redact from its output (secrets, credential-named variables).

        Raises:
            _Refused: the run must not start; the message is the reason.
        """
        if not argv:
            raise _Refused("shell target has an empty argv")
        if not self._allow.allows(argv):
            raise _Refused(
                f"shell command not allowed on node {execution.node_id}: {shlex.join(argv)}; "
                "start the node with --allow-shell PATTERN"
            )
        cwd = target.working_dir or None
        if cwd is not None and not os.path.isdir(cwd):
            # Like a missing binary: the process cannot be started (yet; a mount may appear).
            raise _Refused(
                f"working directory {cwd!r} does not exist or is not a directory",
                FAILURE_CONNECTION,
            )

        env = dict(self._base_env)
        kwargs: dict[str, Any] = {"cwd": cwd}
        if target.run_as:
            kwargs.update(self._switch_user(target.run_as, env))
        env.update(target.env)
        try:
            secrets = self._secrets.resolve(target.env_secrets)
        except MissingSecret as exc:
            raise _Refused(str(exc)) from None
        env.update(secrets)
        hidden = literal_credentials(target.env)
        for value in secrets.values():
            hidden.extend(credential_fragments(value))
        env.update(
            {
                "PEERD_IDEMPOTENCY_KEY": execution.idempotency_key,
                "PEERD_FENCING_TOKEN": str(execution.fencing_token),
                "PEERD_TASK_ID": execution.task_id,
                "PEERD_SCHEDULED_AT": rfc3339(execution.scheduled_at),
                "PEERD_ATTEMPT": str(execution.attempt),
                "PEERD_NODE_ID": execution.node_id,
                "TRACEPARENT": execution.traceparent,
            }
        )
        if execution.cause_json:
            env[CAUSE_ENV] = execution.cause_json
        else:
            env.pop(CAUSE_ENV, None)
        kwargs["env"] = env
        return kwargs, hidden

    @staticmethod
    def _switch_user(run_as: str, env: dict[str, str]) -> dict[str, Any]:
        """Spawn kwargs to run as ``run_as`` (empty when it is already the current user).

        Updates ``env`` with the user's ``HOME``/``USER``/``LOGNAME`` when switching.

        Raises:
            _Refused: unknown user, or a switch is needed and the node is not root.
        """
        try:
            user = pwd.getpwnam(run_as)
        except KeyError:
            raise _Refused(f"cannot run as user {run_as}: no such user") from None
        euid = os.geteuid()
        if user.pw_uid == euid:
            return {}
        if euid != 0:
            raise _Refused(
                f"cannot run as user {run_as}: node runs as {_user_name(euid)} (not root)"
            )
        env.update({"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name})
        return {
            "user": user.pw_uid,
            "group": user.pw_gid,
            # Without this the child keeps root's supplementary groups.
            "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid),
        }

    async def _supervise(
        self,
        proc: asyncio.subprocess.Process,
        execution: Execution,
        started: datetime,
        hidden: list[str],
    ) -> Outcome:
        """Wait for ``proc`` (bounded by ``execution.timeout``) while collecting its output
        (``hidden`` redacted), and report how it ended."""
        out = OutputTail(secrets=hidden)
        seconds = execution.timeout.total_seconds()
        run_log = log.bind(task_id=execution.task_id, trace_id=execution.trace_id)
        timed_out = await supervise(proc, out, seconds, run_log)
        code = proc.returncode
        assert code is not None
        failure = FAILURE_NONZERO_EXIT
        if timed_out:
            error = f"timeout after {seconds}s; process group killed"
            failure = FAILURE_TIMEOUT
        elif code < 0:
            error = f"killed by signal {_signal_name(-code)}"
        elif code > 0:
            error = f"exit code {code}"
        else:
            error = ""
        return self._outcome(
            started, error=error, failure=failure, exit_code=code, output=out.text()
        )

    def _outcome(
        self,
        started: datetime,
        *,
        error: str,
        failure: str = "",
        exit_code: int | None = None,
        output: str = "",
    ) -> Outcome:
        """An Outcome; ``failure`` is kept only when ``error`` is set (a failed run)."""
        return Outcome(
            succeeded=not error,
            started_at=started,
            finished_at=self._clock.now(),
            exit_code=exit_code,
            output_tail=output,
            error=error,
            failure=failure if error else "",
        )
