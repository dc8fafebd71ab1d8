"""Subtitle cues from word timestamps and from segments; SRT/VTT accepted by the ``srt`` and ``webvtt-py`` parsers."""

from __future__ import annotations

import io

import pytest
import srt
import webvtt

from qwen3_asr_triton.alignment import is_kept_char, split_words
from qwen3_asr_triton.client.formats import render
from qwen3_asr_triton.client.subtitles import (
    MAX_CUE_SECONDS,
    MAX_LINE_WIDTH,
    MAX_LINES,
    Cue,
    SubtitleLimits,
    build_cues,
    display_width,
    to_srt,
    to_vtt,
)
from qwen3_asr_triton.client.types import Segment, Transcription, Word

EN = (
    "Hello, world. ¿Cómo estás? This is a fairly long sentence that should wrap onto two lines nicely, "
    "and then continue after it. The end!"
)
ZH = "今天天气很好，我们去公园散步吧。明天也许会下雨，所以我们今天出去玩。"


def timed(text: str, step: float = 0.35, word: float = 0.3, language: str = "English", gaps=None) -> Transcription:
    """A transcription whose words (as the server's aligner splits them) follow each other evenly."""
    words, t = [], 0.0
    for i, unit in enumerate(split_words(text, language)):
        t += (gaps or {}).get(i, 0.0)
        words.append(Word(unit, round(t, 3), round(t + word, 3)))
        t += step
    duration = words[-1].end + 0.5
    return Transcription(text, language, 0.5, tuple(words), (Segment(text, 0.0, duration),))


def kept(text: str) -> str:
    return "".join(c for c in text if is_kept_char(c))


def check_invariants(cues: list[Cue], limits: SubtitleLimits | None = None) -> None:
    limits = limits or SubtitleLimits()
    previous_end = 0.0
    for cue in cues:
        assert 1 <= len(cue.lines) <= limits.max_lines, cue
        assert all(line and line == line.strip() for line in cue.lines), cue
        assert all(display_width(line) <= limits.max_line_width for line in cue.lines), cue
        assert cue.start >= previous_end, cues
        assert cue.end > cue.start
        assert cue.end - cue.start <= limits.max_cue_seconds + 1e-9
        previous_end = cue.end


def test_constants_are_the_documented_ones():
    assert (MAX_LINE_WIDTH, MAX_LINES, MAX_CUE_SECONDS) == (42, 2, 7.0)


def test_word_cues_keep_punctuation_split_sentences_and_wrap_lines():
    result = timed(EN)
    cues = build_cues(result)
    check_invariants(cues)
    assert [c.text for c in cues] == [
        "Hello, world.",
        "¿Cómo estás?",
        "This is a fairly long sentence that\nshould wrap onto two lines nicely,",
        "and then continue after it.",
        "The end!",
    ]
    # Every word is on screen exactly once, in order, and while it is spoken.
    assert kept("".join(c.text for c in cues)) == kept(EN)
    assert cues[0].start == result.words[0].start
    assert cues[-1].end >= result.words[-1].end


def test_a_pause_starts_a_new_cue():
    text = "one two three four five six"
    result = timed(text, gaps={3: 1.5})
    cues = build_cues(result)
    assert [c.text for c in cues] == ["one two three", "four five six"]
    assert cues[1].start == result.words[3].start
    assert [c.text for c in build_cues(result, SubtitleLimits(pause_seconds=2.0))] == [text]


def test_long_speech_is_cut_by_duration_and_width():
    text = " ".join(f"word{i}" for i in range(60))
    slow = timed(text, step=0.9, word=0.8)
    cues = build_cues(slow)
    check_invariants(cues)
    assert len(cues) > 60 * 0.9 / MAX_CUE_SECONDS
    assert max(c.end - c.start for c in cues) <= MAX_CUE_SECONDS
    fast = timed(text, step=0.05, word=0.04)
    cues = build_cues(fast)
    check_invariants(cues)
    assert all(len(c.lines) == 2 for c in cues[:-1])  # packed to the width limit, not the time limit
    assert kept("".join(c.text for c in cues)) == kept(text)


def test_cjk_uses_double_width_and_no_spaces():
    result = timed(ZH, step=0.2, word=0.18, language="Chinese")
    cues = build_cues(result)
    check_invariants(cues)
    assert all(" " not in line for c in cues for line in c.lines)
    assert "".join(c.text.replace("\n", "") for c in cues) == ZH
    assert display_width("今天") == 4 and display_width("ab") == 2 and display_width("e\u0301") == 1
    assert max(len(line) for c in cues for line in c.lines) <= MAX_LINE_WIDTH // 2


