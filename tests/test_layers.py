"""The layer check: import-linter's contracts in .importlinter hold, and no two modules of genlib, dashboard or app_pages
import each other through any chain, function-level imports included (so a cycle cannot hide inside a function).

Both read the source with grimp (import-linter's graph builder); nothing is imported or run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("genlib", "dashboard", "app_pages")
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint_imports(root: Path = ROOT) -> subprocess.CompletedProcess:
    """`lint-imports` on the checkout at `root` (its .importlinter), without a cache folder in the checkout."""
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--no-logo", "--config", ".importlinter"],
                          cwd=root, capture_output=True, text=True, timeout=300)


def module_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module: each is a set of modules that import each other
    through some chain (Tarjan's algorithm, iterative: no recursion limit however long a chain is)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    """Each import inside a cycle, with its line: what to move so that the arrow goes one way."""
    inside = set(component)
    lines = []
    for a in component:
        for b in sorted(graph.find_modules_directly_imported_by(a) & inside):
            for d in graph.get_import_details(importer=a, imported=b):
                lines.append(f"  {a}:{d['line_number']}  {d['line_contents'].strip()}")
    return "\n".join(lines)


def build_graph(root: Path = ROOT) -> grimp.ImportGraph:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def test_import_linter_contracts_hold():
    """pages over dashboard over genlib, genlib free of streamlit, no cycles between packages (.importlinter)."""
    done = lint_imports()
    assert done.returncode == 0, f"lint-imports failed (rc {done.returncode}):\n{done.stdout}\n{done.stderr}"


def test_import_linter_fails_on_deliberate_violations(tmp_path):
    """The check can fail: a copy of the sources where genlib imports streamlit and the dashboard, and the dashboard
    imports a page, breaks both contracts, naming each import."""
    import shutil

    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    for path, line in (("genlib/data.py", "import streamlit"), ("genlib/idx.py", "import dashboard.share"),
                       ("dashboard/share.py", "from app_pages import home")):
        (tmp_path / path).write_text((tmp_path / path).read_text() + f"\n{line}  # a deliberate violation\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "genlib never imports streamlit or plotly BROKEN" in done.stdout, done.stdout
    assert "Layers: app_pages over dashboard over genlib BROKEN" in done.stdout, done.stdout
    for chain in ("genlib.data -> streamlit", "genlib.idx -> dashboard.share", "dashboard.share -> app_pages.home"):
        assert chain in done.stdout, (chain, done.stdout)


def test_no_module_imports_itself_through_a_chain():
    graph = build_graph()
    assert "genlib.data" in graph.modules and "dashboard.explore.panel" in graph.modules  # the graph is the real one
    cycles = module_cycles(graph)
    assert not cycles, "import cycles (function-level imports count too):\n" + "\n\n".join(
        describe(graph, c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path, monkeypatch):
    """The check can fail: a package whose two modules import each other, one of them inside a function."""
    pkg = tmp_path / "cyclic_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic_pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyclic_pkg import a\n    return a\n")
    (pkg / "c.py").write_text("from cyclic_pkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic_pkg", cache_dir=None)
    cycles = module_cycles(graph)
    assert cycles == [["cyclic_pkg.a", "cyclic_pkg.b"]]
    assert "cyclic_pkg.b:2  from cyclic_pkg import a" in describe(graph, cycles[0])
