"""The served audio front end equals the official one (``librosa.load(path, sr=16000)``) sample for sample.

Every rate in common use (8 to 48 kHz, integer ratios of 16 kHz and not), mono and stereo with two
different channels, in every format libsndfile reads: wav (16-bit, 24-bit, float), flac, ogg/vorbis,
mp3 and ogg/opus.
"""

from __future__ import annotations

import subprocess
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile

from qwen3_asr_triton import audio
from qwen3_asr_triton.audio import (
    AudioLimits,
    StreamResampler,
    decode_audio_bytes,
    load_audio,
    prepare_waveform,
    resample,
    resampled_length,
)
from qwen3_asr_triton.errors import InputError
from tests.harness import CACHE
from tests.official_audio import official_waveform
from tests.speech import encode, require_tools

RATES = (8000, 11025, 22050, 24000, 32000, 44100, 48000)
FORMATS = ("wav16", "wav24", "wavfloat", "flac", "ogg", "mp3", "opus")
TEXT = "Seven rates, two channels."


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def matrix() -> dict[tuple[str, int, int], Path]:
    """``(format, rate, channels) -> path``, made once into the test cache."""
    require_tools()
    folder = CACHE / "audio" / "frontend-v1"
    folder.mkdir(parents=True, exist_ok=True)
    speech = folder / "speech.wav"
    if not speech.is_file():
        _run("espeak-ng", "-v", "en", "-w", str(speech), TEXT)
    out: dict[tuple[str, int, int], Path] = {}
    for rate in RATES:
        for channels in (1, 2):
            # Stereo: the right channel 13 ms behind the left, so the two differ.
            remix = ["remix", "1", "1", "delay", "0", "0.013"] if channels == 2 else []
            stem = folder / f"r{rate}-c{channels}"
            for fmt in FORMATS:
                ext = {"wav16": "wav", "wav24": "wav", "wavfloat": "wav"}.get(fmt, fmt)
                path = stem.with_name(f"{stem.name}-{fmt}.{ext}")
                out[(fmt, rate, channels)] = path
                if path.is_file():
                    continue
                tmp = path.with_name(".tmp-" + path.name)
                if fmt in ("wav16", "wav24", "wavfloat", "flac"):
                    bits = {"wav24": ["-b", "24"], "wavfloat": ["-e", "floating-point", "-b", "32"]}.get(
                        fmt, ["-b", "16"]
                    )
                    _run("sox", str(speech), *bits, "-r", str(rate), str(tmp), *remix)
                else:
                    encode(out[("wav16", rate, channels)], tmp, fmt)
                tmp.rename(path)
    return out


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_decoded_waveform_equals_librosa(matrix, fmt, rate, channels):
    path = matrix[(fmt, rate, channels)]
    info = soundfile.info(str(path))
    assert info.channels == channels
    # Opus codes at 8, 12, 16, 24 or 48 kHz; libsndfile decodes at the one the encoder picked.
    assert info.samplerate in ((8000, 12000, 16000, 24000, 48000) if fmt == "opus" else (rate,))
    ours = load_audio(path.read_bytes())
    official = official_waveform(path)
    assert ours.dtype == np.float32 and ours.shape == official.shape
    # Exact, not just close: the same decoder, the same float32 channel mean, the same resampler.
    assert np.array_equal(ours, official), f"max difference {np.abs(ours - official).max():.3e}"
    assert np.abs(official).max() > 0.05  # speech, not silence


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_read_in_blocks_equals_librosa(matrix, fmt, monkeypatch):
    """Past ``ONE_READ_SAMPLES`` raw samples a file is decoded in blocks that are resampled as they come
    (bounded memory): the same samples as one read. The one exception is libsndfile's MP3 decoder, whose
    floats depend on the read size: read in blocks, they differ from one read by up to 6e-8 (a few ulp of
    the decoded samples, seen at 44.1 and 48 kHz), which the resampler carries through."""
    monkeypatch.setattr(audio, "ONE_READ_SAMPLES", 4096)
    for rate in RATES:
        for channels in (1, 2):
            path = matrix[(fmt, rate, channels)]
            ours = load_audio(path.read_bytes())
            official = official_waveform(path)
            assert ours.shape == official.shape, (rate, channels)
            if fmt == "mp3":
                assert np.abs(ours - official).max() <= 1e-7, (rate, channels)
            else:
                assert np.array_equal(ours, official), (rate, channels, np.abs(ours - official).max())


