"""The fields of an OpenAI transcription request, checked and turned into the client's options.

Unknown fields are ignored, as OpenAI does; known ones are validated here so
that every mistake is a 400 naming its ``param`` before Triton is called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from qwen3_asr_triton.client.options import TranscribeOptions

from .errors import ApiError, invalid
from .responses import DIARIZED_FORMAT, RESPONSE_FORMATS, STREAM_FORMATS

# The suffix of the served model's diarizing name ("qwen3-asr" -> "qwen3-asr-diarize"), as OpenAI
# names its diarizing model gpt-4o-transcribe-diarize.
DIARIZE_SUFFIX = "-diarize"
# Speaker-count hints, an extension of OpenAI's fields (it has none): form fields of these names.
SPEAKER_FIELDS = ("num_speakers", "min_speakers", "max_speakers")
# OpenAI's fields for speakers known from reference clips: not supported.
KNOWN_SPEAKER_FIELDS = ("known_speaker_names", "known_speaker_references")
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


def diarizing_model(served_model_name: str) -> str:
    """The served model's diarizing name: every response format then labels speakers."""
    return served_model_name + DIARIZE_SUFFIX


def check_model(fields: Mapping[str, list[str]], served_model_name: str) -> str:
    """The requested model: the served one or its diarizing name (:func:`diarizing_model`).

    400 without ``model``; 404 ``model_not_found`` (as OpenAI) for any other model.
    """
    model = _single(fields, "model")
    if model is None or not model.strip():
        raise invalid("you must provide a model parameter", param="model", code="missing_required_parameter")
    model = model.strip()
    if model not in (served_model_name, diarizing_model(served_model_name)):
        shown = model if len(model) <= 100 else model[:97] + "..."
        raise ApiError(
            404,
            f"The model '{shown}' does not exist; this server serves '{served_model_name}'",
            param="model",
            code="model_not_found",
        )
    return model


def _speaker_counts(fields: Mapping[str, list[str]]) -> dict[str, int]:
    """The optional speaker-count fields (this gateway's extension), as integers."""
    counts = {}
    for name in SPEAKER_FIELDS:
        value = _single(fields, name)
        if value is None or not value.strip():
            continue
        try:
            counts[name] = int(value)
        except ValueError:
            raise invalid(f"{name} must be an integer, got {value[:40]!r}", param=name) from None
    return counts


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
        ``include[]`` (no log probabilities), streaming a format other than json/text, streaming
        with diarization, known speakers, or bad speaker counts.
    """
    model = check_model(fields, served_model_name)

    response_format = (_single(fields, "response_format") or "json").strip() or "json"
    if response_format not in RESPONSE_FORMATS:
        raise invalid(
            f"response_format {response_format[:40]!r} is not supported; use one of {', '.join(RESPONSE_FORMATS)}",
            param="response_format",
        )
    diarize = response_format == DIARIZED_FORMAT or model == diarizing_model(served_model_name)
    for name in KNOWN_SPEAKER_FIELDS:
        if _array(fields, name):
            raise invalid(
                f"{name}[] is not supported: speakers are found and labelled A, B, ... without reference clips",
                param=name,
                code="unsupported_value",
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
    if stream and diarize:
        raise invalid("stream=true does not label speakers; drop stream or diarization", param="stream")
    counts = _speaker_counts(fields)
    if counts and not diarize:
        raise invalid(
            f"{next(iter(counts))} needs diarization: response_format 'diarized_json' or model"
            f" '{diarizing_model(served_model_name)}'",
            param=next(iter(counts)),
        )

    words = "word" in granularities
    try:
        options = TranscribeOptions(
            language=_single(fields, "language"), context=_single(fields, "prompt"), timestamps=words
        )
    except ValueError as exc:
        # TranscribeOptions names the language in its message; the prompt is any string.
        raise invalid(str(exc), param="language") from None
    try:
        options = replace(options, diarize=diarize, **counts)
    except ValueError as exc:
        raise invalid(str(exc), param=next(iter(counts), "model")) from None
    return TranscriptionParams(
        options=options,
        response_format=response_format,
        segments=not granularities or "segment" in granularities,
        words=words,
        stream=stream,
    )
