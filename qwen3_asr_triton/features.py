"""Log-mel front end and the encoder's chunk / window layout, in numpy.

Matches ``transformers``' ``Qwen3ASRFeatureExtractor`` for one clip processed
alone (the reference path): Whisper-style 128-bin log-mel, no 30 s cap, clips
shorter than ``min_samples`` zero-padded, and the mel time axis right-padded
with zeros to a whole number of encoder chunks.

Encoder layout: the mel is cut into chunks of ``chunk_frames``
(100 frames = 1 s); every chunk goes through three stride-2 convolutions on its
own, giving ``tokens_per_chunk`` (13) audio tokens. Attention is limited to
windows of ``window_frames`` (800 frames = 8 s = 104 tokens), so each window
is an independent unit of encoder work: that is what the serving encoder
batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

# log10 floor applied to the mel power before the log: -100 dB.
LOG_FLOOR = 1e-10
# Dynamic range kept below the utterance's loudest bin, in log10 units (80 dB).
DYNAMIC_RANGE = 8.0
# Whisper normalisation: (log_mel + 4) / 4 maps the usual range to about [-1, 1].
LOG_OFFSET = 4.0
LOG_SCALE = 4.0
# Upper edge of the mel filter bank; half of 16 kHz.
MEL_FMAX_HZ = 8000.0
# STFT frames processed at once; bounds peak memory on hour-long inputs
# (4096 frames x 201 bins x complex128 is about 13 MB).
_STFT_BLOCK_FRAMES = 4096


def conv_output_length(frames: int | np.ndarray, num_convs: int = 3) -> int | np.ndarray:
    """Length after ``num_convs`` convolutions with kernel 3, stride 2, padding 1.

    Zero stays zero (an empty chunk yields no tokens).
    """
    out = np.asarray(frames, dtype=np.int64)
    for _ in range(num_convs):
        out = np.where(out > 0, (out - 1) // 2 + 1, 0)
    return int(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class FeatureConfig:
    """Front-end and encoder-layout parameters of one checkpoint.

    Defaults are those of the published Qwen3-ASR checkpoints; use
    :meth:`from_checkpoint` to read them from a checkpoint directory.
    """

    sampling_rate: int = 16000
    n_fft: int = 400  # 25 ms window at 16 kHz
    hop_length: int = 160  # 10 ms hop: 100 frames per second
    n_mels: int = 128
    min_samples: int = 8000  # 0.5 s: shorter clips are zero-padded (feature extractor min_length)
    chunk_frames: int = 100  # 2 * n_window: one conv chunk, 1 s
    window_frames: int = 800  # n_window_infer: one attention window, 8 s

    def __post_init__(self) -> None:
        for name in ("sampling_rate", "n_fft", "hop_length", "n_mels", "chunk_frames", "window_frames"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FeatureConfig.{name} must be positive, got {getattr(self, name)}")
        if self.min_samples < 0:
            raise ValueError("FeatureConfig.min_samples must be >= 0")
        if self.window_frames % self.chunk_frames:
            raise ValueError(
                f"window_frames ({self.window_frames}) must be a multiple of chunk_frames ({self.chunk_frames})"
            )

    @property
    def frames_per_second(self) -> float:
        return self.sampling_rate / self.hop_length

    @property
    def tokens_per_chunk(self) -> int:
        """Audio tokens produced by one full chunk (13 for 100 frames)."""
        return int(conv_output_length(self.chunk_frames))

    @property
    def chunks_per_window(self) -> int:
        return self.window_frames // self.chunk_frames

    @property
    def tokens_per_window(self) -> int:
        """Audio tokens in one full attention window (104 for 8 s)."""
        return self.tokens_per_chunk * self.chunks_per_window

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def num_frames(self, num_samples: int) -> int:
        """Mel frames of a clip: ``max(samples, min_samples) // hop`` (last STFT frame dropped)."""
        return max(int(num_samples), self.min_samples) // self.hop_length

    def num_audio_tokens(self, num_frames: int | np.ndarray) -> int | np.ndarray:
        """Encoder tokens for ``num_frames`` mel frames (full chunks give 13 each, the tail fewer)."""
        frames = np.asarray(num_frames, dtype=np.int64)
        out = (frames // self.chunk_frames) * self.tokens_per_chunk + conv_output_length(frames % self.chunk_frames)
        return int(out) if np.ndim(out) == 0 else out


def hz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mels = freq / f_sp
    above = freq >= min_log_hz
    return np.where(above, min_log_mel + np.log(np.maximum(freq, min_log_hz) / min_log_hz) / logstep, mels)


def mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_slaney`."""
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_filter_bank(cfg: FeatureConfig) -> np.ndarray:
    """Slaney-normalised triangular mel filters.

    Returns
    -------
    np.ndarray
        ``[n_fft // 2 + 1, n_mels]`` float64 weights over the rfft bins.
    """
    n_bins = cfg.n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, cfg.sampling_rate / 2, n_bins)
    mel_points = np.linspace(hz_to_mel_slaney(0.0), hz_to_mel_slaney(MEL_FMAX_HZ), cfg.n_mels + 2)
    edges = mel_to_hz_slaney(mel_points)  # [n_mels + 2] filter corner frequencies in Hz
    widths = np.diff(edges)  # [n_mels + 1]
    slopes = edges[None, :] - fft_freqs[:, None]  # [n_bins, n_mels + 2]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    # Slaney area normalisation: every filter integrates to the same energy.
    filters *= 2.0 / (edges[2:] - edges[:-2])
    return filters


def _hann_periodic(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


class LogMel:
    """Callable log-mel extractor with its filters and window precomputed."""

    def __init__(self, cfg: FeatureConfig | None = None) -> None:
        self.cfg = cfg or FeatureConfig()
        self._filters = mel_filter_bank(self.cfg)  # [bins, n_mels]
        self._window = _hann_periodic(self.cfg.n_fft)

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """Log-mel features of one mono 16 kHz clip.

        Parameters
        ----------
        waveform : np.ndarray
            ``[num_samples]`` float samples in [-1, 1].

        Returns
        -------
        np.ndarray
            ``[n_mels, num_frames]`` float32 with ``num_frames = cfg.num_frames(num_samples)``.
        """
        x = self.padded_clip(waveform)
        return self.normalise(self.log_power(x, 0))

    def padded_clip(self, waveform: np.ndarray) -> np.ndarray:
        """``[max(n, min_samples)]`` float32: the clip zero-padded to the front end's minimum length.

        Raises
        ------
        InputError
            If the clip is too short for one STFT frame.
        """
        cfg = self.cfg
        x = np.asarray(waveform, dtype=np.float32).reshape(-1)
        if x.size < cfg.min_samples:
            x = np.pad(x, (0, cfg.min_samples - x.size))
        if x.size <= cfg.n_fft // 2:
            raise InputError(f"audio too short: {x.size} samples")
        return x

    def log_power(self, x: np.ndarray, first: int) -> np.ndarray:
        """``[n_mels, num_frames - first]`` float64 log10 mel power of ``x``'s frames from ``first`` on.

        Frame ``i`` is the centred STFT frame at sample ``i * hop``; a frame's value depends only on
        the samples within ``n_fft / 2`` of its centre (reflected at the clip's edges).
        """
        cfg = self.cfg
        half = cfg.n_fft // 2
        padded = np.pad(x.astype(np.float64), half, mode="reflect")
        n_frames = x.size // cfg.hop_length  # centred STFT has one more frame; the last is dropped
        mel = np.empty((cfg.n_mels, max(n_frames - first, 0)), dtype=np.float64)
        frames_view = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[:: cfg.hop_length]
        for start in range(first, n_frames, _STFT_BLOCK_FRAMES):
            stop = min(start + _STFT_BLOCK_FRAMES, n_frames)
            spec = np.fft.rfft(frames_view[start:stop] * self._window, axis=-1)
            power = spec.real**2 + spec.imag**2  # [block, bins]
            mel[:, start - first : stop - first] = (power @ self._filters).T
        return np.log10(np.maximum(mel, LOG_FLOOR))

    @staticmethod
    def normalise(log_spec: np.ndarray) -> np.ndarray:
        """``[n_mels, T]`` float32 features from the clip's whole log10 mel power (80 dB range, Whisper scale)."""
        log_spec = np.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
        return ((log_spec + LOG_OFFSET) / LOG_SCALE).astype(np.float32)


class GrowingLogMel:
    """The log-mel of a clip that grows at its end (a live utterance), computing only what changed.

    A frame's log mel power depends only on the samples within ``n_fft / 2`` of its centre, so once
    the clip reaches past that, later calls with a longer clip that starts with the same samples
    give it the same value. Those frames are kept; each call computes the new frames and the last
    one or two (which still see the clip's reflected end), then normalises the whole clip (the 80 dB
    floor follows the clip's loudest frame). The result always equals :class:`LogMel` on the same
    samples: a clip that does not start with the samples the kept frames came from (another
    utterance, a changed peak scaling) is computed from scratch.

    Parameters
    ----------
    log_mel : LogMel
        The extractor (filters and window) to use.
    """

    def __init__(self, log_mel: LogMel) -> None:
        self.log_mel = log_mel
        self.reset()

    def reset(self) -> None:
        """Forget the kept frames."""
        self._samples = np.zeros(0, np.float32)  # [m] the clip's samples the kept frames depend on
        self._kept = np.zeros((self.log_mel.cfg.n_mels, 0), np.float64)  # [n_mels, k] log10 mel power

    @property
    def kept_frames(self) -> int:
        """Frames whose values are kept for the next call."""
        return self._kept.shape[1]

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """``[n_mels, num_frames]`` float32, equal to ``LogMel(cfg)(waveform)``."""
        cfg = self.log_mel.cfg
        raw = np.asarray(waveform, dtype=np.float32).reshape(-1)
        x = self.log_mel.padded_clip(raw)
        seen = self._samples.size
        if seen > raw.size or not np.array_equal(raw[:seen], self._samples):
            self.reset()
        log_spec = np.concatenate([self._kept, self.log_mel.log_power(x, self.kept_frames)], axis=1)
        # Frames settled for good: their window lies within the real samples (no reflected end, no zero
        # padding up to min_samples), i.e. centre + n_fft / 2 <= samples received.
        half = cfg.n_fft // 2
        settled = (
            0
            if raw.size < max(cfg.min_samples, half)
            else min(log_spec.shape[1], (raw.size - half) // cfg.hop_length + 1)
        )
        self._kept = log_spec[:, :settled].copy()
        self._samples = raw[: (settled - 1) * cfg.hop_length + half].copy() if settled else np.zeros(0, np.float32)
        return self.log_mel.normalise(log_spec)


def pad_to_chunks(mel: np.ndarray, chunk_frames: int) -> np.ndarray:
    """Zero-pad ``[n_mels, T]`` on the right to a multiple of ``chunk_frames``."""
    rem = mel.shape[-1] % chunk_frames
    if rem == 0:
        return mel
    return np.pad(mel, ((0, 0), (0, chunk_frames - rem)))


@dataclass(frozen=True)
class EncoderWindows:
    """One utterance's mel cut into independent encoder windows.

    Attributes
    ----------
    features : list of np.ndarray
        Per window ``[n_mels, F_w]`` float32, ``F_w`` a multiple of ``chunk_frames``
        and at most ``window_frames`` (only the last window can be shorter).
    frames : np.ndarray
        ``[W]`` int64 valid (unpadded) mel frames per window.
    tokens : np.ndarray
        ``[W]`` int64 audio tokens each window yields.
    """

    features: list[np.ndarray]
    frames: np.ndarray
    tokens: np.ndarray

    @property
    def total_tokens(self) -> int:
        return int(self.tokens.sum())


def split_windows(mel: np.ndarray, cfg: FeatureConfig) -> EncoderWindows:
    """Cut ``[n_mels, T]`` log-mel features into 8 s encoder windows."""
    total = mel.shape[-1]
    if total <= 0:
        raise InputError("no audio frames")
    feats, frames = [], []
    for start in range(0, total, cfg.window_frames):
        part = mel[:, start : start + cfg.window_frames]
        frames.append(part.shape[-1])
        feats.append(np.ascontiguousarray(pad_to_chunks(part, cfg.chunk_frames), dtype=np.float32))
    frames_arr = np.asarray(frames, dtype=np.int64)
    return EncoderWindows(feats, frames_arr, np.asarray(cfg.num_audio_tokens(frames_arr), dtype=np.int64))


def stack_windows(features: list[np.ndarray], frames: int | None = None) -> np.ndarray:
    """Stack windows of different lengths into ``[B, n_mels, F]``, zero-padding on the right."""
    width = frames or max(f.shape[-1] for f in features)
    out = np.zeros((len(features), features[0].shape[0], width), dtype=np.float32)
    for i, f in enumerate(features):
        out[i, :, : f.shape[-1]] = f
    return out
