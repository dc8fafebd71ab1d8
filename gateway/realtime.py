"""``/v1/realtime?intent=transcription``: OpenAI's Realtime transcription over a WebSocket.

The protocol itself (parsing, validation, the events) is :mod:`.realtime_events`;
this module is the glue between a Starlette WebSocket and the client library's
streams to Triton:

- ``turn_detection: server_vad`` (the default): appended audio feeds one live stream
  with the server's endpointing on; every utterance the server's VAD cuts gets speech
  started/stopped, committed, deltas and completed. The stream is ended (its open
  utterance finalised) on ``input_audio_buffer.commit``, or after
  :data:`STREAM_PAUSE_SECONDS` without audio; the next append starts a new one.
- ``turn_detection: null``: audio is buffered (at most :data:`MAX_COMMIT_SECONDS`) until
  ``input_audio_buffer.commit``, which transcribes the buffer as one item.

Bounds: text frames of at most :data:`MAX_FRAME_BYTES` (uvicorn closes the socket with
1009 on larger ones), :data:`MAX_BUFFERED_SECONDS` of audio waiting for Triton (the
socket is then read no further until it drains), :data:`IDLE_TIMEOUT_SECONDS` without
any client event, :data:`MAX_ERRORS` refused events. When the client goes away, its
streams are cancelled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from qwen3_asr_triton.client import Qwen3ASRError, StreamOptions, TranscribeOptions

from .errors import ApiError, from_client_error
from .realtime_events import (
    SERVER_ERROR,
    ClientEvent,
    ProtocolError,
    SessionConfig,
    StreamTranslator,
    apply_beta_update,
    apply_ga_update,
    dumps,
    error_event,
    failed_event,
    new_id,
    parse_client_event,
    pcm16_samples,
    protocol_error_event,
    server_event,
)

logger = logging.getLogger(__name__)

# Largest text frame, bytes: an append of 2 s of 24 kHz PCM16 is 128 KB of base64; OpenAI's own
# limit is 15 MiB per event, browsers send 20-100 ms at a time.
MAX_FRAME_BYTES = 1024 * 1024
# Audio received but not yet sent to Triton; past it the socket is not read until it drains.
MAX_BUFFERED_SECONDS = 30.0
# Audio of one manual (turn_detection null) commit.
MAX_COMMIT_SECONDS = 300.0
# A session with no client event for this long, and no transcription under way, is closed.
IDLE_TIMEOUT_SECONDS = 120.0
# A server-VAD stream with no audio for this long is ended (its open utterance finalised); Triton
# drops a stream that gets no chunk for a few seconds.
STREAM_PAUSE_SECONDS = 1.5
# Seconds between WebSocket pings, and to wait for the pong before closing (a client that vanished
# without a close frame or a TCP reset is found within twice this).
WS_PING_SECONDS = 20.0
# After the client went away, its live streams get this long to deliver their END to Triton.
CLOSE_GRACE_SECONDS = 2.0
# Refused events (malformed JSON, binary frames...) before the session is closed with 1008.
MAX_ERRORS = 100
# Audio per streaming request to Triton: one partial per chunk at most.
CHUNK_SECONDS = 0.5
# The subprotocol browsers use to pass the key (they cannot set headers on a WebSocket).
KEY_PROTOCOL_PREFIX = "openai-insecure-api-key."
# WebSocket close codes.
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_ERROR, CLOSE_TRY_LATER = 1000, 1008, 1011, 1013


def _offered_protocols(websocket: WebSocket) -> list[str]:
    header = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def presented_key(headers: Any, protocols: list[str]) -> str | None:
    """The key of ``Authorization: Bearer`` or of an ``openai-insecure-api-key.<key>`` subprotocol."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for protocol in protocols:
        if protocol.startswith(KEY_PROTOCOL_PREFIX):
            return protocol[len(KEY_PROTOCOL_PREFIX) :]
    return None


def check_key(presented: str | None, api_key: str | None) -> ApiError | None:
    if api_key is None:
        return None
    if not presented:
        return ApiError(401, "You didn't provide an API key", code="missing_api_key")
    if not hmac.compare_digest(presented.encode("utf-8", "replace"), api_key.encode("utf-8")):
        return ApiError(401, "Incorrect API key provided", code="invalid_api_key")
    return None


