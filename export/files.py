"""Placing build artifacts into a model repository."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

# The silero-vad wheel's package and its graph for streams: 16 kHz, a block of frames per call.
SILERO_PACKAGE = "silero_vad"
SILERO_GRAPH = "data/silero_vad_16k_sequence.onnx"


def place_artifact(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` unless an identical copy is already there.

    Always a real copy, never a hard link: ONNX (>= 1.19) refuses external
    data files with more than one link ("potential hardlink attack"), so a
    linked repository would break ``onnx.checker`` and ``onnx.load`` on both
    the repository and the export it came from. ``copy2`` keeps the
    modification time, so a re-run skips files whose size and mtime match.

    Raises
    ------
    FileNotFoundError
        If ``src`` does not exist (an earlier build stage has not run).
    """
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found: run the earlier build stages first")
    if dst.is_file() and not dst.is_symlink():
        have, want = dst.stat(), src.stat()
        if have.st_size == want.st_size and have.st_mtime_ns == want.st_mtime_ns and have.st_nlink == 1:
            return
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    shutil.copy2(src, dst)


def silero_vad_graph() -> Path:
    """Silero VAD's sequence graph inside the installed ``silero-vad`` wheel (found without importing it).

    Raises
    ------
    FileNotFoundError
        The wheel is not installed (it comes with the ``export`` extra) or lacks the graph.
    """
    spec = importlib.util.find_spec(SILERO_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        graph = Path(folder) / SILERO_GRAPH
        if graph.is_file():
            return graph
    raise FileNotFoundError(
        f"Silero VAD's {SILERO_GRAPH} not found: install the export extra (pip install silero-vad==6.2.3)"
    )
