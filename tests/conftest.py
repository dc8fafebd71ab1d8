"""Session fixtures: cached random checkpoints, ONNX exports, speech clips, the reference.

Everything generated is cached under ``.cache/`` (git-ignored; override with
``QWEN3_ASR_CACHE``), keyed by a hash of the code that generates it, so a
clean clone builds it once and later runs reuse it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.speech import CLIPS, ClipSpec, make_clip, require_tools

# Checkpoints are local: never reach for the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("QWEN3_ASR_CACHE", REPO / ".cache"))


def code_hash(*relative: str) -> str:
    """Short hash of source files, used to invalidate cached artifacts when they change."""
    digest = hashlib.sha256()
    for rel in relative:
        digest.update((REPO / rel).read_bytes())
    return digest.hexdigest()[:12]


CHECKPOINT_CODE = ("export/random_checkpoint.py", "export/vocab.py", "export/chat_templates.py")
EXPORT_CODE = ("export/modules.py", "export/onnx_export.py", "export/checkpoint.py", "qwen3_asr_triton/model_spec.py")


def cached_checkpoint(kind: str, size: str = "tiny", layout: str = "hf") -> Path:
    from qwen3_asr_triton.export.random_checkpoint import write_random_checkpoint

    path = CACHE / "checkpoints" / f"{size}-{kind}-{layout}-{code_hash(*CHECKPOINT_CODE)}"
    if not (path / "config.json").is_file() or not (path / "RANDOM_WEIGHTS.txt").is_file():
        write_random_checkpoint(path, size=size, kind=kind, layout=layout)
    return path


def cached_export(checkpoint: Path) -> Path:
    from qwen3_asr_triton.export.onnx_export import export_checkpoint

    out = CACHE / "onnx" / f"{checkpoint.name}-{code_hash(*EXPORT_CODE)}"
    export_checkpoint(checkpoint, out)  # skips when up to date
    return out


@pytest.fixture(scope="session")
def asr_checkpoint() -> Path:
    return cached_checkpoint("asr")


@pytest.fixture(scope="session")
def aligner_checkpoint() -> Path:
    return cached_checkpoint("aligner")


@pytest.fixture(scope="session")
def asr_export(asr_checkpoint: Path) -> Path:
    return cached_export(asr_checkpoint)


@pytest.fixture(scope="session")
def aligner_export(aligner_checkpoint: Path) -> Path:
    return cached_export(aligner_checkpoint)


@dataclass(frozen=True)
class Clip:
    spec: ClipSpec
    path: Path

    @property
    def name(self) -> str:
        return self.spec.name

    def waveform(self) -> np.ndarray:
        from qwen3_asr_triton.audio import load_audio

        return load_audio(self.path.read_bytes())


@pytest.fixture(scope="session")
def clips() -> list[Clip]:
    require_tools()
    return [Clip(spec, make_clip(spec, CACHE / "audio")) for spec in CLIPS]


@pytest.fixture(scope="session")
def reference(asr_checkpoint: Path, aligner_checkpoint: Path):
    from qwen3_asr_triton.export.reference import TransformersReference

    return TransformersReference(asr_checkpoint, aligner_checkpoint)


@pytest.fixture(scope="session")
def recognizer(asr_export: Path, aligner_export: Path):
    from qwen3_asr_triton.pipeline import OfflineRecognizer

    return OfflineRecognizer(asr_export, aligner_export)
