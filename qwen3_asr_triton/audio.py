"""Audio decoding and conditioning: bytes or PCM in, mono 16 kHz float32 out.

Decoding goes through PyAV (FFmpeg), so every container FFmpeg reads works:
wav, flac, ogg/opus, mp3, m4a/aac, webm... Channels are averaged to mono,
the signal is resampled with a polyphase anti-aliasing filter, and a peak
above 1.0 is divided out (as the official package does), so the model always
sees samples in [-1, 1].

All limits are explicit (:class:`AudioLimits`) so that a hostile or broken
request fails fast with a clear :class:`~qwen3_asr_triton.errors.InputError`
instead of exhausting memory.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from .errors import InputError

logger = logging.getLogger(__name__)

TARGET_SAMPLE_RATE = 16000
# Telephone audio is 8 kHz; anything below 4 kHz cannot carry intelligible speech
# and usually means the caller sent the wrong number.
MIN_INPUT_SAMPLE_RATE = 4000
# Highest rate in common use (DXD / 8x CD rate is 352.8 kHz).
MAX_INPUT_SAMPLE_RATE = 384000


@dataclass(frozen=True)
class AudioLimits:
    """Bounds applied to every incoming clip.

    Attributes
    ----------
    max_bytes : int
        Largest encoded payload accepted (default 256 MiB: an hour of 16 kHz
        16-bit mono WAV is 115 MB).
    max_seconds : float
        Longest audio accepted after decoding (default 60 minutes).
    """

    max_bytes: int = 256 * 1024 * 1024
    max_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError("AudioLimits.max_bytes must be positive")
        if self.max_seconds <= 0:
            raise ValueError("AudioLimits.max_seconds must be positive")


def _check_duration(num_samples: int, sample_rate: int, limits: AudioLimits) -> None:
    seconds = num_samples / float(sample_rate)
    if seconds > limits.max_seconds:
        raise InputError(
            f"audio is {seconds:.1f} s long; the limit is {limits.max_seconds:.0f} s"
            " (split it client-side or raise the server's max_audio_seconds)"
        )


# Full-scale value of each integer sample format FFmpeg decodes to (float formats are already in [-1, 1]).
_INT_FULL_SCALE = {"s16": 32768.0, "s32": 2.0**31, "s64": 2.0**63}


def _frame_to_mono(frame) -> np.ndarray:
    """One decoded PyAV frame as ``[samples]`` float32 mono (channel mean)."""
    arr = frame.to_ndarray()
    fmt = frame.format
    channels = len(frame.layout.channels)
    if not fmt.is_planar:
        arr = arr.reshape(-1, channels).T  # packed [1, samples * channels] -> [channels, samples]
    base = fmt.name.rstrip("p")
    if base == "u8":
        arr = (arr.astype(np.float32) - 128.0) / 128.0
    elif base in _INT_FULL_SCALE:
        arr = (arr / _INT_FULL_SCALE[base]).astype(np.float32)
    elif base not in ("flt", "dbl"):
        raise InputError(f"unsupported decoded sample format {fmt.name}")
    mono = arr[0] if channels == 1 else arr.mean(axis=0, dtype=np.float64)
    return np.asarray(mono, dtype=np.float32)


def decode_audio_bytes(data: bytes, limits: AudioLimits | None = None) -> tuple[np.ndarray, int]:
    """Decode an encoded audio file held in memory.

    Parameters
    ----------
    data : bytes
        The whole file (wav, flac, ogg, mp3, m4a, ...).
    limits : AudioLimits, optional
        Size and duration bounds; decoding stops as soon as the duration bound is passed.

    Returns
    -------
    (np.ndarray, int)
        ``[num_samples]`` float32 mono samples and their sample rate.
    """
    import av  # imported lazily: only needed when bytes are sent

    limits = limits or AudioLimits()
    if not data:
        raise InputError("AUDIO is empty: send the bytes of an audio file")
    if len(data) > limits.max_bytes:
        raise InputError(f"AUDIO is {len(data)} bytes; the limit is {limits.max_bytes} bytes")
    parts: list[np.ndarray] = []
    count = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            streams = [s for s in container.streams if s.type == "audio"]
            if not streams:
                raise InputError("AUDIO contains no audio stream")
            stream = streams[0]
            stream.thread_type = "AUTO"
            rate = int(stream.rate or stream.codec_context.sample_rate or 0)
            if rate <= 0:
                raise InputError("AUDIO has no valid sample rate")
            max_samples = int(limits.max_seconds * rate) + 1
            for frame in container.decode(stream):
                if frame.rate and frame.rate != rate:
                    raise InputError("AUDIO changes sample rate mid-stream")
                mono = _frame_to_mono(frame)
                parts.append(mono)
                count += mono.size
                if count > max_samples:
                    _check_duration(count, rate, limits)
    except InputError:
        raise
    except (av.FFmpegError, ValueError, EOFError, IndexError) as exc:
        raise InputError(f"could not decode AUDIO: {exc}") from exc
    if count == 0:
        raise InputError("AUDIO decoded to zero samples")
    samples = np.concatenate(parts)
    _check_duration(samples.size, rate, limits)
    return samples, rate


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling with scipy's Kaiser-windowed anti-aliasing filter.

    Parameters
    ----------
    waveform : np.ndarray
        ``[num_samples]`` float samples.

    Returns
    -------
    np.ndarray
        ``[round(num_samples * target_rate / orig_rate)]`` float32.
    """
    if orig_rate == target_rate:
        return np.asarray(waveform, dtype=np.float32)
    ratio = Fraction(target_rate, orig_rate)
    out = resample_poly(np.asarray(waveform, dtype=np.float64), ratio.numerator, ratio.denominator)
    return out.astype(np.float32)


