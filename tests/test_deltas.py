"""Text deltas of a transcript while it is generated: the pure rules (no server)."""

from __future__ import annotations

from qwen3_asr_triton.output import TranscriptDeltas, join_segment_texts, partial_transcript


def test_nothing_is_transcript_before_the_language_marker():
    assert partial_transcript("language Eng", None) == ""
    assert partial_transcript("language English<asr_te", None) == ""
    assert partial_transcript("language English<asr_text>Hello wor", None) == "Hello wor"
    # A forced language: the prompt ended in the marker, everything is transcript.
    assert partial_transcript(" Hello", "English") == "Hello"


def test_trailing_space_and_incomplete_characters_are_held_back():
    assert partial_transcript("language English<asr_text>Hello ", None) == "Hello"
    assert partial_transcript("language Chinese<asr_text>你\ufffd", None) == "你"


def test_deltas_of_one_segment_join_to_its_final_text():
    deltas = TranscriptDeltas(1)
    sent = [deltas.update(0, p) for p in ("", "Hel", "Hello", "Hello", "Hello wo", "Hello world")]
    sent.append(deltas.finish(0, "Hello world."))
    assert sent == ["", "Hel", "lo", "", " wo", "rld", "."]
    assert "".join(sent) == "Hello world."


def test_a_later_segment_waits_for_the_earlier_ones():
    deltas = TranscriptDeltas(3)
    out = [deltas.update(1, "second"), deltas.update(2, "third"), deltas.update(0, "first")]
    assert out == ["", "", "first"]
    out.append(deltas.finish(1, "second part"))  # finished, but segment 0 still runs
    assert out[-1] == ""
    out.append(deltas.finish(0, "first part"))  # now segment 1's final and segment 2's partial follow
    assert out[-1] == " part second part third"
    out.append(deltas.finish(2, "third part"))
    finals = ["first part", "second part", "third part"]
    assert "".join(out) == join_segment_texts(finals) == "first part second part third part"


def test_cjk_segments_join_without_a_space():
    deltas = TranscriptDeltas(2)
    out = [deltas.finish(0, "你好"), deltas.finish(1, "世界")]
    assert "".join(out) == join_segment_texts(["你好", "世界"]) == "你好世界"


def test_text_already_sent_is_never_taken_back():
    # The repetition fix shortened a run that was already sent: nothing more is sent.
    deltas = TranscriptDeltas(1)
    assert deltas.update(0, "la la la la") == "la la la la"
    assert deltas.finish(0, "la") == ""
    assert deltas.sent == "la la la la"


def test_empty_segments_add_nothing():
    deltas = TranscriptDeltas(3)
    out = [deltas.finish(0, ""), deltas.finish(1, "words"), deltas.finish(2, "")]
    assert "".join(out) == join_segment_texts(["", "words", ""]) == "words"
