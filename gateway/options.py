"""Options of the OpenAI-compatible gateway: one frozen dataclass, validated once when built.

Every check raises :class:`ValueError` naming the option, so a bad value fails at
start-up (or at CLI parsing), never in the middle of serving.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from qwen3_asr_triton.client.options import ClientOptions, parse_url

# Environment variable holding the API key (safer than --api-key, which `ps` shows to every user).
API_KEY_ENV = "QWEN3_ASR_API_KEY"
# Loopback by default: exposing the gateway beyond this machine must be an explicit choice.
DEFAULT_HOST = "127.0.0.1"
# The customary port of an HTTP service beside others (8000-8002 are Triton's own ports).
DEFAULT_PORT = 8080
# The id clients pass as `model`; any value works as long as clients agree on it.
DEFAULT_SERVED_MODEL_NAME = "qwen3-asr"
# OpenAI's own upload limit for /v1/audio/transcriptions (25 MB).
DEFAULT_MAX_FILE_BYTES = 25 * 1024 * 1024
# Hard ceiling for --max-file-bytes: each request in flight holds its file in memory and sends it
# to Triton in one gRPC message; 1 GiB is hours of compressed audio and far past any sane upload.
MAX_FILE_BYTES_LIMIT = 1024 * 1024 * 1024
# Requests in flight before the gateway answers 503 at once. 32 keeps a CPU or single-GPU Triton
# busy (it queues and batches inside) while bounding the gateway's memory at 32 uploads
# (32 x 25 MiB = 800 MiB in the worst case); raise it with --max-concurrency for bigger servers.
DEFAULT_MAX_CONCURRENCY = 32
# Upper bound for --max-concurrency: beyond a few thousand, memory (one upload each) runs out first.
MAX_CONCURRENCY_LIMIT = 4096
# Deadline of one transcription, retries included: an hour of audio takes well under a minute on a
# GPU and a few minutes on the CPU target; OpenAI's own client waits 600 s before giving up.
DEFAULT_TIMEOUT_SECONDS = 300.0
# On SIGTERM, requests in flight get this long to finish before they are cut (Kubernetes waits
# 30 s by default between SIGTERM and SIGKILL). The gateway and the gRPC guard both use it.
GRACEFUL_SHUTDOWN_SECONDS = 25
# gRPC channels (one AsyncQwen3ASRClient each), used round-robin. One HTTP/2 channel multiplexes
# many calls, but a second one keeps a slow, large upload from delaying small requests behind it.
DEFAULT_GRPC_CHANNELS = 2
# More channels than this only adds connections for Triton to serve.
MAX_GRPC_CHANNELS = 64
# Log levels of the gateway's and the gRPC guard's --log-level.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# A model id: what OpenAI's ids look like (letters, digits, and . _ - : /), bounded in length.
_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/\-]{0,127}$")
# API keys are sent in an HTTP header: printable ASCII without spaces.
_API_KEY_RE = re.compile(r"^[\x21-\x7e]{1,512}$")


def check_int(name: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


@dataclass(frozen=True)
class GatewayOptions:
    """How the gateway listens and how it reaches Triton.

    Attributes
    ----------
    triton_url : str
        ``host:port`` of Triton's gRPC endpoint.
    host : str
        Address to listen on (default loopback).
    port : int
        TCP port to listen on.
    api_key : str or None
        When set, every ``/v1`` request needs ``Authorization: Bearer <api_key>``;
        ``/health`` and ``/metrics`` stay open. None (or empty) disables the check.
    served_model_name : str
        The model id clients must pass as ``model`` (and that ``/v1/models`` lists).
    max_file_bytes : int
        Largest audio upload accepted, in bytes.
    max_concurrency : int
        Requests in flight; one more is answered 503 at once.
    timeout : float
        Deadline of one transcription in seconds (504 when it passes).
    grpc_channels : int
        Clients (gRPC channels) to Triton, used round-robin.
    """

    triton_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    served_model_name: str = DEFAULT_SERVED_MODEL_NAME
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    grpc_channels: int = DEFAULT_GRPC_CHANNELS

    def __post_init__(self) -> None:
        parse_url(self.triton_url)
        object.__setattr__(self, "triton_url", self.triton_url.strip())
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host must be an address to listen on, got {self.host!r}")
        object.__setattr__(self, "host", self.host.strip())
        check_int("port", self.port, 1, 65535)
        if self.api_key is not None:
            if not isinstance(self.api_key, str):
                raise ValueError("api_key must be a string")
            if not self.api_key:
                object.__setattr__(self, "api_key", None)
            elif not _API_KEY_RE.match(self.api_key):
                # The key itself is never echoed: error messages end up in logs.
                raise ValueError("api_key must be 1-512 printable ASCII characters without spaces")
        if not isinstance(self.served_model_name, str) or not _MODEL_ID_RE.match(self.served_model_name):
            raise ValueError(
                "served_model_name must be 1-128 letters, digits or . _ - : / (starting with a letter or digit),"
                f" got {self.served_model_name!r}"
            )
        check_int("max_file_bytes", self.max_file_bytes, 1, MAX_FILE_BYTES_LIMIT)
        check_int("max_concurrency", self.max_concurrency, 1, MAX_CONCURRENCY_LIMIT)
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)):
            raise ValueError(f"timeout must be a number of seconds, got {self.timeout!r}")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"timeout must be a positive, finite number of seconds, got {self.timeout}")
        object.__setattr__(self, "timeout", float(self.timeout))
        check_int("grpc_channels", self.grpc_channels, 1, MAX_GRPC_CHANNELS)

    def client_options(self) -> ClientOptions:
        """Options of each gRPC client: Triton's URL and the transcription deadline."""
        return ClientOptions(url=self.triton_url, timeout=self.timeout)
