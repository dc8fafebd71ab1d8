"""Client and request options: frozen dataclasses, validated once when built.

Every check raises :class:`ValueError` with a message naming the option, so a
bad value fails at construction (or at CLI parsing), not in the middle of a
batch of requests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qwen3_asr_triton.diarization.options import MAX_SPEAKERS
from qwen3_asr_triton.languages import normalize_language

# The public entry model of the repository (model_repository/qwen3_asr).
DEFAULT_MODEL = "qwen3_asr"
# Its streaming sibling (model_repository/qwen3_asr_streaming).
DEFAULT_STREAM_MODEL = "qwen3_asr_streaming"
# The entry model that also sends the transcript as it is generated (transcribe_stream of the clients).
DEFAULT_DELTAS_MODEL = "qwen3_asr_deltas"
# Triton's default gRPC port.
DEFAULT_URL = "127.0.0.1:8001"
# Deadline of one call, retries included. An hour of audio takes well under a
# minute on a GPU target; the CPU target can need several minutes for long files.
DEFAULT_TIMEOUT_SECONDS = 600.0
# One try plus three retries: with the backoff below, a dead server is reported
# after 0.9-1.8 s of waiting, while a restart or a brief overload is ridden out.
DEFAULT_MAX_ATTEMPTS = 4
# First backoff; doubles on every retry (gRPC's own reconnect backoff starts at 1 s).
DEFAULT_INITIAL_BACKOFF_SECONDS = 0.25
# Cap on a single wait, so a long deadline never turns into minutes of sleeping.
DEFAULT_MAX_BACKOFF_SECONDS = 4.0
DEFAULT_BACKOFF_MULTIPLIER = 2.0
# Streaming chunks: the middle of the 0.5-2 s live captioning clients send. Each chunk costs the server one
# partial decode, so shorter chunks give fresher partials at a higher load.
DEFAULT_CHUNK_SECONDS = 1.0
# 20 ms is one audio frame of a typical capture device (and of Opus); anything
# shorter only multiplies requests without making partials any fresher.
MIN_CHUNK_SECONDS = 0.02
# Past 30 s a chunk is no longer streaming (one partial per half minute); it also
# bounds one request at 30 s x 384 kHz x 4 B = 46 MB, under gRPC's message cap.
MAX_CHUNK_SECONDS = 30.0
# Bounds of the VAD's millisecond knobs (silence that ends an utterance, padding kept around speech):
# past 10 s of silence an utterance no longer ends at a pause.
MAX_VAD_MS = 10000

# host:port, where host is a name, an IPv4 address or a bracketed IPv6 address.
_URL_RE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>[0-9]{1,5})$")
# gRPC metadata keys: lowercase letters, digits and - _ . (HTTP/2 header rules).
_HEADER_KEY_RE = re.compile(r"^[0-9a-z_.\-]+$")
# Printable ASCII: anything else (newlines above all) could smuggle extra headers.
_HEADER_VALUE_RE = re.compile(r"^[\x20-\x7e]*$")
# Keys gRPC itself owns or that the transport sets.
_RESERVED_HEADER_PREFIXES = ("grpc-", ":")
_RESERVED_HEADERS = frozenset({"content-type", "te", "user-agent", "host"})
# A Triton model name.
_MODEL_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_seconds(name: str, value: object, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value}")
    return value


def parse_url(url: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6), raising ValueError for anything else."""
    if not isinstance(url, str):
        raise ValueError(f"url must be a string, got {url!r}")
    if "://" in url:
        raise ValueError(f"url must be host:port without a scheme (gRPC), got {url!r}")
    match = _URL_RE.match(url.strip())
    if match is None:
        raise ValueError(f"url must look like host:port (e.g. 127.0.0.1:8001), got {url!r}")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"url port must be between 1 and 65535, got {port}")
    return match["host"], port


