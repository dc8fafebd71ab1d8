"""Polygraphy data loaders for the TensorRT-vs-ONNX-Runtime comparison (numpy only).

``polygraphy run GRAPH.onnx --onnxrt --data-loader-script export/trt/data_loader.py:load_encoder_data
--save-inputs X.json --save-outputs Y.json`` runs in the project environment; the
TensorRT half then replays exactly these inputs against the plan with
``--load-inputs X.json --load-outputs Y.json``. Inputs look like serving inputs:
log-mel-scaled windows padded to full length with their true lengths (one
partial window), or embedding-scaled aligner sequences.

Settings come from the environment (the build plan sets them on the command):
``QWEN3_ASR_PG_SPEC`` (model_spec.json of the export), ``QWEN3_ASR_PG_BATCH``
(windows per call), ``QWEN3_ASR_PG_SEQ`` (aligner tokens), ``QWEN3_ASR_PG_SEED``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"data_loader: set {name}")
    return value


def _spec() -> dict:
    return json.loads(Path(_setting("QWEN3_ASR_PG_SPEC")).read_text())


def _rng() -> np.random.Generator:
    return np.random.default_rng(int(_setting("QWEN3_ASR_PG_SEED", "0")))


def encoder_inputs(spec: dict, windows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``windows`` full-length windows; the last one holds fewer valid frames and zero padding."""
    feats = spec["features"]
    frames, mels = int(feats["window_frames"]), int(feats["n_mels"])
    lens = np.full(windows, frames, dtype=np.int64)
    lens[-1] = frames - int(feats["chunk_frames"]) - int(feats["chunk_frames"]) // 2
    x = (0.5 * rng.standard_normal((windows, mels, frames))).astype(np.float32)
    x[-1, :, int(lens[-1]) :] = 0.0
    return {"input_features": x, "feature_lens": lens}


def aligner_lm_inputs(spec: dict, seq: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One sequence of ``seq`` embedding-scaled vectors, fully attended."""
    hidden = int(spec["text"]["hidden_size"])
    embeds = (0.05 * rng.standard_normal((1, seq, hidden))).astype(np.float32)
    return {"inputs_embeds": embeds, "attention_mask": np.ones((1, seq), dtype=np.int64)}


def load_encoder_data() -> Iterator[dict[str, np.ndarray]]:
    yield encoder_inputs(_spec(), int(_setting("QWEN3_ASR_PG_BATCH", "4")), _rng())


def load_aligner_lm_data() -> Iterator[dict[str, np.ndarray]]:
    yield aligner_lm_inputs(_spec(), int(_setting("QWEN3_ASR_PG_SEQ", "256")), _rng())
