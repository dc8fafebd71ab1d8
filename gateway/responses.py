"""Rendering a :class:`Transcription` as OpenAI's response formats (pure functions, no web framework).

``json``, ``verbose_json`` and ``diarized_json`` give dictionaries (the application serialises them),
``text``, ``srt`` and ``vtt`` give the body text; subtitles come from the same
:mod:`qwen3_asr_triton.client.subtitles` code as the ``qwen3-asr`` CLI's.
Server-sent events of a streamed transcription are rendered here too.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from qwen3_asr_triton.client.subtitles import build_cues, to_srt, to_vtt
from qwen3_asr_triton.client.types import Segment, Transcription

# OpenAI's response_format values this gateway serves (diarized_json needs the deployment's diarizer).
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
# The format that always asks for speaker labels (OpenAI's, for its diarizing model).
DIARIZED_FORMAT = "diarized_json"
# Formats that can be streamed: OpenAI streams transcript text only.
STREAM_FORMATS = ("json", "text")
# Media type of each format's body.
MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "diarized_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "text/plain; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
# The label of a segment where the diarizer found no speaker (OpenAI's labels are letters).
UNKNOWN_SPEAKER = "unknown"
# Decoding is greedy: the temperature reported with every segment.
TEMPERATURE = 0.0


def usage(result: Transcription) -> dict[str, Any]:
    """OpenAI's ``UsageDuration``: the seconds of audio the server decoded."""
    return {"type": "duration", "seconds": result.audio_seconds}


def openai_language(language: str | None) -> str | None:
    """The model's language name as OpenAI writes it: "English" -> "english".

    Segments in different languages give "chinese,english"; None (no speech heard) stays None.
    """
    if not language:
        return None
    return ",".join(part.strip().lower() for part in language.split(",") if part.strip())


def compression_ratio(text: str) -> float:
    """Whisper's compression ratio: UTF-8 bytes of ``text`` over their zlib-compressed size.

    High values (over 2.4 by OpenAI's rule of thumb) flag repetitive, looping output.
    """
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def render_json(result: Transcription) -> dict[str, Any]:
    """``response_format=json``: the text and the audio duration as usage."""
    return {"text": result.text, "usage": usage(result)}


def render_text(result: Transcription) -> str:
    """``response_format=text``: the transcript and a newline."""
    return result.text + "\n"


def render_srt(result: Transcription) -> str:
    """``response_format=srt``: the CLI's SubRip subtitles (word-timed when the result has words)."""
    return to_srt(build_cues(result))


def render_vtt(result: Transcription) -> str:
    """``response_format=vtt``: the CLI's WebVTT subtitles (word-timed when the result has words)."""
    return to_vtt(build_cues(result))


def speaker_label(speaker: int | None) -> str:
    """A speaker as OpenAI labels unnamed speakers: capital letters in order (0 -> "A", 26 -> "AA");
    "unknown" where the diarizer found no speaker."""
    if speaker is None:
        return UNKNOWN_SPEAKER
    label = ""
    number = speaker + 1
    while number:
        number, rest = divmod(number - 1, 26)
        label = chr(ord("A") + rest) + label
    return label


def render_segment(index: int, segment: Segment) -> dict[str, Any]:
    """One entry of verbose_json's ``segments``.

    ``tokens`` and ``avg_logprob`` are the server's (SEGMENT_TOKENS, SEGMENT_LOGPROB; empty and
    null when it did not report them); ``no_speech_prob`` is always null because the model has no
    such estimate, and ``seek`` 0 because segments are not decoded window by window as Whisper's.
    A diarized segment also has ``speaker`` (:func:`speaker_label`).
    """
    avg_logprob = segment.avg_logprob
    extra = {} if segment.speaker is None else {"speaker": speaker_label(segment.speaker)}
    return {
        "id": index,
        "seek": 0,
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": [int(t) for t in segment.token_ids],
        "temperature": TEMPERATURE,
        "avg_logprob": None if avg_logprob is None else float(avg_logprob),
        "compression_ratio": compression_ratio(segment.text),
        "no_speech_prob": None,
        **extra,
    }


def render_diarized_json(result: Transcription) -> dict[str, Any]:
    """``response_format=diarized_json``: OpenAI's ``TranscriptionDiarized``.

    One entry per segment, split where the speaker changes, each with its speaker's label.
    """
    return {
        "task": "transcribe",
        "duration": result.audio_seconds,
        "text": result.text,
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{index}",
                "start": segment.start,
                "end": segment.end,
                "text": segment.text,
                "speaker": speaker_label(segment.speaker),
            }
            for index, segment in enumerate(s for s in result.segments if s.text)
        ],
        "usage": usage(result),
    }


def render_verbose_json(result: Transcription, segments: bool = True, words: bool = False) -> dict[str, Any]:
    """``response_format=verbose_json``.

    Parameters
    ----------
    result : Transcription
        What the server recognised.
    segments : bool
        Include ``segments`` (OpenAI's ``segment`` granularity, its default).
    words : bool
        Include ``words`` (the ``word`` granularity; the result must carry word timestamps).
    """
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": openai_language(result.language),
        "duration": result.audio_seconds,
        "text": result.text,
    }
    if segments:
        body["segments"] = [render_segment(i, s) for i, s in enumerate(result.segments)]
    if words:
        body["words"] = [{"word": w.text, "start": w.start, "end": w.end} for w in result.words]
    body["usage"] = usage(result)
    return body


def render(result: Transcription, response_format: str, segments: bool = True, words: bool = False) -> str:
    """The response body of ``result`` in ``response_format`` (JSON formats serialised, UTF-8 kept)."""
    if response_format == "json":
        return json.dumps(render_json(result), ensure_ascii=False)
    if response_format == "verbose_json":
        return json.dumps(render_verbose_json(result, segments, words), ensure_ascii=False)
    if response_format == DIARIZED_FORMAT:
        return json.dumps(render_diarized_json(result), ensure_ascii=False)
    if response_format == "text":
        return render_text(result)
    if response_format == "srt":
        return render_srt(result)
    if response_format == "vtt":
        return render_vtt(result)
    raise ValueError(f"unknown response_format {response_format!r}; choose one of {', '.join(RESPONSE_FORMATS)}")


# ----------------------------------------------------------------------------- server-sent events
def sse(data: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``data`` as one line of JSON."""
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


def delta_event(text: str) -> bytes:
    """``transcript.text.delta``: text the decoder added."""
    return sse({"type": "transcript.text.delta", "delta": text})


def done_event(result: Transcription) -> bytes:
    """``transcript.text.done``: the whole transcript and its usage (audio seconds, as for json)."""
    return sse({"type": "transcript.text.done", "text": result.text, "usage": usage(result)})


def error_event(body: dict[str, Any]) -> bytes:
    """An error after the stream began: ``{"error": {...}}``, which OpenAI's SDK raises as an APIError."""
    return sse(body)
