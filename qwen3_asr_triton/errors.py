"""Error types shared by the serving code, and the rule for quoting client input in messages.

``InputError`` marks a problem with what a client sent (bad audio, bad option);
Triton models turn it into an ``INVALID_ARG`` error for that one request.
``CapacityError`` is a valid request that does not fit now (``UNAVAILABLE``);
A request whose client went away is :class:`RequestCancelledError` (``CANCELLED``).
Anything else is an internal error.
"""

from __future__ import annotations

# Most characters of a client's value quoted back in an error: enough to recognise it, never so much that
# the error itself becomes a problem (gRPC refuses trailing metadata over 8 KiB; an echo doubles a big body).
EXCERPT_CHARS = 100
# Longest message any model sends: a bound even for exceptions whose text we do not control.
MAX_MESSAGE_CHARS = 600

# How Triton 2.51 words the failures that pass once its supervisor has restarted it; it sends them as
# INTERNAL or NOT_FOUND, and this project's models, gRPC guard and client library treat them as
# UNAVAILABLE (retry shortly):
# - a python model whose stub process died ("Stub process 'decoder_0_0' is not healthy.");
DEAD_WORKER_TEXT = "is not healthy"
# - a BLS call made while the server shuts down for the restart ("Error when running inference: Server
#   not ready");
SHUTTING_DOWN_TEXT = "Server not ready"
# - a model the repository holds but has not loaded yet, as while a restarted server starts
#   ("Request for unknown model: 'qwen3_asr' has no available versions"; an unknown one "is not found").
NOT_LOADED_TEXT = "has no available versions"
RESTARTING_TEXTS = (DEAD_WORKER_TEXT, SHUTTING_DOWN_TEXT, NOT_LOADED_TEXT)


def restarting(message: str) -> bool:
    """Whether Triton's error ``message`` is one of :data:`RESTARTING_TEXTS` (a failure that passes)."""
    return any(text in message for text in RESTARTING_TEXTS)


class InputError(ValueError):
    """The request itself is invalid; the message is safe to show to the client."""


class CapacityError(RuntimeError):
    """The request is valid but cannot be served within the configured limits."""


class RequestCancelledError(RuntimeError):
    """The client cancelled the request (or its deadline passed) before it finished."""


class DownstreamError(RuntimeError):
    """An internal error of a model called through BLS: its message names the model and what failed."""


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr`` of a client's value, cut to ``limit`` characters with the full length said.

    Examples
    --------
    >>> excerpt("abc")
    "'abc'"
    >>> excerpt("x" * 1000, limit=10)
    "'xxxxxxxxx... (1000 characters)"
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, (str, bytes)) else ""
    return text[: limit - 1] + "..." + size


def bounded_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters (every error a model sends passes through this)."""
    return message if len(message) <= limit else message[: limit - 3] + "..."
