"""The fields of an OpenAI transcription request, checked and turned into the client's options.

Unknown fields are ignored, as OpenAI does; known ones are validated here so
that every mistake is a 400 naming its ``param`` before Triton is called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from qwen3_asr_triton.client.options import TranscribeOptions

from .errors import ApiError, invalid
from .responses import RESPONSE_FORMATS, STREAM_FORMATS

# OpenAI's timestamp granularities.
GRANULARITIES = ("word", "segment")
# Spellings of booleans in form fields ("true" is what OpenAI's SDKs send).
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0", ""})


@dataclass(frozen=True)
class TranscriptionParams:
    """A validated transcription request.

    Attributes
    ----------
    options : TranscribeOptions
        What to ask of Triton (language, context, word timestamps).
    response_format : str
        One of :data:`~.responses.RESPONSE_FORMATS`.
    segments, words : bool
        verbose_json's granularities: include ``segments`` / ``words``.
    stream : bool
        Answer with server-sent events.
    """

    options: TranscribeOptions
    response_format: str = "json"
    segments: bool = True
    words: bool = False
    stream: bool = False


def _single(fields: Mapping[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise invalid(f"'{name}' was given {len(values)} times; give it once", param=name)
    return values[0]


def _array(fields: Mapping[str, list[str]], name: str) -> list[str]:
    """Values of an array field, sent as ``name[]`` (OpenAI's SDKs) or ``name`` (by hand)."""
    return [*fields.get(f"{name}[]", []), *fields.get(name, [])]


def check_model(fields: Mapping[str, list[str]], served_model_name: str) -> None:
    """400 without ``model``; 404 ``model_not_found`` (as OpenAI) for any other model than the served one."""
    model = _single(fields, "model")
    if model is None or not model.strip():
        raise invalid("you must provide a model parameter", param="model", code="missing_required_parameter")
    if model.strip() != served_model_name:
        shown = model if len(model) <= 100 else model[:97] + "..."
        raise ApiError(
            404,
            f"The model '{shown}' does not exist; this server serves '{served_model_name}'",
            param="model",
            code="model_not_found",
        )


def _temperature(value: str | None) -> None:
    if value is None or not value.strip():
        return
    try:
        temperature = float(value)
    except ValueError:
        raise invalid(f"temperature must be a number, got {value[:40]!r}", param="temperature") from None
    if not math.isfinite(temperature) or temperature != 0.0:
        raise invalid(
            f"temperature {value[:40]} is not supported: decoding is greedy (temperature 0); send 0 or omit it",
            param="temperature",
            code="unsupported_value",
        )


def _stream(value: str | None) -> bool:
    if value is None:
        return False
    key = value.strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise invalid(f"stream must be true or false, got {value[:40]!r}", param="stream")


def parse_transcription_params(fields: Mapping[str, list[str]], served_model_name: str) -> TranscriptionParams:
    """Validate the form fields of ``POST /v1/audio/transcriptions`` (the file aside).

    Raises
    ------
    ApiError
        404 for another model; 400 for a missing model, an unknown language or response_format,
        a granularity other than word/segment or without verbose_json, a temperature other than 0,
        ``include[]`` (no log probabilities), or streaming a format other than json/text.
    """
    check_model(fields, served_model_name)

    response_format = (_single(fields, "response_format") or "json").strip() or "json"
    if response_format not in RESPONSE_FORMATS:
        raise invalid(
            f"response_format {response_format[:40]!r} is not supported; use one of {', '.join(RESPONSE_FORMATS)}",
            param="response_format",
        )

    granularities = [g.strip() for g in _array(fields, "timestamp_granularities")]
    for value in granularities:
        if value not in GRANULARITIES:
            raise invalid(
                f"timestamp_granularities[] must be 'word' or 'segment', got {value[:40]!r}",
                param="timestamp_granularities",
            )
    if granularities and response_format != "verbose_json":
        raise invalid("timestamp_granularities[] needs response_format 'verbose_json'", param="timestamp_granularities")

    include = _array(fields, "include")
    if include:
        raise invalid(
            f"include[] {include[0][:40]!r} is not supported: the model reports no per-token log probabilities",
            param="include",
            code="unsupported_value",
        )

    _temperature(_single(fields, "temperature"))

    stream = _stream(_single(fields, "stream"))
    if stream and response_format not in STREAM_FORMATS:
        raise invalid(
            f"stream=true works with response_format json or text, not {response_format!r}",
            param="stream",
            code="unsupported_value",
        )

    words = "word" in granularities
    try:
        options = TranscribeOptions(
            language=_single(fields, "language"), context=_single(fields, "prompt"), timestamps=words
        )
    except ValueError as exc:
        # TranscribeOptions names the language in its message; the prompt is any string.
        raise invalid(str(exc), param="language") from None
    return TranscriptionParams(
        options=options,
        response_format=response_format,
        segments=not granularities or "segment" in granularities,
        words=words,
        stream=stream,
    )