def chosen_protocol(protocols: list[str]) -> str | None:
    """The subprotocol answered: ``realtime`` when offered, else the first one that carries no key."""
    if "realtime" in protocols:
        return "realtime"
    plain = [p for p in protocols if not p.startswith(KEY_PROTOCOL_PREFIX)]
    if plain:
        return plain[0]
    return protocols[0] if protocols else None


async def _deny(websocket: WebSocket, error: ApiError) -> None:
    """Refuse the handshake: an HTTP error in OpenAI's shape where the server supports it, else close 1008."""
    from starlette.responses import JSONResponse

    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(error.body(), status_code=error.status))
    else:
        await websocket.close(CLOSE_POLICY if error.status in (401, 403) else CLOSE_TRY_LATER, error.message[:120])


async def realtime_endpoint(websocket: WebSocket) -> None:
    """The WebSocket route."""
    state = websocket.app.state.gateway
    protocols = _offered_protocols(websocket)
    denied = check_key(presented_key(websocket.headers, protocols), state.options.api_key)
    if denied is not None:
        await _deny(websocket, denied)
        return
    intent = websocket.query_params.get("intent")
    if intent not in (None, "transcription"):
        await _deny(websocket, ApiError(400, "only intent=transcription is supported", code="unsupported"))
        return
    try:
        slot = state.limit.acquire()
        client = state.clients().next()
    except ApiError as exc:
        await _deny(websocket, exc)
        return
    await websocket.accept(subprotocol=chosen_protocol(protocols))
    session = RealtimeSession(
        websocket, client, state.options.triton_url, state.metrics, state.options.served_model_name
    )
    try:
        await session.run()
    finally:
        slot.release()


