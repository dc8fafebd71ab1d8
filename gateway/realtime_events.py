"""OpenAI's Realtime transcription protocol, without any I/O: client events in, server events out.

This module parses and validates the JSON text frames a client sends on
``/v1/realtime?intent=transcription``, keeps the session's configuration, and
turns the events of the client library's streams (:class:`Partial`, per-utterance
finals, a whole-stream :class:`Transcription`) into Realtime server events. The
WebSocket glue lives in :mod:`.realtime`; everything here is unit-tested without a server.

Names follow OpenAI's Realtime API: the GA ``session.update`` with
``session.type = "transcription"`` and ``audio.input.{format, transcription, turn_detection}``,
and the beta ``transcription_session.update`` with ``input_audio_format``,
``input_audio_transcription`` and ``turn_detection`` (answered with
``transcription_session.updated`` in the beta shape).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- limits and defaults
# Sample rates of PCM16 accepted: OpenAI's 24 kHz, and 16 kHz (the model's own rate; an extension).
SAMPLE_RATES = (24000, 16000)
DEFAULT_SAMPLE_RATE = 24000
# Longest prompt (context) accepted, in characters: hotwords and a short description, not a document.
MAX_PROMPT_CHARS = 4000
# Characters of a client's bad input quoted back in an error message.
EXCERPT_CHARS = 60
# Server VAD defaults (OpenAI's): threshold 0.5, 300 ms of padding, 500 ms of silence end a turn.
DEFAULT_VAD_THRESHOLD = 0.5
DEFAULT_PREFIX_PADDING_MS = 300
DEFAULT_SILENCE_DURATION_MS = 500
MAX_VAD_MS = 10_000
# include[] entries: OpenAI's logprobs (accepted, not produced) and word times (an extension).
INCLUDE_LOGPROBS = "item.input_audio_transcription.logprobs"
INCLUDE_WORDS = "item.input_audio_transcription.words"
INCLUDES = (INCLUDE_LOGPROBS, INCLUDE_WORDS)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

# Client event types understood.
CLIENT_EVENTS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)


class ProtocolError(Exception):
    """A client event the server refuses; answered with an ``error`` event (the socket stays open)."""

    def __init__(
        self, message: str, code: str = "invalid_value", param: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.event_id = event_id


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable quote of ``value`` for an error message."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: ``item_...``, ``event_...``, ``sess_...``."""
    return f"{prefix}_{secrets.token_hex(10)}"


# ----------------------------------------------------------------------------- session configuration
@dataclass(frozen=True)
class TurnDetection:
    """``server_vad``: the server's Silero VAD cuts the audio into utterances."""

    threshold: float = DEFAULT_VAD_THRESHOLD
    prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS
    silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
        }


@dataclass(frozen=True)
class SessionConfig:
    """What a transcription session is set to.

    ``turn_detection`` None means manual turns: audio is buffered until ``input_audio_buffer.commit``.
    """

    id: str = field(default_factory=lambda: new_id("sess"))
    sample_rate: int = DEFAULT_SAMPLE_RATE
    model: str = ""
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    include: tuple[str, ...] = ()

    @property
    def words(self) -> bool:
        return INCLUDE_WORDS in self.include

    def to_ga(self) -> dict[str, Any]:
        """The GA session object (``session.created`` / ``session.updated``)."""
        return {
            "object": "realtime.transcription_session",
            "type": "transcription",
            "id": self.id,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": self.sample_rate},
                    "transcription": {"model": self.model, "language": self.language, "prompt": self.prompt or ""},
                    "turn_detection": self.turn_detection.to_dict() if self.turn_detection else None,
                    "noise_reduction": None,
                }
            },
            "include": list(self.include),
        }

    def to_beta(self) -> dict[str, Any]:
        """The beta session object (``transcription_session.updated``)."""
        return {
            "object": "realtime.transcription_session",
            "id": self.id,
            "input_audio_format": "pcm16" if self.sample_rate == 24000 else f"pcm16_{self.sample_rate // 1000}khz",
            "input_audio_transcription": {"model": self.model, "language": self.language, "prompt": self.prompt or ""},
            "turn_detection": self.turn_detection.to_dict() if self.turn_detection else None,
            "input_audio_noise_reduction": None,
            "include": list(self.include),
        }


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{param} must be an object, got {excerpt(value)}", param=param)
    return value


