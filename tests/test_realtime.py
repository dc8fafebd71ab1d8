"""``/v1/realtime?intent=transcription`` end to end: the official ``websockets`` client, the gateway that
serve_cpu.sh starts, and a real Triton whose ``qwen3_asr_streaming`` cuts utterances with Silero VAD.

The clip is espeak-ng sentences joined by 1.5 s of silence, sent as base64 PCM16 in 100 ms appends
(faster than real time); the served model has random weights, so only the structure is checked:
one item per sentence, speech started/stopped around it, its deltas before its completed event.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest
import websockets

from qwen3_asr_triton.gateway.realtime_events import INCLUDE_WORDS
from tests.harness import CACHE, GATEWAY_API_KEY
from tests.speech import ClipSpec, make_clip, require_tools

pytestmark = pytest.mark.server

DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Speech recognition turns spoken words into text.",
    "The server answers with a transcript for every sentence.",
)
GAP_SECONDS = 1.5
APPEND_SECONDS = 0.1
# Longest wait for the next event: the suite's 2 CPU cores may be shared with other servers.
RESULT_TIMEOUT = 300


def sentences_pcm(rate: int, sentences: tuple[str, ...] = SENTENCES, gap: float = GAP_SECONDS) -> np.ndarray:
    """The sentences spoken by espeak-ng at ``rate``, each followed by ``gap`` seconds of silence (int16)."""
    require_tools()
    parts = [np.zeros(int(0.5 * rate), np.int16)]
    for i, text in enumerate(sentences):
        path = make_clip(ClipSpec(f"rt{rate}_{i}", "en", "English", text, "wav", rate), CACHE / "audio")
        with wave.open(str(path)) as w:
            assert w.getframerate() == rate and w.getsampwidth() == 2 and w.getnchannels() == 1
            parts.append(np.frombuffer(w.readframes(w.getnframes()), "<i2"))
        parts.append(np.zeros(int(gap * rate), np.int16))
    return np.concatenate(parts)


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def ws_url(triton_server) -> str:
    return triton_server.openai_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"


def auth(key: str = GATEWAY_API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def append_event(pcm: np.ndarray) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm.tobytes()).decode()})


async def _transcribe(
    url: str, pcm: np.ndarray, rate: int, pace: float = 0.0, utterances: int = len(SENTENCES)
) -> list[dict]:
    """Send ``pcm`` in 100 ms appends; return every server event until the last utterance's completed."""
    events: list[dict] = []
    async with websockets.connect(url, additional_headers=auth(), max_size=2**22) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {
                            "input": {
                                "format": {"type": "audio/pcm", "rate": rate},
                                "transcription": {"model": "qwen3-asr", "language": "en"},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": 600},
                            }
                        },
                    },
                }
            )
        )
        updated = json.loads(await ws.recv())
        assert updated["type"] == "session.updated", updated
        assert updated["session"]["audio"]["input"]["format"]["rate"] == rate

        async def sender() -> None:
            step = int(APPEND_SECONDS * rate)
            for start in range(0, pcm.size, step):
                await ws.send(append_event(pcm[start : start + step]))
                await asyncio.sleep(pace)
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))

        task = asyncio.create_task(sender())
        completed = 0
        try:
            while completed < utterances:
                event = json.loads(await asyncio.wait_for(ws.recv(), RESULT_TIMEOUT))
                events.append(event)
                assert event["type"] != "error", event
                completed += event["type"] == COMPLETED
        finally:
            await task
    return events


def check_items(events: list[dict], utterances: int) -> None:
    """One item per utterance: started, its deltas, stopped, committed, completed; in order."""
    by_item: dict[str, list[dict]] = {}
    order: list[str] = []
    for event in events:
        item = event.get("item_id")
        if item is None:
            continue
        if item not in by_item:
            order.append(item)
        by_item.setdefault(item, []).append(event)
    assert len(order) == utterances, [(i, [e["type"] for e in by_item[i]]) for i in order]
    ends = []
    for item in order:
        kinds = [e["type"] for e in by_item[item]]
        assert kinds[0] == "input_audio_buffer.speech_started", kinds
        assert kinds[-1] == COMPLETED, kinds
        assert kinds.count(COMPLETED) == 1
        assert set(kinds[1:-1]) <= {DELTA, "input_audio_buffer.speech_stopped", "input_audio_buffer.committed"}
        assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")
        completed = by_item[item][-1]
        # Deltas carry words two consecutive partials agreed on; the random weights' final may still differ.
        assert all(e["delta"] for e in by_item[item] if e["type"] == DELTA)
        assert isinstance(completed["transcript"], str)
        assert completed["usage"]["type"] == "duration" and completed["usage"]["seconds"] > 0
        start = by_item[item][0]["audio_start_ms"]
        stop = next(e for e in by_item[item] if e["type"] == "input_audio_buffer.speech_stopped")["audio_end_ms"]
        assert start < stop
        ends.append((start, stop))
    assert ends == sorted(ends)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends))


@pytest.mark.parametrize("rate", [24000, 16000])
def test_one_completed_transcript_per_utterance(triton_server, rate):
    pcm = sentences_pcm(rate)
    events = asyncio.run(_transcribe(ws_url(triton_server), pcm, rate))
    check_items(events, len(SENTENCES))


