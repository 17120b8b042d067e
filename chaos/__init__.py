"""peerd chaos harness: a real cluster under a workload, faults on a schedule, invariant checks.

Run it with ``python -m chaos --profile short|long`` (see ``docs/reliability.md``).

Modules:

* :mod:`chaos.profiles` -- the ``short`` and ``long`` fault schedules and the run settings;
* :mod:`chaos.cluster` -- handles on ``peerd serve`` processes and on etcd (1 or 3 members);
* :mod:`chaos.netns` -- per-node network namespaces on a bridge, for partitions (root only);
* :mod:`chaos.faults` -- the fault injector, which writes the fault log;
* :mod:`chaos.workload` -- creating, pausing and reading back the tasks and their ledger;
* :mod:`chaos.model` -- the data the checks work on (deliveries, ledger records, fault events) and
  the report;
* :mod:`chaos.checks` -- the pure invariant checks (deliveries + ledger + fault log -> report);
* :mod:`chaos.report` -- the table, the JSON summary and a scan of the node logs;
* :mod:`chaos.runner` -- one run from start to finish.
"""

from __future__ import annotations
