"""Who spoke when, end to end on the real server: the ``diarizer`` model, ``qwen3_asr`` with DIARIZE, the
CLI's labelled subtitles, the gateway's ``diarized_json`` through the official ``openai`` SDK, and live
streams whose utterance finals carry a speaker.

The meeting is synthetic: three espeak-ng voices taking turns (known boundaries, some back to back, some
with short gaps). The diarizer runs the real CAM++ weights; the recogniser and the aligner of the test
repository are random, so their words and word times mean nothing. The diarization error rate is
therefore measured on the diarizer's turns, and the labelled transcript is checked against those turns:
each word takes the speaker the turns give at its time, and segments split exactly where that changes.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from perf.diarization_data import SAMPLE_RATE, SENTENCES, SPEAKERS, make_conversation
from qwen3_asr_triton.client import ClientOptions, Qwen3ASRClient, StreamOptions, TranscribeOptions
from qwen3_asr_triton.client.options import EndpointingOptions
from qwen3_asr_triton.client.types import Utterance
from qwen3_asr_triton.diarization.der import diarization_error_rate
from qwen3_asr_triton.diarization.labels import speaker_of
from qwen3_asr_triton.output import join_segment_texts
from tests.harness import CACHE, GATEWAY_API_KEY

pytestmark = [pytest.mark.server, pytest.mark.slow]

# Three clearly different voices (name, espeak-ng voice, pitch, speed) of the study's eight.
VOICES = tuple(spec for spec in SPEAKERS if spec[0] in ("en-m3", "en-f2", "de-f4"))
# (voice index, sentence index, silence before the turn in seconds): 9 turns, each voice three times.
SCRIPT = ((0, 0, 0.0), (1, 1, 0.0), (2, 2, 0.4), (0, 3, 0.0), (2, 4, 0.3), (1, 5, 0.0), (0, 6, 0.5), (1, 7, 0.0))
SCRIPT += ((2, 8, 0.2),)
# A call of two voices with a pause between turns (long enough for the stream's endpointing).
DIALOGUE = tuple((k % 2, 10 + k, 0.0 if k == 0 else 0.9) for k in range(8))
# Every turn of a script is spoken (make_conversation stops at a target length).
NO_TARGET = 1e9
# The bound CI keeps on the meeting's DER (±0.25 s collar), with the count estimated and given: measured
# 0.4% here (2026-12-05, the same with the count given); a wrong count costs 15-30%, so 5% (the offline
# accuracy test's bound) leaves room for numerical drift only.
DER_BOUND = 0.05
CLI = str(Path(sys.executable).with_name("qwen3-asr"))


@dataclass(frozen=True)
class Meeting:
    path: Path
    turns: list[tuple[float, float, str]]  # reference: (start, end, voice name)

    def waveform(self) -> np.ndarray:
        from perf.diarization_data import read_wav

        return read_wav(self.path)


def synthesise(name: str, script: tuple[tuple[int, int, float], ...]) -> Meeting:
    """A conversation of :data:`VOICES` reading ``script`` (synthesised once, cached with its reference)."""
    names = [voice[0] for voice in VOICES]
    planned = [(voice, SENTENCES[sentence]) for voice, sentence, _ in script]
    gaps = [gap for _, _, gap in script]
    seed = zlib.crc32(json.dumps([VOICES, script]).encode())  # the cache key: a changed script is redone
    folder = CACHE / "diarization-test"
    folder.mkdir(parents=True, exist_ok=True)
    conversation = make_conversation(folder, name, names, planned, NO_TARGET, True, gaps, seed)
    return Meeting(conversation.path, [(t.start, t.end, t.speaker) for t in conversation.turns])


@pytest.fixture(scope="module")
def meeting() -> Meeting:
    """Three speakers, some turns back to back, some after a short gap."""
    return synthesise("meeting-3", SCRIPT)


@pytest.fixture(scope="module")
def dialogue() -> Meeting:
    """Two speakers who pause between turns, as a live call would: endpointing cuts at every turn."""
    return synthesise("dialogue-2", DIALOGUE)


@pytest.fixture(scope="module")
def client(triton_server):
    with Qwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=300)) as c:
        yield c


def diarizer_turns(triton_server, meeting: Meeting, **counts: int) -> list[tuple[float, float, int]]:
    """The ``diarizer`` model's turns for the meeting's file, over plain tritonclient gRPC."""
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as raw:
        inputs = [grpcclient.InferInput("AUDIO", [1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([meeting.path.read_bytes()], dtype=np.object_))
        for name, value in counts.items():
            tensor = grpcclient.InferInput(name, [1], "INT32")
            tensor.set_data_from_numpy(np.array([value], np.int32))
            inputs.append(tensor)
        result = raw.infer("diarizer", inputs, client_timeout=300)
    start, end, speaker = (result.as_numpy(n) for n in ("TURN_START", "TURN_END", "TURN_SPEAKER"))
    return [(float(a), float(b), int(k)) for a, b, k in zip(start, end, speaker)]


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    speaker: int


@pytest.mark.parametrize("counts", [{}, {"NUM_SPEAKERS": 3}, {"MIN_SPEAKERS": 2, "MAX_SPEAKERS": 4}])
def test_the_diarizer_finds_who_spoke_when(triton_server, meeting, counts):
    turns = diarizer_turns(triton_server, meeting, **counts)
    errors = diarization_error_rate(meeting.turns, turns, collar=0.25)
    assert errors.der < DER_BOUND, f"DER {errors.der:.3f} ({errors}) with {counts or 'the count estimated'}"
    assert {k for _, _, k in turns} == {0, 1, 2}, "three speakers, numbered by first appearance"
    assert turns[0][2] == 0 and all(a < b <= c for (a, b, _), (c, _, _) in itertools.pairwise(turns))


def test_a_diarized_transcript_labels_every_segment_and_word_by_the_diarizer_turns(client, triton_server, meeting):
    plain = client.transcribe(meeting.path, TranscribeOptions(timestamps=True, max_new_tokens=96))
    result = client.transcribe(meeting.path, TranscribeOptions(diarize=True, max_new_tokens=96))
    # Recognition is unchanged; only speakers are added (and segments split where they change).
    assert (result.text, result.token_ids) == (plain.text, plain.token_ids)
    assert [(w.text, w.start, w.end) for w in result.words] == [(w.text, w.start, w.end) for w in plain.words]
    # The pieces of a split segment hold its text; the whitespace at a cut becomes one space.
    pieces, whole = (join_segment_texts([s.text for s in r.segments]) for r in (result, plain))
    assert pieces.split() == whole.split()
    assert all(s.speaker is not None for s in result.segments) and all(w.speaker is not None for w in result.words)
    # Every word has the speaker the diarizer's turns give at its time (numbered by first appearance).
    turns = [Span(*t) for t in diarizer_turns(triton_server, meeting)]
    raw = [speaker_of(w.start, w.end, turns) for w in result.words]
    mapping = dict(zip(raw, [w.speaker for w in result.words]))
    assert [mapping[k] for k in raw] == [w.speaker for w in result.words], "one label per diarizer speaker"
    assert len(set(mapping.values())) == len(mapping)
    # A segment holds one speaker's consecutive words: it changes exactly where the words' speaker does.
    labels = [w.speaker for w in result.words]
    changes = sum(a != b for a, b in itertools.pairwise(labels))
    assert len(result.segments) >= changes + 1


def test_the_deltas_model_ends_with_the_same_labelled_transcript(triton_server, client, meeting):
    import asyncio

    from qwen3_asr_triton.client import AsyncQwen3ASRClient

    options = TranscribeOptions(diarize=True, max_new_tokens=48)

    async def final() -> object:
        async with AsyncQwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=300)) as streaming:
            events = [event async for event in streaming.transcribe_stream(meeting.path, options)]
        return events[-1]

    streamed, unary = asyncio.run(final()), client.transcribe(meeting.path, options)
    assert [(s.text, s.start, s.end, s.speaker) for s in streamed.segments] == [
        (s.text, s.start, s.end, s.speaker) for s in unary.segments
    ]
    assert [w.speaker for w in streamed.words] == [w.speaker for w in unary.words] and unary.words


def test_speaker_hints_are_checked(client, meeting):
    from qwen3_asr_triton.client.errors import InvalidRequestError

    for options in (
        {"diarize": True, "num_speakers": 2, "max_speakers": 1},
        {"diarize": True, "min_speakers": 5, "max_speakers": 3},
    ):
        with pytest.raises(ValueError):
            TranscribeOptions(**options)
    with grpcclient.InferenceServerClient(client.options.url) as raw:
        audio = grpcclient.InferInput("AUDIO", [1], "BYTES")
        audio.set_data_from_numpy(np.array([meeting.path.read_bytes()], dtype=np.object_))
        count = grpcclient.InferInput("NUM_SPEAKERS", [1], "INT32")
        count.set_data_from_numpy(np.array([0], np.int32))
        for model in ("qwen3_asr", "diarizer"):
            extra = []
            if model == "qwen3_asr":
                flag = grpcclient.InferInput("DIARIZE", [1], "BOOL")
                flag.set_data_from_numpy(np.array([True]))
                extra.append(flag)
            with pytest.raises(InferenceServerException, match="num_speakers") as info:
                raw.infer(model, [audio, count, *extra])
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        with pytest.raises(InferenceServerException, match="only with DIARIZE"):
            raw.infer("qwen3_asr", [audio, count])
        nan = grpcclient.InferInput("WAVEFORM", [4], "FP32")
        nan.set_data_from_numpy(np.array([0.0, np.nan, 0.0, 0.0], np.float32))
        rate = grpcclient.InferInput("SAMPLE_RATE", [1], "INT32")
        rate.set_data_from_numpy(np.array([16000], np.int32))
        with pytest.raises(InferenceServerException) as info:
            raw.infer("diarizer", [nan, rate])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InvalidRequestError):
        client.transcribe(b"not audio", TranscribeOptions(diarize=True))


@pytest.mark.parametrize("fmt", ["srt", "vtt", "txt"])
def test_the_cli_prints_speaker_labelled_subtitles(triton_server, meeting, fmt):
    done = subprocess.run(
        [CLI, "transcribe", str(meeting.path), "--diarize", "--format", fmt, "--url", triton_server.grpc_url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    tags = {"srt": "[Speaker ", "vtt": "<v Speaker ", "txt": "Speaker "}[fmt]
    labelled = [line for line in done.stdout.splitlines() if tags in line]
    assert labelled and {line.split(tags)[1][0] for line in labelled} <= {"1", "2", "3"}
    if fmt == "vtt":
        import io

        import webvtt

        voices = {c.voice for c in webvtt.from_buffer(io.StringIO(done.stdout)).captions}
        assert voices and voices <= {"Speaker 1", "Speaker 2", "Speaker 3"}


def test_the_gateway_answers_diarized_json(triton_server, meeting):
    with openai.OpenAI(
        base_url=f"{triton_server.openai_url}/v1", api_key=GATEWAY_API_KEY, max_retries=0, timeout=300
    ) as sdk:
        models = [m.id for m in sdk.models.list()]
        assert models[1:] == [f"{models[0]}-diarize"], "the diarizing name is listed with a diarizer"
        with meeting.path.open("rb") as audio:
            body = sdk.audio.transcriptions.create(
                model=models[0], file=audio, response_format="diarized_json", extra_body={"num_speakers": 3}
            )
    segments = body.segments
    assert segments and all(s.type == "transcript.text.segment" for s in segments)
    assert {s.speaker for s in segments} <= {"A", "B", "C"} and segments[0].speaker == "A"
    assert [s.id for s in segments] == [f"seg_{i}" for i in range(len(segments))]
    assert body.text and all(s.text for s in segments) and body.duration > 0


def test_a_live_stream_labels_each_utterance_with_a_consistent_speaker(client, dialogue):
    waveform = dialogue.waveform()
    stream_options = StreamOptions(chunk_seconds=1.0, speed=0, endpointing=EndpointingOptions(vad_min_silence_ms=400))
    request = TranscribeOptions(diarize=True, max_new_tokens=24)
    with client.stream(waveform, request, stream_options, sample_rate=SAMPLE_RATE) as stream:
        events = [e for e in stream if isinstance(e, Utterance)]
    assert len(events) >= len(DIALOGUE) - 1 and all(e.speaker is not None for e in events)
    assert all(w.speaker == e.speaker for e in events for w in e.transcription.words)
    # Each utterance's label against the reference voice that speaks most of it: one label per voice.
    heard: dict[str, list[int]] = {}
    for event in events:
        overlap: dict[str, float] = {}
        for start, end, name in dialogue.turns:
            overlap[name] = overlap.get(name, 0.0) + max(0.0, min(end, event.end) - max(start, event.start))
        heard.setdefault(max(overlap, key=overlap.get), []).append(event.speaker)
    assert {name: set(labels) for name, labels in heard.items()} in ({"en-m3": {0}, "en-f2": {1}},), heard
    unsegmented = StreamOptions(speed=0)
    with (
        pytest.raises(ValueError, match="needs endpointing"),
        client.stream(waveform, request, unsegmented, sample_rate=SAMPLE_RATE) as stream,
    ):
        list(stream)