def test_a_long_high_rate_file_is_decoded_in_bounded_memory(tmp_path):
    """300 s at 384 kHz of unknown length (a FLAC written to a pipe has no length in its header) would be
    440 MiB of float32 samples at its own rate; resampled block by block, the request holds its 16 kHz
    samples (18 MiB) and a few blocks. Past the limit it is refused as soon as the limit is passed."""
    path = tmp_path / "unknown-length.flac"
    source = ["-f", "lavfi", "-i", "anullsrc=r=384000:cl=mono", "-t", "300"]
    with path.open("wb") as out:
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", *source, "-c:a", "flac", "-sample_fmt", "s16", "-f", "flac", "pipe:1"],
            check=True,
            stdout=out,
        )
    data = path.read_bytes()
    with soundfile.SoundFile(str(path)) as sound:
        assert sound.frames >= 2**62  # libsndfile: length unknown
    tracemalloc.start()
    try:
        wave = load_audio(data, AudioLimits(max_seconds=400))
        _, peak = tracemalloc.get_traced_memory()
        assert wave.size == 300 * 16000
        assert peak < 80 * 2**20, f"peak {peak / 2**20:.0f} MiB"
        tracemalloc.reset_peak()
        with pytest.raises(InputError, match=r"longer than 100\.\d s \(decoding stopped there\); the limit is 100 s"):
            load_audio(data, AudioLimits(max_seconds=100))
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    finally:
        tracemalloc.stop()
    # What a refused request leaves behind: its 16 kHz samples (16 MB at 250 s) lived in one mapping, returned
    # to the system when freed; as many small arrays they stayed in the heap (226 MB after a refused hour).
    before = _rss()
    with pytest.raises(InputError, match="the limit is 250 s"):
        load_audio(data, AudioLimits(max_seconds=250))
    assert _rss() - before < 6 * 2**20, f"{(_rss() - before) / 2**20:.1f} MiB retained"


def _rss() -> int:
    """This process's resident set in bytes (/proc: psutil is not among the test tools)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", RATES)
def test_waveform_input_equals_librosa(matrix, rate, channels):
    """Raw PCM (WAVEFORM + SAMPLE_RATE, mono or [samples, channels]) goes through the same resampler."""
    import librosa

    path = matrix[("wavfloat", rate, channels)]
    pcm, native = soundfile.read(str(path), dtype="float32", always_2d=False)
    ours = prepare_waveform(pcm, native)
    official = librosa.resample(librosa.to_mono(pcm.T), orig_sr=native, target_sr=16000)
    assert np.array_equal(ours, np.clip(official, -1, 1))


@pytest.mark.parametrize("rate", RATES)
def test_stream_resampler_equals_one_shot(rate):
    """Chunks of any size, resampled as they arrive, give exactly the one-shot result."""
    rng = np.random.default_rng(rate)
    pcm = (0.3 * rng.standard_normal(3 * rate + 17)).astype(np.float32)
    whole = resample(pcm, rate)
    assert whole.size == resampled_length(pcm.size, rate)
    for sizes in ([160], [1, 7, 4096], [rate // 2], [pcm.size]):
        resampler = StreamResampler(rate)
        parts, start, i = [], 0, 0
        while start < pcm.size:
            step = sizes[i % len(sizes)]
            parts.append(resampler.push(pcm[start : start + step]))
            start, i = start + step, i + 1
        parts.append(resampler.finish())
        assert np.array_equal(np.concatenate(parts), whole), sizes


def test_a_header_that_announces_too_much_audio_is_refused_before_decoding(tmp_path):
    """The length in a file's header is checked first: nothing is decoded for an over-long file."""
    path = tmp_path / "silence.flac"
    _run("sox", "-n", "-r", "384000", "-c", "1", str(path), "trim", "0", "120")
    data = path.read_bytes()
    limits = AudioLimits(max_seconds=60)
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"120\.0 s long; the limit is 60 s"):
        decode_audio_bytes(data, limits)
    refused_in = time.perf_counter() - started
    started = time.perf_counter()
    samples, _ = decode_audio_bytes(data, AudioLimits(max_seconds=200))
    decoded_in = time.perf_counter() - started
    assert samples.size == 120 * 384000
    assert refused_in < decoded_in / 10, (refused_in, decoded_in)


def test_a_file_libsndfile_cannot_finish_goes_to_ffmpeg(tmp_path, matrix):
    """A FLAC cut by stream copy keeps the old length in its header: libsndfile fails at the end, and the
    file is decoded by FFmpeg instead (librosa, too, hands such a file to its fallback decoder)."""
    long = tmp_path / "long.flac"
    _run("sox", str(matrix[("flac", 44100, 1)]), str(long), "repeat", "3")
    cut = tmp_path / "cut.flac"
    _run("ffmpeg", "-loglevel", "error", "-i", str(long), "-t", "1", "-c", "copy", str(cut))
    with soundfile.SoundFile(str(cut)) as sound, pytest.raises(soundfile.LibsndfileError):
        sound.read(dtype="float32")
    samples, rate = decode_audio_bytes(cut.read_bytes())
    assert rate == 44100 and abs(samples.size / rate - 1.0) < 0.2


def test_what_libsndfile_refuses_is_decoded_by_ffmpeg(tmp_path, matrix):
    """m4a/aac is not libsndfile's: FFmpeg decodes it, through the same channel mean and resampler."""
    path = tmp_path / "speech.m4a"
    _run("ffmpeg", "-loglevel", "error", "-i", str(matrix[("wav16", 44100, 2)]), "-c:a", "aac", str(path))
    with pytest.raises(soundfile.LibsndfileError):
        soundfile.info(str(path))
    samples, rate = decode_audio_bytes(path.read_bytes())
    assert rate == 44100
    wave = load_audio(path.read_bytes())
    assert wave.size == resampled_length(samples.size, 44100)
    reference = official_waveform(matrix[("wav16", 44100, 2)])
    # AAC is lossy and adds priming samples: the same speech, not the same samples.
    assert abs(wave.size - reference.size) < 0.1 * 16000
