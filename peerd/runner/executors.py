"""The executor registry: which executors a node has, found by the task's target kind.

Adding an executor means one module implementing :class:`peerd.runner.base.Executor` (its
``kind`` is the name of its ``TaskSpec.target`` oneof field), its line in :data:`EXECUTOR_TYPES`,
and its target message in the proto. Pools (one per kind), API validation (``check``) and the
configuration (each kind's concurrency limit, ``limit_setting``) all read this registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peerd.errors import InvalidArgument
from peerd.runner.base import FAILURE_CONFIG, Execution, Executor, Outcome
from peerd.runner.http import HttpExecutor
from peerd.runner.python import PythonExecutor
from peerd.runner.shell import ShellExecutor
from peerd.v1 import scheduler_pb2 as pb

if TYPE_CHECKING:
    from peerd.clock import Clock
    from peerd.node_config import NodeConfig

EXECUTOR_TYPES: tuple[type[Executor], ...] = (HttpExecutor, ShellExecutor, PythonExecutor)
"""Every executor a node has, one per ``TaskSpec.target`` kind."""

KINDS: tuple[str, ...] = tuple(t.kind for t in EXECUTOR_TYPES)
"""The executor kinds (``TaskSpec.target`` oneof field names)."""


def limits(cfg: NodeConfig) -> dict[str, int]:
    """Each kind's concurrency limit in ``cfg`` (``{kind: cfg.<limit_setting>}``)."""
    return {t.kind: int(getattr(cfg, t.limit_setting)) for t in EXECUTOR_TYPES}


class Executors:
    """The executors of one node, by kind.

    Args:
        cfg: node configuration (each executor's settings).
        clock: time source of the executors' records.
    """

    def __init__(self, cfg: NodeConfig, clock: Clock) -> None:
        self.clock = clock
        self._by_kind: dict[str, Executor] = {
            t.kind: t.from_config(cfg, clock) for t in EXECUTOR_TYPES
        }

    def get(self, kind: str) -> Executor | None:
        """The executor of ``kind``, or None."""
        return self._by_kind.get(kind)

    async def run(self, spec: pb.TaskSpec, execution: Execution) -> Outcome:
        """Run one attempt with the executor of ``spec``'s target; a task without a known
        target fails with failure class ``config`` (never raises for a failed run)."""
        kind = spec.WhichOneof("target") or ""
        executor = self._by_kind.get(kind)
        if executor is None:
            now = self.clock.now()
            return Outcome(
                False,
                now,
                now,
                error=f"task has no executor target ({kind})",
                failure=FAILURE_CONFIG,
            )
        return await executor.run(spec, execution)

    def check(self, spec: pb.TaskSpec, field: str) -> None:
        """Whether this node can run ``spec`` (API validation; see :meth:`Executor.check`).

        Raises:
            InvalidArgument: no target, or one this node has no executor for.
            PermissionDenied: the executor refuses it (e.g. a shell command not allow-listed).
        """
        kind = spec.WhichOneof("target")
        executor = self._by_kind.get(kind or "")
        if executor is None:
            raise InvalidArgument(f"{field}.target", f"one of {', '.join(KINDS)} is required")
        executor.check(spec, field)

    def configure(self, cfg: NodeConfig) -> None:
        """Apply a reloaded configuration to every executor."""
        for executor in self._by_kind.values():
            executor.configure(cfg)

    async def close(self) -> None:
        """Close every executor."""
        for executor in self._by_kind.values():
            await executor.close()
