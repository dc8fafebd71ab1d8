"""Rendering a transcription as txt, json, srt or vtt."""

from __future__ import annotations

import json

from .subtitles import SubtitleLimits, build_cues, to_srt, to_vtt
from .types import Transcription

FORMATS = ("txt", "json", "srt", "vtt")
EXTENSIONS = {"txt": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}


def to_json(result: Transcription, source: str | None = None, indent: int | None = 2) -> str:
    """The result as a JSON object (with ``"file"`` first when ``source`` is given); no trailing newline."""
    data = {"file": source} if source is not None else {}
    data.update(result.to_dict())
    return json.dumps(data, ensure_ascii=False, indent=indent)


def render(
    result: Transcription,
    fmt: str,
    source: str | None = None,
    indent: int | None = 2,
    limits: SubtitleLimits | None = None,
) -> str:
    """Text of ``result`` in format ``fmt``, ending with a newline.

    Parameters
    ----------
    result : Transcription
        What to render.
    fmt : {"txt", "json", "srt", "vtt"}
        Output format. Subtitles use word timestamps when the result has them,
        otherwise segment times spread over the words.
    source : str, optional
        Input file name, recorded in JSON output.
    indent : int or None
        JSON indentation; None for one line (JSON Lines).
    limits : SubtitleLimits, optional
        Cue layout limits for srt and vtt.
    """
    if fmt == "txt":
        return result.text + "\n"
    if fmt == "json":
        return to_json(result, source, indent) + "\n"
    if fmt == "srt":
        return to_srt(build_cues(result, limits))
    if fmt == "vtt":
        return to_vtt(build_cues(result, limits))
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
