"""ListTasks' pages: filtered server-side, with each task's status on request.

Without a filter a page is one range read of the task keys (id order, ``page_size`` + 1 keys).
With one (:class:`peerd.core.task_view.TaskFilter`: label selector, id substring, paused state)
the tasks are read :data:`SCAN_PAGE` at a time and filtered here until the page is full, so a
page holds up to ``page_size`` matches and the next token is the id of its last task.

``include_status`` adds one read for the whole page: the newest run record of every task on it
in one etcd transaction of limit-1 descending range reads (:meth:`peerd.coord.ledger.Ledger.
newest_of`), and the next slot of each from its compiled schedule (pure:
:func:`peerd.core.task_view.task_status`). Measured with 10,000 tasks on one etcd (see
docs/observability.md, "Dashboard"): a page of 50 with statuses answers in tens of milliseconds,
whatever the number of tasks, because nothing is read beyond the page.
"""

from __future__ import annotations

from peerd.clock import Clock
from peerd.coord.ledger import Ledger
from peerd.coord.store import TaskStore
from peerd.core.task_schedule import TaskSchedule, task_schedule
from peerd.core.task_view import TaskFilter, task_status
from peerd.core.tzrules import TimeZoneRules
from peerd.core.validate import validate_task_id
from peerd.errors import InvalidArgument, PeerdError
from peerd.v1 import scheduler_pb2 as pb

DEFAULT_PAGE = 100
MAX_PAGE = 1000
SCAN_PAGE = 1000
"""Tasks read from etcd per range request while ListTasks filters."""


def page_size(value: int, default: int) -> int:
    """``value`` or ``default`` when 0.

    Raises:
        InvalidArgument: ``page_size`` outside 0..:data:`MAX_PAGE`.
    """
    if value < 0 or value > MAX_PAGE:
        raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE}, got {value}")
    return value or default


class TaskLister:
    """Pages of tasks and their statuses.

    Args:
        store: task specs in etcd.
        ledger: run records (the newest of each task).
        clock: time source (``now`` of the next slots).
        rules: the node's time-zone rules (schedules compile with them).
    """

    def __init__(
        self, store: TaskStore, ledger: Ledger, clock: Clock, rules: TimeZoneRules
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.clock = clock
        self.rules = rules

    async def page(self, request: pb.ListTasksRequest) -> tuple[list[pb.TaskSpec], str]:
        """The tasks of the page ``request`` asks for and the token of the next ("" at the end).

        Raises:
            InvalidArgument: bad ``page_size`` or ``page_token``, or a bad filter
                (:meth:`TaskFilter.of`).
        """
        size = page_size(request.page_size, DEFAULT_PAGE)
        if request.page_token:
            validate_task_id(request.page_token, "page_token")
        keep = TaskFilter.of(request)
        if keep.empty:
            return await self.store.list(size, request.page_token)
        return await self._matching(keep, size, request.page_token)

    async def _matching(
        self, keep: TaskFilter, size: int, page_token: str
    ) -> tuple[list[pb.TaskSpec], str]:
        """Up to ``size`` tasks after ``page_token`` that ``keep`` matches, and the token to
        continue after the last one ("" when nothing follows)."""
        out: list[pb.TaskSpec] = []
        token = page_token
        while True:
            page, token = await self.store.list(SCAN_PAGE, token)
            for i, spec in enumerate(page):
                if not keep.matches(spec):
                    continue
                out.append(spec)
                if len(out) == size:
                    more = i < len(page) - 1 or bool(token)
                    return out, spec.id if more else ""
            if not token:
                return out, ""

    async def statuses(self, specs: list[pb.TaskSpec]) -> list[pb.TaskStatus]:
        """The status of each of ``specs``, in order (one ledger read for all of them)."""
        newest = await self.ledger.newest_of([s.id for s in specs])
        now = self.clock.now()
        return [task_status(s, self._schedule(s), newest.get(s.id), now) for s in specs]

    def _schedule(self, spec: pb.TaskSpec) -> TaskSchedule | None:
        """The task's compiled schedule; None when it does not compile here (e.g. a zone this
        node's rules lack): the status then has no next slot rather than failing the page."""
        try:
            return task_schedule(spec, rules=self.rules)
        except (PeerdError, ValueError):
            return None
