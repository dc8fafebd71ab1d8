"""Forced-alignment text handling and timestamp post-processing.

- :func:`split_words` turns a transcript into the units the aligner times:
  each CJK ideograph alone, otherwise whitespace-separated words reduced to
  letters, digits and apostrophes (Japanese and Korean use the ``nagisa`` /
  ``soynlp`` segmenters when installed, as the official code does).
- :func:`fix_timestamps` makes the predicted boundaries monotonic: the longest
  non-decreasing subsequence is kept and the outliers are snapped (blocks of
  one or two) or linearly interpolated (longer blocks) between kept neighbours.
- :func:`word_times` pairs the fixed boundaries with the words, in seconds.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from .errors import InputError

# Unicode blocks of CJK ideographs (URO, Ext A-E, compatibility ideographs and supplement).
_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
# Outlier blocks up to this many values are snapped to a neighbour, longer ones interpolated.
SNAP_BLOCK_MAX = 2


def is_cjk_char(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def is_kept_char(char: str) -> bool:
    """Letters, digits, apostrophes and CJK ideographs survive; punctuation does not."""
    if char == "'":
        return True
    category = unicodedata.category(char)
    return category[0] in ("L", "N") or is_cjk_char(char)


def locate_words(text: str, words: list[str]) -> list[tuple[int, int, bool]] | None:
    """Span of each aligned word in ``text``, with the punctuation around it.

    Returns ``(start, end, space_before)`` per word, or None when the words do not follow the text
    (an aligned word holds only kept characters, :func:`is_kept_char`). A word's span starts after the
    previous one and its spaces (leading punctuation such as "¿" or "(" joins it) and extends over the
    punctuation that follows it up to the next space.
    """
    n = len(text)
    pos = 0
    spans: list[tuple[int, int, bool]] = []
    for word in words:
        start = pos
        while start < n and text[start].isspace():
            start += 1
        i = start
        for char in word:
            while i < n and text[i] != char:
                if is_kept_char(text[i]):
                    return None
                i += 1
            if i == n:
                return None
            i += 1
        while i < n and not text[i].isspace() and not is_kept_char(text[i]):
            i += 1
        spans.append((start, i, start > pos))
        pos = i
    return spans


def _clean(tokens: list[str]) -> list[str]:
    cleaned = ("".join(c for c in tok if is_kept_char(c)) for tok in tokens)
    return [tok for tok in cleaned if tok]


def split_words(text: str, language: str | None = None) -> list[str]:
    """Alignment units of a transcript (see module docstring)."""
    text = text.strip()
    lang = (language or "").lower()
    if lang == "japanese":
        try:
            import nagisa
        except ImportError as exc:
            raise InputError("Japanese timestamps need the 'nagisa' package on the server") from exc
        return _clean(list(nagisa.tagging(text).words))
    if lang == "korean":
        try:
            from soynlp.tokenizer import LTokenizer
        except ImportError as exc:
            raise InputError("Korean timestamps need the 'soynlp' package on the server") from exc
        return _clean(list(LTokenizer().tokenize(text)))
    words: list[str] = []
    buf: list[str] = []
    for char in text:
        if is_cjk_char(char) or char.isspace():
            if buf:
                words.append("".join(buf))
                buf.clear()
            if not char.isspace():
                words.append(char)
        elif is_kept_char(char):
            buf.append(char)
    if buf:
        words.append("".join(buf))
    return words


def _longest_non_decreasing(values: np.ndarray) -> np.ndarray:
    """Mask of the longest non-decreasing subsequence.

    Ties resolve like the official O(n^2) dynamic programme: each element links
    to the earliest predecessor of maximal length, and the chain ends at the
    earliest element of maximal length.
    """
    n = values.size
    length = np.ones(n, dtype=np.int64)
    parent = np.full(n, -1, dtype=np.int64)
    for cur in range(1, n):
        ok = values[:cur] <= values[cur]
        if ok.any():
            cand = np.where(ok, length[:cur], 0)
            best = int(cand.max())
            length[cur] = best + 1
            parent[cur] = int(np.argmax(cand == best))
    keep = np.zeros(n, dtype=bool)
    idx = int(np.argmax(length))
    while idx != -1:
        keep[idx] = True
        idx = int(parent[idx])
    return keep


def fix_timestamps(raw: np.ndarray | list[float]) -> list[int]:
    """Monotonic version of the raw boundary predictions (milliseconds, truncated to int)."""
    data = [float(v) for v in np.asarray(raw, dtype=np.float64).reshape(-1)]
    n = len(data)
    if n == 0:
        return []
    keep = _longest_non_decreasing(np.asarray(data))
    result: list[float] = list(data)
    start = 0
    while start < n:
        if keep[start]:
            start += 1
            continue
        end = start
        while end < n and not keep[end]:
            end += 1
        left = next((result[j] for j in range(start - 1, -1, -1) if keep[j]), None)
        right = next((result[j] for j in range(end, n) if keep[j]), None)
        count = end - start
        for pos in range(start, end):
            if count <= SNAP_BLOCK_MAX:
                if left is None:
                    result[pos] = right
                elif right is None:
                    result[pos] = left
                else:
                    result[pos] = left if (pos - (start - 1)) <= (end - pos) else right
            elif left is not None and right is not None:
                result[pos] = left + (right - left) / (count + 1) * (pos - start + 1)
            elif left is not None or right is not None:
                result[pos] = left if left is not None else right
        start = end
    return [int(v) for v in result]


@dataclass(frozen=True)
class WordTime:
    word: str
    start: float  # seconds
    end: float  # seconds


def word_times(
    words: list[str], class_ids: np.ndarray, segment_ms: float, offset_seconds: float = 0.0
) -> list[WordTime]:
    """Seconds per word from the aligner's argmax class at each ``<timestamp>`` slot.

    Parameters
    ----------
    words : list of str
        The aligned units, in order.
    class_ids : np.ndarray
        ``[2 * len(words)]`` predicted classes (start, end per word).
    segment_ms : float
        Milliseconds per class (80 for the published aligner).
    offset_seconds : float
        Start of the segment inside the whole recording.
    """
    class_ids = np.asarray(class_ids).reshape(-1)
    if class_ids.size != 2 * len(words):
        raise ValueError(f"{class_ids.size} timestamp slots for {len(words)} words")
    raw_ms = (class_ids.astype(np.float32) * np.float32(segment_ms)).astype(np.float64)
    fixed = fix_timestamps(raw_ms)
    out = []
    for i, word in enumerate(words):
        start = round(fixed[2 * i] / 1000.0, 3)
        end = round(fixed[2 * i + 1] / 1000.0, 3)
        if offset_seconds:
            start, end = round(start + offset_seconds, 3), round(end + offset_seconds, 3)
        out.append(WordTime(word, start, end))
    return out
