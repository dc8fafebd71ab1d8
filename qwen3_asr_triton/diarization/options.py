"""What a client may ask of the diarizer (:class:`DiarizationOptions`) and its knobs (:class:`DiarizerConfig`).

The options are validated once, when they are built, with messages safe to show to the client
(:class:`~qwen3_asr_triton.errors.InputError`). The config is the server's, never the client's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError, excerpt

# Most speakers one request may ask for or that the count estimate may find: the eigengap is searched
# over this many eigenvalues, and a meeting with more than 16 distinct voices is far outside what
# clustering 1.5 s windows separates reliably (3D-Speaker's recipe, which senko ships, searches up to 15).
MAX_SPEAKERS = 16


def _check_count(name: str, value: object) -> int:
    """``value`` as a speaker count in 1..MAX_SPEAKERS, or an :class:`InputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SPEAKERS:
        raise InputError(f"{name} must be an integer from 1 to {MAX_SPEAKERS}, got {excerpt(value)}")
    return value


@dataclass(frozen=True)
class DiarizationOptions:
    """How many speakers a request's audio holds, as far as the client knows.

    Attributes
    ----------
    num_speakers : int | None
        The exact count, when known (it must lie within ``[min_speakers, max_speakers]``);
        ``None`` lets the diarizer estimate it.
    min_speakers, max_speakers : int
        Bounds of the estimated count, ``1 <= min_speakers <= max_speakers <= MAX_SPEAKERS``.

    Raises
    ------
    InputError
        When a value is not an integer in range or the bounds contradict each other.
    """

    num_speakers: int | None = None
    min_speakers: int = 1
    max_speakers: int = MAX_SPEAKERS

    def __post_init__(self) -> None:
        low = _check_count("min_speakers", self.min_speakers)
        high = _check_count("max_speakers", self.max_speakers)
        if low > high:
            raise InputError(f"min_speakers ({low}) must not be greater than max_speakers ({high})")
        if self.num_speakers is not None:
            count = _check_count("num_speakers", self.num_speakers)
            if not low <= count <= high:
                raise InputError(
                    f"num_speakers ({count}) must lie between min_speakers ({low}) and max_speakers ({high})"
                )

    @classmethod
    def from_request(
        cls, num_speakers: int | None = None, min_speakers: int | None = None, max_speakers: int | None = None
    ) -> DiarizationOptions:
        """Options from a request's optional fields (``None`` keeps the default); validated.

        Raises
        ------
        InputError
            As the constructor.
        """
        return cls(
            num_speakers=num_speakers,
            min_speakers=1 if min_speakers is None else min_speakers,
            max_speakers=MAX_SPEAKERS if max_speakers is None else max_speakers,
        )

    @property
    def speaker_range(self) -> tuple[int, int]:
        """The inclusive range the count is chosen from: ``(n, n)`` for a given count."""
        if self.num_speakers is not None:
            return self.num_speakers, self.num_speakers
        return self.min_speakers, self.max_speakers


@dataclass(frozen=True)
class DiarizerConfig:
    """The diarizer's knobs; the defaults were measured on the synthetic conversations of
    ``perf/diarization_data.py`` (see ``perf/results/diarizer/``) unless a comment says otherwise.

    Attributes
    ----------
    window_seconds : float
        Length of one embedded window. 1.5 s is 3D-Speaker's (and senko's) CAM++ diarization window.
    hop_seconds : float
        Step between windows within a speech region (half a window: each speech frame is covered twice).
    vad_threshold : float
        Silero speech probability that starts speech (senko runs Silero at 0.55, the endpointer's default is 0.5).
    vad_min_silence_ms : int
        Silence that ends a speech region (senko's 100 ms: short pauses split regions, turn changes too).
    vad_speech_pad_ms : int
        Audio kept around each speech region (Silero's ``get_speech_timestamps`` default, 30 ms).
    vad_min_speech_ms : int
        Shorter speech is dropped (Silero's default, 250 ms: a click is not a speaker).
    max_region_seconds : float
        Longer speech regions are cut at their quietest frame (the endpointer's forced cut); only bounds
        the endpointer's per-region state, windows are the same either way.
    batch_windows : int
        Windows embedded per call: 64 x 1.5 s x 4 bytes = 6 MB of samples held at once.
    max_cluster_windows : int
        Most windows clustered together (an eigendecomposition of this square); more are subsampled evenly
        and every window joins its nearest centroid. 1500 windows are about 19 min of speech at a 0.75 s
        hop; the ``[1500, 1500]`` float64 affinity is 18 MB and its ``eigh`` about a second on 2 cores.
    prune_fraction : float
        Fraction of each affinity row kept (the largest similarities), as 3D-Speaker's ``pval`` (0.012).
    min_neighbours : int
        At least this many neighbours kept per row (3D-Speaker's ``min_pnum``, 6).
    min_windows : int
        With fewer windows and no given count, everything is one speaker (3D-Speaker's ``cluster_line``, 10).
    min_cluster_windows : int
        An estimated cluster smaller than this joins its nearest larger one (3D-Speaker's 4).
    merge_cosine : float | None
        Estimated clusters whose centroids' cosine exceeds this are merged; ``None`` never merges. Off: senko's
        0.875 merged the two voices of ``s2-nogap-0`` (their centroids are 0.91 apart; pooled estimated-count
        DER 1.1% -> 5.4%), and with ``D - A`` no conversation had a split to undo.
    normalised_laplacian : bool
        Cluster the spectrum of ``I - D^-1/2 A D^-1/2`` instead of ``D - A``. Measured on the 9 synthetic
        conversations with CAM++: the eigengap of ``D - A`` found the right count in 9 of 9 for every pruning
        tried (4 to 10% of a row, or 6 to 10 neighbours), that of the normalised Laplacian in 7 or 8 of 9 (it
        split one speaker in two in ``s2-nogap-2`` and ``s4-nogap-2``).
    kmeans_restarts : int
        k-means++ restarts on the spectral embedding; the lowest inertia wins.
    frame_seconds : float
        Resolution of the output turns (10 ms).
    min_turn_seconds : float
        A turn shorter than this that touches another speaker's turn is absorbed by its neighbours. 0.3 s
        (pooled DER 1.09% on the 9 conversations; 1.0 s gave 0.96% but would swallow real short replies).
    bridge_seconds : float
        Two turns of the same speaker with a pause shorter than this become one turn: references count a
        speaker's short pauses as their speech. Pooled DER (oracle count, +-0.25 s collar) on the 9
        conversations: 4.6% without (3% of the speech missed in espeak's pauses between sentences), 1.2%
        at 0.3 s, 1.0% at 0.5 s and the same at 0.8 s.
    """

    window_seconds: float = 1.5
    hop_seconds: float = 0.75
    vad_threshold: float = 0.5
    vad_min_silence_ms: int = 100
    vad_speech_pad_ms: int = 30
    vad_min_speech_ms: int = 250
    max_region_seconds: float = 30.0
    batch_windows: int = 64
    max_cluster_windows: int = 1500
    prune_fraction: float = 0.012
    min_neighbours: int = 6
    min_windows: int = 10
    min_cluster_windows: int = 4
    merge_cosine: float | None = None
    normalised_laplacian: bool = False
    kmeans_restarts: int = 10
    frame_seconds: float = 0.01
    min_turn_seconds: float = 0.3
    bridge_seconds: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.hop_seconds <= self.window_seconds:
            raise ValueError(f"hop_seconds must be in (0, window_seconds], got {self.hop_seconds!r}")
        if self.batch_windows < 1 or self.max_cluster_windows < 2 * MAX_SPEAKERS:
            raise ValueError("batch_windows must be positive and max_cluster_windows at least 2 * MAX_SPEAKERS")
        if not 0 < self.prune_fraction <= 1:
            raise ValueError(f"prune_fraction must be in (0, 1], got {self.prune_fraction!r}")
