"""Speaker labels on a transcript (qwen3_asr_triton.diarization.labels): no model, no server."""

from __future__ import annotations

from dataclasses import dataclass

from qwen3_asr_triton.alignment import WordTime
from qwen3_asr_triton.diarization.labels import NO_SPEAKER, label_transcript, speaker_of, transcript_parser
from qwen3_asr_triton.pipeline import SegmentResult

# A toy vocabulary: id -> text, so that decoding is joining.
VOCAB = ["language", " English", "<asr_text>", "Hello", ",", " world", ".", " How", " are", " you", "?", " Fine"]
ID = {text.strip() or text: i for i, text in enumerate(VOCAB)}


def decode(ids: list[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: int


def segment(ids: list[int], start: float, end: float, logprobs: list[float] | None = None) -> SegmentResult:
    text = decode(ids).split("<asr_text>", 1)[-1].strip()
    return SegmentResult(start, end, text, "English", ids, logprobs if logprobs is not None else [-0.1] * len(ids))


def test_a_word_takes_the_speaker_who_overlaps_it_most_or_the_nearest() -> None:
    turns = [Turn(0.0, 1.0, 3), Turn(1.0, 1.2, 5), Turn(4.0, 5.0, 5)]
    assert speaker_of(0.5, 1.15, turns) == 3  # 0.5 s of speaker 3 against 0.15 s of speaker 5
    assert speaker_of(0.9, 1.2, turns) == 5  # 0.1 s against 0.2 s
    assert speaker_of(3.0, 3.5, turns) == 5  # no overlap: the turn starting at 4.0 is nearer than the one ending at 1.2
    assert speaker_of(1.3, 1.4, turns) == 5
    assert speaker_of(0.0, 1.0, []) == NO_SPEAKER


def test_a_segment_is_split_before_each_new_speaker_with_its_ids_and_log_probabilities() -> None:
    ids = [ID["language"], ID["English"], ID["<asr_text>"], ID["Hello"], ID[","], ID["world"], ID["."]]
    ids += [ID["How"], ID["are"], ID["you"], ID["?"]]
    logprobs = [-float(i) for i in range(len(ids) + 1)]  # one more: the end token's
    seg = segment(ids, 10.0, 14.0, logprobs)
    assert seg.text == "Hello, world. How are you?"
    words = [
        WordTime("Hello", 10.1, 10.5),
        WordTime("world", 10.6, 11.0),
        WordTime("How", 12.0, 12.3),
        WordTime("are", 12.3, 12.6),
        WordTime("you", 12.6, 13.0),
    ]
    turns = [Turn(10.0, 11.2, 7), Turn(11.8, 13.5, 2)]
    pieces, labelled = label_transcript([seg], words, turns, transcript_parser(decode, None))
    assert [(p.text, s) for p, s in pieces] == [("Hello, world.", 0), ("How are you?", 1)]
    first, second = pieces[0][0], pieces[1][0]
    assert (first.start, first.end, second.start, second.end) == (10.0, 11.0, 12.0, 14.0)
    # The ids split where the decoded text reaches "How"; the language tag stays with the first piece.
    assert first.token_ids == ids[:7] and second.token_ids == ids[7:]
    assert first.logprobs == logprobs[:7] and second.logprobs == logprobs[7:]
    assert [s for _, s in labelled] == [0, 0, 1, 1, 1]
    assert [w for w, _ in labelled] == words


def test_with_a_forced_language_the_whole_answer_is_transcript() -> None:
    ids = [ID["Hello"], ID["world"], ID["Fine"]]
    seg = segment(ids, 0.0, 3.0)
    words = [WordTime("Hello", 0.0, 0.4), WordTime("world", 0.5, 1.0), WordTime("Fine", 2.0, 2.5)]
    turns = [Turn(0.0, 1.2, 0), Turn(1.8, 3.0, 1)]
    pieces, _ = label_transcript([seg], words, turns, transcript_parser(decode, "English"))
    assert [(p.text, p.token_ids, s) for p, s in pieces] == [("Hello world", ids[:2], 0), ("Fine", ids[2:], 1)]


def test_speakers_are_numbered_by_first_appearance_and_segments_without_words_take_the_longest_overlap() -> None:
    a = segment([ID["<asr_text>"], ID["Hello"]], 0.0, 4.0)
    b = segment([ID["<asr_text>"], ID["Fine"]], 4.0, 8.0)
    turns = [Turn(0.0, 1.0, 4), Turn(1.0, 4.0, 9), Turn(4.0, 8.0, 4)]
    pieces, words = label_transcript([a, b], [], turns, transcript_parser(decode, None))
    assert [(p.text, s) for p, s in pieces] == [("Hello", 0), ("Fine", 1)]
    assert pieces[0][0] is a and words == []


def test_words_the_text_does_not_contain_leave_the_segment_whole() -> None:
    seg = segment([ID["<asr_text>"], ID["Hello"], ID["world"]], 0.0, 2.0)
    words = [WordTime("Bonjour", 0.0, 0.5), WordTime("world", 1.0, 1.5)]
    turns = [Turn(0.0, 0.7, 0), Turn(0.9, 2.0, 1)]
    pieces, labelled = label_transcript([seg], words, turns, transcript_parser(decode, None))
    # The segment overlaps raw speaker 1 longest (1.1 s against 0.7 s), so 1 is the first to appear.
    assert len(pieces) == 1 and pieces[0][0] is seg and pieces[0][1] == 0
    assert [s for _, s in labelled] == [1, 0]


def test_no_turns_means_no_speaker() -> None:
    seg = segment([ID["<asr_text>"], ID["Hello"]], 0.0, 1.0)
    pieces, labelled = label_transcript([seg], [WordTime("Hello", 0.1, 0.5)], [], transcript_parser(decode, None))
    assert [s for _, s in pieces] == [NO_SPEAKER] and [s for _, s in labelled] == [NO_SPEAKER]


def test_words_the_aligner_stripped_of_punctuation_are_still_found() -> None:
    vocab_text = "<asr_text>state_TYPED well, ¿qué tal?"
    seg = SegmentResult(0.0, 3.0, "state_TYPED well, ¿qué tal?", None, [ID["<asr_text>"]], [])
    words = [WordTime("stateTYPED", 0.0, 0.5), WordTime("well", 0.6, 1.0), WordTime("qué", 2.0, 2.3)]
    words.append(WordTime("tal", 2.3, 2.6))
    turns = [Turn(0.0, 1.2, 0), Turn(1.8, 3.0, 1)]

    def transcript_of(ids: list[int]) -> str | None:  # one id holds the whole answer
        return vocab_text.split("<asr_text>")[1] if ids else None

    pieces, _ = label_transcript([seg], words, turns, transcript_of)
    assert [(p.text, s) for p, s in pieces] == [("state_TYPED well,", 0), ("¿qué tal?", 1)]
