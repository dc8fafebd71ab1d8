"""The ``qwen3_asr`` wire contract: request tensors in, typed :class:`Transcription` out.

Inputs (all unary gRPC, ``max_batch_size: 0``): AUDIO (BYTES [1], an encoded
file) or WAVEFORM (FP32 [-1]) + SAMPLE_RATE (INT32 [1]); optional LANGUAGE,
CONTEXT (BYTES [1]), RETURN_TIMESTAMPS (BOOL [1]), MAX_NEW_TOKENS and MIN_NEW_TOKENS (INT32 [1]),
DIARIZE (BOOL [1]) with NUM_SPEAKERS, MIN_SPEAKERS and MAX_SPEAKERS (INT32 [1]).
Outputs: see :data:`OUTPUTS`. The tensors built here work for both
``tritonclient.grpc`` and ``tritonclient.grpc.aio`` (they share the classes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import tritonclient.grpc as grpcclient

from .errors import MalformedResponseError
from .options import TranscribeOptions
from .types import ModelMetadata, ModelState, Segment, TensorSpec, TextDelta, Transcription, Word

AudioInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray]

OUTPUTS = (
    "TEXT",
    "DETECTED_LANGUAGE",
    "TOKEN_IDS",
    "CONFIDENCE",
    "WORDS",
    "WORD_START",
    "WORD_END",
    "SEGMENT_TEXT",
    "SEGMENT_START",
    "SEGMENT_END",
    "SEGMENT_TOKENS",
    "SEGMENT_LOGPROB",
    "SEGMENT_SPEAKER",
    "WORD_SPEAKER",
)
# Times are reported to the millisecond: the aligner's resolution is 80 ms and
# SRT/VTT cannot express anything finer.
TIME_DECIMALS = 3
# Full-scale value of integer PCM types, to bring samples to [-1, 1].
_INT_FULL_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2.0**31}


def make_tensor(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    """An input tensor holding ``array`` (works for tritonclient.grpc and .aio alike)."""
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def waveform_to_float32(waveform: np.ndarray) -> np.ndarray:
    """``[samples]`` or ``[samples, channels]`` PCM as contiguous mono float32.

    Integer PCM (int16, int32) is scaled to [-1, 1]; channels are averaged.
    """
    x = np.asarray(waveform)
    if x.ndim not in (1, 2):
        raise ValueError(f"waveform must be [samples] or [samples, channels], got shape {list(x.shape)}")
    if x.dtype in _INT_FULL_SCALE:
        x = x.astype(np.float64) / _INT_FULL_SCALE[x.dtype]
    elif x.dtype.kind != "f":
        raise ValueError(f"waveform must hold float, int16 or int32 samples, got {x.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def audio_inputs(audio: AudioInput, sample_rate: int | None = None) -> list[grpcclient.InferInput]:
    """AUDIO for a file path or encoded bytes; WAVEFORM + SAMPLE_RATE for a numpy array.

    Raises
    ------
    ValueError
        A waveform without a sample rate, a sample rate with bytes, or an unsupported type.
    OSError
        A path that cannot be read.
    """
    if isinstance(audio, np.ndarray):
        if sample_rate is None:
            raise ValueError("a waveform needs its sample_rate")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        return [
            make_tensor("WAVEFORM", waveform_to_float32(audio), "FP32"),
            make_tensor("SAMPLE_RATE", np.array([sample_rate], dtype=np.int32), "INT32"),
        ]
    if sample_rate is not None:
        raise ValueError("sample_rate only applies to a waveform; encoded audio carries its own")
    if isinstance(audio, (str, os.PathLike)):
        data = Path(audio).read_bytes()
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        data = bytes(audio)
    else:
        raise ValueError(f"audio must be a path, bytes or a numpy waveform, got {type(audio).__name__}")
    return [make_tensor("AUDIO", np.array([data], dtype=np.object_), "BYTES")]


def option_inputs(options: TranscribeOptions, batched: bool = False) -> list[grpcclient.InferInput]:
    """The optional inputs, each sent only when it differs from the server's default.

    ``batched`` adds the leading batch dimension of 1 that a model with
    ``max_batch_size > 0`` (``qwen3_asr_streaming``) expects: ``[1, 1]`` instead of ``[1]``.
    """
    arrays = []
    if options.language is not None:
        arrays.append(("LANGUAGE", np.array([options.language.encode("utf-8")], dtype=np.object_), "BYTES"))
    if options.context is not None:
        arrays.append(("CONTEXT", np.array([options.context.encode("utf-8")], dtype=np.object_), "BYTES"))
    if options.timestamps:
        arrays.append(("RETURN_TIMESTAMPS", np.array([True]), "BOOL"))
    if options.max_new_tokens is not None:
        arrays.append(("MAX_NEW_TOKENS", np.array([options.max_new_tokens], dtype=np.int32), "INT32"))
    if options.min_new_tokens is not None:
        arrays.append(("MIN_NEW_TOKENS", np.array([options.min_new_tokens], dtype=np.int32), "INT32"))
    if options.diarize:
        arrays.append(("DIARIZE", np.array([True]), "BOOL"))
    for name, value in (
        ("NUM_SPEAKERS", options.num_speakers),
        ("MIN_SPEAKERS", options.min_speakers),
        ("MAX_SPEAKERS", options.max_speakers),
    ):
        if value is not None:
            arrays.append((name, np.array([value], dtype=np.int32), "INT32"))
    return [make_tensor(name, array[None] if batched else array, datatype) for name, array, datatype in arrays]


# The extra outputs of the deltas model: a piece of text, and whether this is the last response.
DELTA_OUTPUTS = ("TEXT_DELTA", "IS_FINAL")


def requested_outputs(extra: tuple[str, ...] = ()) -> list[grpcclient.InferRequestedOutput]:
    return [grpcclient.InferRequestedOutput(name) for name in (*OUTPUTS, *extra)]


def parse_delta(result, request_id: str = "") -> TextDelta | None:
    """The :class:`TextDelta` of a deltas-model response, or None for its final response."""
    final = result.as_numpy("IS_FINAL")
    if final is None or final.size != 1:
        raise MalformedResponseError(f"a response without IS_FINAL (request {request_id})")
    if bool(final.reshape(-1)[0]):
        return None
    text = _strings(result, "TEXT_DELTA")
    if len(text) != 1:
        raise MalformedResponseError(f"expected one TEXT_DELTA, got {len(text)} (request {request_id})")
    return TextDelta(text[0])


def _strings(result, name: str) -> list[str]:
    value = result.as_numpy(name)
    if value is None:
        return []
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in value.reshape(-1)]


def _floats(result, name: str) -> list[float]:
    value = result.as_numpy(name)
    if value is None:
        return []
    return [round(float(v), TIME_DECIMALS) for v in value.reshape(-1)]


def _segments(
    result, texts: list[str], starts: list[float], ends: list[float], token_ids: tuple[int, ...], request_id: str
) -> tuple[Segment, ...]:
    """Segments with their share of ``token_ids`` and mean log-probability (when the server sends them)."""
    counts, logprobs = result.as_numpy("SEGMENT_TOKENS"), result.as_numpy("SEGMENT_LOGPROB")
    if counts is None or logprobs is None:
        speakers = _speakers(result, "SEGMENT_SPEAKER", len(texts), request_id)
        return tuple(Segment(t, s, e, speaker=k) for t, s, e, k in zip(texts, starts, ends, speakers))
    counts, logprobs = counts.reshape(-1).tolist(), logprobs.reshape(-1).tolist()
    if (
        len(counts) != len(texts)
        or len(logprobs) != len(texts)
        or sum(counts) != len(token_ids)
        or min(counts, default=0) < 0
    ):
        raise MalformedResponseError(
            f"SEGMENT_TOKENS {counts[:8]} do not split {len(token_ids)} TOKEN_IDS over {len(texts)} segments"
            f" (request {request_id})"
        )
    bounds = np.cumsum([0, *counts]).tolist()
    speakers = _speakers(result, "SEGMENT_SPEAKER", len(texts), request_id)
    return tuple(
        Segment(t, s, e, token_ids[a:b], float(f"{lp:.7g}"), speaker)
        for t, s, e, a, b, lp, speaker in zip(texts, starts, ends, bounds, bounds[1:], logprobs, speakers)
    )


def _speakers(result, name: str, count: int, request_id: str) -> list[int | None]:
    """``count`` speaker numbers from ``name`` (None where the server found none, or did not diarize)."""
    value = result.as_numpy(name)
    labels = [] if value is None else value.reshape(-1).tolist()
    if not labels:
        return [None] * count
    if len(labels) != count:
        raise MalformedResponseError(f"{len(labels)} {name} for {count} items (request {request_id})")
    return [int(k) if k >= 0 else None for k in labels]


def parse_result(result, request_id: str = "") -> Transcription:
    """A :class:`Transcription` from an ``InferResult``.

    Raises
    ------
    MalformedResponseError
        TEXT is missing, or a word or segment array disagrees in length with its times.
    """
    text = _strings(result, "TEXT")
    if len(text) != 1:
        raise MalformedResponseError(f"expected one TEXT, got {len(text)} (request {request_id})")
    language = _strings(result, "DETECTED_LANGUAGE")
    confidence = result.as_numpy("CONFIDENCE")
    token_ids = result.as_numpy("TOKEN_IDS")
    words = _strings(result, "WORDS")
    word_start, word_end = _floats(result, "WORD_START"), _floats(result, "WORD_END")
    seg_text = _strings(result, "SEGMENT_TEXT")
    seg_start, seg_end = _floats(result, "SEGMENT_START"), _floats(result, "SEGMENT_END")
    if not len(words) == len(word_start) == len(word_end):
        raise MalformedResponseError(
            f"{len(words)} WORDS but {len(word_start)} starts and {len(word_end)} ends (request {request_id})"
        )
    if not len(seg_text) == len(seg_start) == len(seg_end):
        raise MalformedResponseError(
            f"{len(seg_text)} SEGMENT_TEXT but {len(seg_start)} starts and {len(seg_end)} ends (request {request_id})"
        )
    ids = tuple(int(t) for t in token_ids.reshape(-1)) if token_ids is not None else ()
    word_speakers = _speakers(result, "WORD_SPEAKER", len(words), request_id)
    return Transcription(
        text=text[0],
        language=(language[0] if language and language[0] else None),
        # float32 carries ~7 significant digits; more would only print noise.
        confidence=float(f"{float(confidence.reshape(-1)[0]):.7g}") if confidence is not None else 0.0,
        words=tuple(Word(w, s, e, k) for w, s, e, k in zip(words, word_start, word_end, word_speakers)),
        segments=_segments(result, seg_text, seg_start, seg_end, ids, request_id),
        token_ids=ids,
        request_id=request_id,
    )


def _tensor_specs(items: list[dict]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(str(t.get("name", "")), str(t.get("datatype", "")), tuple(int(d) for d in t.get("shape", [])))
        for t in items
    )


def parse_model_metadata(data: dict) -> ModelMetadata:
    """:class:`ModelMetadata` from tritonclient's JSON form of ``ModelMetadataResponse``."""
    return ModelMetadata(
        name=str(data.get("name", "")),
        versions=tuple(str(v) for v in data.get("versions", [])),
        platform=str(data.get("platform", "")),
        inputs=_tensor_specs(data.get("inputs", [])),
        outputs=_tensor_specs(data.get("outputs", [])),
    )


def parse_repository_index(data: dict) -> list[ModelState]:
    """:class:`ModelState` entries from tritonclient's JSON form of ``RepositoryIndexResponse``."""
    return [
        ModelState(
            name=str(m.get("name", "")),
            version=str(m.get("version", "")),
            state=str(m.get("state", "")),
            reason=str(m.get("reason", "")),
        )
        for m in data.get("models", [])
    ]
