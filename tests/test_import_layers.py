"""The package's layering (pyproject.toml [tool.importlinter]) and an export package without import cycles.

import-linter reads the package from its folders, and export/, client/ and gateway/ join
qwen3_asr_triton only through package-dir: both checks read a tree of links laid out like the
installed package (scripts/import_tree.py), as scripts/test.sh does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
EXPORT = "qwen3_asr_triton.export"


@pytest.fixture(scope="module")
def import_tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("import-tree")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "import_tree.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == out
    return out


def test_lint_imports_keeps_every_contract(import_tree):
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), str(REPO / "pyproject.toml"), "--no-logo", "--no-cache"],
        cwd=import_tree,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def strongly_connected(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The import cycles among ``modules``: Tarjan's components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module) & modules):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            components.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return [c for c in components if len(c) > 1]


def test_export_modules_import_one_way(import_tree, monkeypatch):
    monkeypatch.syspath_prepend(str(import_tree))
    # grimp finds the package with importlib, which answers from sys.modules when it is imported.
    monkeypatch.delitem(sys.modules, "qwen3_asr_triton", raising=False)
    graph = grimp.build_graph("qwen3_asr_triton", cache_dir=None)
    export = {m for m in graph.modules if m.startswith(f"{EXPORT}.")}
    assert {f"{EXPORT}.build_repository", f"{EXPORT}.gpu_plan", f"{EXPORT}.build_options"} <= export, (
        "the tree must hold the export package"
    )
    assert strongly_connected(graph, export) == []
    # The gpu plan reaches its assembly through a command, never an import back into the CLI.
    assert f"{EXPORT}.build_repository" not in graph.find_upstream_modules(f"{EXPORT}.gpu_repository")
    assert not graph.find_modules_that_directly_import(f"{EXPORT}.build_repository")
