"""Python client of the Qwen3-ASR Triton deployment (gRPC), sync and asyncio, and the ``qwen3-asr`` CLI.

>>> from qwen3_asr_triton.client import ClientOptions, Qwen3ASRClient, TranscribeOptions
>>> with Qwen3ASRClient(ClientOptions(url="127.0.0.1:8001", timeout=60)) as client:  # doctest: +SKIP
...     result = client.transcribe("call.wav", TranscribeOptions(language="en", timestamps=True))

The library needs tritonclient[grpc], numpy and the shared ``qwen3_asr_triton`` helpers (no torch,
no onnxruntime, no audio decoding: the server decodes); the CLI adds tqdm for its progress bar.
"""

from .async_client import AsyncQwen3ASRClient
from .errors import (
    DeadlineExceededError,
    InvalidRequestError,
    MalformedResponseError,
    Qwen3ASRError,
    ServerUnavailableError,
)
from .formats import FORMATS, render
from .options import ClientOptions, RetryPolicy, TlsOptions, TranscribeOptions
from .subtitles import Cue, SubtitleLimits, build_cues, to_srt, to_vtt
from .sync_client import Qwen3ASRClient
from .types import ModelMetadata, ModelState, Segment, ServerHealth, TensorSpec, Transcription, Word

__all__ = [
    "FORMATS",
    "AsyncQwen3ASRClient",
    "ClientOptions",
    "Cue",
    "DeadlineExceededError",
    "InvalidRequestError",
    "MalformedResponseError",
    "ModelMetadata",
    "ModelState",
    "Qwen3ASRClient",
    "Qwen3ASRError",
    "RetryPolicy",
    "Segment",
    "ServerHealth",
    "ServerUnavailableError",
    "SubtitleLimits",
    "TensorSpec",
    "TlsOptions",
    "TranscribeOptions",
    "Transcription",
    "Word",
    "build_cues",
    "render",
    "to_srt",
    "to_vtt",
]
