"""Dev and test tooling, apart from the runtime: an embedded etcd (:mod:`.etcd_server`), a webhook
sink (:mod:`.sink`), a handle on one ``peerd serve`` process (:mod:`.process`) and ``peerd dev``
(:mod:`.dev`).

No runtime module imports this package; the one exception is the CLI's ``peerd dev`` handler,
which imports :mod:`.dev` when it runs (``tests/unit/test_devtools_imports.py`` enforces this).
"""
