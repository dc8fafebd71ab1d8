"""Audio decoding from bytes of every common container, and refusal of bad input."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from qwen3_asr_triton.audio import AudioLimits, decode_audio_bytes, load_audio, prepare_waveform, resample
from qwen3_asr_triton.errors import InputError


def _wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def test_every_clip_format_decodes_to_16k(clips):
    formats = set()
    for clip in clips:
        data = clip.path.read_bytes()
        raw, rate = decode_audio_bytes(data)
        assert rate == clip.spec.rate, clip.name
        wave16 = load_audio(data)
        expected = raw.size * 16000 / rate
        # AAC / MP3 / Opus add encoder delay and padding: allow 0.1 s.
        assert abs(wave16.size - expected) <= 1600, (clip.name, wave16.size, expected)
        assert wave16.dtype == np.float32 and np.abs(wave16).max() <= 1.0
        assert np.abs(wave16).max() > 0.05, f"{clip.name} decoded to near silence"
        formats.add(clip.spec.fmt)
    assert formats >= {"wav", "flac", "mp3", "ogg", "opus", "m4a"}


def test_stereo_is_averaged_and_rate_converted():
    t = np.arange(44100) / 44100.0
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)
    stereo = np.stack([left, right], axis=1).reshape(-1)
    out = load_audio(_wav_bytes(stereo, 44100, channels=2))
    assert out.size == 16000
    # mean of the channels: a 0.25-amplitude tone
    assert abs(np.abs(out[1000:-1000]).max() - 0.25) < 0.01


def test_resample_preserves_a_tone():
    t = np.arange(48000) / 48000.0
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    out = resample(tone, 48000, 16000)
    assert out.size == 16000
    spectrum = np.abs(np.fft.rfft(out[2000:-2000]))
    peak_hz = np.argmax(spectrum) * 16000 / (out.size - 4000)
    assert abs(peak_hz - 1000) < 5


def test_loud_input_is_peak_normalised():
    loud = np.full(16000, 3.0, np.float32)
    loud[::2] = -6.0
    out = prepare_waveform(loud, 16000)
    assert np.isclose(np.abs(out).max(), 1.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not audio at all" * 40, "could not decode"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 200, "could not decode"),
    ],
)
def test_bad_bytes_are_input_errors(data, message):
    with pytest.raises(InputError, match=message):
        load_audio(data)


def test_limits_are_enforced():
    data = _wav_bytes(np.zeros(16000 * 5), 16000)
    with pytest.raises(InputError, match="limit is 2 s"):
        load_audio(data, AudioLimits(max_seconds=2))
    with pytest.raises(InputError, match="bytes"):
        load_audio(data, AudioLimits(max_bytes=1000))
    with pytest.raises(InputError, match="limit is 5 s"):
        prepare_waveform(np.zeros(16000 * 6, np.float32), 16000, AudioLimits(max_seconds=5))
    with pytest.raises(ValueError):
        AudioLimits(max_seconds=0)


@pytest.mark.parametrize(
    ("wave", "rate", "message"),
    [
        (np.zeros(100, np.float32), 0, "SAMPLE_RATE"),
        (np.zeros(100, np.float32), 10_000_000, "SAMPLE_RATE"),
        (np.array([0.1, np.nan, 0.2], np.float32), 16000, "NaN"),
        (np.array([], np.float32), 16000, "empty"),
        (np.zeros((2, 2, 2), np.float32), 16000, "1-D"),
        (np.zeros(100, np.int16), 16000, "floating-point"),
    ],
)
def test_bad_waveforms_are_input_errors(wave, rate, message):
    with pytest.raises(InputError, match=message):
        prepare_waveform(wave, rate)
