"""Speaker labels in the client: options, the wire's speaker outputs, txt/srt/vtt rendering (no server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import srt
import webvtt

from qwen3_asr_triton.client.errors import MalformedResponseError
from qwen3_asr_triton.client.formats import render
from qwen3_asr_triton.client.options import TranscribeOptions
from qwen3_asr_triton.client.types import Segment, Transcription, Word
from qwen3_asr_triton.client.wire import option_inputs, parse_result

WORDS = (
    Word("Good", 0.2, 0.5, 0),
    Word("morning", 0.5, 0.9, 0),
    Word("everyone", 0.9, 1.4, 0),
    Word("Hi", 1.6, 1.8, 1),
    Word("there", 1.8, 2.2, 1),
)
TEXT = "Good morning, everyone. Hi there."
DIARIZED = Transcription(
    TEXT,
    "English",
    0.9,
    WORDS,
    (Segment("Good morning, everyone.", 0.0, 1.5, speaker=0), Segment("Hi there.", 1.5, 3.0, speaker=1)),
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_speakers": 2}, "apply only with diarize"),
        ({"diarize": True, "num_speakers": 0}, "num_speakers must be >= 1"),
        ({"diarize": True, "max_speakers": 17}, "at most 16"),
        ({"diarize": True, "min_speakers": 3, "max_speakers": 2}, "must not exceed"),
        ({"diarize": True, "num_speakers": 5, "max_speakers": 4}, "must lie between 1 and 4"),
        ({"diarize": "yes"}, "diarize must be True or False"),
    ],
)
def test_bad_speaker_options_fail_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TranscribeOptions(**kwargs)


def test_speaker_options_go_on_the_wire():
    inputs = option_inputs(TranscribeOptions(diarize=True, min_speakers=2, max_speakers=3))
    assert [(t.name(), t.datatype(), t.shape()) for t in inputs] == [
        ("DIARIZE", "BOOL", [1]),
        ("MIN_SPEAKERS", "INT32", [1]),
        ("MAX_SPEAKERS", "INT32", [1]),
    ]
    assert option_inputs(TranscribeOptions()) == []


class FakeResult:
    """What parse_result reads of an InferResult."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def as_numpy(self, name: str):
        return self.arrays.get(name)


def wire(segment_speakers: list[int], word_speakers: list[int]) -> FakeResult:
    strings = lambda values: np.array([v.encode() for v in values], dtype=np.object_)  # noqa: E731
    return FakeResult(
        {
            "TEXT": strings([TEXT]),
            "DETECTED_LANGUAGE": strings(["English"]),
            "TOKEN_IDS": np.array([1, 2, 3], np.int32),
            "CONFIDENCE": np.array([0.9], np.float32),
            "WORDS": strings(["Good", "Hi"]),
            "WORD_START": np.array([0.2, 1.6], np.float32),
            "WORD_END": np.array([0.5, 1.8], np.float32),
            "SEGMENT_TEXT": strings(["Good morning.", "Hi there."]),
            "SEGMENT_START": np.array([0.0, 1.5], np.float32),
            "SEGMENT_END": np.array([1.5, 3.0], np.float32),
            "SEGMENT_TOKENS": np.array([2, 1], np.int32),
            "SEGMENT_LOGPROB": np.array([-0.1, -0.2], np.float32),
            "SEGMENT_SPEAKER": np.array(segment_speakers, np.int32),
            "WORD_SPEAKER": np.array(word_speakers, np.int32),
        }
    )


def test_speaker_outputs_are_read_and_checked():
    result = parse_result(wire([0, -1], [1, 0]))
    assert [s.speaker for s in result.segments] == [0, None]
    assert [w.speaker for w in result.words] == [1, 0]
    assert result.to_dict()["segments"][0]["speaker"] == 0 and "speaker" not in result.to_dict()["segments"][1]
    plain = parse_result(wire([], []))
    assert [s.speaker for s in plain.segments] == [None, None] and "speaker" not in plain.to_dict()["words"][0]
    with pytest.raises(MalformedResponseError, match="SEGMENT_SPEAKER"):
        parse_result(wire([0], [0, 1]))


def test_txt_has_a_line_per_speaker_turn():
    assert render(DIARIZED, "txt") == "Speaker 1: Good morning, everyone.\nSpeaker 2: Hi there.\n"
    undiarized = Transcription(TEXT, "English", 0.9, (), (Segment(TEXT, 0.0, 3.0),))
    assert render(undiarized, "txt") == TEXT + "\n"


def test_srt_cues_never_mix_speakers_and_name_them():
    cues = list(srt.parse(render(DIARIZED, "srt")))
    assert [c.content for c in cues] == ["[Speaker 1] Good morning, everyone.", "[Speaker 2] Hi there."]


def test_vtt_cues_carry_voice_spans():
    text = render(DIARIZED, "vtt")
    cues = webvtt.from_buffer(io.StringIO(text)).captions
    assert [c.raw_text for c in cues] == ["<v Speaker 1>Good morning, everyone.", "<v Speaker 2>Hi there."]
    assert [c.voice for c in cues] == ["Speaker 1", "Speaker 2"]
    # Without word times the segments' speakers still split and label the cues.
    by_segments = Transcription(TEXT, "English", 0.9, (), DIARIZED.segments)
    assert [c.voice for c in webvtt.from_buffer(io.StringIO(render(by_segments, "vtt"))).captions] == [
        "Speaker 1",
        "Speaker 2",
    ]
