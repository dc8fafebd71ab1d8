"""The package's layering (pyproject.toml [tool.importlinter]) and an export package without import cycles.

import-linter reads the package from its folders, and export/, client/ and gateway/ join
qwen3_asr_triton only through package-dir: both checks read a tree of links laid out like the
installed package (scripts/import_tree.py), as scripts/test.sh does. The tree also holds perf/ and
the model glue (model_repository/*/1/model.py as model_glue.<name>); a forbidden import written into
a tree of its own shows that the contracts over them do fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
EXPORT = "qwen3_asr_triton.export"
GLUE = "model_glue"


def lay_out(out: Path) -> Path:
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


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), str(REPO / "pyproject.toml"), "--no-logo", "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def forbidden_contract(source: str) -> str:
    """The name of pyproject.toml's forbidden contract over ``source``."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (name,) = [c["name"] for c in contracts if c["type"] == "forbidden" and c["source_modules"] == [source]]
    return name


@pytest.fixture(scope="module")
def import_tree(tmp_path_factory) -> Path:
    return lay_out(tmp_path_factory.mktemp("import-tree"))


def test_lint_imports_keeps_every_contract(import_tree):
    result = lint_imports(import_tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("module", "source", "contract_over"),
    [
        # What the decoder's and encoder's glue did before the runners moved into the core.
        (f"{GLUE}/broken.py", "from qwen3_asr_triton.export.onnx_export import STAMP_FILENAME\n", GLUE),
        ("qwen3_asr_triton/broken.py", "from perf.machine import describe_machine\n", "qwen3_asr_triton"),
    ],
    ids=["glue-imports-export", "core-imports-perf"],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, source, contract_over):
    tree = lay_out(tmp_path / "import-tree")
    # model_glue/ and qwen3_asr_triton/ are real folders of links: a new file there leaves the repository alone.
    (tree / module).write_text(source)
    result = lint_imports(tree)
    report = " ".join(result.stdout.split())  # long contract names wrap
    assert result.returncode != 0, result.stdout + result.stderr
    assert f"{forbidden_contract(contract_over)} BROKEN" in report, result.stdout


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


def test_the_glue_is_in_the_graph_over_the_core(import_tree, monkeypatch):
    """Every python backend's model.py is a module of the graph, so the glue's contract reads real imports."""
    monkeypatch.syspath_prepend(str(import_tree))
    for name in ("qwen3_asr_triton", GLUE):
        monkeypatch.delitem(sys.modules, name, raising=False)
    graph = grimp.build_graph("qwen3_asr_triton", GLUE, cache_dir=None)
    models = {path.parents[1].name for path in (REPO / "model_repository").glob("*/1/model.py")}
    assert {"encoder", "decoder", "aligner"} <= models
    assert {m for m in graph.modules if m.startswith(f"{GLUE}.")} == {f"{GLUE}.{name}" for name in models}
    for model in ("encoder", "decoder"):
        assert "qwen3_asr_triton.runners" in graph.find_modules_directly_imported_by(f"{GLUE}.{model}")