def test_manual_commits_without_turn_detection(triton_server):
    """turn_detection null: the buffer is transcribed as one item at each commit (beta names here)."""
    rate = 24000
    pcm = sentences_pcm(rate, SENTENCES[:1])

    async def run() -> list[dict]:
        async with websockets.connect(ws_url(triton_server), additional_headers=auth()) as ws:
            await ws.recv()
            session = {"input_audio_format": "pcm16", "turn_detection": None, "include": [INCLUDE_WORDS]}
            await ws.send(json.dumps({"type": "transcription_session.update", "session": session}))
            updated = json.loads(await ws.recv())
            assert updated["type"] == "transcription_session.updated", updated
            assert updated["session"]["turn_detection"] is None
            for start in range(0, pcm.size, 2400):
                await ws.send(append_event(pcm[start : start + 2400]))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            events = []
            while not events or events[-1]["type"] != COMPLETED:
                events.append(json.loads(await asyncio.wait_for(ws.recv(), RESULT_TIMEOUT)))
                assert events[-1]["type"] != "error", events[-1]
            return events

    events = asyncio.run(run())
    assert events[0]["type"] == "input_audio_buffer.committed"
    assert {e["item_id"] for e in events} == {events[0]["item_id"]}
    assert set(e["type"] for e in events[1:-1]) <= {DELTA}
    completed = events[-1]
    assert completed["usage"]["seconds"] == pytest.approx(pcm.size / rate, abs=0.05)
    assert isinstance(completed["words"], list)


def test_bad_frames_and_the_socket_stays_usable(triton_server):
    async def run() -> None:
        async with websockets.connect(ws_url(triton_server), additional_headers=auth()) as ws:
            await ws.recv()
            await ws.send('{"type": "input_audio_buffer.append", "audio": ')
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and error["error"]["code"] == "invalid_json"
            await ws.send(b"\x00\x01\x02 binary garbage \xff")
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and error["error"]["code"] == "invalid_frame"
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "***"}))
            assert json.loads(await ws.recv())["error"]["code"] == "invalid_audio"
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
            assert json.loads(await ws.recv())["type"] == "session.updated"

    asyncio.run(run())


def test_an_oversized_frame_closes_the_socket(triton_server):
    async def run() -> None:
        async with websockets.connect(ws_url(triton_server), additional_headers=auth(), max_size=None) as ws:
            await ws.recv()
            with pytest.raises(websockets.ConnectionClosed) as info:
                # The server may close while the frame is still being written: then send() sees the close.
                await ws.send("x" * (2 * 1024 * 1024))
                await asyncio.wait_for(ws.recv(), 10)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009

    asyncio.run(run())


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_a_bad_key_is_refused(triton_server, key):
    async def run() -> None:
        headers = auth(key) if key else {}
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(ws_url(triton_server), additional_headers=headers):
                pass
        assert info.value.response.status_code == 401

    asyncio.run(run())


def test_the_browser_subprotocol_carries_the_key(triton_server):
    async def run() -> None:
        protocols = ["realtime", f"openai-insecure-api-key.{GATEWAY_API_KEY}"]
        async with websockets.connect(ws_url(triton_server), subprotocols=protocols) as ws:
            assert ws.subprotocol == "realtime"
            assert json.loads(await ws.recv())["type"] == "session.created"

    asyncio.run(run())


def _gauge(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_a_client_that_vanishes_frees_its_stream_at_once(triton_server):
    gateway_metrics = f"{triton_server.openai_url}/metrics"
    pcm = sentences_pcm(24000)

    async def run() -> None:
        ws = await websockets.connect(ws_url(triton_server), additional_headers=auth())
        await ws.recv()
        for start in range(0, 24000 * 2, 2400):  # 2 s: speech under way
            await ws.send(append_event(pcm[start : start + 2400]))
        deadline = time.monotonic() + 30
        while _gauge(gateway_metrics, "qwen3_asr_gateway_realtime_streams") < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _gauge(gateway_metrics, "qwen3_asr_gateway_realtime_streams") >= 1
        # Gone without a close frame: the TCP connection is reset.
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        ws.transport.abort()

    asyncio.run(run())
    vanished = time.monotonic()
    # The gateway ends the stream at once (its END reaches Triton, which frees the state), well before
    # the tests' repository's 3 s idle timeout would expire an abandoned stream.
    while time.monotonic() < vanished + 2.5:
        streams = _gauge(gateway_metrics, "qwen3_asr_gateway_realtime_streams")
        sessions = _gauge(gateway_metrics, "qwen3_asr_gateway_realtime_sessions")
        server = _gauge(triton_server.metrics_url, "qwen3_asr_streaming_active_streams")
        if (streams, sessions, server) == (0, 0, 0):
            break
        time.sleep(0.05)
    assert (streams, sessions, server) == (0, 0, 0)


# Sentences of the long session: each is spoken three times, 30 utterances in about two and a half minutes.
LONG_SENTENCES = (
    "Good morning, and welcome to the weekly meeting.",
    "The first topic is the release of the new version.",
    "Testing finished yesterday and no blocking issues remain.",
    "The documentation still needs a few more examples.",
    "Next we will look at the performance numbers.",
    "Latency went down by almost a third since last month.",
    "Memory use stayed the same on every machine we tried.",
    "The team would like to try a larger model next.",
    "Please send your questions before Friday afternoon.",
    "Thank you all for joining, see you next week.",
)


@pytest.mark.slow
def test_minutes_of_speech_give_one_completed_per_utterance(triton_server):
    """Over two minutes of multi-utterance speech give exactly one completed transcript per utterance, in order."""
    rate = 24000
    sentences = LONG_SENTENCES * 3
    pcm = sentences_pcm(rate, sentences)
    assert pcm.size / rate > 120
    events = asyncio.run(_transcribe(ws_url(triton_server), pcm, rate, utterances=len(sentences)))
    check_items(events, len(sentences))
