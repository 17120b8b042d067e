"""The narrow views of the rest of the node that the engine takes (structural protocols).

:class:`peerd.node.Node` passes the real objects: ``Membership`` as :class:`NodeLease`, the
``TaskCache`` as :class:`TaskView`, ``peerd.runner.executors.Executors`` as :class:`Executors`.
Tests may pass anything of the same shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

from peerd.config import NodeConfig
from peerd.core.placement import Placement
from peerd.runner.base import Execution as Attempt
from peerd.runner.base import Outcome
from peerd.v1 import scheduler_pb2 as pb


class NodeLease(Protocol):
    """This node's registration as the engine needs it (a narrow view of Membership)."""

    @property
    def member_key(self) -> bytes: ...

    @property
    def lease_id(self) -> int: ...

    @property
    def claim_ready(self) -> asyncio.Event: ...

    @property
    def view(self) -> Mapping[str, pb.Member]: ...

    def on_change(self, fn: Callable[[], None]) -> None: ...

    def lease_lost(self) -> None: ...

    def etcd_suspect(self) -> None: ...

    def etcd_slow(self) -> None: ...


class TaskView(Protocol):
    """The watched task specs (a narrow view of TaskCache): specs decoded on lookup, and
    every task's placement."""

    @property
    def tasks(self) -> Mapping[str, pb.TaskSpec]: ...

    @property
    def placements(self) -> Mapping[str, Placement]: ...

    @property
    def creating(self) -> str: ...

    def on_change(self, fn: Callable[[str, pb.TaskSpec | None], None]) -> None: ...


class Executors(Protocol):
    """The node's executors (:class:`peerd.runner.executors.Executors`)."""

    async def run(self, spec: pb.TaskSpec, execution: Attempt) -> Outcome: ...

    def configure(self, cfg: NodeConfig) -> None: ...
