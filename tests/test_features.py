"""The numpy front end against transformers' Qwen3ASRFeatureExtractor."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_asr_triton.errors import InputError
from qwen3_asr_triton.features import FeatureConfig, LogMel, mel_filter_bank, split_windows, stack_windows

# Max abs difference allowed between our float64-computed log-mel and the reference's
# float32 torch STFT (observed: about 1e-5).
MEL_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def extractor():
    from transformers import Qwen3ASRFeatureExtractor

    return Qwen3ASRFeatureExtractor()


def reference_mel(extractor, wave: np.ndarray) -> tuple[np.ndarray, int]:
    out = extractor(wave, sampling_rate=16000, padding=True, return_attention_mask=True, return_tensors="np")
    return out["input_features"][0], int(out["attention_mask"][0].sum())


def test_filter_bank_matches(extractor):
    assert np.abs(mel_filter_bank(FeatureConfig()) - extractor.mel_filters).max() < 1e-12


@pytest.mark.parametrize("num_samples", [1, 3000, 8000, 8159, 16000 * 3 + 77, 16000 * 8, 16000 * 31 + 5])
def test_log_mel_matches_reference_on_noise(extractor, num_samples):
    rng = np.random.default_rng(num_samples)
    wave = (0.3 * rng.standard_normal(num_samples) * np.sin(np.arange(num_samples) / 40.0)).astype(np.float32)
    ours = LogMel()(wave)
    ref, valid = reference_mel(extractor, wave)
    assert ours.shape == (128, valid) == (128, FeatureConfig().num_frames(num_samples))
    assert np.abs(ref[:, :valid] - ours).max() < MEL_TOLERANCE
    assert not ref[:, valid:].any(), "reference pads the mel with zeros after the valid frames"


def test_log_mel_matches_reference_on_speech(extractor, clips):
    for clip in clips:
        wave = clip.waveform()
        ref, valid = reference_mel(extractor, wave)
        assert np.abs(ref[:, :valid] - LogMel()(wave)).max() < MEL_TOLERANCE, clip.name


def test_audio_token_counts_match_reference():
    import torch
    from transformers.models.qwen3_asr.modeling_qwen3_asr import _get_feat_extract_output_lengths

    frames = np.arange(1, 5000)
    ours = FeatureConfig().num_audio_tokens(frames)
    ref = _get_feat_extract_output_lengths(torch.from_numpy(frames)).numpy()
    np.testing.assert_array_equal(ours, ref)
    cfg = FeatureConfig()
    assert cfg.tokens_per_chunk == 13 and cfg.tokens_per_window == 104
    assert [int(cfg.num_audio_tokens(f)) for f in (100, 799, 3000)] == [13, 104, 390]


def test_windows_cover_the_utterance():
    cfg = FeatureConfig()
    mel = np.random.default_rng(0).standard_normal((128, 1950)).astype(np.float32)
    win = split_windows(mel, cfg)
    assert win.frames.tolist() == [800, 800, 350]
    assert [f.shape[1] for f in win.features] == [800, 800, 400]
    assert win.tokens.tolist() == [104, 104, int(cfg.num_audio_tokens(350))]
    np.testing.assert_array_equal(win.features[2][:, :350], mel[:, 1600:])
    assert not win.features[2][:, 350:].any()
    stacked = stack_windows(win.features)
    assert stacked.shape == (3, 128, 800) and not stacked[2, :, 400:].any()


def test_invalid_feature_config_is_refused():
    with pytest.raises(ValueError):
        FeatureConfig(window_frames=750)
    with pytest.raises(ValueError):
        FeatureConfig(hop_length=0)


def test_empty_mel_is_an_input_error():
    with pytest.raises(InputError):
        split_windows(np.zeros((128, 0), np.float32), FeatureConfig())


def _growing_speech(clips) -> np.ndarray:
    """~6 s of real speech: two clips back to back, so that the loudest frame moves as the clip grows."""
    by_name = {clip.name: clip for clip in clips}
    parts = [by_name[name].waveform() for name in ("en_hello", "de_greeting")]
    return np.concatenate([0.3 * parts[0], parts[1]]).astype(np.float32)


@pytest.mark.parametrize("chunk", [16000, 4000, 7777, 160, 1])
def test_growing_log_mel_equals_the_whole_clip_at_every_step(clips, chunk: int) -> None:
    from qwen3_asr_triton.features import GrowingLogMel

    wave = _growing_speech(clips)
    full = LogMel()
    growing = GrowingLogMel(full)
    # Small steps start just below min_samples (0.5 s): they cross it, and 300 calls bound the test's time.
    first = chunk if chunk >= 1000 else 7900
    sizes = [*list(range(first, wave.size, chunk))[:300], wave.size]
    kept = []
    for size in sizes:
        got = growing(wave[:size])
        expected = full(wave[:size])
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.array_equal(got, expected), f"differs at {size} samples"
        kept.append(growing.kept_frames)
    # The cache is used: past min_samples, all but the frames near the clip's end are kept.
    assert kept[-1] >= wave.size // 160 - 2
    assert any(k > 0 for k in kept[:-1])


def test_growing_log_mel_starts_over_on_other_samples(clips) -> None:
    from qwen3_asr_triton.features import GrowingLogMel

    wave = _growing_speech(clips)
    full = LogMel()
    growing = GrowingLogMel(full)
    growing(wave[:40000])
    assert growing.kept_frames > 0
    # The same clip scaled (a peak limit that changed), then a shorter clip, then another utterance.
    for other in (0.5 * wave[:48000], wave[:20000], wave[30000:70000], wave[:5000], wave[:60000]):
        assert np.array_equal(growing(other), full(other))
