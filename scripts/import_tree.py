"""Lay the package out as installed, as a tree of links, for import-linter; print the tree's folder.

``qwen3_asr_triton.export``, ``.client`` and ``.gateway`` live in export/, client/ and gateway/
(pyproject.toml ``[tool.setuptools.package-dir]``), so the qwen3_asr_triton/ folder alone lacks
them and import-linter, which reads packages from their folder, would not see them. The tree has
one folder per mapped package whose entries link to the real files, with the mapped subpackages
linked in beside them. Run ``lint-imports`` from the printed folder (it puts its working folder
first on ``sys.path``)::

    cd "$(python scripts/import_tree.py)" && lint-imports --config "$ROOT/pyproject.toml"

Beside the package, the tree holds the other code the contracts cover: ``perf`` (a link to perf/,
imported as ``perf.xxx`` by its scripts) and ``model_glue``, a package made up here whose module
``model_glue.<name>`` links ``model_repository/<name>/1/model.py`` (Triton loads each as a file, so
they form no package of their own). import-linter only parses their imports, so
``triton_python_backend_utils``, which exists only inside Triton, needs not be importable.

Usage: ``python scripts/import_tree.py [OUT]`` (default: .cache/import-tree).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / ".cache" / "import-tree"
# The made-up package of the model glue, and the folder of benchmark scripts (a package: perf/__init__.py).
GLUE = "model_glue"
PERF = "perf"


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Package name -> its folder, as pyproject.toml maps them."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    return {name: root / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def glue_files(root: Path = ROOT) -> dict[str, Path]:
    """Triton model name -> its python backend's ``model.py``, for every model that has one."""
    files = {path.parents[1].name: path for path in sorted((root / "model_repository").glob("*/1/model.py"))}
    odd = [name for name in files if not name.isidentifier()]
    if odd:
        raise SystemExit(f"model names that are no Python module names: {odd}")
    return files


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def lay_out(out: Path = DEFAULT_OUT, root: Path = ROOT) -> Path:
    """Write the tree under ``out`` (replacing an earlier one) and return ``out``."""
    mapped = package_dirs(root)
    for top in {name.split(".")[0] for name in mapped} | {GLUE, PERF}:
        _remove(out / top)
    for name in sorted(mapped, key=lambda n: n.count(".")):
        dest = out.joinpath(*name.split("."))
        if not any(other.startswith(f"{name}.") for other in mapped):
            dest.symlink_to(mapped[name], target_is_directory=True)
            continue
        # A package with mapped subpackages: a real folder, so they can be linked in beside its own entries.
        dest.mkdir(parents=True)
        for entry in mapped[name].iterdir():
            if entry.name != "__pycache__":
                (dest / entry.name).symlink_to(entry)
    (out / PERF).symlink_to(root / PERF, target_is_directory=True)
    glue = out / GLUE
    glue.mkdir(parents=True)
    (glue / "__init__.py").write_text(
        f'"""model_repository/<name>/1/model.py as {GLUE}.<name> (scripts/import_tree.py)."""\n'
    )
    for name, path in glue_files(root).items():
        (glue / f"{name}.py").symlink_to(path)
    return out


if __name__ == "__main__":
    print(lay_out(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else DEFAULT_OUT))
