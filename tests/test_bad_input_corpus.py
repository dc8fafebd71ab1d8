"""A standing corpus of bad input against a real server, on every face: gRPC unary, HTTP unary, gRPC streaming.

Each kind records exactly what the server answers: the gRPC status or HTTP status code, a regex of the
message and who answers it. ``MODEL`` kinds are answered by our python models and must be client errors
(INVALID_ARGUMENT / 400) with a clear, short message; ``GUARD`` kinds are refused by the gRPC guard that
serves the clients' gRPC port (tensors that do not carry what they declare, over-long names) before
Triton sees them, also with INVALID_ARGUMENT; ``TRITON`` kinds are refused by Triton 2.51 itself
before any model code runs (shape, dtype, JSON parsing, routing), and record what Triton does, warts
included (it answers malformed JSON with 500, wraps JSON integers to INT32, echoes long names). A few
malformed inputs are tolerated on purpose (``OK``: a WAV header that over-states its data, a file cut
short): the server transcribes what is there, as the official front end (librosa) does.

After every bad request the server must still be live: its script did not restart Triton, and a tiny good
request (the first clip, 4 tokens) gets the same tokens as before the corpus ran; under load, good requests
racing every bad unary kind stay token-for-token equal to the same requests sent alone. Streams must go on
after a refused chunk: the next good chunk and END still work. Errors on a gRPC stream carry a message only
(the stream protocol has no status code), so for them "not an internal error" is checked on the message.

Known bugs of our models are cases marked ``xfail(strict=True)``: each states the right answer, so it turns
into a failure (to unmark) once the bug is fixed.

Requests that crash Triton 2.51 or one of its python workers when they reach it (``CRASHERS``) go to a server
of their own (``test_inputs_that_take_triton_down_are_recovered_from``), sent to Triton's own loopback ports;
sending them would restart the session's server under the other tests. Through the gRPC guard, the gRPC one
is an ordinary GUARD case.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import queue
import re
import struct
import threading
import time
import urllib.error
import urllib.request
import wave as wavefile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from tests.triton_requests import transcribe

pytestmark = pytest.mark.server

MODEL_NAME = "qwen3_asr"
STREAM_MODEL = "qwen3_asr_streaming"
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
JSON_HEADERS = {"Content-Type": "application/json"}
MODEL, TRITON, GUARD = "model", "triton", "guard"  # who answers a kind
INVALID = "INVALID_ARGUMENT"
OK = "OK"
# Every error message stays short, whatever the input (our models quote at most 100 characters of a value).
MAX_MESSAGE = 1000
# Sequence ids of this module's streams (other server tests use ids below 10,000).
_SEQUENCE_IDS = itertools.count(930_000, 10)


# ----------------------------------------------------------------------------- payload helpers
@dataclass(frozen=True)
class Assets:
    """Real files the cases are built from (the test clips)."""

    speech: bytes  # clips[0], a 16 kHz WAV: the liveness request's file
    flac: bytes  # de_greeting.flac
    m4a: bytes  # zh_park.m4a


def strings(*values: bytes | str) -> np.ndarray:
    return np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=np.object_)


def pcm(samples: int = 1600, value: float = 0.01) -> np.ndarray:
    return np.full(samples, value, np.float32)


def with_bad(value: float, samples: int = 1600) -> np.ndarray:
    out = pcm(samples)
    out[1::2] = value
    return out


Tensors = tuple  # of (name, datatype, numpy array)


def request(
    audio: bytes | None = None,
    waveform: np.ndarray | None = None,
    rate: int | None = None,
    language: bytes | str | None = None,
    context: bytes | str | None = None,
    timestamps: bool | None = None,
    max_new: int | None = None,
    min_new: int | None = None,
    extra: tuple = (),
) -> Tensors:
    """Inputs of one unary request, in the public contract's names and types."""
    items = []
    if audio is not None:
        items.append(("AUDIO", "BYTES", strings(audio)))
    if waveform is not None:
        items.append(("WAVEFORM", "FP32", np.asarray(waveform, np.float32)))
    if rate is not None:
        items.append(("SAMPLE_RATE", "INT32", np.array([rate], np.int32)))
    if language is not None:
        items.append(("LANGUAGE", "BYTES", strings(language)))
    if context is not None:
        items.append(("CONTEXT", "BYTES", strings(context)))
    if timestamps is not None:
        items.append(("RETURN_TIMESTAMPS", "BOOL", np.array([timestamps])))
    if max_new is not None:
        items.append(("MAX_NEW_TOKENS", "INT32", np.array([max_new], np.int32)))
    if min_new is not None:
        items.append(("MIN_NEW_TOKENS", "INT32", np.array([min_new], np.int32)))
    return (*items, *extra)


def wav_header(data_bytes: int, rate: int = 16000, channels: int = 1, bits: int = 16, codec: int = 1) -> bytes:
    """A canonical 44-byte RIFF/WAVE header (``codec`` 1: PCM, 3: IEEE float)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", codec, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    riff = min(36 + data_bytes, 0xFFFFFFFF)
    return (
        struct.pack("<4sI4s4sI", b"RIFF", riff, b"WAVE", b"fmt ", 16) + fmt + struct.pack("<4sI", b"data", data_bytes)
    )


def float_wav(value: float, samples: int = 800) -> bytes:
    return wav_header(4 * samples, bits=32, codec=3) + np.full(samples, value, np.float32).tobytes()


def wav_file(rate: int, seconds: float = 0.25) -> bytes:
    """A valid mono 16-bit WAV of a quiet tone."""
    n = int(rate * seconds)
    tone = (np.sin(np.arange(n) * 2 * np.pi * 440 / rate) * 3000).astype("<i2")
    buf = io.BytesIO()
    with wavefile.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone.tobytes())
    return buf.getvalue()


def flac_announcing(seconds: int) -> bytes:
    """A real 1 s FLAC whose STREAMINFO claims ``seconds`` of audio (refused from the header alone)."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.zeros(16000, np.float32), 16000, format="FLAC")
    data = bytearray(buf.getvalue())
    # "fLaC", a 4-byte block header, then STREAMINFO: its bytes 10..17 end with the 36-bit total sample count.
    field = int.from_bytes(data[18:26], "big")
    field = (field & ~((1 << 36) - 1)) | (seconds * 16000)
    data[18:26] = field.to_bytes(8, "big")
    return bytes(data)


@dataclass(frozen=True)
class Wire:
    """A gRPC ModelInferRequest written field by field (what tritonclient refuses to build)."""

    inputs: tuple  # of (name, datatype, shape, raw bytes or None for no raw content)
    model: str = MODEL_NAME
    version: str = ""
    extra_raw: tuple = ()  # raw_input_contents beyond one per input


@dataclass(frozen=True)
class Raw:
    """A hand-written HTTP request."""

    body: bytes | None
    method: str = "POST"
    path: str = INFER_PATH
    headers: tuple = tuple(JSON_HEADERS.items())


@dataclass(frozen=True)
class Case:
    build: Callable[[Assets], Any]  # -> Tensors (tritonclient), Wire, Raw, or a list of Steps (streams)
    code: str  # gRPC status name, HTTP status code, OK, or "" for streams (errors carry no code there)
    pattern: str  # regex the error message must match (ignored for OK)
    by: str = MODEL
    max_chars: int = MAX_MESSAGE
    outputs: tuple = ()  # requested outputs (tritonclient faces)
    model: str = MODEL_NAME  # tritonclient faces
    json_inputs: tuple = ()  # tritonclient.http: inputs sent as JSON data (the others as binary tensors)
    xfail: str = ""  # a known server bug: the case states the right answer and is expected to fail


def _g(build, code, pattern, by=MODEL, **kw) -> Case:
    return Case(build, code, pattern, by, **kw)


# ----------------------------------------------------------------------------- gRPC unary corpus
def _rate_message(rate: int, what: str = "SAMPLE_RATE") -> str:
    return rf"^{what} must be between 4000 and 384000 Hz, got {rate}$"


def _triton_dtype(name: str, got: str, want: str, model: str = MODEL_NAME) -> str:
    return rf"inference input '{name}' data-type is '{re.escape(got)}', but model '{model}' expects '{want}'"


def _triton_shape(name: str, want: str, got: str, model: str = MODEL_NAME) -> str:
    return (
        rf"unexpected shape for input '{name}' for model '{model}'\. Expected {re.escape(want)}, got {re.escape(got)}"
    )


UNDECODABLE = r"^could not decode AUDIO: "
CONTROL = r"^CONTEXT must not contain the control token '{}'$"
EXACTLY_ONE = r"^send exactly one of AUDIO \(file bytes\) or WAVEFORM \(\+ SAMPLE_RATE\)$"
LANGUAGE_100K = r"^unknown LANGUAGE 'x{98}\.\.\. \(100000 characters\); use 'auto' or one of: "
F32 = pcm(1600).tobytes()
R16K = np.array([16000], np.int32).tobytes()


def _speech(**kw):
    return lambda a: request(audio=a.speech, **kw)


def _wave(waveform, **kw):
    return lambda a: request(waveform=waveform, **kw)


def _wire(*inputs, **kw):
    return lambda a: Wire(tuple(inputs), **kw)


