"""Subtitle cues (SRT, WebVTT) from a transcription.

With word timestamps, each word is located back in the transcript so the cue
keeps the punctuation and spacing the aligner dropped, and words are packed
into cues greedily. A new cue starts when

- the silence before the next word exceeds ``pause_seconds``,
- the previous word ends a sentence,
- the cue would last longer than ``max_cue_seconds``, or
- its text would not fit in ``max_lines`` lines of ``max_line_width`` columns.

With speaker labels (a diarized transcription) a cue never holds two speakers: the speaker's name
leads its cue, as ``[Speaker 1]`` in SRT and a ``<v Speaker 1>`` voice span in WebVTT.

A cue cut for length or duration ends, when it can, after its last clause
mark (comma, semicolon, colon) in its second half, so the next cue starts a
phrase. Lines inside a cue are balanced (the split that makes the longest line
shortest). Without word timestamps the segments' times are spread over their
words in proportion to their width, which is coarse but keeps long segments
readable. Cue times are then made strictly increasing and non-overlapping,
stretched to ``min_cue_seconds`` where the next cue leaves room, and capped
at ``max_cue_seconds``.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass

from qwen3_asr_triton.alignment import is_cjk_char, is_kept_char, locate_words

from .types import Segment, Transcription, Word, speaker_name

logger = logging.getLogger(__name__)

# 42 columns per line and 2 lines per cue: the common limits of broadcast and
# streaming style guides for Latin scripts (BBC/EBU-TT and Netflix use 37-42).
# Full-width characters (CJK) occupy two columns, so such lines hold 21
# characters, near the 16-20 those guides allow for Chinese and Japanese.
MAX_LINE_WIDTH = 42
MAX_LINES = 2
# 7 s: the longest a two-line cue should stay on screen (Netflix's maximum);
# reading speed is ~17 characters per second, so 84 characters need ~5 s.
MAX_CUE_SECONDS = 7.0
# 5/6 s (20 frames at 24 fps): the shortest cue viewers can read (Netflix's minimum).
MIN_CUE_SECONDS = 5 / 6
# Pauses inside a phrase are mostly under 0.5 s; a silence of 0.8 s marks the
# end of a phrase or a change of speaker, where a cue should end.
PAUSE_SECONDS = 0.8
# Characters that end a sentence, and closing marks that may follow them.
SENTENCE_END = frozenset(".!?…。！？")
CLOSING_MARKS = "\"')]}»”’」』"
# Characters that end a clause: a full cue is preferably cut after one.
CLAUSE_END = frozenset(",;:，、；：")


@dataclass(frozen=True)
class SubtitleLimits:
    """Layout and timing limits for cues (defaults: see the module constants)."""

    max_line_width: int = MAX_LINE_WIDTH
    max_lines: int = MAX_LINES
    max_cue_seconds: float = MAX_CUE_SECONDS
    min_cue_seconds: float = MIN_CUE_SECONDS
    pause_seconds: float = PAUSE_SECONDS

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_lines"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_cue_seconds", "min_cue_seconds", "pause_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 3600:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.min_cue_seconds > self.max_cue_seconds:
            raise ValueError("min_cue_seconds must not exceed max_cue_seconds")


@dataclass(frozen=True)
class Cue:
    """One subtitle: times in seconds (millisecond precision), its lines and who speaks (None: not diarized)."""

    start: float
    end: float
    lines: tuple[str, ...]
    speaker: int | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class _Piece:
    """A timed unit of text, the separator that precedes it in the transcript ("" or " ") and its speaker."""

    text: str
    sep: str
    start: float
    end: float
    speaker: int | None = None


def display_width(text: str) -> int:
    """Columns ``text`` occupies on screen: full-width characters count 2, combining marks 0."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


# ----------------------------------------------------------------------------- pieces
def _locate_words(text: str, words: list[str]) -> list[tuple[int, int, bool]] | None:
    """:func:`~qwen3_asr_triton.alignment.locate_words`, the last span stretched over trailing punctuation."""
    spans = locate_words(text, words)
    if not spans:
        return spans
    pos = spans[-1][1]
    tail = text[pos:].strip()
    if tail and not any(is_kept_char(c) for c in tail):
        start, _, space = spans[-1]
        spans[-1] = (start, len(text.rstrip()), space)
    return spans


def _joiner(left: str, right: str) -> str:
    """Separator between two words when the transcript cannot tell: none between CJK characters."""
    return "" if left and right and is_cjk_char(left[-1]) and is_cjk_char(right[0]) else " "


