"""The package's import graph: no cycles, and the one-way rules of docs/architecture.md.

The graph is read from the source with ``ast`` (every module, ``import x`` and ``from x import y``,
relative imports, and imports inside functions, which run later but still tie the modules), so it
also sees imports that a plain ``import catalog_render`` never executes.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "catalog_render"


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (dotted names, packages by their own name).

    ``from a.b import c`` counts as importing ``a.b`` and, when ``a.b.c`` is a module, ``a.b.c``.
    A module importing its own parent package is not an edge (Python runs the parent's
    ``__init__`` first anyway)."""
    mods: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:  # a name inside a module -> that module
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != mod and not mod.startswith(target + "."):
                    graph[mod].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules, as a path ``[a, b, ..., a]`` of imports
    (Tarjan's strongly connected components, then a shortest path back inside each group)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # recursion depth <= number of modules (a few dozen)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for group in groups:
        start = min(group)
        # breadth-first from start's imports back to start, inside the group
        paths = {w: [start, w] for w in sorted(graph[start]) if w in group}
        queue = list(paths)
        while start not in paths:
            v = queue.pop(0)
            for w in sorted(graph[v]):
                if w in group and w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
        cycles.append(paths[start])
    return sorted(cycles)


def imports_of(graph: dict[str, set[str]], prefix: str) -> dict[str, set[str]]:
    """The modules at or under ``prefix`` and what each imports."""
    return {m: deps for m, deps in graph.items() if m == prefix or m.startswith(prefix + ".")}


def external_imports(root: Path, top: str) -> set[str]:
    """Modules of the package that import the third-party package ``top`` anywhere in their source."""
    found = set()
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n == top or n.startswith(top + ".") for n in names):
                found.add(name)
    return found


# ---------------------------------------------------------------------------------- the checker


def test_cycle_finder_names_cycles_and_passes_acyclic_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    long = {"a": {"b", "x"}, "b": {"c"}, "c": {"d"}, "d": {"b"}, "x": set()}
    assert find_cycles(long) == [["b", "c", "d", "b"]]
    two = {"a": {"b"}, "b": {"a"}, "p": {"q"}, "q": {"r"}, "r": {"p", "a"}}
    assert find_cycles(two) == [["a", "b", "a"], ["p", "q", "r", "p"]]
    assert find_cycles({"s": {"s"}}) == [["s", "s"]]


def test_graph_reads_every_kind_of_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import pkg.b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.sub import c  # inside a function\n")
    (pkg / "sub" / "c.py").write_text("from .. import a\nfrom ..b import f\nimport os\n")
    (pkg / "sub" / "d.py").write_text("from . import c\nfrom pkg import sub\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a", "pkg.b"}  # relative imports; its parent package is no edge
    assert graph["pkg.sub.d"] == {"pkg.sub.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


# ---------------------------------------------------------------------------------- the package


def test_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 30 and "catalog_render.generators.registry" in graph  # the package was read
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_nothing_imports_the_cli():
    graph = import_graph(PACKAGE)
    importers = sorted(m for m, deps in graph.items() if "catalog_render.cli" in deps)
    assert importers == [], f"cli.py is the outermost layer; imported by {importers}"


def test_ray_is_imported_only_by_the_execution_module():
    users = external_imports(PACKAGE, "ray")
    assert users <= {"catalog_render.execution"}, f"Ray imported outside execution.py: {sorted(users - {'catalog_render.execution'})}"
    assert "catalog_render.execution" in users  # the check reads real imports


def test_generators_do_not_import_training():
    graph = import_graph(PACKAGE)
    bad = {m: sorted(d for d in deps if d.startswith("catalog_render.training"))
           for m, deps in imports_of(graph, "catalog_render.generators").items()}
    assert not {m: d for m, d in bad.items() if d}, f"generators/ imports training/: {bad}"
    assert "catalog_render.generators.base" in graph["catalog_render.training.loop"]  # training builds on generators


def test_quality_imports_no_renderer_or_trainer():
    """quality/ holds metrics on images: it does not depend on generators, training, evaluation or execution."""
    graph = import_graph(PACKAGE)
    layers = ("catalog_render.generators", "catalog_render.training", "catalog_render.evaluation", "catalog_render.execution")
    bad = {m: sorted(d for d in deps if d.startswith(layers)) for m, deps in imports_of(graph, "catalog_render.quality").items()}
    assert not {m: d for m, d in bad.items() if d}, f"quality/ imports: {bad}"