def test_garbled_timestamps_still_give_ordered_nonoverlapping_cues():
    # What a randomly initialised aligner produces: equal, far-out and overlapping times.
    words = [Word("a", 5.0, 5.0), Word("b", 5.0, 5.0), Word("c", 4.0, 30.0), Word("d", 30.0, 30.0)]
    result = Transcription("a b c d", "English", 0.1, tuple(words), (Segment("a b c d", 0.0, 1.0),))
    cues = build_cues(result)
    check_invariants(cues)
    assert kept("".join(c.text for c in cues)) == "abcd"


def test_words_that_do_not_follow_the_text_fall_back_to_bare_words():
    words = (Word("alpha", 0.0, 0.4), Word("你", 0.5, 0.6), Word("好", 0.6, 0.7), Word("beta", 0.8, 1.0))
    result = Transcription("something else entirely", "English", 0.5, words, (Segment("x", 0.0, 1.0),))
    assert [c.text for c in build_cues(result)] == ["alpha 你好 beta"]


def test_segments_are_used_without_word_timestamps():
    segments = (
        Segment("First part of the talk, quite long indeed, it goes on and on.", 0.0, 6.0),
        Segment(ZH, 6.0, 12.0),
    )
    result = Transcription("unused", "English", 0.5, (), segments)
    cues = build_cues(result)
    check_invariants(cues)
    assert cues[0].start == 0.0 and cues[-1].end == 12.0
    assert kept("".join(c.text for c in cues)) == kept(segments[0].text + ZH)
    assert any(c.start >= 6.0 and "今" in c.text for c in cues)


def test_an_unspaced_run_wider_than_a_line_is_cut():
    thai = "สวัสดีครับ" * 12  # Thai has no spaces between words
    result = Transcription(thai, "Thai", 0.5, (), (Segment(thai, 0.0, 8.0),))
    cues = build_cues(result)
    check_invariants(cues)
    assert "".join(c.text.replace("\n", "") for c in cues) == thai


def test_nothing_recognised_gives_no_cues_and_valid_files():
    empty = Transcription("", None, 1.0, (), (Segment("", 0.0, 3.0),))
    assert build_cues(empty) == []
    assert list(srt.parse(render(empty, "srt"))) == []
    assert webvtt.from_buffer(io.StringIO(render(empty, "vtt"))).captions == []


def test_srt_and_vtt_parse_back_to_the_same_cues():
    result = timed(EN + " 1 < 2 & 3 > 2 --> ok.", gaps={12: 65.0})  # crosses a minute boundary
    cues = build_cues(result)
    parsed_srt = list(srt.parse(to_srt(cues)))
    parsed_vtt = webvtt.from_buffer(io.StringIO(to_vtt(cues))).captions
    assert len(parsed_srt) == len(parsed_vtt) == len(cues)
    for cue, s, v in zip(cues, parsed_srt, parsed_vtt):
        assert s.start.total_seconds() == pytest.approx(cue.start, abs=5e-4)
        assert s.end.total_seconds() == pytest.approx(cue.end, abs=5e-4)
        assert v.start_in_seconds == int(cue.start) and v.end_in_seconds == int(cue.end)
        assert v.start == f"{int(cue.start // 3600):02d}:{int(cue.start % 3600 // 60):02d}:{cue.start % 60:06.3f}"
        assert s.content == cue.text.replace("-->", "->")
        assert v.text == cue.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert any(s.start.total_seconds() > 60 for s in parsed_srt)
    assert [s.index for s in parsed_srt] == list(range(1, len(cues) + 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_line_width=0),
        dict(max_lines=True),
        dict(max_cue_seconds=0),
        dict(min_cue_seconds=8.0),
        dict(pause_seconds=-1),
    ],
)
def test_bad_limits_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        SubtitleLimits(**kwargs)


def test_render_txt_and_json():
    result = timed("Hi there.")
    assert render(result, "txt") == "Hi there.\n"
    body = render(result, "json", source="a.wav", indent=None)
    assert body.endswith("\n") and body.count("\n") == 1 and body.startswith('{"file": "a.wav", "text": "Hi there."')
    with pytest.raises(ValueError, match="unknown format"):
        render(result, "docx")
