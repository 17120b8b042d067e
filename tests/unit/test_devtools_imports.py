"""The runtime does not depend on the dev and test tooling.

Every module under ``peerd/`` outside ``peerd/devtools/`` is runtime code: none of them imports
``peerd.devtools`` (in any form: absolute, relative, ``from peerd import devtools``,
``importlib.import_module``), except the CLI's ``peerd dev`` handler, which imports it inside the
function, when the command runs. The imports are read from the source with :mod:`ast`.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from tests.helpers import REPO_ROOT

PEERD_DIR = REPO_ROOT / "peerd"
DEVTOOLS = "peerd.devtools"
ALLOWED = {("peerd/cli.py", "_cmd_dev")}
"""(module path, enclosing function) of the imports of peerd.devtools the runtime may make."""


def _is_devtools(name: str) -> bool:
    return name == DEVTOOLS or name.startswith(DEVTOOLS + ".")


def _absolute(module: str | None, level: int, package: str) -> str:
    """The absolute module name of ``from <level dots><module> import ...`` inside ``package``."""
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, module] if module else base)


class _DevtoolsImports(ast.NodeVisitor):
    """Collects ``(line, enclosing function or None, imported name)`` of every devtools import."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.functions: list[str] = []
        self.found: list[tuple[int, str | None, str]] = []

    def _add(self, node: ast.AST, name: str) -> None:
        if _is_devtools(name):
            where = self.functions[-1] if self.functions else None
            self.found.append((getattr(node, "lineno", 0), where, name))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _absolute(node.module, node.level, self.package)
        self._add(node, base)
        for alias in node.names:
            self._add(node, f"{base}.{alias.name}")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self._add(node, first.value)
        self.generic_visit(node)


def devtools_imports(source: str, package: str) -> list[tuple[int, str | None, str]]:
    """``(line, enclosing function or None, name)`` of each import of peerd.devtools in
    ``source``, a module of ``package`` (for relative imports); one entry per imported name."""
    visitor = _DevtoolsImports(package)
    visitor.visit(ast.parse(source))
    return visitor.found


def _runtime_modules() -> list[Path]:
    return sorted(p for p in PEERD_DIR.rglob("*.py") if (PEERD_DIR / "devtools") not in p.parents)


def _package_of(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1]).removesuffix(".__init__")


def test_runtime_modules_do_not_import_devtools() -> None:
    modules = _runtime_modules()
    assert PEERD_DIR / "node.py" in modules and PEERD_DIR / "healthcheck.py" in modules
    assert not any("devtools" in p.parts for p in modules)
    violations = []
    for path in modules:
        rel = path.relative_to(REPO_ROOT).as_posix()
        for line, function, name in devtools_imports(path.read_text(), _package_of(path)):
            if (rel, function) not in ALLOWED:
                where = f"in {function}()" if function else "at module level"
                violations.append(f"{rel}:{line} imports {name} {where}")
    assert violations == [], "runtime modules must not import peerd.devtools:\n" + "\n".join(
        violations
    )


def test_peerd_dev_imports_devtools_only_inside_its_handler() -> None:
    found = devtools_imports((PEERD_DIR / "cli.py").read_text(), "peerd")
    assert found, "peerd dev no longer imports peerd.devtools.dev; update ALLOWED"
    assert {function for _, function, _ in found} == {"_cmd_dev"}


def test_every_import_form_is_found() -> None:
    source = textwrap.dedent(
        """
        import peerd.devtools.sink
        from peerd.devtools.process import PeerdProcess
        from peerd import devtools
        from ..devtools import dev
        from .. import devtools as tools
        import importlib
        import peerd.devtoolshed, peerd.healthcheck
        from peerd import dev_helpers
        from .devtools import not_ours

        def handler():
            from ..devtools.etcd_server import EmbeddedEtcd
            return importlib.import_module("peerd.devtools.dev")
        """
    )
    found = devtools_imports(source, "peerd.runner")
    lines = {(line, function) for line, function, _ in found}
    assert lines == {(2, None), (3, None), (4, None), (5, None), (6, None), (13, "handler"),
                     (14, "handler")}  # fmt: skip
    names = {name for _, _, name in found}
    assert {"peerd.devtools.dev", "peerd.devtools.etcd_server", "peerd.devtools"} <= names
    # `.devtools` inside peerd.runner is peerd.runner.devtools, and a longer name is another module
    assert not any("devtoolshed" in n or "dev_helpers" in n or "runner" in n for n in names)
