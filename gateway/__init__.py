"""OpenAI-compatible HTTP gateway of the Qwen3-ASR Triton deployment (``qwen3-asr serve-openai``).

It serves OpenAI's audio transcription API (``POST /v1/audio/transcriptions``, the
models listing, health and Prometheus metrics) and calls Triton's ``qwen3_asr``
over gRPC through :class:`~qwen3_asr_triton.client.AsyncQwen3ASRClient`:

>>> from qwen3_asr_triton.gateway import GatewayOptions, create_app
>>> app = create_app(GatewayOptions(triton_url="127.0.0.1:8001"))  # doctest: +SKIP

The gateway imports the client library, never the reverse.
"""

from .app import create_app
from .errors import ApiError
from .options import GatewayOptions

__all__ = ["ApiError", "GatewayOptions", "create_app"]
