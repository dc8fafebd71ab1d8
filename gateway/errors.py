"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with the right HTTP status.

:class:`ApiError` is raised anywhere in a request's handling and turned into a
response by the application; :func:`from_client_error` maps the gRPC client's
exceptions onto it without leaking Triton's address or internals.
"""

from __future__ import annotations

import logging
from typing import Any

from qwen3_asr_triton.client.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    Qwen3ASRError,
    ServerUnavailableError,
)

logger = logging.getLogger(__name__)

# OpenAI's error types: client mistakes are "invalid_request_error", failures on our side "server_error".
INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
# Longest message sent to a client: the server's own messages are bounded at 600 characters
# (qwen3_asr_triton.errors.MAX_MESSAGE_CHARS); this leaves room for a short prefix.
MAX_MESSAGE_CHARS = 800


class ApiError(Exception):
    """An error answered to the HTTP client in OpenAI's shape.

    Parameters
    ----------
    status : int
        HTTP status code.
    message : str
        Human-readable explanation, safe to show to the client.
    error_type : str
        OpenAI's error ``type`` (``invalid_request_error`` or ``server_error``).
    param : str, optional
        The request field at fault.
    code : str, optional
        Machine-readable code (``model_not_found``, ``file_too_large``...).
    headers : dict, optional
        Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = bound_message(message)
        self.error_type = error_type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI's clients parse."""
        return error_body(self.message, self.error_type, self.param, self.code)


def bound_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def invalid(message: str, param: str | None = None, code: str | None = "invalid_value") -> ApiError:
    """400 for a bad request field."""
    return ApiError(400, message, INVALID_REQUEST, param, code)


def public_message(exc: Qwen3ASRError, triton_url: str) -> str:
    """The server's explanation without the client's call description, which names Triton's address.

    The client appends `` (infer qwen3_asr at HOST:PORT...)`` to messages; the
    gateway's clients need not know where Triton runs.
    """
    message = exc.message
    at = message.find(f" at {triton_url}")
    if at >= 0:
        cut = message.rfind(" (", 0, at)
        message = message[:cut] if cut >= 0 else message[:at]
    return bound_message(message.replace(triton_url, "the server").strip() or "request failed")


def from_client_error(exc: Qwen3ASRError, triton_url: str) -> ApiError:
    """The HTTP error for a failed call to Triton.

    - InvalidRequestError (bad audio, option the server refused): 400 with the server's message.
    - ServerUnavailableError (Triton down, restarting, model not ready): 503.
    - DeadlineExceededError: 504.
    - anything else (an internal error of the server, a malformed response): 502 with a generic message;
      the details are logged, not sent.
    """
    if isinstance(exc, InvalidRequestError):
        return ApiError(400, public_message(exc, triton_url), INVALID_REQUEST, None, "invalid_request")
    if isinstance(exc, ServerUnavailableError):
        logger.warning("Triton unavailable: %s", exc)
        return ApiError(
            503,
            "the speech recognition server is not available; try again later",
            SERVER_ERROR,
            None,
            "service_unavailable",
            {"Retry-After": "1"},
        )
    if isinstance(exc, DeadlineExceededError):
        logger.warning("Triton deadline: %s", exc)
        return ApiError(
            504, "the transcription did not finish within the server's deadline", SERVER_ERROR, None, "timeout"
        )
    logger.error("Triton call failed: %s", exc)
    return ApiError(
        502, "the speech recognition server failed to answer the request", SERVER_ERROR, None, "upstream_error"
    )
