"""Exceptions raised by the client, independent of tritonclient's types.

Every failure of a call surfaces as a :class:`Qwen3ASRError` carrying the gRPC
status name (``"INVALID_ARGUMENT"``, ``"UNAVAILABLE"``...), so callers can
branch on the subclass or on ``status`` without importing tritonclient.
"""

from __future__ import annotations

from tritonclient.utils import InferenceServerException

from qwen3_asr_triton.errors import restarting


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


# How the streaming model words its internal and capacity errors (see stream_status).
_INTERNAL_PREFIX = "internal error"
_CAPACITY_TEXT = "too many concurrent streams"

_BY_STATUS: dict[str, type[Qwen3ASRError]] = {
    "INVALID_ARGUMENT": InvalidRequestError,
    "UNAVAILABLE": ServerUnavailableError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
}


def status_name(exc: InferenceServerException) -> str | None:
    """``"UNAVAILABLE"`` for tritonclient's ``"StatusCode.UNAVAILABLE"``; None when it has no status.

    Triton's ``INTERNAL`` and ``NOT_FOUND`` errors of a server being restarted (a dead python worker, the
    shutdown, models not loaded yet: :func:`~qwen3_asr_triton.errors.restarting`) count as
    ``UNAVAILABLE``: they pass, and a retry gets through.
    """
    status = exc.status()
    if not status:
        return None
    name = str(status).rsplit(".", 1)[-1]
    if name in ("INTERNAL", "NOT_FOUND") and restarting(exc.message() or ""):
        return "UNAVAILABLE"
    return name


def from_status(status: str | None, message: str, context: str = "") -> Qwen3ASRError:
    """The client's exception for a gRPC status name and message."""
    if context:
        message = f"{message} ({context})"
    return _BY_STATUS.get(status or "", Qwen3ASRError)(message, status)


def from_triton(exc: InferenceServerException, context: str = "") -> Qwen3ASRError:
    """The client's exception for a tritonclient one (chain it with ``raise ... from exc``)."""
    return from_status(status_name(exc), exc.message() or str(exc), context)


def stream_status(message: str) -> str:
    """The status of an error answered on a gRPC stream, inferred from its message.

    Triton's stream responses carry only the error's text, not its code. The
    streaming model words its errors so that the code can be told back:
    ``"internal error: ..."`` for its own failures, ``"too many concurrent
    streams ..."`` when it holds its maximum of streams; everything else (bad
    audio or options, an unknown stream or model, a missing START) is a problem
    with the request.
    """
    if message.startswith(_INTERNAL_PREFIX):
        return "INTERNAL"
    if _CAPACITY_TEXT in message:
        return "UNAVAILABLE"
    return "INVALID_ARGUMENT"


def from_stream_error(exc: InferenceServerException, context: str = "") -> Qwen3ASRError:
    """The client's exception for an error on a gRPC stream.

    A failure of the stream itself (server unreachable, cancelled) keeps its gRPC
    status; the error of one request on the stream has none, so it is inferred
    by :func:`stream_status`.
    """
    message = exc.message() or str(exc)
    return from_status(status_name(exc) or stream_status(message), message, context)