def prepare_waveform(waveform: np.ndarray, sample_rate: int, limits: AudioLimits | None = None) -> np.ndarray:
    """Validate raw PCM and bring it to mono 16 kHz float32 in [-1, 1].

    Parameters
    ----------
    waveform : np.ndarray
        ``[num_samples]`` mono or ``[num_samples, channels]`` samples.
    sample_rate : int
        Rate of ``waveform`` in Hz.

    Returns
    -------
    np.ndarray
        ``[num_samples_16k]`` float32.
    """
    limits = limits or AudioLimits()
    if not isinstance(sample_rate, (int, np.integer)) or not (
        MIN_INPUT_SAMPLE_RATE <= int(sample_rate) <= MAX_INPUT_SAMPLE_RATE
    ):
        raise InputError(
            f"SAMPLE_RATE must be between {MIN_INPUT_SAMPLE_RATE} and {MAX_INPUT_SAMPLE_RATE} Hz, got {sample_rate}"
        )
    x = np.asarray(waveform)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise InputError(f"WAVEFORM must be 1-D (or [samples, channels]), got shape {list(np.shape(waveform))}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"WAVEFORM must hold floating-point samples, got {x.dtype}")
    if x.size == 0:
        raise InputError("WAVEFORM is empty")
    _check_duration(x.size, int(sample_rate), limits)
    if not np.all(np.isfinite(x)):
        raise InputError("WAVEFORM contains NaN or infinite samples")
    x = resample(x.astype(np.float32, copy=False), int(sample_rate))
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        x = x / peak
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)


def load_audio(data: bytes, limits: AudioLimits | None = None) -> np.ndarray:
    """Decode an audio file's bytes to mono 16 kHz float32 in [-1, 1]."""
    samples, rate = decode_audio_bytes(data, limits)
    if not (MIN_INPUT_SAMPLE_RATE <= rate <= MAX_INPUT_SAMPLE_RATE):
        raise InputError(f"AUDIO sample rate {rate} Hz is outside the supported range")
    return prepare_waveform(samples, rate, limits)
