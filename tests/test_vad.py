"""Silero VAD as the streaming model runs it, against the silero-vad package's own runners."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_asr_triton.export.files import silero_vad_graph
from qwen3_asr_triton.vad import FRAME_SAMPLES, SileroVad, VadStream


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad(silero_vad_graph())


@pytest.fixture(scope="module")
def speech(clips) -> np.ndarray:
    """Speech, silence, speech (16 kHz), with a length that is no whole number of frames."""
    hello = next(c for c in clips if c.name == "en_hello").waveform()
    german = next(c for c in clips if c.name == "de_greeting").waveform()
    return np.concatenate([np.zeros(8000, np.float32), hello, np.zeros(24000, np.float32), german[:-123]])


def chunked(vad: SileroVad, wave: np.ndarray, sizes: list[int]) -> np.ndarray:
    stream, probs, at = VadStream(), [], 0
    for size in sizes:
        probs.append(vad.score(stream, wave[at : at + size]))
        at += size
    probs.append(vad.score(stream, wave[at:], flush=True))
    assert stream.frames == -(-wave.size // FRAME_SAMPLES)
    return np.concatenate(probs)


def test_chunked_scores_equal_the_packages_sequence_runner(vad, speech):
    from silero_vad.sequence_vad import SileroVADSequence

    reference = SileroVADSequence(str(silero_vad_graph())).audio_forward(speech)
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 20000, 40).tolist()  # uneven chunks, some shorter than a frame
    ours = chunked(vad, speech, sizes)
    np.testing.assert_array_equal(ours, reference)
    # It hears the speech: frames of the leading silence score low, and the speech frames high.
    assert ours[:10].max() < 0.5 and ours.max() > 0.5


def test_scores_match_the_stock_frame_by_frame_model(vad, speech):
    """The wheel's per-frame graph driven by the package's OnnxWrapper (its documented streaming use)."""
    import torch
    from silero_vad import load_silero_vad

    model = load_silero_vad(onnx=True)
    padded = np.concatenate([speech, np.zeros(-speech.size % FRAME_SAMPLES, np.float32)])
    stock = [float(model(torch.from_numpy(frame.copy()), 16000)) for frame in padded.reshape(-1, FRAME_SAMPLES)]
    np.testing.assert_allclose(chunked(vad, speech, [16000] * 3), stock, atol=1e-4)
