"""Turning generated text into (language, transcript), as the official code does.

The model writes ``language English<asr_text>the transcript``; ``language
None<asr_text>`` means it heard no speech. Before parsing, runs of a single
character or of a short pattern repeated more than ``threshold`` times (a
failure mode of greedy decoding) are collapsed to one occurrence, like the
official post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass

ASR_TEXT_MARKER = "<asr_text>"
LANGUAGE_PREFIX = "language "
# Official threshold: a unit repeated more than 20 times in a row is collapsed.
REPETITION_THRESHOLD = 20
# Longest repeated pattern (in characters) the official fix looks for.
MAX_PATTERN_CHARS = 20


def _collapse_char_runs(text: str, threshold: int) -> str:
    """Replace every run of one character longer than ``threshold`` by a single character."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        while j < n and text[j] == text[i]:
            j += 1
        out.append(text[i] if j - i > threshold else text[i:j])
        i = j
    return "".join(out)


def _find_repeated_pattern(text: str, threshold: int, max_len: int) -> tuple[int, int, int] | None:
    """First position with a pattern of <= ``max_len`` chars repeated ``threshold`` times.

    Returns ``(start, pattern_length, end_of_repeats)`` or None. Positions are
    scanned left to right and, at each, pattern lengths from short to long.
    """
    n = len(text)
    for i in range(n - 2 * threshold + 1):
        for k in range(1, max_len + 1):
            if i + k * threshold > n:
                break
            pattern = text[i : i + k]
            if all(text[i + r * k : i + (r + 1) * k] == pattern for r in range(1, threshold)):
                end = i + threshold * k
                while end + k <= n and text[end : end + k] == pattern:
                    end += k
                return i, k, end
    return None


def _collapse_pattern_runs(text: str, threshold: int, max_len: int) -> str:
    out: list[str] = []
    rest = text
    while len(rest) >= 2 * threshold:
        hit = _find_repeated_pattern(rest, threshold, max_len)
        if hit is None:
            break
        start, k, end = hit
        out.append(rest[: start + k])
        rest = rest[end:]
    out.append(rest)
    return "".join(out)


def fix_repetitions(text: str, threshold: int = REPETITION_THRESHOLD) -> str:
    """Collapse degenerate repetitions (characters first, then patterns up to 20 chars)."""
    return _collapse_pattern_runs(_collapse_char_runs(text, threshold), threshold, MAX_PATTERN_CHARS)


@dataclass(frozen=True)
class ParsedOutput:
    """Language name (None when not stated or no speech) and the transcript."""

    language: str | None
    text: str


def parse_asr_output(decoded: str, forced_language: str | None = None) -> ParsedOutput:
    """Parse the decoded generation (special tokens already removed).

    With ``forced_language`` the prompt already ended in ``<asr_text>``, so the
    whole output is transcript and the language is the forced one.
    """
    if decoded is None or not decoded.strip():
        return ParsedOutput(forced_language, "")
    text = decoded.strip()
    if "assistant\n" in text:
        text = text.split("assistant\n", 1)[1]
    text = fix_repetitions(text)
    if ASR_TEXT_MARKER not in text:
        return ParsedOutput(forced_language, text.strip())
    prefix, transcript = text.split(ASR_TEXT_MARKER, 1)
    prefix = prefix.strip()
    language: str | None = None
    if prefix.lower() != "language none":
        for line in prefix.splitlines():
            line = line.strip()
            if not line:
                continue
            language = (
                line[len(LANGUAGE_PREFIX) :].strip() or None if line.lower().startswith(LANGUAGE_PREFIX) else line
            )
            break
    return ParsedOutput(forced_language or language, transcript.strip())


def join_segment_texts(texts: list[str]) -> str:
    """Join per-segment transcripts: with a space between words of spaced scripts, none around CJK."""
    from .alignment import is_cjk_char  # local import keeps this module dependency-free

    out = ""
    for piece in (t.strip() for t in texts):
        if not piece:
            continue
        if out and not (is_cjk_char(out[-1]) or is_cjk_char(piece[0])):
            out += " "
        out += piece
    return out


def merge_languages(languages: list[str | None]) -> str:
    """Per-segment languages as one string, consecutive duplicates removed ("Chinese,English")."""
    merged: list[str] = []
    for lang in languages:
        if lang and (not merged or merged[-1] != lang):
            merged.append(lang)
    return ",".join(merged)


# Characters held back at the end of a partial transcript: whitespace (the final text is stripped, and
# a later token may not continue the word) and U+FFFD, which a byte-level BPE decode gives for a
# character whose remaining bytes are still to come.
_HELD_BACK = " \t\n\r\ufffd"


def partial_transcript(decoded: str, forced_language: str | None) -> str:
    """The transcript part of a generation still in progress ("" until it is known to be transcript).

    Without a forced language the model first writes ``language X<asr_text>``: nothing is transcript
    before the marker. Trailing whitespace and incomplete characters are held back.
    """
    text = decoded.lstrip()
    if "assistant\n" in text:
        text = text.split("assistant\n", 1)[1]
    if forced_language is None:
        if ASR_TEXT_MARKER not in text:
            return ""
        text = text.split(ASR_TEXT_MARKER, 1)[1]
    return text.strip().rstrip(_HELD_BACK)


class TranscriptDeltas:
    """Text deltas of the joined transcript while a request's segments are decoded concurrently.

    Segment ``k``'s text is shown once segments ``0..k-1`` are finished; its partial text comes from
    :func:`partial_transcript` and, when it finishes, its final (parsed) text replaces it. Deltas are
    only ever appended: when a later text does not extend what was sent (the repetition fix collapsed
    a run, a byte-level token changed the decoding), nothing more is sent until it does again. Once
    every segment has finished, the deltas join to ``join_segment_texts`` of the final texts (the
    request's ``TEXT``) unless such a rewrite happened.

    Parameters
    ----------
    segments : int
        Number of segments of the request.
    """

    def __init__(self, segments: int) -> None:
        self._partial = [""] * segments
        self._final: list[str | None] = [None] * segments
        self.sent = ""

    def _visible(self) -> str:
        shown: list[str] = []
        for partial, final in zip(self._partial, self._final):
            if final is None:
                shown.append(partial)
                break
            shown.append(final)
        return join_segment_texts(shown)

    def _delta(self) -> str:
        visible = self._visible()
        if len(visible) <= len(self.sent) or not visible.startswith(self.sent):
            return ""
        delta = visible[len(self.sent) :]
        self.sent = visible
        return delta

    def update(self, segment: int, partial: str) -> str:
        """Segment ``segment``'s partial transcript is now ``partial``; returns the text to send ("" if none)."""
        self._partial[segment] = partial
        return self._delta()

    def finish(self, segment: int, text: str) -> str:
        """Segment ``segment`` ended with transcript ``text``; returns the text to send ("" if none)."""
        self._final[segment] = text
        return self._delta()
