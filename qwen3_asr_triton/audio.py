"""Audio decoding and conditioning: bytes or PCM in, mono 16 kHz float32 out.

The front end is the official ``qwen-asr`` package's, sample for sample: that package
loads audio with ``librosa.load(path, sr=16000)``, so here too

1. **decode** with libsndfile (the ``soundfile`` package) whatever it reads: wav (16/24/32-bit,
   float), flac, ogg/vorbis, ogg/opus, mp3, aiff, caf... Everything libsndfile refuses
   (m4a/aac, webm, video containers) is decoded by FFmpeg (PyAV) instead;
2. **average the channels** in float32, as ``np.mean`` over the channel axis does;
3. **resample** with libsoxr at its HQ quality (librosa's default ``res_type='soxr_hq'``) to
   exactly ``ceil(n * 16000 / rate)`` samples, zero-padding or trimming the resampler's
   output as ``librosa.util.fix_length`` does;
4. **limit the peak**: a peak above 1.0 is divided out, then samples are clipped to [-1, 1]
   (the official ``float_range_normalize``).

Raw ``WAVEFORM`` input skips step 1, and streams resample chunk by chunk with
:class:`StreamResampler`, whose output equals the one-shot resampling of the whole stream.

All limits are explicit (:class:`AudioLimits`) so that a hostile or broken
request fails fast with a clear :class:`~qwen3_asr_triton.errors.InputError`
instead of exhausting memory: a file whose header announces too much audio is
refused before anything is decoded, and memory stays bounded by the limits at 16 kHz, whatever
the input's rate: a file whose raw samples would exceed :data:`ONE_READ_SAMPLES` is decoded in
blocks that are resampled as they come (:func:`load_audio`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import soundfile
import soxr

from .errors import InputError

logger = logging.getLogger(__name__)

TARGET_SAMPLE_RATE = 16000
# Telephone audio is 8 kHz; anything below 4 kHz cannot carry intelligible speech
# and usually means the caller sent the wrong number.
MIN_INPUT_SAMPLE_RATE = 4000
# Highest rate in common use (DXD / 8x CD rate is 352.8 kHz).
MAX_INPUT_SAMPLE_RATE = 384000
# libsoxr's quality preset: 'HQ' is what librosa's default res_type 'soxr_hq' selects.
RESAMPLE_QUALITY = "HQ"
# libsndfile reports an unknown length (a FLAC written to a pipe, say) as SF_COUNT_MAX = 2**63 - 1;
# no real header announces more than 2**62 frames (146 million years at 1 kHz).
_UNKNOWN_FRAMES = 2**62
# Frames per read when a file is read in blocks: 64 Ki frames keep a block of 8 float32 channels at 2 MiB.
_BLOCK_FRAMES = 1 << 16
# Most raw samples (frames x channels) a file is decoded to in one read, as librosa reads it: 2**26 float32
# samples are 256 MiB, and a whole hour of 16 kHz mono (57.6 million samples) fits. Anything larger (an
# hour at 48 kHz stereo would be 1.3 GiB, 3,600 s at 384 kHz 5.5 GiB) or of unknown length is read in
# blocks and resampled block by block, so a request never holds more than this plus its 16 kHz samples.
ONE_READ_SAMPLES = 1 << 26


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

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> AudioLimits:
        """The limits a model config states as ``max_audio_bytes`` and ``max_audio_seconds``."""
        return cls(max_bytes=int(params["max_audio_bytes"]), max_seconds=float(params["max_audio_seconds"]))

    def max_samples(self, sample_rate: int) -> int:
        """Most samples (per channel) of ``sample_rate`` audio that fit the duration bound."""
        return int(self.max_seconds * sample_rate)


def _check_duration(num_samples: int, sample_rate: int, limits: AudioLimits, decoding: bool = False) -> None:
    """Refuse more than ``limits.max_seconds`` of audio; ``decoding``: the count so far of a file still being read."""
    seconds = num_samples / float(sample_rate)
    if seconds > limits.max_seconds:
        length = f"longer than {seconds:.1f} s (decoding stopped there)" if decoding else f"{seconds:.1f} s long"
        raise InputError(
            f"audio is {length}; the limit is {limits.max_seconds:.0f} s"
            " (split it client-side or raise the server's max_audio_seconds)"
        )


def check_sample_rate(sample_rate: int, what: str = "SAMPLE_RATE") -> None:
    """Refuse a rate outside [MIN_INPUT_SAMPLE_RATE, MAX_INPUT_SAMPLE_RATE] with :class:`InputError`."""
    if not MIN_INPUT_SAMPLE_RATE <= sample_rate <= MAX_INPUT_SAMPLE_RATE:
        raise InputError(
            f"{what} must be between {MIN_INPUT_SAMPLE_RATE} and {MAX_INPUT_SAMPLE_RATE} Hz, got {sample_rate}"
        )


def mix_to_mono(frames: np.ndarray) -> np.ndarray:
    """Average the channels in float32, as the official front end's ``np.mean`` does.

    Parameters
    ----------
    frames : np.ndarray
        ``[samples, channels]`` float32.

    Returns
    -------
    np.ndarray
        ``[samples]`` float32.
    """
    if frames.shape[1] == 1:
        return np.ascontiguousarray(frames[:, 0])
    return frames.mean(axis=1, dtype=np.float32)


def check_payload_size(
    limits: AudioLimits, audio_bytes: int | None = None, samples: int | None = None, sample_rate: int | None = None
) -> None:
    """Refuse an over-limit request from its sizes alone, before its audio is copied or decoded.

    Parameters
    ----------
    audio_bytes : int, optional
        Length of the encoded file (``AUDIO``).
    samples, sample_rate : int, optional
        Frames of raw PCM (``WAVEFORM``) and their rate; checked when both are given and the rate is valid.
    """
    if audio_bytes is not None and audio_bytes > limits.max_bytes:
        raise InputError(f"AUDIO is {audio_bytes} bytes; the limit is {limits.max_bytes} bytes")
    if samples is not None and sample_rate is not None and sample_rate > 0:
        _check_duration(samples, sample_rate, limits)


# ----------------------------------------------------------------------------- decoding
class _Sink(Protocol):
    """Where decoded mono blocks go: kept at the input's rate, or resampled as they arrive."""

    def push(self, block: np.ndarray) -> None: ...


