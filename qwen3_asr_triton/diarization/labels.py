"""Speaker labels on a transcript: each word gets the speaker who talked over it, segments split at turns.

The diarizer answers "who spoke when" as speaker turns; the recogniser answers "what was said" as
segments and, with the forced aligner, word times. :func:`label_transcript` joins the two:

- a word's speaker is the one whose turns overlap the word the longest (the nearest turn when none
  overlaps it: a word the VAD took for silence);
- a segment whose words change speaker is split before the first word of each new speaker: its text
  at that word, its token ids where the decoded text reaches that word (the first piece keeps the
  language tag's tokens), its log-probabilities with the ids they belong to;
- a segment without word times (no aligner, or no text) is not split and takes the speaker who
  overlaps it the longest.

Speakers are renumbered 0, 1, ... in order of first appearance in the transcript.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from ..alignment import WordTime, locate_words
from ..output import ASR_TEXT_MARKER, parse_asr_output

# A speaker label where no turn is near (the diarizer found no speech at all); kept apart from real
# speakers and never renumbered.
NO_SPEAKER = -1


class Turn(Protocol):
    """One speaker turn: ``speaker`` talked from ``start`` to ``end`` (seconds from the audio's start)."""

    start: float
    end: float
    speaker: int


class Segment(Protocol):
    """The fields of a recognised segment (:class:`~..pipeline.SegmentResult`) labelling reads."""

    start: float
    end: float
    text: str
    token_ids: list[int]
    logprobs: list[float]


def speaker_of(start: float, end: float, turns: Sequence[Turn]) -> int:
    """The speaker whose turns overlap ``[start, end]`` the longest; the nearest turn's if none does.

    Returns :data:`NO_SPEAKER` when there are no turns.
    """
    overlap: dict[int, float] = {}
    for turn in turns:
        shared = min(end, turn.end) - max(start, turn.start)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if overlap:
        return max(overlap, key=lambda s: (overlap[s], -s))
    if not turns:
        return NO_SPEAKER
    middle = (start + end) / 2
    nearest = min(turns, key=lambda t: max(t.start - middle, middle - t.end, 0.0))
    return nearest.speaker


def _word_offsets(text: str, words: Sequence[WordTime]) -> list[int] | None:
    """Where each word starts in ``text`` (its leading punctuation included), or None when the words do
    not follow the text."""
    spans = locate_words(text, [w.word for w in words])
    return None if spans is None else [start for start, _, _ in spans]


def _token_cut(token_ids: list[int], char: int, transcript_of: Callable[[list[int]], str | None]) -> int:
    """The number of ids whose decoded transcript ends before ``char`` (the next id reaches into it).

    ``transcript_of(ids)`` is the parsed transcript of an id prefix, or None while the prefix has not
    reached the transcript yet (the language tag); the transcript's length grows with the prefix.
    """

    def reaches(k: int) -> bool:
        text = transcript_of(token_ids[:k])
        return text is not None and len(text) > char

    # The smallest k whose prefix reaches past `char`; ids before its last one end before the word.
    k = bisect.bisect_left(range(len(token_ids) + 1), True, key=reaches)
    return max(0, min(len(token_ids), k - 1))


def _split_segment(
    segment: Segment,
    words: list[WordTime],
    speakers: list[int],
    transcript_of: Callable[[list[int]], str | None],
) -> list[tuple[Segment, int]] | None:
    """``segment`` cut before each word whose speaker differs from the previous word's.

    None when the words cannot be found in the segment's text (then the segment is not split).
    """
    offsets = _word_offsets(segment.text, words)
    if offsets is None:
        return None
    starts = [0] + [i for i in range(1, len(words)) if speakers[i] != speakers[i - 1]]
    bounds = [*starts, len(words)]
    chars = [0] + [offsets[i] for i in starts[1:]] + [len(segment.text)]
    cuts = [0] + [_token_cut(segment.token_ids, c, transcript_of) for c in chars[1:-1]] + [len(segment.token_ids)]
    # Log-probabilities follow their ids; an end token's (one past the ids) stays with the last piece.
    logprob_cuts = list(cuts)
    logprob_cuts[-1] = max(len(segment.logprobs), cuts[-1])
    pieces = []
    for k, first in enumerate(starts):
        last = bounds[k + 1] - 1
        piece = replace(
            segment,
            start=segment.start if k == 0 else words[first].start,
            end=segment.end if k == len(starts) - 1 else words[last].end,
            text=segment.text[chars[k] : chars[k + 1]].strip(),
            token_ids=segment.token_ids[cuts[k] : cuts[k + 1]],
            logprobs=segment.logprobs[logprob_cuts[k] : logprob_cuts[k + 1]],
        )
        pieces.append((piece, speakers[first]))
    return pieces


def _words_by_segment(segments: Sequence[Segment], words: Sequence[WordTime]) -> list[list[int]]:
    """Indices of the words whose middle lies in each segment (segments are in time order, disjoint)."""
    starts = [s.start for s in segments]
    groups: list[list[int]] = [[] for _ in segments]
    for i, word in enumerate(words):
        middle = (word.start + word.end) / 2
        groups[max(0, bisect.bisect_right(starts, middle) - 1)].append(i)
    return groups


def _renumber(labels: list[int]) -> dict[int, int]:
    order: dict[int, int] = {NO_SPEAKER: NO_SPEAKER}
    for label in labels:
        if label not in order:
            order[label] = len(order) - 1
    return order


def label_transcript(
    segments: Sequence[Segment],
    words: Sequence[WordTime],
    turns: Sequence[Turn],
    transcript_of: Callable[[list[int]], str | None],
) -> tuple[list[tuple[Segment, int]], list[tuple[WordTime, int]]]:
    """Speaker-labelled segments (split at speaker changes) and words.

    Parameters
    ----------
    segments : sequence of Segment
        The transcript's segments in time order (:class:`~..pipeline.SegmentResult`).
    words : sequence of WordTime
        The transcript's word times (seconds from the audio's start); empty without an aligner.
    turns : sequence of Turn
        The diarizer's speaker turns.
    transcript_of : callable
        The parsed transcript of a prefix of a segment's token ids, None before the transcript starts.

    Returns
    -------
    segments : list of (Segment, int)
        Each piece of each segment with its speaker (0, 1, ... by first appearance; -1: no speaker).
    words : list of (WordTime, int)
        Each word with its speaker, numbered as the segments.
    """
    word_speakers = [speaker_of(w.start, w.end, turns) for w in words]
    pieces: list[tuple[Segment, int]] = []
    for segment, group in zip(segments, _words_by_segment(segments, words)):
        split = None
        if group:
            split = _split_segment(segment, [words[i] for i in group], [word_speakers[i] for i in group], transcript_of)
        if split is None:
            split = [(segment, speaker_of(segment.start, segment.end, turns))]
        pieces += split
    order = _renumber([s for _, s in pieces] + word_speakers)
    return (
        [(piece, order[s]) for piece, s in pieces],
        [(word, order[s]) for word, s in zip(words, word_speakers)],
    )


def transcript_parser(
    decode: Callable[[list[int]], str], forced_language: str | None
) -> Callable[[list[int]], str | None]:
    """``transcript_of`` for :func:`label_transcript`: a tokenizer's ``decode``, then :func:`parse_asr_output`.

    With a forced language the whole answer is transcript; otherwise the transcript starts after the
    ``<asr_text>`` tag.
    """

    def transcript_of(ids: list[int]) -> str | None:
        decoded = decode(ids)
        if forced_language is None and ASR_TEXT_MARKER not in decoded:
            return None
        return parse_asr_output(decoded, forced_language).text

    return transcript_of
