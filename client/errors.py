"""Exceptions raised by the client, independent of tritonclient's types.

Every failure of a call surfaces as a :class:`Qwen3ASRError` carrying the gRPC
status name (``"INVALID_ARGUMENT"``, ``"UNAVAILABLE"``...), so callers can
branch on the subclass or on ``status`` without importing tritonclient.
"""

from __future__ import annotations

from tritonclient.utils import InferenceServerException


class Qwen3ASRError(Exception):
    """A call to the server failed.

    Attributes
    ----------
    status : str or None
        gRPC status name without the ``StatusCode.`` prefix, None when the
        failure happened inside the client.
    message : str
        The server's (or client's) explanation.
    """

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class InvalidRequestError(Qwen3ASRError):
    """The server rejected the request itself (bad audio, unknown language...); retrying cannot help."""


class ServerUnavailableError(Qwen3ASRError):
    """The server could not be reached or was overloaded, still after every retry."""


class DeadlineExceededError(Qwen3ASRError):
    """The call's deadline passed before a response arrived."""


class MalformedResponseError(Qwen3ASRError):
    """The server answered, but not with the outputs the wire contract promises."""


_BY_STATUS: dict[str, type[Qwen3ASRError]] = {
    "INVALID_ARGUMENT": InvalidRequestError,
    "UNAVAILABLE": ServerUnavailableError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
}


def status_name(exc: InferenceServerException) -> str | None:
    """``"UNAVAILABLE"`` for tritonclient's ``"StatusCode.UNAVAILABLE"``; None when it has no status."""
    status = exc.status()
    if not status:
        return None
    return str(status).rsplit(".", 1)[-1]


def from_triton(exc: InferenceServerException, context: str = "") -> Qwen3ASRError:
    """The client's exception for a tritonclient one (chain it with ``raise ... from exc``)."""
    status = status_name(exc)
    message = exc.message() or str(exc)
    if context:
        message = f"{message} ({context})"
    return _BY_STATUS.get(status or "", Qwen3ASRError)(message, status)