class AudioQueue:
    """PCM frames waiting for Triton, bounded in seconds; ``None`` ends the stream."""

    def __init__(self, sample_rate: int, max_seconds: float = MAX_BUFFERED_SECONDS) -> None:
        self.sample_rate = sample_rate
        self.max_samples = int(max_seconds * sample_rate)
        self.samples = 0
        self._queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self._drained = asyncio.Event()
        self.accepting = True

    async def put(self, frame: np.ndarray) -> bool:
        """Queue ``frame`` once there is room; False when the stream stopped taking audio meanwhile."""
        while self.samples >= self.max_samples and self.accepting:
            self._drained.clear()
            await self._drained.wait()
        if not self.accepting:
            return False
        self.samples += frame.size
        self._queue.put_nowait(frame)
        return True

    def finish_now(self) -> None:
        """Drop the audio not yet sent and end the stream: its END reaches Triton next, which frees its state."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self.samples = 0
        self.accepting = False
        self._queue.put_nowait(None)
        self._drained.set()

    def abort(self) -> None:
        """The stream is over: take no more audio and wake a waiting :meth:`put`."""
        self.accepting = False
        self._drained.set()

    def end(self) -> None:
        if self.accepting:
            self.accepting = False
            self._queue.put_nowait(None)

    async def frames(self, pause: float) -> AsyncIterator[np.ndarray]:
        """The frames as they come; ends at :meth:`end` or after ``pause`` seconds without a frame."""
        while True:
            try:
                frame = await asyncio.wait_for(self._queue.get(), pause)
            except asyncio.TimeoutError:
                self.accepting = False
                return
            if frame is None:
                return
            self.samples -= frame.size
            self._drained.set()
            yield frame


class RealtimeSession:
    """One WebSocket connection's state: its configuration, its audio, its streams to Triton."""

    def __init__(self, websocket: WebSocket, client: Any, triton_url: str, metrics: Any, model: str) -> None:
        self.ws = websocket
        self.client = client
        self.triton_url = triton_url
        self.metrics = metrics
        self.config = SessionConfig(model=model)
        self.beta = False
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._live: AudioQueue | None = None
        self._queues: set[AudioQueue] = set()  # every live stream's queue, the one being ended included
        self._manual = bytearray()
        self._manual_item: str | None = None
        self._manual_offset = 0  # session samples before the manual buffer
        self._manual_chain: asyncio.Task | None = None
        self.samples = 0  # PCM samples received in this session (at the current rate)
        self.seconds_before = 0.0  # audio of earlier sample rates, seconds
        self._last_item: str | None = None
        self.errors = 0
        self.closed = False

    # ------------------------------------------------------------------ helpers
    @property
    def audio_seconds(self) -> float:
        return self.seconds_before + self.samples / self.config.sample_rate

    def _note_item(self, item_id: str | None) -> str | None:
        previous, self._last_item = self._last_item, item_id or self._last_item
        return previous

    async def send(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        async with self._send_lock:
            try:
                await self.ws.send_text(dumps(event))
            except Exception:  # the client is gone: the receive loop notices and cleans up
                self.closed = True

    async def send_all(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            await self.send(event)

    async def refuse(self, exc: ProtocolError) -> None:
        self.errors += 1
        await self.send(protocol_error_event(exc))

    def _spawn(self, coro: Any, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("realtime task %s failed", task.get_name(), exc_info=task.exception())

    def _options(self) -> TranscribeOptions:
        return TranscribeOptions(
            language=self.config.language, context=self.config.prompt, timestamps=self.config.words
        )

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        self.metrics.realtime_sessions.inc()
        try:
            await self.send(server_event("session.created", session=self.config.to_ga()))
            while not self.closed:
                try:
                    message = await asyncio.wait_for(self.ws.receive(), IDLE_TIMEOUT_SECONDS)
                except asyncio.TimeoutError:
                    if self._tasks:  # still transcribing what the client sent: not idle
                        continue
                    await self.send(
                        error_event(f"no event for {IDLE_TIMEOUT_SECONDS:g} s: closing", code="idle_timeout")
                    )
                    await self._close(CLOSE_NORMAL, "idle timeout")
                    return
                if message["type"] == "websocket.disconnect":
                    logger.info("realtime client disconnected (code %s)", message.get("code"))
                    self.closed = True
                    return
                text = message.get("text")
                if text is None:
                    size = len(message.get("bytes") or b"")
                    await self.refuse(
                        ProtocolError(
                            f"binary frames are not supported ({size} bytes received): send JSON text events,"
                            " with audio as base64 in input_audio_buffer.append",
                            code="invalid_frame",
                        )
                    )
                else:
                    await self.handle_text(text)
                if self.errors >= MAX_ERRORS:
                    await self._close(CLOSE_POLICY, "too many invalid events")
                    return
        except WebSocketDisconnect:
            self.closed = True
        finally:
            try:
                await self.shutdown()
            finally:
                self.metrics.realtime_sessions.dec()

    async def _close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason)

    async def shutdown(self) -> None:
        """End every stream at once (the client is gone or the session ends).

        A live stream's unsent audio is dropped and its END sent right away, so Triton frees the
        stream's state as soon as it answers (rather than after its idle timeout, as it would for a
        cancelled stream); what is still running after :data:`CLOSE_GRACE_SECONDS` is cancelled.
        Manual commits being transcribed are cancelled at once.
        """
        self.closed = True
        for queue in list(self._queues):
            queue.finish_now()
        tasks = list(self._tasks)
        for task in tasks:
            if task.get_name() == "realtime-commit":
                task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def handle_text(self, text: str) -> None:
        try:
            event = parse_client_event(text)
            if event.type in ("session.update", "transcription_session.update"):
                await self.update(event)
            elif event.type == "input_audio_buffer.append":
                await self.append(event)
            elif event.type == "input_audio_buffer.commit":
                await self.commit(event)
            elif event.type == "input_audio_buffer.clear":
                await self.clear()
        except ProtocolError as exc:
            await self.refuse(exc)

    # ------------------------------------------------------------------ client events
    async def update(self, event: ClientEvent) -> None:
        beta = event.type == "transcription_session.update"
        try:
            apply = apply_beta_update if beta else apply_ga_update
            config = apply(self.config, event.body.get("session"))
        except ProtocolError as exc:
            exc.event_id = event.event_id
            raise
        if config.sample_rate != self.config.sample_rate:
            if self._manual:
                raise ProtocolError(
                    "the sample rate cannot change while uncommitted audio is buffered: commit or clear it first",
                    param="session.audio.input.format.rate",
                    event_id=event.event_id,
                )
            self.seconds_before = self.audio_seconds
            self.samples = 0
            self._end_live()  # the next append starts a stream at the new rate
        if (config.turn_detection is None) != (self.config.turn_detection is None):
            self._end_live()
        self.config = config
        self.beta = beta
        if beta:
            await self.send(server_event("transcription_session.updated", session=config.to_beta()))
        else:
            await self.send(server_event("session.updated", session=config.to_ga()))

    async def append(self, event: ClientEvent) -> None:
        if not event.audio:
            return
        samples = pcm16_samples(event.audio)
        if self.config.turn_detection is None:
            limit = int(MAX_COMMIT_SECONDS * self.config.sample_rate) * 2
            if len(self._manual) + len(event.audio) > limit:
                raise ProtocolError(
                    f"the input audio buffer holds {MAX_COMMIT_SECONDS:g} s at most: commit it before appending more",
                    code="input_audio_buffer_full",
                    event_id=event.event_id,
                )
            if not self._manual:
                self._manual_offset = self.samples
            self._manual += event.audio
            self.samples += samples.size
            return
        for _ in range(2):
            if self._live is None or not self._live.accepting:
                self._start_live()
            assert self._live is not None
            if await self._live.put(samples):
                self.samples += samples.size
                return

    async def commit(self, event: ClientEvent) -> None:
        if self.config.turn_detection is not None:
            # Server VAD commits by itself; an explicit commit ends the stream, finalising the open utterance.
            self._end_live()
            return
        if not self._manual:
            raise ProtocolError(
                "the input audio buffer is empty: append audio before committing",
                code="input_audio_buffer_commit_empty",
                event_id=event.event_id,
            )
        pcm, self._manual = bytes(self._manual), bytearray()
        item_id = new_id("item")
        previous = self._note_item(item_id)
        await self.send(server_event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id))
        offset = self.seconds_before + self._manual_offset / self.config.sample_rate
        translator = StreamTranslator(offset, vad=False, words=self.config.words, item_id=item_id)
        before = self._manual_chain
        self._manual_chain = self._spawn(
            self._run_manual(before, pcm16_samples(pcm), self.config.sample_rate, translator), "realtime-commit"
        )

    async def clear(self) -> None:
        self._manual = bytearray()
        if self._live is not None:
            live, self._live = self._live, None
            live.end()
            for task in list(self._tasks):
                if task.get_name() == f"realtime-live-{id(live)}":
                    task.cancel()
        await self.send(server_event("input_audio_buffer.cleared"))

    # ------------------------------------------------------------------ streams
    def _end_live(self) -> None:
        if self._live is not None:
            self._live.end()
            self._live = None

    def _start_live(self) -> None:
        from qwen3_asr_triton.client import EndpointingOptions

        vad = self.config.turn_detection
        assert vad is not None
        endpointing = EndpointingOptions(
            vad_threshold=min(max(vad.threshold, 0.01), 0.99),  # OpenAI allows 0 and 1, Silero's knob not
            vad_min_silence_ms=vad.silence_duration_ms,
            vad_speech_pad_ms=vad.prefix_padding_ms,
        )
        queue = AudioQueue(self.config.sample_rate)
        self._live = queue
        self._queues.add(queue)
        translator = StreamTranslator(self.audio_seconds, vad=True, words=self.config.words, last_item=self._note_item)
        options = StreamOptions(chunk_seconds=CHUNK_SECONDS, endpointing=endpointing)
        stream = self.client.stream(
            queue.frames(STREAM_PAUSE_SECONDS), self._options(), options, sample_rate=self.config.sample_rate
        )
        self._spawn(self._run_stream(stream, translator, queue), f"realtime-live-{id(queue)}")

    async def _run_manual(
        self, before: asyncio.Task | None, samples: np.ndarray, rate: int, translator: StreamTranslator
    ) -> None:
        if before is not None:
            await asyncio.gather(before, return_exceptions=True)
        stream = self.client.stream(
            samples, self._options(), StreamOptions(chunk_seconds=1.0, speed=0), sample_rate=rate
        )
        await self._run_stream(stream, translator)

    async def _run_stream(self, stream: Any, translator: StreamTranslator, queue: AudioQueue | None = None) -> None:
        self.metrics.realtime_streams.inc()
        try:
            async for item in stream:
                await self.send_all(translator.handle(item))  # nothing is sent once the client is gone
        except asyncio.CancelledError:
            raise
        except Qwen3ASRError as exc:
            error = from_client_error(exc, self.triton_url)
            for item_id in translator.open_items():
                await self.send(failed_event(item_id, error.message, error.code))
            await self.send(
                error_event(error.message, SERVER_ERROR if error.status >= 500 else "invalid_request_error", error.code)
            )
        except Exception:
            logger.exception("realtime stream failed")
            await self.send(error_event("the transcription stream failed", SERVER_ERROR, "internal_error"))
        finally:
            try:
                if queue is not None:
                    queue.abort()
                    self._queues.discard(queue)
                    if self._live is queue:
                        self._live = None
                with contextlib.suppress(Exception):
                    await asyncio.shield(stream.aclose())
            finally:  # also when the shutdown's grace ends (a cancel) while the stream is closing
                self.metrics.realtime_streams.dec()
