"""The package's shape, read from its source: parts in layers, imports pointing down, no circles.

docs/ARCHITECTURE.md draws the parts; these tests keep the drawing true.
Imports are read with ``ast`` (module level and inside functions; a
``TYPE_CHECKING`` block is for the type checker only and does not count).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "recorder"

#: bottom to top; a module may import its own layer's modules and any below
LAYERS: list[tuple[str, ...]] = [
    ("recorder.exceptions", "recorder._env", "recorder._logging", "recorder._progress", "recorder.protocol"),
    ("recorder.schema",),
    ("recorder.storage",),
    ("recorder.reading",),
    ("recorder.store",),
    ("recorder.publish",),
    ("recorder.service",),
    ("recorder",),  # the top: client, cli, demo, testing, a3cp, recheck, the package itself
]
#: the producer side links into every producer process: protocol, schema and base only
CLIENT_MAY_IMPORT = ("recorder.exceptions", "recorder._env", "recorder._logging", "recorder.protocol",
                     "recorder.schema")
#: the write side the read side never loads (it must work on a copy, read-only, with no recorder)
WRITE_SIDE = ("recorder.storage._durable", "recorder.storage.writer", "recorder.storage.segments",
              "recorder.store", "recorder.service")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The package modules ``name`` imports (``from . import x`` counts as module x when x is one)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(n) for n in ast.walk(node))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:
                if f"{base}.{a.name}" in MODULES:
                    out.add(f"{base}.{a.name}")
                elif base in MODULES:
                    out.add(base)
    out.discard(name)
    return out


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int:
    best, depth = len(LAYERS) - 1, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and p.count(".") > depth:
                best, depth = i, p.count(".")
    return best


def _closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for m in GRAPH[todo.pop()]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_the_parts_are_folders() -> None:
    for part in ("schema", "storage", "storage/formats", "reading", "service", "publish"):
        assert (PACKAGE / part / "__init__.py").is_file(), part


def test_imports_point_down() -> None:
    up = [f"{a} -> {b}" for a, targets in GRAPH.items() for b in sorted(targets) if _layer(b) > _layer(a)]
    assert up == []


def test_no_import_circles() -> None:
    circles = sorted({" -> ".join(sorted(_closure(a) & {b for b in GRAPH if a in _closure(b)} | {a}))
                      for a in GRAPH if a in _closure(a)})
    assert circles == []


def test_the_client_imports_only_the_wire_and_the_schemas() -> None:
    allowed = [m for m in MODULES if m.startswith(CLIENT_MAY_IMPORT)]
    assert sorted(_closure("recorder.client") - set(allowed) - {"recorder"}) == []


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("recorder.reading")))
def test_the_read_side_never_loads_the_write_side(name: str) -> None:
    assert sorted(m for m in _closure(name) if m.startswith(WRITE_SIDE)) == []


def test_importing_the_read_side_loads_no_write_side() -> None:
    """The same as Python loads it, in a fresh interpreter (the package's API is loaded on first use)."""
    code = ("import sys, recorder.reading.reader, recorder.reading._segcheck, recorder.reading.replay; "
            f"print(sorted(m for m in sys.modules if m.startswith({WRITE_SIDE!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent, timeout=60)
    assert out.stdout.strip() == "[]"


def test_importing_the_client_loads_no_storage() -> None:
    """A producer's ``from recorder import Client`` loads the wire and the schemas, not the storage engine."""
    code = ("import sys; from recorder import Client; "
            "print(sorted(m for m in sys.modules if m.startswith(('recorder.storage', 'recorder.store', "
            "'recorder.reading', 'recorder.service', 'recorder.publish'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent, timeout=60)
    assert out.stdout.strip() == "[]"


def test_no_module_over_600_lines() -> None:
    root = PACKAGE.parent
    long = [f"{p.relative_to(root)}: {n}" for folder in ("recorder", "tests", "benchmarks")
            for p in sorted((root / folder).rglob("*.py")) if (n := len(p.read_text().splitlines())) > 600]
    assert long == []