SinkT = TypeVar("SinkT", bound=_Sink)


class _Collect:
    """Keeps the ``[n]`` mono blocks at the input's rate (:func:`decode_audio_bytes`)."""

    def __init__(self, rate: int, limits: AudioLimits) -> None:
        self.rate = rate
        self.parts: list[np.ndarray] = []

    def push(self, block: np.ndarray) -> None:
        self.parts.append(block)

    def samples(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)


class _Resample:
    """Resamples the mono blocks to 16 kHz as they arrive (:func:`load_audio`).

    A file that came in one block is resampled in one call (:func:`resample`), as librosa
    does; more blocks go through :class:`StreamResampler`, whose output is the same, written
    into one buffer sized for the longest audio the limits allow at 16 kHz. That buffer is a
    single large allocation, which the C library maps on its own and returns to the system
    when it is freed; untouched pages of it are never resident. (Many small arrays, one per
    block, would land in the heap among other allocations, and a refused hour of audio left
    its 230 MB there.)
    """

    def __init__(self, rate: int, limits: AudioLimits) -> None:
        self.rate = rate
        self.limits = limits
        self.first: np.ndarray | None = None
        self.stream: StreamResampler | None = None
        self.out = np.zeros(0, np.float32)
        self.filled = 0

    def _write(self, part: np.ndarray) -> None:
        end = self.filled + part.size
        if end > self.out.size:  # past the limit's length: _push_checked refuses before this happens
            self.out = np.concatenate([self.out[: self.filled], np.empty(end - self.filled, np.float32)])
        self.out[self.filled : end] = part
        self.filled = end

    def push(self, block: np.ndarray) -> None:
        if self.first is None and self.stream is None:
            self.first = block
            return
        if self.stream is None:
            self.stream = StreamResampler(self.rate)
            capacity = resampled_length(self.limits.max_samples(self.rate) + 1, self.rate) + _BLOCK_FRAMES
            self.out = np.empty(capacity, np.float32)
            self._write(self.stream.push(self.first))
            self.first = None
        self._write(self.stream.push(block))

    def samples(self) -> np.ndarray:
        if self.stream is None:
            return resample(self.first if self.first is not None else np.zeros(0, np.float32), self.rate)
        self._write(self.stream.finish())
        return self.out[: self.filled]


def _push_checked(sink: _Sink, block: np.ndarray, count: int, rate: int, limits: AudioLimits) -> int:
    """Push one mono block after the running duration and finiteness checks; returns the new count."""
    count += block.size
    _check_duration(count, rate, limits, decoding=True)
    if not np.all(np.isfinite(block)):  # a float WAV can hold them
        raise InputError("AUDIO contains NaN or infinite samples")
    sink.push(block)
    return count