def normalize_headers(headers: Mapping[str, str] | tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Validated gRPC metadata as sorted ``(key, value)`` pairs; keys are lower-cased.

    Raises
    ------
    ValueError
        For an empty, reserved or malformed key, a value with control or
        non-ASCII characters, or the same key twice.
    """
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    out: dict[str, str] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"headers must be (name, value) pairs, got {pair!r}")
        key, value = pair
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"header names and values must be strings, got {key!r}: {value!r}")
        key = key.strip().lower()
        if not _HEADER_KEY_RE.match(key):
            raise ValueError(f"header name {key!r} may only hold letters, digits and - _ .")
        if key.startswith(_RESERVED_HEADER_PREFIXES) or key in _RESERVED_HEADERS:
            raise ValueError(f"header {key!r} is reserved by gRPC")
        if key.endswith("-bin"):
            raise ValueError(f"binary header {key!r} is not supported; send text metadata")
        if not _HEADER_VALUE_RE.match(value):
            raise ValueError(f"header {key!r} must have a printable ASCII value")
        if key in out:
            raise ValueError(f"header {key!r} given twice")
        out[key] = value.strip()
    return tuple(sorted(out.items()))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for UNAVAILABLE (server down, restarting or overloaded).

    Attributes
    ----------
    max_attempts : int
        Tries in total, the first included (1 disables retries).
    initial_backoff : float
        Upper bound of the first wait, seconds.
    max_backoff : float
        Upper bound of any wait, seconds.
    multiplier : float
        Growth of the bound from one retry to the next.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_backoff: float = DEFAULT_INITIAL_BACKOFF_SECONDS
    max_backoff: float = DEFAULT_MAX_BACKOFF_SECONDS
    multiplier: float = DEFAULT_BACKOFF_MULTIPLIER

    def __post_init__(self) -> None:
        _check_int("max_attempts", self.max_attempts, 1)
        object.__setattr__(self, "initial_backoff", _check_seconds("initial_backoff", self.initial_backoff))
        object.__setattr__(self, "max_backoff", _check_seconds("max_backoff", self.max_backoff))
        if self.max_backoff < self.initial_backoff:
            raise ValueError(f"max_backoff ({self.max_backoff}) must be >= initial_backoff ({self.initial_backoff})")
        if isinstance(self.multiplier, bool) or not isinstance(self.multiplier, (int, float)):
            raise ValueError(f"multiplier must be a number, got {self.multiplier!r}")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1.0):
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")

    def backoff_bound(self, retry: int) -> float:
        """Upper bound of the wait before retry number ``retry`` (1-based)."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))


@dataclass(frozen=True)
class TlsOptions:
    """TLS for the gRPC channel; with no file at all the system's root certificates are used.

    Attributes
    ----------
    root_certificates : Path, optional
        PEM file of the certificate authorities to trust (e.g. a private CA).
    private_key, certificate_chain : Path, optional
        PEM files of the client's own key and certificate, for mutual TLS; both or neither.
    """

    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None

    def __post_init__(self) -> None:
        for name in ("root_certificates", "private_key", "certificate_chain"):
            value = getattr(self, name)
            if value is None:
                continue
            path = Path(value)
            if not path.is_file():
                raise ValueError(f"TLS {name} file {str(path)!r} does not exist")
            object.__setattr__(self, name, path)
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("TLS private_key and certificate_chain must be given together (mutual TLS)")


@dataclass(frozen=True)
class ClientOptions:
    """How to reach the server.

    Attributes
    ----------
    url : str
        ``host:port`` of Triton's gRPC endpoint.
    model : str
        Entry model name.
    model_version : str
        Version to call; empty for the server's policy (latest).
    timeout : float or None
        Deadline of each call in seconds, retries and backoff included; None waits forever.
    retry : RetryPolicy
        Retries on UNAVAILABLE.
    tls : TlsOptions or None
        None for a plaintext channel.
    headers : mapping or pairs of str
        gRPC metadata sent with every call (e.g. ``{"authorization": "Bearer ..."}``);
        stored as sorted, lower-cased ``(key, value)`` pairs.
    stream_model : str
        Model that serves streaming recognition (``stream()`` of the clients).
    deltas_model : str
        Model that sends a transcript as it is generated (``transcribe_stream()`` of the asyncio client).
    """

    url: str = DEFAULT_URL
    model: str = DEFAULT_MODEL
    model_version: str = ""
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tls: TlsOptions | None = None
    headers: tuple[tuple[str, str], ...] | Mapping[str, str] = ()
    stream_model: str = DEFAULT_STREAM_MODEL
    deltas_model: str = DEFAULT_DELTAS_MODEL

    def __post_init__(self) -> None:
        parse_url(self.url)
        object.__setattr__(self, "url", self.url.strip())
        for name in ("model", "stream_model", "deltas_model"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _MODEL_RE.match(value):
                raise ValueError(f"{name} must be a Triton model name, got {value!r}")
        if not isinstance(self.model_version, str) or not re.match(r"^[0-9]*$", self.model_version):
            raise ValueError(f"model_version must be empty or a number, got {self.model_version!r}")
        if self.timeout is not None:
            object.__setattr__(self, "timeout", _check_seconds("timeout", self.timeout))
        if not isinstance(self.retry, RetryPolicy):
            raise ValueError(f"retry must be a RetryPolicy, got {self.retry!r}")
        if self.tls is not None and not isinstance(self.tls, TlsOptions):
            raise ValueError(f"tls must be TlsOptions or None, got {self.tls!r}")
        object.__setattr__(self, "headers", normalize_headers(self.headers))

    @property
    def header_dict(self) -> dict[str, str]:
        """The metadata as tritonclient takes it (None-able callers use ``or None``)."""
        return dict(self.headers)


@dataclass(frozen=True)
class TranscribeOptions:
    """What to ask of one transcription.

    Attributes
    ----------
    language : str or None
        Force a language, by name ("English") or ISO code ("en"); None or "auto" detects it.
        Stored as the model's name.
    context : str or None
        Hotwords or domain text that bias recognition; empty means none.
    timestamps : bool
        Ask for word timestamps (needs the server's forced aligner).
    max_new_tokens : int or None
        Cap on generated tokens per segment; None keeps the server's default.
    min_new_tokens : int or None
        No end token before this many tokens per segment (benchmarks use it to fix output lengths).
    diarize : bool
        Label who spoke: a speaker per segment and per word, segments split where the speaker changes
        (needs the server's diarizer; word times need its aligner too).
    num_speakers, min_speakers, max_speakers : int or None
        With ``diarize``: the number of speakers when known, else bounds of the estimate (1 to
        :data:`MAX_SPEAKERS`); None keeps the server's defaults.
    """

    language: str | None = None
    context: str | None = None
    timestamps: bool = False
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    diarize: bool = False
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def __post_init__(self) -> None:
        if self.language is not None and not isinstance(self.language, str):
            raise ValueError(f"language must be a string, got {self.language!r}")
        object.__setattr__(self, "language", normalize_language(self.language))
        if self.context is not None and not isinstance(self.context, str):
            raise ValueError(f"context must be a string, got {self.context!r}")
        object.__setattr__(self, "context", self.context or None)
        if not isinstance(self.timestamps, bool):
            raise ValueError(f"timestamps must be True or False, got {self.timestamps!r}")
        if self.max_new_tokens is not None:
            _check_int("max_new_tokens", self.max_new_tokens, 1)
        if self.min_new_tokens is not None:
            _check_int("min_new_tokens", self.min_new_tokens, 0)
            if self.max_new_tokens is not None and self.min_new_tokens > self.max_new_tokens:
                raise ValueError("min_new_tokens must not exceed max_new_tokens")
        self._check_speakers()

    def _check_speakers(self) -> None:
        if not isinstance(self.diarize, bool):
            raise ValueError(f"diarize must be True or False, got {self.diarize!r}")
        counts = {"num_speakers": self.num_speakers, "min_speakers": self.min_speakers}
        counts["max_speakers"] = self.max_speakers
        given = {name: value for name, value in counts.items() if value is not None}
        if given and not self.diarize:
            raise ValueError(f"{', '.join(given)} apply only with diarize")
        for name, value in given.items():
            if _check_int(name, value, 1) > MAX_SPEAKERS:
                raise ValueError(f"{name} must be at most {MAX_SPEAKERS}, got {value}")
        low, high = self.min_speakers or 1, self.max_speakers or MAX_SPEAKERS
        if low > high:
            raise ValueError(f"min_speakers ({low}) must not exceed max_speakers ({high})")
        if self.num_speakers is not None and not low <= self.num_speakers <= high:
            raise ValueError(f"num_speakers ({self.num_speakers}) must lie between {low} and {high}")


def _check_vad_ms(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer number of milliseconds, got {value!r}")
    if not 0 <= value <= MAX_VAD_MS:
        raise ValueError(f"{name} must be between 0 and {MAX_VAD_MS} ms, got {value}")
    return value


@dataclass(frozen=True)
class EndpointingOptions:
    """Cut a stream into utterances with the server's voice activity detector (Silero VAD).

    Each knob left at None keeps the server's default.

    Attributes
    ----------
    vad_threshold : float or None
        Speech probability above which a frame counts as speech, in (0, 1).
    vad_min_silence_ms : int or None
        Silence, in ms (0 to 10000), that ends an utterance.
    vad_speech_pad_ms : int or None
        Audio, in ms (0 to 10000), kept before and after the speech of an utterance.
    """

    vad_threshold: float | None = None
    vad_min_silence_ms: int | None = None
    vad_speech_pad_ms: int | None = None

    def __post_init__(self) -> None:
        if self.vad_threshold is not None:
            value = self.vad_threshold
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"vad_threshold must be a number, got {value!r}")
            if not (math.isfinite(value) and 0 < value < 1):
                raise ValueError(f"vad_threshold must be between 0 and 1 (exclusive), got {value}")
            object.__setattr__(self, "vad_threshold", float(value))
        _check_vad_ms("vad_min_silence_ms", self.vad_min_silence_ms)
        _check_vad_ms("vad_speech_pad_ms", self.vad_speech_pad_ms)


@dataclass(frozen=True)
class StreamOptions:
    """How a stream sends its audio.

    Attributes
    ----------
    chunk_seconds : float
        Audio per request. A file or waveform is cut into chunks of this length
        (the last one shorter); frames from a live source are gathered until
        they hold this much. Every chunk may get a partial hypothesis.
    speed : float
        Pace of a file or waveform relative to real time: 1.0 sends each chunk
        when its last sample would have been captured live, 2.0 twice as fast,
        0 as fast as possible. Live sources are sent as they yield, whatever this is.
    endpointing : EndpointingOptions or None
        Cut the stream into utterances where the speaker pauses: the stream then
        yields an :class:`~.types.Utterance` for each one as soon as it ends, and
        partials of the utterance being spoken. None: one utterance, one final result.
    """

    chunk_seconds: float = DEFAULT_CHUNK_SECONDS
    speed: float = 1.0
    endpointing: EndpointingOptions | None = None

    def __post_init__(self) -> None:
        chunk = _check_seconds("chunk_seconds", self.chunk_seconds)
        if not MIN_CHUNK_SECONDS <= chunk <= MAX_CHUNK_SECONDS:
            raise ValueError(
                f"chunk_seconds must be between {MIN_CHUNK_SECONDS:g} and {MAX_CHUNK_SECONDS:g}, got {chunk:g}"
            )
        object.__setattr__(self, "chunk_seconds", chunk)
        if isinstance(self.speed, bool) or not isinstance(self.speed, (int, float)):
            raise ValueError(f"speed must be a number (0 = as fast as possible), got {self.speed!r}")
        if not (math.isfinite(self.speed) and self.speed >= 0):
            raise ValueError(f"speed must be >= 0 and finite (0 = as fast as possible), got {self.speed}")
        object.__setattr__(self, "speed", float(self.speed))
        if self.endpointing is not None and not isinstance(self.endpointing, EndpointingOptions):
            raise ValueError(f"endpointing must be EndpointingOptions or None, got {self.endpointing!r}")

    def chunk_samples(self, sample_rate: int) -> int:
        """Samples per chunk at ``sample_rate`` (at least one)."""
        return max(1, round(self.chunk_seconds * sample_rate))
