"""Rendering a transcription as txt, json, srt or vtt."""

from __future__ import annotations

import json

from qwen3_asr_triton.output import join_segment_texts

from .subtitles import SubtitleLimits, build_cues, to_srt, to_vtt
from .types import Transcription, speaker_name

FORMATS = ("txt", "json", "srt", "vtt")
EXTENSIONS = {"txt": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}


def to_json(result: Transcription, source: str | None = None, indent: int | None = 2) -> str:
    """The result as a JSON object (with ``"file"`` first when ``source`` is given); no trailing newline."""
    data = {"file": source} if source is not None else {}
    data.update(result.to_dict())
    return json.dumps(data, ensure_ascii=False, indent=indent)


def speaker_lines(result: Transcription) -> str:
    """A diarized transcript as text: one ``Speaker N: ...`` line per run of one speaker's segments."""
    runs: list[tuple[int | None, list[str]]] = []
    for segment in result.segments:
        if not segment.text:
            continue
        if runs and runs[-1][0] == segment.speaker:
            runs[-1][1].append(segment.text)
        else:
            runs.append((segment.speaker, [segment.text]))
    lines = [
        (f"{speaker_name(speaker)}: " if speaker is not None else "") + join_segment_texts(texts)
        for speaker, texts in runs
    ]
    return "".join(line + "\n" for line in lines)


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
        otherwise segment times spread over the words. A diarized result names its speakers:
        ``Speaker N:`` lines in txt, labelled cues in srt and vtt.
    source : str, optional
        Input file name, recorded in JSON output.
    indent : int or None
        JSON indentation; None for one line (JSON Lines).
    limits : SubtitleLimits, optional
        Cue layout limits for srt and vtt.
    """
    if fmt == "txt":
        return speaker_lines(result) if any(s.speaker is not None for s in result.segments) else result.text + "\n"
    if fmt == "json":
        return to_json(result, source, indent) + "\n"
    if fmt == "srt":
        return to_srt(build_cues(result, limits))
    if fmt == "vtt":
        return to_vtt(build_cues(result, limits))
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
