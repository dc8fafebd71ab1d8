"""Silero VAD on ONNX Runtime: per-stream speech probabilities, one graph call per chunk.

Silero VAD (MIT; its graphs ship inside the ``silero-vad`` wheel) scores 16 kHz
audio in frames of 512 samples, each seen together with the last 64 samples of
the frame before it, and carries an LSTM state from frame to frame. The wheel's
"sequence" graph runs that recurrence over a whole block of frames in one call
and gives the same probabilities as the per-frame graph. A stream's chunk is
therefore scored in one call: measured on a 2-core AVX2 EPYC (perf/vad_choice.py),
0.14 ms per 32 ms frame against 0.33 ms frame by frame, and within 15% of the
per-frame graph batched across 8 to 64 streams (0.12-0.15 ms a frame), so
streams are not batched together: each chunk is one call, made in a worker
thread (ONNX Runtime releases the GIL), and streams never wait for each other.

The repository build copies the graph next to the streaming model as
:data:`~.artifacts.VAD_FILENAME`; serving needs only onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The graph's rate: Silero VAD's 16 kHz model (the streaming model resamples every stream to 16 kHz first).
VAD_SAMPLE_RATE = 16000
# Samples per scored frame at 16 kHz (32 ms), and of the previous frame's tail fed with each frame.
FRAME_SAMPLES = 512
CONTEXT_SAMPLES = 64
# The LSTM's hidden and cell states: [layers=1, batch=1, 128] each.
STATE_SHAPE = (1, 1, 128)
# Frames per graph call: a block of 16 s bounds the call's memory; a 1 s chunk is one call.
MAX_FRAMES_PER_CALL = 512


@dataclass
class VadStream:
    """One stream's VAD state: the LSTM's memory, the last frame's tail and samples not yet a full frame."""

    hidden: np.ndarray = field(default_factory=lambda: np.zeros(STATE_SHAPE, np.float32))
    cell: np.ndarray = field(default_factory=lambda: np.zeros(STATE_SHAPE, np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT_SAMPLES, np.float32))
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    frames: int = 0  # frames scored so far

    def take_frames(self, samples: np.ndarray, flush: bool = False) -> np.ndarray:
        """``[f, CONTEXT + FRAME]`` float32: the graph's input for the full frames ``samples`` complete.

        Samples short of a frame wait for the next call; ``flush`` pads them with zeros into a last frame.
        """
        audio = np.concatenate([self.pending, np.asarray(samples, np.float32).reshape(-1)])
        count = audio.size // FRAME_SAMPLES
        if flush and audio.size % FRAME_SAMPLES:
            count += 1
            audio = np.concatenate([audio, np.zeros(count * FRAME_SAMPLES - audio.size, np.float32)])
        frames = audio[: count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)
        self.pending = audio[count * FRAME_SAMPLES :].copy()
        if count == 0:
            return np.zeros((0, CONTEXT_SAMPLES + FRAME_SAMPLES), np.float32)
        contexts = np.empty((count, CONTEXT_SAMPLES), np.float32)
        contexts[0] = self.context
        contexts[1:] = frames[:-1, -CONTEXT_SAMPLES:]
        self.context = frames[-1, -CONTEXT_SAMPLES:].copy()
        return np.concatenate([contexts, frames], axis=1)


class SileroVad:
    """The sequence graph in an ONNX Runtime session (one thread: calls run in parallel across streams).

    Parameters
    ----------
    path : Path
        The wheel's ``silero_vad_16k_sequence.onnx`` (inputs ``input [f, 576]``, ``h``, ``c``).
    """

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort  # the serving runtime; imported here so the package imports without it

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the graph carries unused initialisers ORT warns about
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def score(self, stream: VadStream, samples: np.ndarray, flush: bool = False) -> np.ndarray:
        """``[f]`` float32 speech probabilities of the frames completed by ``samples`` (16 kHz mono).

        Updates ``stream``; frames are scored in order across calls, as if the whole stream came at once.
        """
        blocks = stream.take_frames(samples, flush)
        probs = []
        for first in range(0, blocks.shape[0], MAX_FRAMES_PER_CALL):
            values, stream.hidden, stream.cell = self.session.run(
                ["speech_probs", "hn", "cn"],
                {"input": blocks[first : first + MAX_FRAMES_PER_CALL], "h": stream.hidden, "c": stream.cell},
            )
            probs.append(np.asarray(values, np.float32).reshape(-1))
        stream.frames += blocks.shape[0]
        return np.concatenate(probs) if probs else np.zeros(0, np.float32)