def _overflowing_wire(a: Assets) -> Wire:
    # 4 bytes x 2**62 samples wraps to 0 bytes in Triton's size check, so an empty payload passes it.
    return Wire((("WAVEFORM", "FP32", [2**62], b""), ("SAMPLE_RATE", "INT32", [1], R16K)))


GRPC_CASES: dict[str, Case] = {
    # --- files: empty, not audio, corrupt or truncated containers
    "file: empty": _g(lambda a: request(audio=b""), INVALID, r"^AUDIO is empty: send the bytes of an audio file$"),
    "file: one zero byte": _g(lambda a: request(audio=b"\x00"), INVALID, UNDECODABLE),
    "file: 4 KiB of random bytes": _g(
        lambda a: request(audio=np.random.default_rng(7).bytes(4096)), INVALID, UNDECODABLE
    ),
    "file: plain text": _g(lambda a: request(audio=b"hello world\n" * 100), INVALID, UNDECODABLE),
    "file: HTML page": _g(
        lambda a: request(audio=b"<!DOCTYPE html><html><body>hi</body></html>" * 10), INVALID, UNDECODABLE
    ),
    "file: PNG image header": _g(
        lambda a: request(audio=b"\x89PNG\r\n\x1a\n" + b"\0" * 500), INVALID, r"^AUDIO contains no audio stream$"
    ),
    "file: JPEG image header": _g(
        lambda a: request(audio=b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\0" * 500),
        INVALID,
        r"^AUDIO contains no audio stream$",
    ),
    "file: PDF document": _g(
        lambda a: request(audio=b"%PDF-1.4\n" + b"1 0 obj\n<<>>\nendobj\n" * 20), INVALID, UNDECODABLE
    ),
    "file: ZIP archive header": _g(lambda a: request(audio=b"PK\x03\x04" + b"\0" * 500), INVALID, UNDECODABLE),
    "file: ELF executable header": _g(
        lambda a: request(audio=b"\x7fELF\x02\x01\x01" + b"\0" * 500), INVALID, UNDECODABLE
    ),
    "wav: RIFF magic only": _g(lambda a: request(audio=b"RIFF"), INVALID, UNDECODABLE),
    "wav: header cut at 30 bytes": _g(lambda a: request(audio=wav_header(32000)[:30]), INVALID, UNDECODABLE),
    "wav: zero-length data chunk": _g(
        lambda a: request(audio=wav_header(0)), INVALID, r"^AUDIO decoded to zero samples$"
    ),
    # Tolerated: libsndfile (like librosa) reads the bytes that are there.
    "wav: data size claims 4 GiB over 1 kB": _g(lambda a: request(audio=wav_header(0xFFFFFFF0) + b"\0" * 1000), OK, ""),
    "wav: real file cut after 100 bytes": _g(lambda a: request(audio=a.speech[:100]), OK, ""),
    "wav: 0 Hz in the header": _g(
        lambda a: request(audio=wav_header(3200, rate=0) + b"\0" * 3200), INVALID, UNDECODABLE
    ),
    "wav: 1 Hz in the header": _g(
        lambda a: request(audio=wav_header(3200, rate=1) + b"\0" * 3200),
        INVALID,
        _rate_message(1, "AUDIO's sample rate"),
    ),
    "wav: 10**9 Hz in the header": _g(
        lambda a: request(audio=wav_header(3200, rate=10**9) + b"\0" * 3200),
        INVALID,
        _rate_message(10**9, "AUDIO's sample rate"),
    ),
    "wav: zero channels": _g(
        lambda a: request(audio=wav_header(3200, channels=0) + b"\0" * 3200), INVALID, UNDECODABLE + r".*avcodec_open2"
    ),
    "wav: 4096 channels": _g(
        lambda a: request(audio=wav_header(3200, channels=4096, bits=8) + b"\0" * 3200),
        INVALID,
        UNDECODABLE + r".*avcodec_open2",
    ),
    "wav: codec 0x55 (mp3) over PCM bytes": _g(
        lambda a: request(audio=wav_header(3200, codec=0x55) + b"\0" * 3200), INVALID, UNDECODABLE
    ),
    "wav: float samples that are NaN": _g(
        lambda a: request(audio=float_wav(np.nan)), INVALID, r"^AUDIO contains NaN or infinite samples$"
    ),
    "wav: float samples that are +inf": _g(
        lambda a: request(audio=float_wav(np.inf)), INVALID, r"^AUDIO contains NaN or infinite samples$"
    ),
    "flac: magic then garbage": _g(lambda a: request(audio=b"fLaC" + b"\x00\x01" * 300), INVALID, UNDECODABLE),
    "flac: STREAMINFO only": _g(lambda a: request(audio=a.flac[:42]), INVALID, UNDECODABLE + r".*End of file"),
    "flac: header announces 3 hours": _g(
        lambda a: request(audio=flac_announcing(3 * 3600)),
        INVALID,
        r"^audio is 10800\.0 s long; the limit is 3600 s \(split it client-side",
    ),
    # Tolerated: the frames before the cut are decoded.
    "flac: real file cut in half": _g(lambda a: request(audio=a.flac[: len(a.flac) // 2], max_new=4), OK, ""),
    "mp3: ID3 tag then garbage": _g(
        lambda a: request(audio=b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb" * 300), INVALID, UNDECODABLE
    ),
    "ogg: page magic then zeros": _g(lambda a: request(audio=b"OggS\x00\x02" + b"\0" * 600), INVALID, UNDECODABLE),
    "m4a: ftyp box then zeros": _g(
        lambda a: request(audio=b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + b"\0" * 500), INVALID, UNDECODABLE
    ),
    "m4a: real file cut to a third": _g(lambda a: request(audio=a.m4a[: len(a.m4a) // 3]), INVALID, UNDECODABLE),
    "webm: EBML magic then garbage": _g(
        lambda a: request(audio=b"\x1a\x45\xdf\xa3" + b"\x00\x01" * 300), INVALID, UNDECODABLE
    ),
    "aiff: FORM header then zeros": _g(
        lambda a: request(audio=b"FORM\x00\x00\x10\x00AIFFCOMM" + b"\0" * 500), INVALID, UNDECODABLE
    ),
    # --- WAVEFORM
    "WAVEFORM: NaN samples": _g(
        _wave(with_bad(np.nan), rate=16000), INVALID, r"^WAVEFORM contains NaN or infinite samples$"
    ),
    "WAVEFORM: +inf samples": _g(
        _wave(with_bad(np.inf), rate=16000), INVALID, r"^WAVEFORM contains NaN or infinite samples$"
    ),
    "WAVEFORM: -inf samples": _g(
        _wave(with_bad(-np.inf), rate=16000), INVALID, r"^WAVEFORM contains NaN or infinite samples$"
    ),
    "WAVEFORM: empty": _g(_wave(np.zeros(0, np.float32), rate=16000), INVALID, r"^WAVEFORM is empty$"),
    "WAVEFORM: one hour and one second": _g(
        _wave(np.zeros(3601 * 4000, np.float32), rate=4000), INVALID, r"^audio is 3601\.0 s long; the limit is 3600 s"
    ),
    "WAVEFORM: 2-D [2, 800]": _g(
        _wave(np.zeros((2, 800), np.float32), rate=16000), INVALID, _triton_shape("WAVEFORM", "[-1]", "[2,800]"), TRITON
    ),
    "WAVEFORM: 3-D [1, 2, 800]": _g(
        _wave(np.zeros((1, 2, 800), np.float32), rate=16000),
        INVALID,
        _triton_shape("WAVEFORM", "[-1]", "[1,2,800]"),
        TRITON,
    ),
    "WAVEFORM: INT32": _g(
        lambda a: request(rate=16000, extra=(("WAVEFORM", "INT32", np.zeros(1600, np.int32)),)),
        INVALID,
        _triton_dtype("WAVEFORM", "INT32", "FP32"),
        TRITON,
    ),
    "WAVEFORM: FP64": _g(
        lambda a: request(rate=16000, extra=(("WAVEFORM", "FP64", np.zeros(1600, np.float64)),)),
        INVALID,
        _triton_dtype("WAVEFORM", "FP64", "FP32"),
        TRITON,
    ),
    "WAVEFORM: FP16": _g(
        lambda a: request(rate=16000, extra=(("WAVEFORM", "FP16", np.zeros(1600, np.float16)),)),
        INVALID,
        _triton_dtype("WAVEFORM", "FP16", "FP32"),
        TRITON,
    ),
    "WAVEFORM: BYTES": _g(
        lambda a: request(rate=16000, extra=(("WAVEFORM", "BYTES", strings(b"0.1")),)),
        INVALID,
        _triton_dtype("WAVEFORM", "BYTES", "FP32"),
        TRITON,
    ),
    # --- SAMPLE_RATE
    **{
        f"SAMPLE_RATE: {rate}": _g(_wave(pcm(), rate=rate), INVALID, _rate_message(rate))
        for rate in (0, -16000, 1, 3999, 384001, 10**9, -(2**31))
    },
    "SAMPLE_RATE: missing": _g(_wave(pcm()), INVALID, r"^WAVEFORM needs SAMPLE_RATE$"),
    "SAMPLE_RATE: two values": _g(
        lambda a: request(waveform=pcm(), extra=(("SAMPLE_RATE", "INT32", np.array([16000, 16000], np.int32)),)),
        INVALID,
        _triton_shape("SAMPLE_RATE", "[1]", "[2]"),
        TRITON,
    ),
    "SAMPLE_RATE: shape [1, 1]": _g(
        lambda a: request(waveform=pcm(), extra=(("SAMPLE_RATE", "INT32", np.array([[16000]], np.int32)),)),
        INVALID,
        _triton_shape("SAMPLE_RATE", "[1]", "[1,1]"),
        TRITON,
    ),
    "SAMPLE_RATE: INT64": _g(
        lambda a: request(waveform=pcm(), extra=(("SAMPLE_RATE", "INT64", np.array([16000], np.int64)),)),
        INVALID,
        _triton_dtype("SAMPLE_RATE", "INT64", "INT32"),
        TRITON,
    ),
    # --- which audio
    "AUDIO and WAVEFORM both": _g(_speech(waveform=pcm(), rate=16000), INVALID, EXACTLY_ONE),
    "neither AUDIO nor WAVEFORM": _g(lambda a: request(language="en"), INVALID, EXACTLY_ONE),
    "no inputs at all": _g(lambda a: (), INVALID, EXACTLY_ONE),
    "AUDIO: FP32": _g(
        lambda a: (("AUDIO", "FP32", np.zeros(1, np.float32)),),
        INVALID,
        _triton_dtype("AUDIO", "FP32", "BYTES"),
        TRITON,
    ),
    "AUDIO: two files": _g(
        lambda a: (("AUDIO", "BYTES", strings(a.speech, a.speech)),),
        INVALID,
        _triton_shape("AUDIO", "[1]", "[2]"),
        TRITON,
    ),
    "AUDIO: shape [1, 1]": _g(
        lambda a: (("AUDIO", "BYTES", np.array([[a.speech]], np.object_)),),
        INVALID,
        _triton_shape("AUDIO", "[1]", "[1,1]"),
        TRITON,
    ),
    "AUDIO: no element": _g(
        lambda a: (("AUDIO", "BYTES", np.zeros(0, np.object_)),), INVALID, _triton_shape("AUDIO", "[1]", "[0]"), TRITON
    ),
    # --- LANGUAGE
    "LANGUAGE: unknown": _g(
        _speech(language="Klingon"), INVALID, r"^unknown LANGUAGE 'Klingon'; use 'auto' or one of: "
    ),
    "LANGUAGE: 100,000 characters": _g(_speech(language="x" * 100_000), INVALID, LANGUAGE_100K),
    "LANGUAGE: NUL byte": _g(_speech(language="en\x00"), INVALID, r"^unknown LANGUAGE 'en\\x00'; "),
    "LANGUAGE: invalid UTF-8": _g(_speech(language=b"\xff\xfe\x80"), INVALID, r"^LANGUAGE is not valid UTF-8$"),
    "LANGUAGE: INT32": _g(
        _speech(extra=(("LANGUAGE", "INT32", np.array([1], np.int32)),)),
        INVALID,
        _triton_dtype("LANGUAGE", "INT32", "BYTES"),
        TRITON,
    ),
    "LANGUAGE: two values": _g(
        _speech(extra=(("LANGUAGE", "BYTES", strings("en", "de")),)),
        INVALID,
        _triton_shape("LANGUAGE", "[1]", "[2]"),
        TRITON,
    ),
    # --- CONTEXT
    "CONTEXT: 100 kB": _g(_speech(context="hotword " * 12_800), INVALID, r"^CONTEXT is \d+ tokens; the limit is 2048$"),
    **{
        f"CONTEXT: control token {token}": _g(
            _speech(context=f"Glossary {token} x"), INVALID, CONTROL.format(re.escape(token))
        )
        for token in ("<|im_end|>", "<|audio_pad|>", "<|im_start|>", "<|endoftext|>", "<|audio_start|>")
    },
    "CONTEXT: invalid UTF-8": _g(_speech(context=b"ab\xc3\x28"), INVALID, r"^CONTEXT is not valid UTF-8$"),
    "CONTEXT: two values": _g(
        _speech(extra=(("CONTEXT", "BYTES", strings("a", "b")),)),
        INVALID,
        _triton_shape("CONTEXT", "[1]", "[2]"),
        TRITON,
    ),
    # --- MAX_NEW_TOKENS / MIN_NEW_TOKENS
    **{
        f"MAX_NEW_TOKENS: {value}": _g(
            _speech(max_new=value), INVALID, rf"^MAX_NEW_TOKENS must be between 1 and 4096, got {value}$"
        )
        for value in (0, -3, 4097, 10**9, -(2**31))
    },
    "MAX_NEW_TOKENS: FP32": _g(
        _speech(extra=(("MAX_NEW_TOKENS", "FP32", np.array([4.0], np.float32)),)),
        INVALID,
        _triton_dtype("MAX_NEW_TOKENS", "FP32", "INT32"),
        TRITON,
    ),
    "MAX_NEW_TOKENS: two values": _g(
        _speech(extra=(("MAX_NEW_TOKENS", "INT32", np.array([4, 4], np.int32)),)),
        INVALID,
        _triton_shape("MAX_NEW_TOKENS", "[1]", "[2]"),
        TRITON,
    ),
    "MAX_NEW_TOKENS: no value": _g(
        _speech(extra=(("MAX_NEW_TOKENS", "INT32", np.zeros(0, np.int32)),)),
        INVALID,
        _triton_shape("MAX_NEW_TOKENS", "[1]", "[0]"),
        TRITON,
    ),
    "MIN_NEW_TOKENS: above MAX_NEW_TOKENS": _g(
        _speech(max_new=5, min_new=9), INVALID, r"^MIN_NEW_TOKENS must be between 0 and 5 \(MAX_NEW_TOKENS\), got 9$"
    ),
    "MIN_NEW_TOKENS: negative": _g(
        _speech(max_new=5, min_new=-1), INVALID, r"^MIN_NEW_TOKENS must be between 0 and 5 \(MAX_NEW_TOKENS\), got -1$"
    ),
    "MIN_NEW_TOKENS: above the server cap": _g(
        _speech(min_new=5000), INVALID, r"^MIN_NEW_TOKENS must be between 0 and 4096 \(MAX_NEW_TOKENS\), got 5000$"
    ),
    "MIN_NEW_TOKENS: INT64": _g(
        _speech(extra=(("MIN_NEW_TOKENS", "INT64", np.array([1], np.int64)),)),
        INVALID,
        _triton_dtype("MIN_NEW_TOKENS", "INT64", "INT32"),
        TRITON,
    ),
    # --- RETURN_TIMESTAMPS
    "RETURN_TIMESTAMPS: Thai": _g(
        _speech(timestamps=True, language="Thai"), INVALID, r"^the forced aligner does not support Thai; supported: "
    ),
    "RETURN_TIMESTAMPS: Arabic by code": _g(
        _speech(timestamps=True, language="ar"), INVALID, r"^the forced aligner does not support Arabic; supported: "
    ),
    "RETURN_TIMESTAMPS: INT32": _g(
        _speech(extra=(("RETURN_TIMESTAMPS", "INT32", np.array([1], np.int32)),)),
        INVALID,
        _triton_dtype("RETURN_TIMESTAMPS", "INT32", "BOOL"),
        TRITON,
    ),
    "RETURN_TIMESTAMPS: two values": _g(
        _speech(extra=(("RETURN_TIMESTAMPS", "BOOL", np.array([True, False])),)),
        INVALID,
        _triton_shape("RETURN_TIMESTAMPS", "[1]", "[2]"),
        TRITON,
    ),
    # --- the request itself
    "unknown input name": _g(
        _speech(extra=(("FOO", "INT32", np.array([1], np.int32)),)),
        INVALID,
        r"^unexpected inference input 'FOO' for model 'qwen3_asr'$",
        TRITON,
    ),
    "unknown requested output": _g(
        _speech(max_new=4),
        INVALID,
        r"^unexpected inference output 'NOPE' for model 'qwen3_asr'$",
        TRITON,
        outputs=("NOPE",),
    ),
    "unknown model": _g(
        _speech(max_new=4),
        "NOT_FOUND",
        r"^unknown model 'qwen3_asr_nonexistent': this endpoint serves diarizer, qwen3_asr, qwen3_asr_deltas, ",
        GUARD,
        model="qwen3_asr_nonexistent",
    ),
    # The pipeline's stages are the entry models' business: clients get NOT_FOUND, as for an unknown model.
    "an internal model (decoder)": _g(
        _speech(max_new=4),
        "NOT_FOUND",
        r"^unknown model 'decoder': this endpoint serves ",
        GUARD,
        model="decoder",
    ),
    # --- the wire format, field by field
    "wire: more bytes than the shape": _g(
        _wire(("WAVEFORM", "FP32", [1600], F32 + b"\0"), ("SAMPLE_RATE", "INT32", [1], R16K)),
        INVALID,
        r"^input 'WAVEFORM' \[1600\] 'FP32' needs 6400 bytes of raw contents, got 6401$",
        GUARD,
    ),
    "wire: fewer bytes than the shape": _g(
        _wire(("WAVEFORM", "FP32", [1601], F32), ("SAMPLE_RATE", "INT32", [1], R16K)),
        INVALID,
        r"^input 'WAVEFORM' \[1601\] 'FP32' needs 6404 bytes of raw contents, got 6400$",
        GUARD,
    ),
    "wire: 2**40 samples declared": _g(
        _wire(("WAVEFORM", "FP32", [2**40], F32), ("SAMPLE_RATE", "INT32", [1], R16K)),
        INVALID,
        r"^input 'WAVEFORM' \[1099511627776\] 'FP32' declares 1099511627776 elements; this endpoint takes at most \d+$",
        GUARD,
    ),
    "wire: an input without raw content": _g(
        _wire(("WAVEFORM", "FP32", [1600], F32), ("SAMPLE_RATE", "INT32", [1], None)),
        INVALID,
        r"^1 raw input contents for 2 inputs$",
        GUARD,
    ),
    # Triton ignores a raw content beyond the inputs; the guard refuses the ambiguity.
    "wire: one raw content too many": _g(
        _wire(("WAVEFORM", "FP32", [1600], F32), ("SAMPLE_RATE", "INT32", [1], R16K), extra_raw=(R16K,)),
        INVALID,
        r"^3 raw input contents for 2 inputs$",
        GUARD,
    ),
    "wire: the same input twice": _g(
        _wire(
            ("SAMPLE_RATE", "INT32", [1], R16K), ("SAMPLE_RATE", "INT32", [1], R16K), ("WAVEFORM", "FP32", [1600], F32)
        ),
        INVALID,
        r"input 'SAMPLE_RATE' already exists in request",
        TRITON,
    ),
    "wire: unknown datatype name": _g(
        _wire(("WAVEFORM", "FP128", [1600], F32), ("SAMPLE_RATE", "INT32", [1], R16K)),
        INVALID,
        r"^input 'WAVEFORM' \[1600\] 'FP128': unknown datatype$",
        GUARD,
    ),
    "wire: negative dimension": _g(
        _wire(("WAVEFORM", "FP32", [-1], F32), ("SAMPLE_RATE", "INT32", [1], R16K)),
        INVALID,
        r"^input 'WAVEFORM' \[-1\] 'FP32': dimensions must not be negative$",
        GUARD,
    ),
    "wire: BYTES length prefix beyond the data": _g(
        _wire(("AUDIO", "BYTES", [1], b"\xff\xff\xff\x7fabc")),
        INVALID,
        r"^input 'AUDIO' \[1\] 'BYTES': element 0 declares 2147483647 bytes past the end of the contents$",
        GUARD,
    ),
    "wire: two strings in a [1] BYTES input": _g(
        _wire(("AUDIO", "BYTES", [1], b"\x01\x00\x00\x00a\x01\x00\x00\x00b")),
        INVALID,
        r"^input 'AUDIO' \[1\] 'BYTES': 5 bytes after its 1 elements$",
        GUARD,
    ),
    "wire: unknown model version": _g(
        _wire(("WAVEFORM", "FP32", [1600], F32), ("SAMPLE_RATE", "INT32", [1], R16K), version="7"),
        "NOT_FOUND",
        r"^Request for unknown model: 'qwen3_asr' version 7 is not found$",
        TRITON,
    ),
    "wire: empty model name": _g(
        _wire(("WAVEFORM", "FP32", [1600], F32), ("SAMPLE_RATE", "INT32", [1], R16K), model=""),
        "NOT_FOUND",
        r"^unknown model '': this endpoint serves ",
        GUARD,
    ),
    # Sent to Triton itself, this one kills the qwen3_asr python worker (see CRASHERS).
    "wire: 2**62 samples and no bytes": _g(
        _overflowing_wire,
        INVALID,
        r"^input 'WAVEFORM' \[4611686018427387904\] 'FP32' declares 4611686018427387904 elements; this endpoint",
        GUARD,
    ),
    # Triton echoes a whole name into its error (over 16 KiB, gRPC refuses the metadata): the guard bounds names.
    "wire: 20,000-character model name": _g(
        _wire(("WAVEFORM", "FP32", [1600], F32), ("SAMPLE_RATE", "INT32", [1], R16K), model="m" * 20_000),
        INVALID,
        r"^model name 'mmmmmmmm.*\(20000 characters\) is longer than 256 characters$",
        GUARD,
    ),
    "wire: 20,000-character input name": _g(
        _wire(("W" * 20_000, "FP32", [1600], F32), ("SAMPLE_RATE", "INT32", [1], R16K)),
        INVALID,
        r"^input 'WWWWWW.*\(20000 characters\) is longer than 256 characters$",
        GUARD,
    ),
}


# ----------------------------------------------------------------------------- HTTP unary corpus
def _json(inputs: list, **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def _jt(name: str, datatype: str, data, shape=None) -> dict:
    return {"name": name, "shape": [len(data)] if shape is None else shape, "datatype": datatype, "data": data}


def _jwave(data=None, shape=None, datatype="FP32") -> dict:
    return _jt("WAVEFORM", datatype, [0.01] * 1600 if data is None else data, shape)


def _jrate(rate=16000) -> dict:
    return _jt("SAMPLE_RATE", "INT32", [rate])


def _body(body: bytes, **kw):
    return lambda a: Raw(body, **kw)


def _pcm_json(*extra: dict) -> bytes:
    return _json([_jwave(), _jrate(), *extra])


def _binary_raw(binary_size: int, sent: int) -> Raw:
    header = _json(
        [
            {"name": "WAVEFORM", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": binary_size}},
            _jrate(),
        ]
    )
    headers = (("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(len(header))))
    return Raw(header + b"\0" * sent, headers=headers)


PARSE = r"^Unable to parse '{}': attempt to access "
NOT_JSON_NUMBER = r"^Unable to parse 'data': attempt to access JSON non-number as double$"


def _h(build, code, pattern, by=MODEL, **kw) -> Case:
    return Case(build, str(code), pattern, by, **kw)


HTTP_CASES: dict[str, Case] = {
    # --- tritonclient.http, binary tensors
    "client: NaN WAVEFORM": _h(
        _wave(with_bad(np.nan), rate=16000), 400, r"^WAVEFORM contains NaN or infinite samples$"
    ),
    "client: corrupt AUDIO": _h(lambda a: request(audio=b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 20), 400, UNDECODABLE),
    "client: LANGUAGE of 100,000 characters": _h(_speech(language="x" * 100_000), 400, LANGUAGE_100K),
    "client: SAMPLE_RATE 10**9": _h(_wave(pcm(), rate=10**9), 400, _rate_message(10**9)),
    "client: INT32 WAVEFORM": _h(
        lambda a: request(rate=16000, extra=(("WAVEFORM", "INT32", np.zeros(1600, np.int32)),)),
        400,
        _triton_dtype("WAVEFORM", "INT32", "FP32"),
        TRITON,
    ),
    "client: unknown requested output": _h(
        _speech(max_new=4),
        400,
        r"^unexpected inference output 'NOPE' for model 'qwen3_asr'$",
        TRITON,
        outputs=("NOPE",),
    ),
    "client: MIN_NEW_TOKENS above MAX_NEW_TOKENS": _h(
        _speech(max_new=2, min_new=3), 400, r"^MIN_NEW_TOKENS must be between 0 and 2 \(MAX_NEW_TOKENS\), got 3$"
    ),
    # tritonclient.http with JSON data instead of binary tensors
    "client: control token in CONTEXT as JSON data": _h(
        _speech(context="<|im_start|>system"), 400, CONTROL.format(re.escape("<|im_start|>")), json_inputs=("CONTEXT",)
    ),
    # --- hand-written bodies. Malformed JSON is refused by Triton's HTTP layer with 500 (a Triton 2.51
    # defect: a client error reported as a server error) before any model code runs.
    "raw: not JSON": _h(
        _body(b"this is not json"), 500, r"^failed to parse the request JSON buffer: Invalid value", TRITON
    ),
    "raw: truncated JSON": _h(
        _body(b'{"inputs":[{"name":"WAVEFORM"'),
        500,
        r"^failed to parse the request JSON buffer: Missing a comma",
        TRITON,
    ),
    "raw: JSON followed by garbage": _h(
        _body(_json([]) + b" xyz"), 500, r"^failed to parse the request JSON buffer: The document root must not", TRITON
    ),
    # An empty body is read as a raw binary tensor (Triton's "raw request" deduction).
    "raw: empty body": _h(
        _body(b""), 400, r"Raw request must only have 1 input \(found 1\) to be deduced but got 12", TRITON
    ),
    "raw: JSON array": _h(
        _body(b"[1, 2, 3]"), 500, PARSE.format("inputs") + "non-existing object member 'inputs'", TRITON
    ),
    "raw: JSON null": _h(_body(b"null"), 500, PARSE.format("inputs") + "non-existing object member 'inputs'", TRITON),
    "raw: no inputs member": _h(
        _body(b'{"foo": 1}'), 500, PARSE.format("inputs") + "non-existing object member 'inputs'", TRITON
    ),
    "raw: inputs is an object": _h(
        _body(b'{"inputs": {"name": "AUDIO"}}'), 500, PARSE.format("inputs") + "JSON non-array as array", TRITON
    ),
    "raw: inputs is empty": _h(_body(_json([])), 400, EXACTLY_ONE),
    "raw: input without name": _h(
        _body(_json([{"shape": [1], "datatype": "INT32", "data": [1]}])),
        500,
        PARSE.format("name") + "non-existing object member 'name'",
        TRITON,
    ),
    "raw: input without datatype": _h(
        _body(_json([{"name": "SAMPLE_RATE", "shape": [1], "data": [1]}])),
        500,
        PARSE.format("datatype") + "non-existing object member 'datatype'",
        TRITON,
    ),
    "raw: input without shape": _h(
        _body(_json([{"name": "SAMPLE_RATE", "datatype": "INT32", "data": [1]}])),
        500,
        PARSE.format("shape") + "non-existing object member 'shape'",
        TRITON,
    ),
    "raw: input without data": _h(
        _body(_json([{"name": "SAMPLE_RATE", "shape": [1], "datatype": "INT32"}])),
        400,
        r"^Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters'",
        TRITON,
    ),
    "raw: strings where FP32 is expected": _h(
        _body(_json([_jwave(["a", "b"]), _jrate()])), 500, NOT_JSON_NUMBER, TRITON
    ),
    "raw: booleans where FP32 is expected": _h(
        _body(_json([_jwave([True, False]), _jrate()])), 500, NOT_JSON_NUMBER, TRITON
    ),
    "raw: nulls where FP32 is expected": _h(
        _body(_json([_jwave([None, None]), _jrate()])), 500, NOT_JSON_NUMBER, TRITON
    ),
    "raw: data shorter than the shape": _h(
        _body(_json([_jwave([0.1] * 10, shape=[20]), _jrate()])),
        500,
        r"^Unable to parse 'data': Shape does not match true shape of 'data' field$",
        TRITON,
    ),
    "raw: data longer than the shape": _h(
        _body(_json([_jwave([0.1] * 30, shape=[20]), _jrate()])),
        500,
        r"^Unable to parse 'data': Shape does not match true shape of 'data' field$",
        TRITON,
    ),
    "raw: float SAMPLE_RATE": _h(
        _body(_json([_jwave(), _jrate(16000.5)])), 500, PARSE.format("data") + "JSON non-signed-integer", TRITON
    ),
    "raw: string SAMPLE_RATE": _h(
        _body(_json([_jwave(), _jrate("16000")])), 500, PARSE.format("data") + "JSON non-signed-integer", TRITON
    ),
    "raw: number where BYTES is expected": _h(
        _body(_json([_jt("AUDIO", "BYTES", [123])])),
        500,
        r"^Unable to parse JSON bytes array: attempt to access JSON non-string as string$",
        TRITON,
    ),
    "raw: string where BOOL is expected": _h(
        _body(_pcm_json(_jt("RETURN_TIMESTAMPS", "BOOL", ["yes"]))),
        500,
        PARSE.format("data") + "JSON non-boolean as boolean",
        TRITON,
    ),
    "raw: negative dimension": _h(
        _body(_json([_jwave([0.1] * 16, shape=[-1]), _jrate()])),
        500,
        PARSE.format("shape") + "JSON non-unsigned-integer as unsigned-integer",
        TRITON,
    ),
    "raw: unknown datatype": _h(
        _body(_json([_jwave([0.1] * 16, datatype="FP128"), _jrate()])),
        400,
        r"^invalid datatype for input WAVEFORM$",
        TRITON,
    ),
    "raw: 2-D WAVEFORM": _h(
        _body(_json([_jwave([0.1] * 4, shape=[2, 2]), _jrate()])),
        400,
        _triton_shape("WAVEFORM", "[-1]", "[2,2]"),
        TRITON,
    ),
    "raw: the same input twice": _h(
        _body(_json([_jwave(), _jrate(), _jrate()])), 400, r"input 'SAMPLE_RATE' already exists in request", TRITON
    ),
    # Triton wraps JSON integers to INT32 without a range check; our model refuses the wrapped value.
    "raw: SAMPLE_RATE 10**12": _h(_body(_json([_jwave(), _jrate(10**12)])), 400, _rate_message(-727379968)),
    # ... so 2**32 + 16000 wraps to 16000 and is served as 16 kHz audio.
    "raw: SAMPLE_RATE 2**32 + 16000": _h(_body(_json([_jwave(), _jrate(2**32 + 16000)])), OK, "", TRITON),
    "raw: SAMPLE_RATE 2**31": _h(_body(_json([_jwave(), _jrate(2**31)])), 400, _rate_message(-(2**31))),
    "raw: NaN literal in FP32 data": _h(
        _body(
            b'{"inputs":[{"name":"WAVEFORM","shape":[2],"datatype":"FP32","data":[NaN, 0.1]},'
            + json.dumps(_jrate()).encode()
            + b"]}"
        ),
        400,
        r"^WAVEFORM contains NaN or infinite samples$",
    ),
    "raw: 1e39 in FP32 data (inf)": _h(
        _body(_json([_jwave([1e39, 0.1]), _jrate()])), 400, r"^WAVEFORM contains NaN or infinite samples$"
    ),
    "raw: AUDIO as a JSON string": _h(_body(_json([_jt("AUDIO", "BYTES", ["not audio at all"])])), 400, UNDECODABLE),
    "raw: invalid UTF-8 LANGUAGE": _h(
        _body(_pcm_json()[:-2] + b',{"name":"LANGUAGE","shape":[1],"datatype":"BYTES","data":["\xff\xfe"]}]}'),
        400,
        r"^LANGUAGE is not valid UTF-8$",
    ),
    # Triton quotes the invalid bytes back in its JSON error body.
    "raw: invalid UTF-8 input name": _h(
        _body(b'{"inputs":[{"name":"\xff\xfe","shape":[1],"datatype":"INT32","data":[1]}]}'),
        400,
        r"^unexpected inference input '.*' for model 'qwen3_asr'$",
        TRITON,
    ),
    "raw: LANGUAGE of 100,000 characters": _h(
        _body(_pcm_json(_jt("LANGUAGE", "BYTES", ["x" * 100_000]))), 400, LANGUAGE_100K
    ),
    "raw: CONTEXT of 100 kB": _h(
        _body(_pcm_json(_jt("CONTEXT", "BYTES", ["hotword " * 12_800]))),
        400,
        r"^CONTEXT is \d+ tokens; the limit is 2048$",
    ),
    "raw: MAX_NEW_TOKENS 0": _h(
        _body(_pcm_json(_jt("MAX_NEW_TOKENS", "INT32", [0]))),
        400,
        r"^MAX_NEW_TOKENS must be between 1 and 4096, got 0$",
    ),
    "raw: RETURN_TIMESTAMPS for Thai": _h(
        _body(_pcm_json(_jt("RETURN_TIMESTAMPS", "BOOL", [True]), _jt("LANGUAGE", "BYTES", ["th"]))),
        400,
        r"^the forced aligner does not support Thai; supported: ",
    ),
    "raw: binary_data_size beyond the body": _h(
        lambda a: _binary_raw(16, 8),
        400,
        r"^unexpected size for input 'WAVEFORM', expecting 8 additional bytes for model 'qwen3_asr'$",
        TRITON,
    ),
    "raw: binary_data_size not matching the shape": _h(
        lambda a: _binary_raw(12, 12),
        400,
        r"input byte size mismatch for input 'WAVEFORM' for model 'qwen3_asr'\. Expected 16, got 12$",
        TRITON,
    ),
    "raw: Inference-Header-Content-Length beyond the body": _h(
        lambda a: Raw(
            _pcm_json(), headers=(("Content-Type", "application/json"), ("Inference-Header-Content-Length", "999999"))
        ),
        400,
        r"^inference header size should be in range \(0, \d+\), got: 999999$",
        TRITON,
    ),
    "raw: unknown model": _h(
        _body(_pcm_json(), path="/v2/models/nosuch/infer"),
        404,
        r"^Request for unknown model: 'nosuch' is not found$",
        TRITON,
    ),
    "raw: unknown model version": _h(
        _body(_pcm_json(), path=f"/v2/models/{MODEL_NAME}/versions/7/infer"),
        404,
        r"^Request for unknown model: 'qwen3_asr' version 7 is not found$",
        TRITON,
    ),
    # Triton echoes a long model name whole (2 kB of error body): its behaviour, not our models'. (Past about
    # 4,080 characters of URL it even garbles the name it echoes: a character of "/infer" lands inside it.)
    "raw: 2,000-character model name": _h(
        _body(_pcm_json(), path="/v2/models/" + "m" * 2000 + "/infer"),
        404,
        r"^Request for unknown model: 'm{2000}' is not found$",
        TRITON,
        max_chars=2100,
    ),
    "raw: GET on the infer route": _h(_body(None, method="GET"), 405, r"^Method Not Allowed$", TRITON),
    "raw: PUT on the infer route": _h(_body(b"{}", method="PUT"), 405, r"^Method Not Allowed$", TRITON),
    "raw: the streaming (decoupled) model": _h(
        _body(
            _json([_jwave([0.01] * 1600, shape=[1, 1600]), _jt("SAMPLE_RATE", "INT32", [16000], shape=[1, 1])]),
            path=f"/v2/models/{STREAM_MODEL}/infer",
        ),
        501,
        r"^HTTP end point doesn't support models with decoupled transaction policy$",
        TRITON,
    ),
}


# ----------------------------------------------------------------------------- gRPC streaming corpus
PARTIAL, FINAL = "<partial>", "<final>"
NO_START = r"^inference request for sequence \d+ to model 'qwen3_asr_streaming' must specify the START flag"


@dataclass(frozen=True)
class Step:
    inputs: Tensors
    start: bool = False
    end: bool = False
    expect: str = PARTIAL  # PARTIAL, FINAL, or a regex of the error
    by: str = MODEL
    sequence_id: int | None = None  # instead of the case's own id
    model: str = STREAM_MODEL


def chunk(
    wave: np.ndarray | None = None,
    rate: int | None = 16000,
    audio: bytes | None = None,
    language: bytes | str | None = None,
    context: bytes | str | None = None,
    timestamps: bool | None = None,
    max_new: int | None = None,
    min_new: int | None = None,
    extra: tuple = (),
) -> Tensors:
    """One stream chunk's inputs: every input has the leading batch dimension of 1."""
    plain = request(audio, wave, rate, language, context, timestamps, max_new, min_new)
    return (*((name, dtype, array[None]) for name, dtype, array in plain), *extra)


def good(**kw) -> Tensors:
    """A quarter second of quiet PCM (a START chunk also caps each hypothesis at 4 tokens)."""
    kw.setdefault("wave", pcm(4000))
    return chunk(**kw)


def start(**kw) -> Tensors:
    kw.setdefault("max_new", 4)
    return good(**kw)


def _s(build, xfail: str = "") -> Case:
    return Case(build, "", "", MODEL, xfail=xfail)


# A stream without endpointing holds all its audio, so its length is capped (the test repository's 300 s).
STREAM_TOO_LONG = r"^stream exceeds 300 s of audio; end it and start a new one \(or start it with ENDPOINTING,"
# Endpointing on a START chunk, and a VAD threshold (inputs with the batch dimension).
ENDPOINT = ("ENDPOINTING", "BOOL", np.array([[True]]))


def vad(threshold: float) -> tuple:
    return ("VAD_THRESHOLD", "FP32", np.array([[threshold]], np.float32))


def _refused_start(pattern: str, **kw) -> Callable[[Assets], list[Step]]:
    """A START refused for its options; the same id then starts and ends cleanly."""
    return lambda a: [
        Step(start(**kw), start=True, expect=pattern),
        Step(start(), start=True, end=True, expect=FINAL),
    ]


def _mid_stream(bad: Tensors, pattern: str, by: str = MODEL) -> Callable[[Assets], list[Step]]:
    """A refused chunk in the middle of a stream: the next good chunk and END still work."""
    return lambda a: [
        Step(start(), start=True),
        Step(bad, expect=pattern, by=by),
        Step(good()),
        Step(good(), end=True, expect=FINAL),
    ]


RATE_CHANGED = r"^SAMPLE_RATE changed within the stream \(16000 -> {}\)$"

STREAM_CASES: dict[str, Case] = {
    # --- sequence control
    "chunk without START on an unknown id": _s(lambda a: [Step(good(), expect=NO_START, by=TRITON)]),
    "END on an unknown id": _s(lambda a: [Step(good(), end=True, expect=NO_START, by=TRITON)]),
    "correlation id 0": _s(
        lambda a: [
            Step(
                start(),
                start=True,
                sequence_id=0,
                expect=r"must specify a non-zero or non-empty correlation ID$",
                by=TRITON,
            )
        ]
    ),
    "START twice on the same id": _s(
        lambda a: [
            Step(start(), start=True),
            Step(start(), start=True, expect=r"^stream \d+ was started twice \(START on a running sequence\)$"),
            Step(good()),
            Step(good(), end=True, expect=FINAL),
        ]
    ),
    "chunk after END": _s(
        lambda a: [Step(start(), start=True, end=True, expect=FINAL), Step(good(), expect=NO_START, by=TRITON)]
    ),
    "END without any audio": _s(
        lambda a: [
            Step(
                chunk(np.zeros(0, np.float32), max_new=4),
                start=True,
                end=True,
                expect=r"^the stream ended without any audio$",
            ),
            Step(start(), start=True, end=True, expect=FINAL),
        ]
    ),
    # --- SAMPLE_RATE
    "START without SAMPLE_RATE": _s(
        _refused_start(r"^the START chunk needs SAMPLE_RATE \(or AUDIO bytes\)$", rate=None)
    ),
    "START with SAMPLE_RATE 0": _s(_refused_start(_rate_message(0), rate=0)),
    "START with SAMPLE_RATE -16000": _s(_refused_start(_rate_message(-16000), rate=-16000)),
    "START with SAMPLE_RATE 3999": _s(_refused_start(_rate_message(3999), rate=3999)),
    "START with SAMPLE_RATE 10**9": _s(_refused_start(_rate_message(10**9), rate=10**9)),
    "START with SAMPLE_RATE 1 and 100 samples": _s(
        lambda a: [
            Step(chunk(pcm(100), rate=1, max_new=4), start=True, expect=_rate_message(1)),
            Step(start(), start=True, end=True, expect=FINAL),
        ]
    ),
    "START with SAMPLE_RATE 384001 and no samples": _s(
        lambda a: [
            Step(chunk(np.zeros(0, np.float32), rate=384001, max_new=4), start=True, expect=_rate_message(384001))
        ],
    ),
    "SAMPLE_RATE changing mid-stream": _s(_mid_stream(good(rate=8000), RATE_CHANGED.format(8000))),
    "SAMPLE_RATE 0 mid-stream": _s(_mid_stream(good(rate=0), RATE_CHANGED.format(0))),
    "AUDIO at another rate mid-stream": _s(
        _mid_stream(chunk(rate=None, audio=wav_file(8000)), RATE_CHANGED.format(8000))
    ),
    "stream over 300 s": _s(
        lambda a: [
            Step(chunk(pcm(4000), rate=4000, max_new=4), start=True),
            Step(chunk(pcm(300 * 4000), rate=4000), expect=STREAM_TOO_LONG),
            Step(chunk(pcm(4000), rate=4000)),
            Step(chunk(pcm(4000), rate=4000), end=True, expect=FINAL),
        ]
    ),
    # --- samples
    "NaN at START": _s(_refused_start(r"^WAVEFORM contains NaN or infinite samples$", wave=with_bad(np.nan, 4000))),
    "NaN chunk mid-stream": _s(
        _mid_stream(chunk(with_bad(np.nan, 4000)), r"^WAVEFORM contains NaN or infinite samples$")
    ),
    "+inf chunk mid-stream": _s(
        _mid_stream(chunk(with_bad(np.inf, 4000)), r"^WAVEFORM contains NaN or infinite samples$")
    ),
    # A refused END still ends the stream: the id is free again.
    "-inf in the END chunk": _s(
        lambda a: [
            Step(start(), start=True),
            Step(chunk(with_bad(-np.inf, 4000)), end=True, expect=r"^WAVEFORM contains NaN or infinite samples$"),
            Step(good(), expect=NO_START, by=TRITON),
            Step(start(), start=True, end=True, expect=FINAL),
        ]
    ),
    # --- AUDIO chunks
    "corrupt AUDIO with START": _s(
        lambda a: [
            Step(chunk(rate=None, audio=b"RIFF\x00\x00\x00\x00WAVEjunk", max_new=4), start=True, expect=UNDECODABLE),
            Step(chunk(rate=None, audio=a.speech, max_new=4), start=True, end=True, expect=FINAL),
        ]
    ),
    "empty AUDIO with START": _s(
        _refused_start(r"^AUDIO is empty: send the bytes of an audio file$", wave=None, rate=None, audio=b"")
    ),
    "undecodable AUDIO chunk mid-stream": _s(_mid_stream(chunk(rate=None, audio=b"garbage" * 10), UNDECODABLE)),
    "empty AUDIO chunk mid-stream": _s(
        _mid_stream(chunk(rate=None, audio=b""), r"^AUDIO is empty: send the bytes of an audio file$")
    ),
    "AUDIO and WAVEFORM in one chunk": _s(
        _mid_stream(
            chunk(pcm(4000), audio=b"RIFF"), r"^send WAVEFORM \(\+ SAMPLE_RATE\) or AUDIO in a chunk, not both$"
        )
    ),
    # --- START options
    "START with an unknown LANGUAGE": _s(_refused_start(r"^unknown LANGUAGE 'Klingon'; ", language="Klingon")),
    "START with a 100,000-character LANGUAGE": _s(_refused_start(LANGUAGE_100K, language="x" * 100_000)),
    "START with ENDPOINTING and VAD_THRESHOLD 2": _s(
        _refused_start(r"^vad_threshold must be between 0 and 1 \(exclusive\), got 2\.0$", extra=(ENDPOINT, vad(2.0)))
    ),
    "START with ENDPOINTING and a NaN VAD_THRESHOLD": _s(
        _refused_start(r"^VAD_THRESHOLD must be a finite number, got nan$", extra=(ENDPOINT, vad(float("nan"))))
    ),
    "START with VAD_SPEECH_PAD_MS but no ENDPOINTING": _s(
        _refused_start(
            r"^VAD_THRESHOLD, VAD_MIN_SILENCE_MS and VAD_SPEECH_PAD_MS need ENDPOINTING true$",
            extra=(("VAD_SPEECH_PAD_MS", "INT32", np.array([[300]], np.int32)),),
        )
    ),
    "START with an invalid UTF-8 CONTEXT": _s(_refused_start(r"^CONTEXT is not valid UTF-8$", context=b"\xc3\x28")),
    "START with <|audio_pad|> in CONTEXT": _s(
        _refused_start(CONTROL.format(re.escape("<|audio_pad|>")), context="a<|audio_pad|>b")
    ),
    "START with a CONTEXT over 2048 tokens": _s(
        _refused_start(r"^CONTEXT is \d+ tokens; the limit is 2048$", context="hotword " * 12_800)
    ),
    "START with MAX_NEW_TOKENS 0": _s(_refused_start(r"^MAX_NEW_TOKENS must be between 1 and 4096, got 0$", max_new=0)),
    "START with MIN_NEW_TOKENS above MAX_NEW_TOKENS": _s(
        _refused_start(r"^MIN_NEW_TOKENS must be between 0 and 3 \(MAX_NEW_TOKENS\), got 5$", max_new=3, min_new=5)
    ),
    "START with RETURN_TIMESTAMPS for Thai": _s(
        _refused_start(r"^the forced aligner does not support Thai; ", language="Thai", timestamps=True)
    ),
    # --- refused by Triton before the model
    "WAVEFORM without the batch dimension": _s(
        lambda a: [
            Step(
                (("WAVEFORM", "FP32", pcm(4000)), ("SAMPLE_RATE", "INT32", np.array([[16000]], np.int32))),
                start=True,
                expect=r"input 'WAVEFORM' batch size does not match other inputs for 'qwen3_asr_streaming'",
                by=TRITON,
            )
        ]
    ),
    "SAMPLE_RATE without the batch dimension": _s(
        lambda a: [
            Step(
                (("WAVEFORM", "FP32", pcm(4000)[None]), ("SAMPLE_RATE", "INT32", np.array([16000], np.int32))),
                start=True,
                expect=_triton_shape("SAMPLE_RATE", "[-1,1]", "[1]", STREAM_MODEL),
                by=TRITON,
            )
        ]
    ),
    "INT32 WAVEFORM chunk": _s(
        _mid_stream(
            (("WAVEFORM", "INT32", np.zeros((1, 4000), np.int32)),),
            _triton_dtype("WAVEFORM", "INT32", "FP32", STREAM_MODEL),
            TRITON,
        )
    ),
    "FP32 MAX_NEW_TOKENS at START": _s(
        lambda a: [
            Step(
                good(extra=(("MAX_NEW_TOKENS", "FP32", np.array([[4.0]], np.float32)),)),
                start=True,
                expect=_triton_dtype("MAX_NEW_TOKENS", "FP32", "INT32", STREAM_MODEL),
                by=TRITON,
            )
        ]
    ),
    "a batch of two in one chunk": _s(
        lambda a: [
            Step(
                (
                    ("WAVEFORM", "FP32", np.zeros((2, 400), np.float32)),
                    ("SAMPLE_RATE", "INT32", np.array([[16000], [16000]], np.int32)),
                ),
                start=True,
                expect=r"must specify batch-size 1 due to requirements of sequence batcher$",
                by=TRITON,
            )
        ]
    ),
    "unknown input at START": _s(
        lambda a: [
            Step(
                start(extra=(("FOO", "INT32", np.array([[1]], np.int32)),)),
                start=True,
                expect=r"^unexpected inference input 'FOO' for model 'qwen3_asr_streaming'$",
                by=TRITON,
            )
        ]
    ),
    "unknown model on the stream": _s(
        lambda a: [
            Step(
                start(),
                start=True,
                model="qwen3_asr_streaming_nonexistent",
                expect=r"^unknown model 'qwen3_asr_streaming_nonexistent': this endpoint serves ",
                by=GUARD,
            )
        ]
    ),
}


# ----------------------------------------------------------------------------- inputs that crash Triton itself
# Sent to the server's own endpoints (loopback only in every deployment): the gRPC one is what the guard
# protects (the same message through the guard is the GUARD case "wire: 2**62 samples and no bytes"), the
# HTTP one is why Triton's HTTP port never faces clients.
CRASHERS = {
    "gRPC: WAVEFORM of 2**62 samples and no bytes": (
        _overflowing_wire,
        "kills the qwen3_asr python stub (pybind11 'array is too big' -> terminate); Triton answers INTERNAL"
        " \"Stub process 'qwen3_asr_0_0' is not healthy.\" until the watchdog restarts the server (~10 s)."
        " The same shape [1, 2**62] kills the qwen3_asr_streaming stub.",
    ),
    "HTTP: JSON WAVEFORM shape [2**40] with 16 values": (
        _body(_json([_jwave([0.1] * 16, shape=[2**40]), _jrate()])),
        "tritonserver aborts (std::bad_alloc in the HTTP JSON parser): the whole server goes down",
    ),
}


# ----------------------------------------------------------------------------- sending
@dataclass
class Outcome:
    code: str
    message: str = ""
    tokens: int = 0


def _send_grpc(url: str, case: Case, payload) -> Outcome:
    if isinstance(payload, Wire):
        return _send_wire(url, payload)
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    inputs = []
    for name, datatype, array in payload:
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    outputs = [grpcclient.InferRequestedOutput(n) for n in case.outputs] or None
    try:
        result = client.infer(case.model, inputs, outputs=outputs, client_timeout=60)
    except InferenceServerException as exc:
        return Outcome(str(exc.status()).removeprefix("StatusCode."), exc.message() or "")
    finally:
        client.close()
    return Outcome(OK, tokens=result.as_numpy("TOKEN_IDS").size)


def _send_wire(url: str, payload: Wire) -> Outcome:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    message = service_pb2.ModelInferRequest(model_name=payload.model, model_version=payload.version)
    for name, datatype, shape, raw in payload.inputs:
        tensor = message.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(shape)
        if raw is not None:
            message.raw_input_contents.append(raw)
    message.raw_input_contents.extend(payload.extra_raw)
    with grpc.insecure_channel(url) as channel:
        try:
            response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=60)
        except grpc.RpcError as exc:
            return Outcome(exc.code().name, exc.details() or "")
    index = [o.name for o in response.outputs].index("TOKEN_IDS")
    return Outcome(OK, tokens=len(response.raw_output_contents[index]) // 4)


def _send_http(url: str, case: Case, payload) -> Outcome:
    if isinstance(payload, Raw):
        return _send_raw(url, payload)
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url, network_timeout=60)
    inputs = []
    for name, datatype, array in payload:
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=name not in case.json_inputs)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput(n) for n in case.outputs] or None
    try:
        result = client.infer(case.model, inputs, outputs=outputs)
    except InferenceServerException as exc:
        return Outcome(str(exc.status()), exc.message() or "")
    finally:
        client.close()
    return Outcome(OK, tokens=result.as_numpy("TOKEN_IDS").size)


def _send_raw(url: str, payload: Raw) -> Outcome:
    request_ = urllib.request.Request(
        f"http://{url}{payload.path}", data=payload.body, method=payload.method, headers=dict(payload.headers)
    )
    try:
        with urllib.request.urlopen(request_, timeout=60) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            text = json.loads(text, strict=False)["error"]
        return Outcome(str(exc.code), text)
    tokens = next(o for o in body["outputs"] if o["name"] == "TOKEN_IDS")
    return Outcome(OK, tokens=len(tokens["data"]))


def _check(name: str, case: Case, outcome: Outcome) -> None:
    where = f"{name}: got {outcome.code} {outcome.message[:300]!r}"
    assert outcome.code == case.code, where
    if case.code == OK:
        assert outcome.tokens >= 1, where
        return
    assert re.search(case.pattern, outcome.message), where
    assert len(outcome.message) < case.max_chars, f"{name}: a {len(outcome.message)}-character message"
    assert "internal error" not in outcome.message.lower(), where
    if case.by == MODEL:  # our models answer a bad request with a client error, never an internal one
        assert case.code in (INVALID, "400"), f"{name}: our model's answer must be a client error"


# ----------------------------------------------------------------------------- fixtures and liveness
@pytest.fixture(scope="module")
def assets(clips) -> Assets:
    by_name = {c.name: c.path.read_bytes() for c in clips}
    return Assets(speech=clips[0].path.read_bytes(), flac=by_name["de_greeting"], m4a=by_name["zh_park"])


RESTART_LINE = "serve_cpu.sh: restarting Triton"
LIVENESS_TOKENS = 4


@dataclass
class Liveness:
    """What a healthy server looks like: the restarts its script logged so far, and the liveness answer."""

    client: Any  # one gRPC client for every liveness request
    speech: bytes
    restarts: int = 0
    tokens: tuple = ()

    def good_tokens(self) -> tuple:
        import tritonclient.grpc as grpcclient

        audio = grpcclient.InferInput("AUDIO", [1], "BYTES")
        audio.set_data_from_numpy(strings(self.speech))
        limit = grpcclient.InferInput("MAX_NEW_TOKENS", [1], "INT32")
        limit.set_data_from_numpy(np.array([LIVENESS_TOKENS], np.int32))
        result = self.client.infer(
            MODEL_NAME, [audio, limit], outputs=[grpcclient.InferRequestedOutput("TOKEN_IDS")], client_timeout=60
        )
        return tuple(result.as_numpy("TOKEN_IDS").tolist())


@pytest.fixture(scope="module")
def liveness(triton_server, assets):
    import tritonclient.grpc as grpcclient

    live = Liveness(grpcclient.InferenceServerClient(triton_server.grpc_url), assets.speech)
    live.tokens = live.good_tokens()
    assert len(live.tokens) >= 1
    live.restarts = triton_server.log_path.read_text(errors="replace").count(RESTART_LINE)
    yield live
    live.client.close()


def _assert_live(server, liveness: Liveness) -> None:
    """The server script runs, never restarted Triton, and the tiny good request gets the same answer as before."""
    assert server.process.poll() is None, "the server script exited"
    assert server.log_path.read_text(errors="replace").count(RESTART_LINE) == liveness.restarts, "Triton restarted"
    assert liveness.good_tokens() == liveness.tokens


# ----------------------------------------------------------------------------- the corpus, face by face
@pytest.mark.parametrize("name", list(GRPC_CASES))
def test_grpc_unary(triton_server, assets, liveness, name):
    case = GRPC_CASES[name]
    _check(name, case, _send_grpc(triton_server.grpc_url, case, case.build(assets)))
    _assert_live(triton_server, liveness)


@pytest.mark.parametrize("name", list(HTTP_CASES))
def test_http_unary(triton_server, assets, liveness, name):
    case = HTTP_CASES[name]
    _check(name, case, _send_http(triton_server.http_url, case, case.build(assets)))
    _assert_live(triton_server, liveness)


class _Stream:
    """One gRPC bidirectional stream; each request's single answer is awaited before the next is sent."""

    def __init__(self, url: str) -> None:
        import tritonclient.grpc as grpcclient

        self.grpc = grpcclient
        self.answers: queue.Queue = queue.Queue()
        self.client = grpcclient.InferenceServerClient(url)
        self.client.start_stream(callback=lambda result, error: self.answers.put((result, error)))

    def send(self, step: Step, sequence_id: int):
        inputs = []
        for name, datatype, array in step.inputs:
            tensor = self.grpc.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        self.client.async_stream_infer(
            step.model, inputs, sequence_id=sequence_id, sequence_start=step.start, sequence_end=step.end
        )
        try:
            return self.answers.get(timeout=60)
        except queue.Empty:
            raise AssertionError(f"no answer within 60 s to {step}") from None

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def _run_stream_case(url: str, name: str, steps: list[Step]) -> None:
    own_id = next(_SEQUENCE_IDS)
    stream = _Stream(url)
    try:
        for i, step in enumerate(steps):
            sequence_id = own_id if step.sequence_id is None else step.sequence_id
            result, error = stream.send(step, sequence_id)
            where = f"{name}, step {i}"
            if step.expect in (PARTIAL, FINAL):
                assert error is None, f"{where}: {error}"
                final = bool(result.as_numpy("IS_FINAL").reshape(-1)[0])
                assert final == (step.expect == FINAL), where
                if final:
                    assert result.as_numpy("TOKEN_IDS").size >= 1, where
            else:
                assert error is not None, f"{where}: accepted, expected {step.expect!r}"
                message = error.message() or ""
                assert re.search(step.expect, message), f"{where}: {message[:300]!r}"
                assert len(message) < MAX_MESSAGE, f"{where}: a {len(message)}-character message"
                assert "internal error" not in message.lower(), f"{where}: {message[:300]!r}"
    finally:
        stream.close()


def _stream_params():
    for name, case in STREAM_CASES.items():
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_stream_params()))
def test_grpc_stream(triton_server, assets, liveness, name):
    _run_stream_case(triton_server.grpc_url, name, STREAM_CASES[name].build(assets))
    _assert_live(triton_server, liveness)


@pytest.fixture(scope="module")
def crash_server(model_repository, tmp_path_factory):
    """A server of its own, with the watchdog's restarts: these requests take Triton 2.51 down."""
    from tests.harness import start_server, stop_server

    server = start_server(model_repository, tmp_path_factory.mktemp("crash") / "server.log", ("--max-restarts", "5"))
    yield server
    stop_server(server)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CRASHERS))
def test_inputs_that_take_triton_down_are_recovered_from(crash_server, assets, clips, name):
    """Triton 2.51 defects (recorded in CRASHERS), sent to Triton's own ports: the request takes a worker or the
    server down, and the watchdog restarts the server, after which it answers exactly as before."""
    build, _effect = CRASHERS[name]
    data = clips[0].path.read_bytes()
    expected = transcribe(crash_server.grpc_url, audio=data, max_new_tokens=4)["TOKEN_IDS"].tolist()
    restarts = crash_server.log_path.read_text().count("serve_cpu.sh: restarting Triton")
    payload = build(assets)
    sent = time.monotonic()
    if isinstance(payload, Wire):
        _send_wire(crash_server.triton_grpc_url, payload)
    else:
        with contextlib.suppress(OSError):
            _send_raw(crash_server.http_url, payload)
    while crash_server.log_path.read_text().count("serve_cpu.sh: restarting Triton") == restarts:
        assert time.monotonic() - sent < 30, "the request did not take the server down (defect fixed?)"
        time.sleep(0.2)
    last = None
    while time.monotonic() - sent < 120:
        try:
            if transcribe(crash_server.grpc_url, audio=data, max_new_tokens=4)["TOKEN_IDS"].tolist() == expected:
                print(f"{name}: answering again {time.monotonic() - sent:.1f} s after the request")
                return
        except Exception as exc:  # refused while the server restarts
            last = str(exc)[:160]
        time.sleep(0.5)
    raise AssertionError(f"no correct answer 120 s after the crash; last: {last}")


# ----------------------------------------------------------------------------- under load
def test_good_answers_stay_exact_while_every_bad_unary_kind_is_sent(triton_server, assets, clips, liveness):
    """Good requests, each compared token for token with the same request sent alone, race every bad unary kind."""
    jobs = [(c.path.read_bytes(), 12) for c in clips[:4]]

    def good_request(job):
        return transcribe(triton_server.grpc_url, audio=job[0], max_new_tokens=job[1])["TOKEN_IDS"].tolist()

    alone = [good_request(job) for job in jobs]
    bad_done = threading.Event()
    failures: list[str] = []

    def send_every_bad_kind() -> int:
        count = 0
        try:
            for name, case in GRPC_CASES.items():
                try:
                    _check(name, case, _send_grpc(triton_server.grpc_url, case, case.build(assets)))
                except AssertionError as exc:
                    failures.append(str(exc))
                count += 1
            for name, case in HTTP_CASES.items():
                try:
                    _check(name, case, _send_http(triton_server.http_url, case, case.build(assets)))
                except AssertionError as exc:
                    failures.append(str(exc))
                count += 1
        finally:
            bad_done.set()
        return count

    def good_worker(offset: int) -> int:
        rounds = 0
        while not bad_done.is_set() or rounds == 0:
            for i in range(len(jobs)):
                index = (i + offset) % len(jobs)
                got = good_request(jobs[index])
                if got != alone[index]:
                    failures.append(f"good request {index}: {got} != {alone[index]} (sent alone)")
            rounds += 1
        return rounds

    with ThreadPoolExecutor(4) as pool:
        bad = pool.submit(send_every_bad_kind)
        good_rounds = [pool.submit(good_worker, k) for k in range(3)]
        sent = bad.result(timeout=300)
        rounds = [f.result(timeout=300) for f in good_rounds]
    assert not failures, failures[:5]
    assert sent == len(GRPC_CASES) + len(HTTP_CASES)
    print(f"{sent} bad requests raced {sum(rounds) * len(jobs)} good ones, all exact")
    _assert_live(triton_server, liveness)


# ----------------------------------------------------------------------------- the corpus itself
def _fingerprint(payload) -> str:
    digest = hashlib.sha256()

    def tensors(items) -> None:
        for name, datatype, array in items:
            digest.update(f"{name}|{datatype}|{list(array.shape)}|".encode())
            if array.dtype == np.object_:
                for item in array.reshape(-1):
                    digest.update(len(item).to_bytes(8, "little") + item)
            else:
                digest.update(array.tobytes())

    if isinstance(payload, list):  # stream steps
        for step in payload:
            digest.update(f"{step.start}|{step.end}|{step.sequence_id}|{step.model}|".encode())
            tensors(step.inputs)
    elif isinstance(payload, Wire | Raw):
        digest.update(repr(payload).encode())
    else:
        tensors(payload)
    return digest.hexdigest()


def test_the_corpus_has_at_least_80_distinct_kinds(assets):
    faces = {"grpc": GRPC_CASES, "http": HTTP_CASES, "stream": STREAM_CASES}
    for face, cases in faces.items():
        prints = {}
        for name, case in cases.items():
            key = _fingerprint(case.build(assets)) + repr((case.model, case.outputs, case.json_inputs))
            assert key not in prints, f"{face}: {name!r} sends the same input as {prints[key]!r}"
            prints[key] = name
    counts = {face: len(cases) for face, cases in faces.items()}
    print(f"bad-input kinds: {counts}, {sum(counts.values())} in all")
    assert sum(counts.values()) >= 80, counts
    assert min(counts.values()) >= 20, counts


def test_the_server_never_restarted_and_holds_no_stream(triton_server, assets, liveness):
    _assert_live(triton_server, liveness)

    def active() -> float:
        metrics = triton_server.metrics()
        return sum(v for k, v in metrics.items() if k.startswith("qwen3_asr_streaming_active_streams"))

    # Streams this corpus left open (refused mid-stream, abandoned) expire after the repository's 3 s idle timeout.
    deadline = time.monotonic() + 15
    while active() > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert active() == 0