def _number(value: Any, param: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"{param} must be a number, got {excerpt(value)}", param=param)
    if not low <= value <= high:
        raise ProtocolError(f"{param} must be between {low:g} and {high:g}, got {value:g}", param=param)
    return float(value)


def _int(value: Any, param: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{param} must be an integer, got {excerpt(value)}", param=param)
    if not low <= value <= high:
        raise ProtocolError(f"{param} must be between {low} and {high}, got {value}", param=param)
    return value


def _require_type(value: dict[str, Any], param: str, expected: str, hint: str) -> None:
    """Refuse ``value["type"]`` (default ``expected``) unless it is ``expected``."""
    kind = value.get("type", expected)
    if kind != expected:
        raise ProtocolError(
            f"{param}.type {excerpt(kind)} is not supported; {hint}", code="unsupported_value", param=f"{param}.type"
        )


def _turn_detection(value: Any, param: str, current: TurnDetection | None) -> TurnDetection | None:
    if value is None:
        return None
    value = _object(value, param)
    _require_type(value, param, "server_vad", "use 'server_vad' or null (manual commits)")
    base = current or TurnDetection()
    threshold = value.get("threshold")
    padding = value.get("prefix_padding_ms")
    silence = value.get("silence_duration_ms")
    return TurnDetection(
        threshold=base.threshold if threshold is None else _number(threshold, f"{param}.threshold", 0.0, 1.0),
        prefix_padding_ms=base.prefix_padding_ms
        if padding is None
        else _int(padding, f"{param}.prefix_padding_ms", 0, MAX_VAD_MS),
        silence_duration_ms=base.silence_duration_ms
        if silence is None
        else _int(silence, f"{param}.silence_duration_ms", 0, MAX_VAD_MS),
    )


def _transcription(value: Any, param: str, config: SessionConfig) -> SessionConfig:
    if value is None:
        return config
    value = _object(value, param)
    changes: dict[str, Any] = {}
    if "model" in value:
        model = value["model"]
        if model is not None and not isinstance(model, str):
            raise ProtocolError(f"{param}.model must be a string", param=f"{param}.model")
        changes["model"] = (model or "")[:128]
    if "language" in value:
        changes["language"] = check_language(value["language"], f"{param}.language")
    if "prompt" in value:
        prompt = value["prompt"]
        if prompt is not None and not isinstance(prompt, str):
            raise ProtocolError(f"{param}.prompt must be a string", param=f"{param}.prompt")
        if prompt and len(prompt) > MAX_PROMPT_CHARS:
            raise ProtocolError(
                f"{param}.prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are accepted",
                param=f"{param}.prompt",
            )
        changes["prompt"] = prompt or None
    return replace(config, **changes)


def check_language(value: Any, param: str) -> str | None:
    """An ISO-639-1 code or a language name the model knows; None (or "" / "auto") detects it."""
    if value is None or value == "" or value == "auto":
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{param} must be a string such as 'en', got {excerpt(value)}", param=param)
    from qwen3_asr_triton.client import TranscribeOptions

    try:
        TranscribeOptions(language=value)
    except ValueError:
        raise ProtocolError(f"{param} {excerpt(value)} is not a language the model knows", param=param) from None
    return value


def _include(value: Any, param: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"{param} must be a list of strings", param=param)
    unknown = [v for v in value if v not in INCLUDES]
    if unknown:
        raise ProtocolError(
            f"{param} entry {excerpt(unknown[0])} is not supported (supported: {', '.join(INCLUDES)})",
            code="unsupported_value",
            param=param,
        )
    return tuple(dict.fromkeys(value))


def _format_rate(value: Any, param: str) -> int:
    value = _object(value, param)
    _require_type(value, param, "audio/pcm", "send 'audio/pcm' (16-bit little-endian mono)")
    rate = value.get("rate", DEFAULT_SAMPLE_RATE)
    if isinstance(rate, bool) or rate not in SAMPLE_RATES:
        raise ProtocolError(
            f"{param}.rate must be 24000 or 16000, got {excerpt(rate)}", code="unsupported_value", param=f"{param}.rate"
        )
    return int(rate)


# Beta names of the input format: OpenAI's "pcm16" (24 kHz) and this server's 16 kHz variant.
BETA_FORMATS = {"pcm16": 24000, "pcm16_24khz": 24000, "pcm16_16khz": 16000}


def apply_ga_update(config: SessionConfig, session: Any) -> SessionConfig:
    """``session.update``'s ``session`` (GA shape) applied to ``config``."""
    session = _object(session, "session")
    kind = session.get("type", "transcription")
    if kind != "transcription":
        raise ProtocolError(
            f"session.type {excerpt(kind)} is not supported: this server only transcribes (use 'transcription')",
            code="unsupported_value",
            param="session.type",
        )
    if "include" in session:
        config = replace(config, include=_include(session["include"], "session.include"))
    audio = session.get("audio")
    if audio is None:
        return config
    audio = _object(audio, "session.audio")
    inputs = audio.get("input")
    if inputs is None:
        return config
    inputs = _object(inputs, "session.audio.input")
    if "format" in inputs and inputs["format"] is not None:
        config = replace(config, sample_rate=_format_rate(inputs["format"], "session.audio.input.format"))
    config = _transcription(inputs.get("transcription"), "session.audio.input.transcription", config)
    if "turn_detection" in inputs:
        config = replace(
            config,
            turn_detection=_turn_detection(
                inputs["turn_detection"], "session.audio.input.turn_detection", config.turn_detection
            ),
        )
    return config


def apply_beta_update(config: SessionConfig, session: Any) -> SessionConfig:
    """``transcription_session.update``'s ``session`` (beta shape) applied to ``config``."""
    session = _object(session, "session")
    if "input_audio_format" in session:
        name = session["input_audio_format"]
        if not isinstance(name, str) or name not in BETA_FORMATS:
            raise ProtocolError(
                f"session.input_audio_format {excerpt(name)} is not supported (supported: {', '.join(BETA_FORMATS)})",
                code="unsupported_value",
                param="session.input_audio_format",
            )
        config = replace(config, sample_rate=BETA_FORMATS[name])
    config = _transcription(session.get("input_audio_transcription"), "session.input_audio_transcription", config)
    if "turn_detection" in session:
        config = replace(
            config,
            turn_detection=_turn_detection(session["turn_detection"], "session.turn_detection", config.turn_detection),
        )
    if "include" in session:
        config = replace(config, include=_include(session["include"], "session.include"))
    return config


# ----------------------------------------------------------------------------- client events
@dataclass(frozen=True)
class ClientEvent:
    """One parsed client event; ``audio`` holds the decoded PCM16 of an append."""

    type: str
    event_id: str | None
    body: dict[str, Any]
    audio: bytes = b""


def parse_client_event(text: str) -> ClientEvent:
    """Parse and check one text frame.

    Raises
    ------
    ProtocolError
        Not JSON, not an object, no or an unknown ``type``, or a malformed ``audio``.
    """
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(f"the frame is not valid JSON: {excerpt(text)}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"an event must be a JSON object, got {excerpt(text)}", code="invalid_json")
    event_id = body.get("event_id")
    event_id = event_id[:64] if isinstance(event_id, str) else None
    kind = body.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(
            "the event has no 'type'", code="missing_required_parameter", param="type", event_id=event_id
        )
    if kind not in CLIENT_EVENTS:
        raise ProtocolError(
            f"event type {excerpt(kind)} is not supported by this transcription server"
            f" (supported: {', '.join(CLIENT_EVENTS)})",
            code="unknown_event",
            param="type",
            event_id=event_id,
        )
    audio = b""
    if kind == "input_audio_buffer.append":
        audio = decode_audio(body.get("audio"), event_id)
    return ClientEvent(kind, event_id, body, audio)


def decode_audio(value: Any, event_id: str | None = None) -> bytes:
    """The PCM16 bytes of an append's base64 ``audio``."""
    if not isinstance(value, str):
        raise ProtocolError(
            "input_audio_buffer.append needs 'audio': base64 of 16-bit little-endian mono PCM",
            code="missing_required_parameter" if value is None else "invalid_value",
            param="audio",
            event_id=event_id,
        )
    try:
        pcm = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            f"audio is not valid base64: {excerpt(value)}", code="invalid_audio", param="audio", event_id=event_id
        ) from None
    if len(pcm) % 2:
        raise ProtocolError(
            f"audio holds {len(pcm)} bytes, not whole 16-bit samples",
            code="invalid_audio",
            param="audio",
            event_id=event_id,
        )
    return pcm


def pcm16_samples(pcm: bytes) -> np.ndarray:
    """Little-endian PCM16 bytes as int16 samples."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)


# ----------------------------------------------------------------------------- server events
def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error_event(
    message: str,
    error_type: str = INVALID_REQUEST,
    code: str | None = None,
    param: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """OpenAI's ``error`` event (``event_id`` inside ``error`` names the client event at fault)."""
    return server_event(
        "error",
        error={"type": error_type, "code": code, "message": message[:800], "param": param, "event_id": event_id},
    )


def protocol_error_event(exc: ProtocolError) -> dict[str, Any]:
    return error_event(exc.message, INVALID_REQUEST, exc.code, exc.param, exc.event_id)


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


# ----------------------------------------------------------------------------- deltas
def _is_cjk(char: str) -> bool:
    return ord(char) >= 0x2E80


def stable_prefix(hypothesis: str) -> str:
    """The part of a partial hypothesis that its next revision is not expected to change: up to its
    last word boundary (a space; or the character before a trailing CJK character, each being a word)."""
    cut = max(hypothesis.rfind(" "), hypothesis.rfind("\n"), hypothesis.rfind("\t"))
    if hypothesis and _is_cjk(hypothesis[-1]):
        cut = max(cut, len(hypothesis) - 1)
    return hypothesis[:cut] if cut > 0 else ""


def common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def next_delta(sent: str, hypothesis: str, previous: str | None = None) -> str:
    """What to send after ``sent`` for a partial ``hypothesis``: its new stable words, or nothing
    when it does not extend what was sent (a revision of sent words: wait for the final).

    With ``previous`` (the hypothesis before), only the words both agree on count as stable
    ("local agreement": a word is sent once two consecutive partials agree on it).
    """
    if previous is not None:
        hypothesis = common_prefix(previous, hypothesis)
    stable = stable_prefix(hypothesis)
    if len(stable) > len(sent) and stable.startswith(sent):
        return stable[len(sent) :]
    return ""


def final_delta(sent: str, transcript: str) -> str:
    """The last delta before ``completed``: the rest of the transcript when it extends what was sent."""
    if len(transcript) > len(sent) and transcript.startswith(sent):
        return transcript[len(sent) :]
    return ""


# ----------------------------------------------------------------------------- stream events -> server events
def _kind(event: Any) -> str:
    """``partial``, ``utterance`` (an endpointed final) or ``final`` (a whole stream's Transcription)."""
    if hasattr(event, "transcription") and hasattr(event, "index"):
        return "utterance"
    if hasattr(event, "confidence") and hasattr(event, "segments"):  # (a Transcription has audio_seconds too)
        return "final"
    if hasattr(event, "audio_seconds"):
        return "partial"
    return "other"


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _words(transcription: Any, offset_s: float) -> list[dict[str, Any]]:
    out = []
    for w in getattr(transcription, "words", ()) or ():
        word = getattr(w, "word", None) or getattr(w, "text", "")
        out.append({"word": word, "start": round(w.start + offset_s, 3), "end": round(w.end + offset_s, 3)})
    return out


@dataclass
class _Item:
    id: str
    sent: str = ""
    started: bool = False
    last: str | None = None  # the previous partial hypothesis


class StreamTranslator:
    """Turns one upstream stream's events into Realtime server events.

    Parameters
    ----------
    offset_s : float
        Where the stream starts in the session's audio, seconds (``audio_start_ms`` and word
        times count from the session's first sample).
    vad : bool
        Endpointed stream (server VAD): one item per utterance, with speech started/stopped and
        committed events. Otherwise one item (``item_id``) for the whole stream, already committed.
    words : bool
        Add ``words`` (an extension) to ``completed``.
    item_id : str, optional
        The item of a manual-commit stream.
    previous_item_id : callable, optional
        Returns the last committed item's id, and is told of each new commit (shared by a session's streams).
    """

    def __init__(
        self,
        offset_s: float = 0.0,
        vad: bool = True,
        words: bool = False,
        item_id: str | None = None,
        last_item: Callable[[str | None], str | None] | None = None,
    ) -> None:
        self.offset_s = offset_s
        self.vad = vad
        self.words = words
        self._items: dict[int, _Item] = {}
        self._manual_item = _Item(item_id or new_id("item"), started=True)
        self._last_item = last_item or (lambda new: None)
        self.completed = 0

    def _item(self, index: int) -> _Item:
        if not self.vad:
            return self._manual_item
        if index not in self._items:
            self._items[index] = _Item(new_id("item"))
        return self._items[index]

    def open_items(self) -> list[str]:
        """Items whose speech started and that got no completed event yet."""
        if not self.vad:
            return [self._manual_item.id] if self.completed == 0 else []
        return [item.id for item in self._items.values() if item.started]

    def handle(self, event: Any) -> list[dict[str, Any]]:
        kind = _kind(event)
        if kind == "partial":
            return self._partial(event)
        if kind == "utterance":
            return self._utterance(event)
        if kind == "final":
            return self._final(event)
        return []

    def _started(self, item: _Item, start_s: float) -> list[dict[str, Any]]:
        if item.started:
            return []
        item.started = True
        return [
            server_event(
                "input_audio_buffer.speech_started", audio_start_ms=_ms(self.offset_s + start_s), item_id=item.id
            )
        ]

    def _delta(self, item: _Item, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        item.sent += text
        return [
            server_event(
                "conversation.item.input_audio_transcription.delta", item_id=item.id, content_index=0, delta=text
            )
        ]

    def _partial(self, partial: Any) -> list[dict[str, Any]]:
        index = getattr(partial, "utterance", None) or 0
        item = self._item(index)
        events: list[dict[str, Any]] = []
        if self.vad:
            if not (partial.text or "").strip() and not item.started:
                return []
            events += self._started(item, float(getattr(partial, "utterance_start", 0.0) or 0.0))
        text = partial.text or ""
        events += self._delta(item, next_delta(item.sent, text, item.last if item.last is not None else ""))
        item.last = text
        return events

    def _completed(self, item: _Item, transcription: Any, seconds: float, extra: dict[str, Any]) -> list[dict]:
        text = transcription.text or ""
        events = self._delta(item, final_delta(item.sent, text))
        body: dict[str, Any] = {
            "item_id": item.id,
            "content_index": 0,
            "transcript": text,
            "usage": {"type": "duration", "seconds": round(max(0.0, seconds), 3)},
            "language": transcription.language,
            **extra,
        }
        if self.words:
            body["words"] = _words(transcription, self.offset_s)
        events.append(server_event("conversation.item.input_audio_transcription.completed", **body))
        self.completed += 1
        return events

    def _utterance(self, utt: Any) -> list[dict[str, Any]]:
        item = self._item(utt.index)
        start, end = float(utt.start), float(utt.end)
        events = self._started(item, start)
        previous = self._last_item(item.id)
        events.append(
            server_event("input_audio_buffer.speech_stopped", audio_end_ms=_ms(self.offset_s + end), item_id=item.id)
        )
        events.append(server_event("input_audio_buffer.committed", previous_item_id=previous, item_id=item.id))
        extra = {"start": round(self.offset_s + start, 3), "end": round(self.offset_s + end, 3)}
        events += self._completed(item, utt.transcription, end - start, extra)
        self._items.pop(utt.index, None)
        return events

    def _final(self, transcription: Any) -> list[dict[str, Any]]:
        item = self._manual_item
        segments = getattr(transcription, "segments", ()) or ()
        seconds = float(segments[-1].end) if segments else 0.0
        return self._completed(item, transcription, seconds, {})


def failed_event(item_id: str, message: str, code: str | None = "upstream_error") -> dict[str, Any]:
    """``conversation.item.input_audio_transcription.failed`` for an item whose transcription broke off."""
    return server_event(
        "conversation.item.input_audio_transcription.failed",
        item_id=item_id,
        content_index=0,
        error={"type": SERVER_ERROR, "code": code, "message": message[:800], "param": None},
    )
