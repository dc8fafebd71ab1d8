"""Writing a model repository, for both targets.

:func:`write_repository` lays out filled configs, the python-backend models'
``model.py`` files and each model's artifacts in its version folder, then
``build_info.json``; :func:`prepare_output` clears an earlier build first.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from qwen3_asr_triton.artifacts import EMBED_FILENAME, SPEAKER_FILENAME, VAD_FILENAME
from qwen3_asr_triton.model_spec import SPEC_FILENAME
from qwen3_asr_triton.tokenizer import TOKENIZER_FILENAME

from .build_options import BuildOptions
from .files import place_artifact, silero_vad_graph
from .fill_config import parse_model_config
from .layout import BUILD_INFO, MODEL_PY, TEMPLATE_ROOT, VERSION

logger = logging.getLogger(__name__)

# Per model, (source file, path in its version folder).
Artifacts = Mapping[str, Sequence[tuple[Path, str]]]


def common_artifacts(
    asr_export: Path, aligner_export: Path | None, speaker_export: Path | None = None
) -> dict[str, list[tuple[Path, str]]]:
    """What both targets place from the exports: the side files of the python-backend models they share
    (the diarizer is one of them: it runs on ONNX Runtime on both targets)."""
    spec, tok = (asr_export / SPEC_FILENAME, SPEC_FILENAME), (asr_export / TOKENIZER_FILENAME, TOKENIZER_FILENAME)
    files = {
        "qwen3_asr": [spec, tok],
        "qwen3_asr_deltas": [spec, tok],
        "qwen3_asr_streaming": [spec, tok, (silero_vad_graph(), VAD_FILENAME)],
        "preprocess": [spec],
        "postprocess": [tok],
    }
    if aligner_export is not None:
        files["aligner"] = [(aligner_export / n, n) for n in (SPEC_FILENAME, TOKENIZER_FILENAME, EMBED_FILENAME)]
    if speaker_export is not None:
        speaker = (speaker_export / SPEAKER_FILENAME, SPEAKER_FILENAME)
        files["diarizer"] = [speaker, (silero_vad_graph(), VAD_FILENAME)]
        # Streams label each utterance final with an online speaker (DIARIZE at START).
        files["qwen3_asr_streaming"].append(speaker)
    return files


def prepare_output(output: Path) -> None:
    """An empty ``output``; a previous build there is cleared (its folder kept: it may be a mount point)."""
    if output.exists():
        if not (output / BUILD_INFO).is_file() and any(output.iterdir()):
            raise FileExistsError(
                f"{output} exists, is not empty and was not built by this tool; refusing to overwrite it"
            )
        # build_info.json goes last, so an interrupted clean-up can be resumed.
        for child in sorted(output.iterdir(), key=lambda p: p.name == BUILD_INFO):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    output.mkdir(parents=True, exist_ok=True)


def write_repository(
    output: Path,
    configs: Mapping[str, str],
    artifacts: Artifacts,
    *,
    target: str,
    model: Path,
    aligner: Path | None,
    opts: BuildOptions,
    extra_info: Mapping[str, object] | None = None,
    template_root: Path = TEMPLATE_ROOT,
    diarizer: Path | str | None = None,
) -> Path:
    """Write the repository at ``output`` (replacing a previous build there); ``configs`` is config text per model.

    ``build_info.json`` records the target, the checkpoints, ``opts``, ``extra_info`` and the models.
    """
    prepare_output(output)
    for name, text in configs.items():
        version = output / name / VERSION
        version.mkdir(parents=True)
        (output / name / "config.pbtxt").write_text(text)
        if parse_model_config(text).backend == "python":
            shutil.copy2(template_root / name / VERSION / MODEL_PY, version / MODEL_PY)
        for src, dst_name in artifacts.get(name, []):
            place_artifact(src, version / dst_name)
    info = {
        "target": target,
        "model": str(model),
        "aligner": str(aligner) if aligner else None,
        "diarizer": str(diarizer) if diarizer else None,
        "options": asdict(opts),
        **(extra_info or {}),
        "models": sorted(configs),
    }
    (output / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    logger.info("%s model repository ready: %s (%s)", target, output, ", ".join(sorted(configs)))
    return output
