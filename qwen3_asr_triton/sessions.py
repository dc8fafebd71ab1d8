"""ONNX Runtime sessions for the exported graphs (numpy in, numpy out; no torch).

:class:`OrtOptions` holds the runtime knobs (threads, optimisation level) and
is shared by every graph; :func:`make_session` creates one session, refusing a
graph whose inputs do not match what the caller will feed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrtOptions:
    """ONNX Runtime settings.

    Attributes
    ----------
    intra_op_threads : int
        Threads per operator; 0 lets ONNX Runtime use every core.
    optimization : str
        ``"all"`` (default), ``"extended"``, ``"basic"`` or ``"disabled"``.
    ort_spin_wait : bool
        Let worker threads spin-wait for the next operator's work during a run
        instead of sleeping between operators; they stop spinning as soon as
        the run returns (``session.force_spinning_stop``), so the cores are
        free for the other models' processes between runs and an idle server
        uses no CPU. On by default: measured on the 2-core development machine
        (perf/results/README.md), it cut a 5 s clip's time to first token by
        ~15% at concurrency 1 without slowing concurrency 8.
    """

    intra_op_threads: int = 0
    optimization: str = "all"
    ort_spin_wait: bool = True

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0:
            raise ValueError("intra_op_threads must be >= 0")
        if self.optimization not in ("all", "extended", "basic", "disabled"):
            raise ValueError(f"unknown ONNX Runtime optimisation level {self.optimization!r}")

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> OrtOptions:
        """Options from a Triton model config's ``parameters``: ``intra_op_threads`` and ``ort_spin_wait``."""
        threads = params.get("intra_op_threads", "0")
        if not threads.strip().isdigit():
            raise ValueError(f"intra_op_threads must be a whole number >= 0, got {threads!r}")
        return cls(intra_op_threads=int(threads), ort_spin_wait=bool_parameter(params, "ort_spin_wait", True))


def bool_parameter(params: Mapping[str, str], key: str, default: bool) -> bool:
    """A ``true`` / ``false`` model config parameter (``default`` where absent).

    Raises
    ------
    ValueError
        Any other value.
    """
    value = params.get(key, "true" if default else "false").strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value == "true"


def make_session(path: str | Path, options: OrtOptions | None = None):
    """An ``onnxruntime.InferenceSession`` on the CPU for ``path``."""
    import onnxruntime as ort

    options = options or OrtOptions()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX graph {path} not found (run the export step)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.ort_spin_wait else "0")
    # Spin only while a run is active: workers stop spinning when the last concurrent run returns, so
    # the gaps between runs leave the cores to the other models' processes.
    so.add_session_config_entry("session.force_spinning_stop", "1")
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[options.optimization]
    session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    logger.info("loaded %s (%d threads)", path.name, so.intra_op_num_threads)
    return session


class EncoderRunner:
    """The audio encoder graph: mel windows -> audio embeddings."""

    def __init__(self, path: str | Path, options: OrtOptions | None = None) -> None:
        self.session = make_session(path, options)

    def __call__(self, features: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encode a batch of windows.

        Parameters
        ----------
        features : np.ndarray
            ``[W, n_mels, F]`` float32, zero-padded windows.
        frames : np.ndarray
            ``[W]`` valid frames per window.

        Returns
        -------
        (np.ndarray, np.ndarray)
            ``[W, T, D]`` embeddings and ``[W]`` int64 valid rows per window.
        """
        embeds, lens = self.session.run(
            None,
            {
                "input_features": np.ascontiguousarray(features, dtype=np.float32),
                "feature_lens": np.asarray(frames, dtype=np.int64),
            },
        )
        return embeds, lens

    def encode_windows(self, features: list[np.ndarray], frames: np.ndarray) -> np.ndarray:
        """All windows of one utterance -> ``[total_tokens, D]`` embeddings in order."""
        from .features import stack_windows

        embeds, lens = self(stack_windows(features), frames)
        return np.concatenate([embeds[i, : int(n)] for i, n in enumerate(lens)], axis=0)


class AlignerRunner:
    """The aligner graph: input embeddings -> per-position timestamp class logits."""

    def __init__(self, path: str | Path, options: OrtOptions | None = None) -> None:
        self.session = make_session(path, options)

    def __call__(self, inputs_embeds: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """``[B, S, H]`` float32 and ``[B, S]`` int64 -> ``[B, S, classes]`` float32."""
        (logits,) = self.session.run(
            None,
            {
                "inputs_embeds": np.ascontiguousarray(inputs_embeds, dtype=np.float32),
                "attention_mask": np.asarray(attention_mask, dtype=np.int64),
            },
        )
        return logits