def _word_pieces(text: str, words: tuple[Word, ...]) -> list[_Piece]:
    spans = _locate_words(text, [w.text for w in words])
    if spans is None:
        logger.debug("words do not follow the transcript; subtitles use the bare words")
        pieces: list[_Piece] = []
        for word in words:
            sep = _joiner(pieces[-1].text, word.text) if pieces else ""
            pieces.append(_Piece(word.text, sep, word.start, word.end, word.speaker))
        return pieces
    return [
        _Piece(" ".join(text[a:b].split()), " " if space else "", w.start, w.end, w.speaker)
        for w, (a, b, space) in zip(words, spans)
    ]


def _tokens(text: str) -> list[tuple[str, str]]:
    """``(token, separator)`` pairs: whitespace-separated words, each CJK character on its own."""
    out: list[tuple[str, str]] = []
    for chunk in text.split():
        sep = " "
        run = ""
        for char in chunk:
            if is_cjk_char(char):
                if run:
                    out.append((run, sep))
                    sep = ""
                run = ""
                out.append((char, sep))
                sep = ""
            else:
                run += char
        if run:
            out.append((run, sep))
    return out


def _segment_pieces(segments: tuple[Segment, ...]) -> list[_Piece]:
    """Pieces timed by spreading each segment's time over its tokens by width."""
    pieces: list[_Piece] = []
    for segment in segments:
        tokens = _tokens(segment.text)
        total = sum(display_width(t) for t, _ in tokens)
        if not total:
            continue
        span = max(0.0, segment.end - segment.start)
        done = 0
        for i, (token, sep) in enumerate(tokens):
            if i == 0 and pieces:
                sep = _joiner(pieces[-1].text, token)
            width = display_width(token)
            start = segment.start + span * done / total
            done += width
            pieces.append(_Piece(token, sep, start, segment.start + span * done / total, segment.speaker))
    return pieces


def _split_wide(piece: _Piece, max_width: int) -> list[_Piece]:
    """Cut a piece wider than a line (a long URL, an unspaced script) into line-sized chunks."""
    total = display_width(piece.text)
    if total <= max_width:
        return [piece]
    chunks: list[str] = []
    current, width = "", 0
    for char in piece.text:
        w = display_width(char)
        if current and width + w > max_width:
            chunks.append(current)
            current, width = "", 0
        current += char
        width += w
    chunks.append(current)
    out, done = [], 0
    span = piece.end - piece.start
    for i, chunk in enumerate(chunks):
        start = piece.start + span * done / total
        done += display_width(chunk)
        out.append(_Piece(chunk, piece.sep if i == 0 else "", start, piece.start + span * done / total))
    return out


# ----------------------------------------------------------------------------- layout
def _line_width(pieces: list[_Piece]) -> int:
    return sum(display_width(p.text) + (display_width(p.sep) if i else 0) for i, p in enumerate(pieces))


def _lines_needed(pieces: list[_Piece], max_width: int) -> int:
    """Fewest lines holding ``pieces`` in order (greedy filling is optimal for this)."""
    lines, width = 1, 0
    for piece in pieces:
        w = display_width(piece.text)
        if width == 0:
            width = w
        elif width + display_width(piece.sep) + w <= max_width:
            width += display_width(piece.sep) + w
        else:
            lines, width = lines + 1, w
    return lines


def _balanced_lines(pieces: list[_Piece], count: int) -> list[list[_Piece]]:
    """Split into ``count`` lines minimising the widest; ties keep the top line shorter."""
    n = len(pieces)
    count = min(count, n)
    # best[j][i]: (widest line, split point) for the first i pieces on j lines.
    best: list[dict[int, tuple[int, int]]] = [{0: (0, 0)}]
    for j in range(1, count + 1):
        row: dict[int, tuple[int, int]] = {}
        for i in range(j, n + 1):
            for m in range(j - 1, i):
                if m not in best[j - 1]:
                    continue
                widest = max(best[j - 1][m][0], _line_width(pieces[m:i]))
                if i not in row or widest < row[i][0]:
                    row[i] = (widest, m)
        best.append(row)
    lines: list[list[_Piece]] = []
    end = n
    for j in range(count, 0, -1):
        start = best[j][end][1]
        lines.append(pieces[start:end])
        end = start
    return lines[::-1]


def _render_line(pieces: list[_Piece]) -> str:
    return "".join((p.sep if i else "") + p.text for i, p in enumerate(pieces))


def _ends_sentence(text: str) -> bool:
    return text.rstrip(CLOSING_MARKS)[-1:] in SENTENCE_END


