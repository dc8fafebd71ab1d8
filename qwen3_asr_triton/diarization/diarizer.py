"""Offline diarization of one waveform: VAD, windows, embeddings, clustering, turns.

The two models come in as plain callables (so the pipeline is pure and testable with stand-ins):
``speech_probs`` gives Silero VAD's per-frame probabilities of a whole waveform, ``embed`` gives
L2-normalised speaker embeddings of a batch of equal-length windows. :meth:`Diarizer.from_files`
wires the project's ONNX Runtime sessions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import InputError, RequestCancelledError
from ..vad import VAD_SAMPLE_RATE
from .clustering import cluster_embeddings
from .options import DiarizationOptions, DiarizerConfig
from .turns import SpeakerTurn, assemble_turns
from .windows import region_windows, speech_regions

LOG = logging.getLogger(__name__)

# Samples handed to the VAD per call: 16 s (the VAD's own block), so that its framed copy of the input
# stays small however long the recording (a whole hour at once would be framed into a 260 MB array).
VAD_CHUNK_SAMPLES = 16 * VAD_SAMPLE_RATE


class Diarizer:
    """Who spoke when in a mono 16 kHz waveform.

    Parameters
    ----------
    embed : Callable[[np.ndarray], np.ndarray]
        ``[b, samples]`` float32 windows -> ``[b, d]`` float32 speaker embeddings.
    speech_probs : Callable[[np.ndarray], np.ndarray]
        ``[n]`` float32 waveform -> ``[ceil(n / 512)]`` speech probabilities (Silero VAD frames).
    config : DiarizerConfig
        The algorithm's knobs.
    """

    def __init__(
        self,
        embed: Callable[[np.ndarray], np.ndarray],
        speech_probs: Callable[[np.ndarray], np.ndarray],
        config: DiarizerConfig = DiarizerConfig(),  # noqa: B008 (frozen, so one shared default is safe)
    ) -> None:
        self.embed = embed
        self.speech_probs = speech_probs
        self.config = config

    @classmethod
    def from_files(
        cls,
        speaker_onnx: Path,
        vad_onnx: Path,
        threads: int = 1,
        config: DiarizerConfig = DiarizerConfig(),  # noqa: B008 (frozen)
    ) -> Diarizer:
        """A diarizer over the CAM++ speaker graph and Silero's sequence VAD graph on ONNX Runtime.

        Parameters
        ----------
        speaker_onnx : Path
            The CAM++ embedding graph (``export_speaker_onnx``).
        vad_onnx : Path
            Silero VAD's ``silero_vad_16k_sequence.onnx``.
        threads : int
            ONNX Runtime intra-op threads of the speaker graph (the VAD runs on one).
        config : DiarizerConfig
            The algorithm's knobs.
        """
        from ..vad import SileroVad, VadStream
        from .embedding import SpeakerEmbedder

        embedder = SpeakerEmbedder(speaker_onnx, threads)
        vad = SileroVad(vad_onnx)
        return cls(embedder.embed, lambda waveform: vad.score(VadStream(), waveform, flush=True), config)

    def diarize(
        self, waveform: np.ndarray, options: DiarizationOptions, cancelled: Callable[[], bool] | None = None
    ) -> list[SpeakerTurn]:
        """Speaker turns of ``waveform``.

        Parameters
        ----------
        waveform : np.ndarray
            ``[n]`` float32 mono samples at 16 kHz.
        options : DiarizationOptions
            The client's speaker count or its bounds.
        cancelled : callable, optional
            Asked before each batch of windows; once it is true the work stops with
            :class:`~..errors.RequestCancelledError` (the client went away).

        Returns
        -------
        list[SpeakerTurn]
            Non-overlapping turns in time order; speakers numbered in order of first appearance.

        Raises
        ------
        InputError
            When the waveform is not one-dimensional or holds non-finite samples.
        RequestCancelledError
            When ``cancelled`` turned true.
        """
        samples = np.asarray(waveform, np.float32)
        if samples.ndim != 1:
            raise InputError(f"diarization needs mono audio (one dimension), got shape {samples.shape}")
        if not np.isfinite(samples).all():
            raise InputError("the audio holds non-finite samples (NaN or infinity)")
        regions = speech_regions(self.speech_probs(samples), samples.size, self.config)
        windows = region_windows(regions, samples.size, self.config)
        LOG.debug(
            "%.1f s of audio: %s speech regions, %s windows", samples.size / VAD_SAMPLE_RATE, len(regions), len(windows)
        )
        if len(windows) == 0:
            return []
        embeddings = self.window_embeddings(samples, windows, cancelled)
        low, high = options.speaker_range
        labels = cluster_embeddings(embeddings, low, high, self.config)
        return assemble_turns(windows, labels, regions, samples.size, self.config)

    def window_embeddings(
        self, samples: np.ndarray, windows: np.ndarray, cancelled: Callable[[], bool] | None = None
    ) -> np.ndarray:
        """``[w, d]`` float32 embeddings of equal-length windows, ``config.batch_windows`` at a time.

        Parameters
        ----------
        samples : np.ndarray
            ``[n]`` float32 waveform.
        windows : np.ndarray
            ``[w, 2]`` ``[start, end)`` bounds, all of one length.
        cancelled : callable, optional
            See :meth:`diarize`.
        """
        length = int(windows[0, 1] - windows[0, 0])
        offsets = np.arange(length)
        batches = []
        for first in range(0, len(windows), self.config.batch_windows):
            if cancelled is not None and cancelled():
                raise RequestCancelledError("the client cancelled the request")
            starts = windows[first : first + self.config.batch_windows, 0]
            batch = samples[starts[:, None] + offsets[None, :]]
            batches.append(np.asarray(self.embed(batch), np.float32))
        return np.concatenate(batches)
