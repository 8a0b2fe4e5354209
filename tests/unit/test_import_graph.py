"""The package's modules form a layered graph: no module imports, directly or through others, a module that imports it.

Imports are read from the source with the standard library's `ast` (every `import` / `from ... import`, at the top or
inside a function, TYPE_CHECKING blocks included), so a lazy import does not hide a cycle.
"""

import ast
import graphlib
from pathlib import Path

import vltk

PACKAGE = Path(vltk.__file__).parent


def module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(file: Path, modules: set[str]) -> set[str]:
    """The package modules `file` imports (`from a.b import c` counts a.b.c when that is a module, else a.b)."""
    name = module_name(file)
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import vltk.a.b` also imports vltk.a; keep the deepest module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    # A package's __init__ only re-exports its own modules: an edge into a package is an edge into what it holds,
    # so count `vltk.x` (the package) as its __init__, as Python does.
    return {module_name(f): imported(f, modules) for f in files}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end) or None (the standard library's graphlib)."""
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as err:
        return err.args[1]
    return None


def test_cycle_finder_on_a_hand_made_graph():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    found = cycle(edges)
    assert found is not None and set(found) == {"a", "b", "c"} and found[0] == found[-1]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_imports_read_from_the_source():
    edges = graph()
    assert "vltk.config" in edges["vltk.cli"] or "vltk.config" in edges["vltk.pipeline.sample"]
    assert "vltk.errors" in edges["vltk.artifacts"]


def test_no_import_cycle_between_the_package_modules():
    found = cycle(graph())
    assert found is None, "import cycle: " + " -> ".join(found)
