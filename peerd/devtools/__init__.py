"""Dev and test tooling, apart from the runtime: an embedded etcd (:mod:`.etcd_server`; an
N-member cluster in :mod:`.etcd_cluster`), a webhook sink (:mod:`.sink`), a handle on one
``peerd serve`` process (:mod:`.process`), ``peerd dev`` (:mod:`.dev`) and what their child
processes and servers share (:mod:`.spawn`: free ports, parent-death signal, log tails).

No runtime module imports this package; the one exception is the CLI's ``peerd dev`` handler,
which imports :mod:`.dev` when it runs (``tests/unit/test_devtools_imports.py`` enforces this).
"""
