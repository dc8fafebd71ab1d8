"""Bearer-token check of the ``/v1`` routes (OpenAI's ``Authorization: Bearer <key>``)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from .errors import ApiError

# Asks the client for a bearer token (RFC 6750).
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="qwen3-asr"'}


def check_api_key(headers: Mapping[str, str], api_key: str | None) -> None:
    """Nothing when no key is configured or the request carries it; 401 otherwise.

    The comparison takes the same time wherever the keys differ (no timing oracle),
    and the presented key is never echoed back or logged.
    """
    if api_key is None:
        return
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "You didn't provide an API key: send it as 'Authorization: Bearer <key>'",
            code="missing_api_key",
            headers=_CHALLENGE,
        )
    if not hmac.compare_digest(token.strip().encode("utf-8", "replace"), api_key.encode("utf-8")):
        raise ApiError(401, "Incorrect API key provided", code="invalid_api_key", headers=_CHALLENGE)