def _decode_libsndfile(
    data: bytes, limits: AudioLimits, make_sink: Callable[[int, AudioLimits], SinkT]
) -> tuple[SinkT, int] | None:
    """Decode with libsndfile into ``make_sink(rate, limits)``; returns the sink and the samples it was given, or
    ``None`` when libsndfile does not recognise the format.

    A known length is checked against the limits before any sample is decoded. A file of at
    most :data:`ONE_READ_SAMPLES` raw samples is then read in one call, as ``librosa.load``
    reads it: libsndfile's MP3 decoder returns slightly different floats (1 ulp) when the same
    file is read in smaller blocks, so only one read gives the official samples. A larger file,
    or one of unknown length, is read in blocks, and one of unknown length stops as soon as it
    passes the limit. A file libsndfile opens but fails to read (a FLAC cut without fixing its
    header, say) also goes to FFmpeg, as librosa hands it to its fallback decoder.
    """
    try:
        sound = soundfile.SoundFile(io.BytesIO(data))
    except (soundfile.SoundFileError, RuntimeError, TypeError):
        return None
    with sound:
        rate = int(sound.samplerate)
        check_sample_rate(rate, "AUDIO's sample rate")
        known = sound.frames < _UNKNOWN_FRAMES
        if known:
            _check_duration(int(sound.frames), rate, limits)
        one_read = known and sound.frames * sound.channels <= ONE_READ_SAMPLES
        frames = -1 if one_read else _BLOCK_FRAMES  # -1: the whole file
        sink, count = make_sink(rate, limits), 0
        try:
            while True:
                block = sound.read(frames, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                count = _push_checked(sink, mix_to_mono(block), count, rate, limits)
                if one_read:
                    break
        except soundfile.SoundFileError as exc:
            logger.debug("libsndfile could not read the audio (%s); trying FFmpeg", exc)
            return None
    return sink, count


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
    return mix_to_mono(np.asarray(arr, dtype=np.float32).T)


def _decode_ffmpeg(
    data: bytes, limits: AudioLimits, make_sink: Callable[[int, AudioLimits], SinkT]
) -> tuple[SinkT, int]:
    """Decode with FFmpeg (PyAV) into ``make_sink(rate, limits)``: what libsndfile does not read (m4a/aac, webm...);
    returns the sink and the samples it was given."""
    import av  # imported lazily: only needed for what libsndfile refuses

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
            check_sample_rate(rate, "AUDIO's sample rate")
            if stream.duration is not None and stream.time_base is not None:
                _check_duration(int(float(stream.duration * stream.time_base) * rate), rate, limits)
            sink = make_sink(rate, limits)
            for frame in container.decode(stream):
                if frame.rate and frame.rate != rate:
                    raise InputError("AUDIO changes sample rate mid-stream")
                count = _push_checked(sink, _frame_to_mono(frame), count, rate, limits)
    except InputError:
        raise
    except (av.FFmpegError, ValueError, EOFError, IndexError) as exc:
        raise InputError(f"could not decode AUDIO: {exc}") from exc
    return sink, count


def _decode(data: bytes, limits: AudioLimits | None, make_sink: Callable[[int, AudioLimits], SinkT]) -> SinkT:
    """Check the payload's size, then decode it into a sink: libsndfile first, FFmpeg for the rest."""
    limits = limits or AudioLimits()
    if not data:
        raise InputError("AUDIO is empty: send the bytes of an audio file")
    check_payload_size(limits, audio_bytes=len(data))
    sink, count = _decode_libsndfile(data, limits, make_sink) or _decode_ffmpeg(data, limits, make_sink)
    if count == 0:
        raise InputError("AUDIO decoded to zero samples")
    return sink


def decode_audio_bytes(data: bytes, limits: AudioLimits | None = None) -> tuple[np.ndarray, int]:
    """Decode an encoded audio file held in memory, at its own rate.

    Holds the whole file's samples at its rate: for the short chunks of a stream. Requests
    use :func:`load_audio`, which resamples as it decodes.

    Parameters
    ----------
    data : bytes
        The whole file (wav, flac, ogg, mp3, m4a, ...).
    limits : AudioLimits, optional
        Size and duration bounds; a header that announces too much audio is refused before
        decoding, and decoding stops as soon as the duration bound is passed.

    Returns
    -------
    (np.ndarray, int)
        ``[num_samples]`` float32 mono samples (channel mean) and their sample rate.
    """
    sink = _decode(data, limits, _Collect)
    return sink.samples(), sink.rate


# ----------------------------------------------------------------------------- resampling
def resampled_length(num_samples: int, orig_rate: int, target_rate: int = TARGET_SAMPLE_RATE) -> int:
    """Samples after resampling: ``ceil(n * target / orig)``, computed in float64 exactly as librosa does."""
    return int(np.ceil(num_samples * (float(target_rate) / orig_rate)))


def fix_length(samples: np.ndarray, size: int) -> np.ndarray:
    """Trim ``samples`` to ``size`` or pad it with zeros at the end (``librosa.util.fix_length``)."""
    if samples.size >= size:
        return samples[:size]
    return np.concatenate([samples, np.zeros(size - samples.size, samples.dtype)])


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Resample with libsoxr at HQ quality, as ``librosa.resample(res_type='soxr_hq')`` does.

    Parameters
    ----------
    waveform : np.ndarray
        ``[num_samples]`` float samples (computed in float32).

    Returns
    -------
    np.ndarray
        ``[ceil(num_samples * target_rate / orig_rate)]`` float32.
    """
    x = np.ascontiguousarray(waveform, dtype=np.float32)
    if orig_rate == target_rate:
        return x
    out = soxr.resample(x, orig_rate, target_rate, quality=RESAMPLE_QUALITY)
    return fix_length(out, resampled_length(x.size, orig_rate, target_rate))


class StreamResampler:
    """Chunk-by-chunk resampling whose concatenated output equals :func:`resample` of the whole.

    libsoxr's streaming interface is exact: the same filter runs over the same samples,
    whatever the chunking. Each :meth:`push` returns what the filter has finished (it lags
    by the filter's delay, a few milliseconds); :meth:`finish` flushes the rest and fixes
    the total length to ``ceil(n * target / orig)``.
    """

    def __init__(self, orig_rate: int, target_rate: int = TARGET_SAMPLE_RATE) -> None:
        check_sample_rate(int(orig_rate))  # the stream's START: refused here, before any audio arrives
        self.orig_rate = int(orig_rate)
        self.target_rate = int(target_rate)
        self.samples_in = 0
        self.samples_out = 0
        self._stream = (
            None
            if self.orig_rate == self.target_rate
            else soxr.ResampleStream(self.orig_rate, self.target_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        )

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Resample the next ``[n]`` samples; returns the ``[m]`` output samples now complete."""
        x = np.ascontiguousarray(chunk, dtype=np.float32).reshape(-1)
        self.samples_in += x.size
        out = x if self._stream is None else self._stream.resample_chunk(x)
        self.samples_out += out.size
        return out

    def finish(self) -> np.ndarray:
        """The last output samples: the filter's tail, padded or trimmed to the exact total length."""
        tail = np.zeros(0, np.float32)
        if self._stream is not None:
            tail = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
        total = resampled_length(self.samples_in, self.orig_rate, self.target_rate)
        keep = fix_length(tail, max(0, total - self.samples_out))
        self.samples_out += keep.size
        return keep


def limit_peak(waveform: np.ndarray) -> np.ndarray:
    """Divide out a peak above 1.0 and clip to [-1, 1] (the official ``float_range_normalize``)."""
    x = np.asarray(waveform, dtype=np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        x = x / peak
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- public entry points
def check_waveform(waveform: np.ndarray, sample_rate: int, limits: AudioLimits | None = None) -> np.ndarray:
    """Validate raw PCM and mix it to mono, without resampling.

    Parameters
    ----------
    waveform : np.ndarray
        ``[num_samples]`` mono or ``[num_samples, channels]`` floating-point samples.
    sample_rate : int
        Rate of ``waveform`` in Hz.

    Returns
    -------
    np.ndarray
        ``[num_samples]`` float32 mono.
    """
    limits = limits or AudioLimits()
    if not isinstance(sample_rate, (int, np.integer)):
        raise InputError(f"SAMPLE_RATE must be an integer, got {type(sample_rate).__name__}")
    check_sample_rate(int(sample_rate), "SAMPLE_RATE")
    x = np.asarray(waveform)
    if x.ndim not in (1, 2):
        raise InputError(f"WAVEFORM must be 1-D (or [samples, channels]), got shape {list(np.shape(waveform))[:8]}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"WAVEFORM must hold floating-point samples, got {x.dtype}")
    if x.size == 0:
        raise InputError("WAVEFORM is empty")
    _check_duration(x.shape[0], int(sample_rate), limits)
    if x.ndim == 2:
        x = x.mean(axis=1)
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise InputError("WAVEFORM contains NaN or infinite samples")
    return x


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
        ``[ceil(num_samples * 16000 / sample_rate)]`` float32.
    """
    mono = check_waveform(waveform, sample_rate, limits)
    return limit_peak(resample(mono, int(sample_rate)))


def load_audio(data: bytes, limits: AudioLimits | None = None) -> np.ndarray:
    """Decode an audio file's bytes to mono 16 kHz float32 in [-1, 1] (the official front end).

    A file of more than :data:`ONE_READ_SAMPLES` raw samples is resampled block by block as it
    is decoded, so memory is bounded by the duration limit at 16 kHz, not at the file's rate.

    Returns
    -------
    np.ndarray
        ``[ceil(num_samples * 16000 / rate)]`` float32.
    """
    return limit_peak(_decode(data, limits, _Resample).samples())
