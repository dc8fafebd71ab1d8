"""Error types shared by the serving code.

``InputError`` marks a problem with what a client sent (bad audio, bad option);
Triton models turn it into an ``INVALID_ARG`` error for that one request.
Anything else is an internal error.
"""


class InputError(ValueError):
    """The request itself is invalid; the message is safe to show to the client."""


class CapacityError(RuntimeError):
    """The request is valid but cannot be served within the configured limits."""
