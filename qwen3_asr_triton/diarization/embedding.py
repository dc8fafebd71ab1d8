"""Speaker embeddings on ONNX Runtime: CAM++ over Kaldi fbank, L2-normalised.

The graph is ``speaker_embedding.onnx`` (:data:`~qwen3_asr_triton.artifacts.SPEAKER_FILENAME`,
written by ``python -m qwen3_asr_triton.export.speaker_model``): ``fbank [B, T, 80]`` float32 ->
``embedding [B, 192]``. Features are computed here in numpy (:mod:`.fbank`), so serving needs only
onnxruntime. Embeddings come back with unit length, so a dot product is their cosine similarity.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .fbank import FRAME_LENGTH, FRAME_SHIFT, fbank, fbank_batch

logger = logging.getLogger(__name__)

# Windows per graph call, bounding memory: the largest activation is the front end's 32 channels x 80
# bins x 148 frames float32 = 1.5 MB per 1.5 s window, so about 50 MB per call of 32 (a few such
# tensors are alive at once). Splitting changes embeddings only by float rounding.
MAX_BATCH = 32
# The embedding's size (CAM++'s output).
EMBEDDING_DIM = 192
# The graph needs at least 3 frames (2 steps after its stride-2 TDNN, for the standard deviation):
# 400 + 2 * 160 = 720 samples (45 ms); shorter pieces are padded with zeros to this length.
MIN_SAMPLES = FRAME_LENGTH + 2 * FRAME_SHIFT
# Guards the normalisation of an all-zero embedding (ReLU output can be all zeros for silence).
NORM_EPS = 1e-12


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """``[B, D]`` -> ``[B, D]`` float32 rows of unit length (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, NORM_EPS)).astype(np.float32)


class SpeakerEmbedder:
    """CAM++ speaker embeddings of 16 kHz audio.

    Parameters
    ----------
    path : Path
        ``speaker_embedding.onnx``.
    threads : int
        ONNX Runtime intra-op threads.
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort  # the serving runtime; imported here so the package imports without it

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        logger.info("speaker embedder %s loaded with %s threads", path, threads)

    def _run(self, feats: np.ndarray) -> np.ndarray:
        """``[B, T, 80]`` -> ``[B, 192]`` unit-length embeddings."""
        (raw,) = self.session.run(None, {self.input_name: np.ascontiguousarray(feats, np.float32)})
        return l2_normalize(raw)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """Embed equal-length windows, :data:`MAX_BATCH` at a time.

        Parameters
        ----------
        windows : np.ndarray
            ``[B, samples]`` float32 16 kHz mono in [-1, 1], ``samples >= MIN_SAMPLES``.

        Returns
        -------
        np.ndarray
            ``[B, 192]`` float32, unit length.

        Raises
        ------
        ValueError
            Not 2-D, or windows shorter than :data:`MIN_SAMPLES`.
        """
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 2 or windows.shape[1] < MIN_SAMPLES:
            raise ValueError(f"expected [B, >= {MIN_SAMPLES}] samples, got {windows.shape}")
        out = np.empty((windows.shape[0], EMBEDDING_DIM), np.float32)
        for start in range(0, windows.shape[0], MAX_BATCH):
            chunk = windows[start : start + MAX_BATCH]
            out[start : start + chunk.shape[0]] = self._run(fbank_batch(chunk))
        return out

    def embed_one(self, samples: np.ndarray) -> np.ndarray:
        """Embed one piece of any length (e.g. a streamed utterance).

        Parameters
        ----------
        samples : np.ndarray
            ``[n]`` float32 16 kHz mono in [-1, 1]; padded with zeros to :data:`MIN_SAMPLES` if shorter.

        Returns
        -------
        np.ndarray
            ``[192]`` float32, unit length.
        """
        samples = np.asarray(samples, np.float32).reshape(-1)
        if samples.size < MIN_SAMPLES:
            samples = np.pad(samples, (0, MIN_SAMPLES - samples.size))
        return self._run(fbank(samples)[None])[0]