def _clause_cut(pieces: list[_Piece]) -> int:
    """Index after the last clause mark ("," ";" ":") in the second half of ``pieces``, or 0."""
    for i in range(len(pieces) - 1, len(pieces) // 2 - 1, -1):
        if i > 0 and pieces[i - 1].text.rstrip(CLOSING_MARKS)[-1:] in CLAUSE_END:
            return i
    return 0


def _group(pieces: list[_Piece], limits: SubtitleLimits) -> list[list[_Piece]]:
    def overflows(group: list[_Piece]) -> bool:
        return (
            group[-1].end - group[0].start > limits.max_cue_seconds
            or _lines_needed(group, limits.max_line_width) > limits.max_lines
        )

    groups: list[list[_Piece]] = []
    current: list[_Piece] = []
    for piece in pieces:
        if current and (
            piece.start - current[-1].end > limits.pause_seconds
            or _ends_sentence(current[-1].text)
            or piece.speaker != current[-1].speaker
        ):
            groups.append(current)
            current = []
        elif current and overflows([*current, piece]):
            # A full cue ends at its last clause boundary when there is one late enough,
            # so that the next cue starts with a phrase rather than an orphaned word.
            cut = _clause_cut(current)
            if cut and not overflows([*current[cut:], piece]):
                groups.append(current[:cut])
                current = current[cut:]
            else:
                groups.append(current)
                current = []
        current.append(piece)
    if current:
        groups.append(current)
    return groups


def _timings(groups: list[list[_Piece]], limits: SubtitleLimits) -> list[tuple[int, int]]:
    """Cue times in whole milliseconds: increasing, non-overlapping, at least 1 ms long."""
    raw = [(round(g[0].start * 1000), round(max(p.end for p in g) * 1000)) for g in groups]
    min_ms, max_ms = round(limits.min_cue_seconds * 1000), round(limits.max_cue_seconds * 1000)
    out: list[tuple[int, int]] = []
    prev_end = 0
    for i, (start, end) in enumerate(raw):
        start = max(start, prev_end)
        end = min(max(end, start + min_ms), start + max_ms)
        if i + 1 < len(raw) and raw[i + 1][0] > start:
            end = min(end, raw[i + 1][0])
        end = max(end, start + 1)
        out.append((start, end))
        prev_end = end
    return out


def build_cues(result: Transcription, limits: SubtitleLimits | None = None) -> list[Cue]:
    """Subtitle cues for ``result``: from its words when it has them, else from its segments.

    Parameters
    ----------
    result : Transcription
        A transcription, ideally requested with timestamps.
    limits : SubtitleLimits, optional
        Line, cue and pause limits.

    Returns
    -------
    list of Cue
        Ordered, non-overlapping cues; empty when nothing was recognised.
    """
    limits = limits or SubtitleLimits()
    pieces = _word_pieces(result.text, result.words) if result.words else _segment_pieces(result.segments)
    pieces = [chunk for piece in pieces for chunk in _split_wide(piece, limits.max_line_width)]
    groups = _group(pieces, limits)
    cues = []
    for group, (start, end) in zip(groups, _timings(groups, limits)):
        count = _lines_needed(group, limits.max_line_width)
        lines = tuple(_render_line(line) for line in _balanced_lines(group, count))
        cues.append(Cue(start / 1000, end / 1000, lines, group[0].speaker))
    return cues


# ----------------------------------------------------------------------------- writers
def _clock(seconds: float, decimal: str) -> str:
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def to_srt(cues: list[Cue]) -> str:
    """SubRip text: numbered cues, ``HH:MM:SS,mmm`` times, a blank line after each."""
    blocks = []
    for index, cue in enumerate(cues, 1):
        # SRT has no escaping; an arrow inside text could be taken for a timing line.
        lines = "\n".join(line.replace("-->", "->") for line in cue.lines)
        if cue.speaker is not None:
            lines = f"[{speaker_name(cue.speaker)}] {lines}"
        blocks.append(f"{index}\n{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}\n{lines}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(cues: list[Cue]) -> str:
    """WebVTT text: the ``WEBVTT`` header, then cues with ``HH:MM:SS.mmm`` times and escaped text."""
    blocks = ["WEBVTT\n"]
    for cue in cues:
        lines = "\n".join(_vtt_escape(line) for line in cue.lines)
        if cue.speaker is not None:
            lines = f"<v {speaker_name(cue.speaker)}>{lines}"
        blocks.append(f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}\n{lines}\n")
    return "\n".join(blocks)
