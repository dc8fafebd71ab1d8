"""Python client of the Qwen3-ASR Triton deployment (gRPC), sync and asyncio, and the ``qwen3-asr`` CLI.

>>> from qwen3_asr_triton.client import ClientOptions, Qwen3ASRClient, TranscribeOptions
>>> with Qwen3ASRClient(ClientOptions(url="127.0.0.1:8001", timeout=60)) as client:  # doctest: +SKIP
...     result = client.transcribe("call.wav", TranscribeOptions(language="en", timestamps=True))

Streaming recognition prints partial hypotheses while the audio plays, then the final result:

>>> from qwen3_asr_triton.client import Partial, StreamOptions
>>> with Qwen3ASRClient("127.0.0.1:8001") as client:  # doctest: +SKIP
...     for event in client.stream("call.wav", stream_options=StreamOptions(chunk_seconds=1.0, speed=1.0)):
...         print("..." if isinstance(event, Partial) else "final:", event.text)

With ``StreamOptions(endpointing=EndpointingOptions())`` the server cuts the stream into utterances at
pauses, and each one arrives as an :class:`Utterance` (with its start and end) as soon as it ends.

The library needs tritonclient[grpc], numpy and the shared ``qwen3_asr_triton`` helpers (no torch,
no onnxruntime; unary requests send files as they are and the server decodes them, while a stream
of a file decodes it here with PyAV, since the streaming model takes PCM); the CLI adds tqdm for
its progress bar.
"""

from .async_client import AsyncQwen3ASRClient
from .async_stream import AsyncTranscriptionStream
from .errors import (
    DeadlineExceededError,
    InvalidRequestError,
    MalformedResponseError,
    Qwen3ASRError,
    ServerUnavailableError,
)
from .formats import FORMATS, render
from .options import (
    ClientOptions,
    EndpointingOptions,
    RetryPolicy,
    StreamOptions,
    TlsOptions,
    TranscribeOptions,
)
from .subtitles import Cue, SubtitleLimits, build_cues, to_srt, to_vtt
from .sync_client import Qwen3ASRClient
from .sync_stream import TranscriptionStream
from .types import (
    ModelMetadata,
    ModelState,
    Partial,
    Segment,
    ServerHealth,
    StreamStats,
    TensorSpec,
    TextDelta,
    Transcription,
    Utterance,
    Word,
)

__all__ = [
    "FORMATS",
    "AsyncQwen3ASRClient",
    "AsyncTranscriptionStream",
    "ClientOptions",
    "Cue",
    "DeadlineExceededError",
    "EndpointingOptions",
    "InvalidRequestError",
    "MalformedResponseError",
    "ModelMetadata",
    "ModelState",
    "Partial",
    "Qwen3ASRClient",
    "Qwen3ASRError",
    "RetryPolicy",
    "Segment",
    "ServerHealth",
    "ServerUnavailableError",
    "StreamOptions",
    "StreamStats",
    "SubtitleLimits",
    "TensorSpec",
    "TextDelta",
    "TlsOptions",
    "TranscribeOptions",
    "Transcription",
    "TranscriptionStream",
    "Utterance",
    "Word",
    "build_cues",
    "render",
    "to_srt",
    "to_vtt",
]
