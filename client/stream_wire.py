"""The ``qwen3_asr_streaming`` wire contract: chunk requests in, partial hypotheses out.

The model has ``max_batch_size > 0``, so every tensor carries a leading batch
dimension of 1. Each chunk is one request of a Triton sequence (correlation id,
START on the first, END on the last): WAVEFORM FP32 ``[1, n]`` and SAMPLE_RATE
INT32 ``[1, 1]``, plus on START the options of ``qwen3_asr`` as ``[1, 1]``
tensors. A chunk is answered by a partial (TEXT, DETECTED_LANGUAGE, TOKEN_IDS,
IS_FINAL false, AUDIO_SECONDS), by nothing when a newer chunk superseded it, or,
for END, by the final result with every output of ``qwen3_asr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient

from .errors import MalformedResponseError
from .options import EndpointingOptions, TranscribeOptions
from .types import Partial, Transcription, Utterance
from .wire import make_tensor, option_inputs

# Decimals kept of UTTERANCE_START / UTTERANCE_END (float32 seconds on the wire).
SPAN_DECIMALS = 6


def endpointing_inputs(endpointing: EndpointingOptions) -> list[grpcclient.InferInput]:
    """The START inputs that turn endpointing on: ENDPOINTING plus the knobs that are set, each ``[1, 1]``."""
    tensors = [make_tensor("ENDPOINTING", np.array([[True]]), "BOOL")]
    knobs = (
        ("VAD_THRESHOLD", endpointing.vad_threshold, np.float32, "FP32"),
        ("VAD_MIN_SILENCE_MS", endpointing.vad_min_silence_ms, np.int32, "INT32"),
        ("VAD_SPEECH_PAD_MS", endpointing.vad_speech_pad_ms, np.int32, "INT32"),
    )
    for name, value, dtype, datatype in knobs:
        if value is not None:
            tensors.append(make_tensor(name, np.array([[value]], dtype=dtype), datatype))
    return tensors


def chunk_inputs(
    samples: np.ndarray,
    sample_rate: int,
    options: TranscribeOptions | None = None,
    endpointing: EndpointingOptions | None = None,
) -> list[grpcclient.InferInput]:
    """Input tensors of one chunk request.

    Parameters
    ----------
    samples : numpy.ndarray
        Mono float32 PCM ``[n]`` (``n`` may be 0, e.g. for a bare END).
    sample_rate : int
        Their rate in Hz; constant within a stream.
    options : TranscribeOptions, optional
        Given for the START chunk only: the stream's language, context, timestamps, token cap.
    endpointing : EndpointingOptions, optional
        Given for the START chunk of an endpointing stream only.
    """
    pcm = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
    tensors = [
        make_tensor("WAVEFORM", pcm, "FP32"),
        make_tensor("SAMPLE_RATE", np.array([[sample_rate]], dtype=np.int32), "INT32"),
    ]
    if options is not None:
        tensors += option_inputs(options, batched=True)
    if endpointing is not None:
        tensors += endpointing_inputs(endpointing)
    return tensors


def response_id(result) -> str:
    """The request id a response answers (Triton copies it from the request)."""
    return str(result.get_response().id)


def is_final(result, request_id: str) -> bool:
    """True for the final result of a stream, False for a partial one.

    Raises
    ------
    MalformedResponseError
        The response has no IS_FINAL.
    """
    flag = result.as_numpy("IS_FINAL")
    if flag is None or flag.size != 1:
        raise MalformedResponseError(f"a stream response without one IS_FINAL (request {request_id})")
    return bool(flag.reshape(-1)[0])


def _text(result, name: str) -> str:
    value = result.as_numpy(name)
    if value is None or value.size != 1:
        return ""
    item = value.reshape(-1)[0]
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def _scalar(result, name: str):
    value = result.as_numpy(name)
    return None if value is None or value.size != 1 else value.reshape(-1)[0]


@dataclass(frozen=True)
class UtteranceInfo:
    """The utterance outputs of one response; defaults for a server that sends none of them."""

    index: int = 0
    final: bool | None = None  # None: not sent (read as IS_FINAL)
    start: float = 0.0
    end: float | None = None


def utterance_info(result, request_id: str) -> UtteranceInfo:
    """UTTERANCE_INDEX, UTTERANCE_FINAL, UTTERANCE_START and UTTERANCE_END of a response, where present.

    Raises
    ------
    MalformedResponseError
        A negative utterance index.
    """
    index, final = _scalar(result, "UTTERANCE_INDEX"), _scalar(result, "UTTERANCE_FINAL")
    start, end = _scalar(result, "UTTERANCE_START"), _scalar(result, "UTTERANCE_END")
    info = UtteranceInfo(
        index=0 if index is None else int(index),
        final=None if final is None else bool(final),
        # Kept to the microsecond, not the millisecond of word times: an utterance's span is a whole
        # number of samples (a 16 kHz sample is 62.5 us), which ``round(seconds * rate)`` gives back.
        start=0.0 if start is None else round(float(start), SPAN_DECIMALS),
        end=None if end is None else round(float(end), SPAN_DECIMALS),
    )
    if info.index < 0:
        raise MalformedResponseError(f"a negative UTTERANCE_INDEX {info.index} (request {request_id})")
    return info


def make_utterance(
    info: UtteranceInfo, transcription: Transcription, chunk: int, latency: float, request_id: str, last: bool
) -> Utterance:
    """An :class:`Utterance` from a response's utterance outputs and its parsed result.

    Raises
    ------
    MalformedResponseError
        The utterance ends before it starts.
    """
    end = info.end if info.end is not None else max(info.start, transcription.audio_seconds)
    if end < info.start:
        raise MalformedResponseError(f"utterance {info.index} spans [{info.start}, {end}] s (request {request_id})")
    return Utterance(
        index=info.index,
        start=info.start,
        end=end,
        transcription=transcription,
        chunk=chunk,
        latency=latency,
        request_id=request_id,
        last=last,
    )


def parse_partial(result, chunk: int, latency: float, request_id: str) -> Partial:
    """A :class:`Partial` from a partial response to chunk ``chunk``.

    Raises
    ------
    MalformedResponseError
        TEXT or AUDIO_SECONDS is missing.
    """
    text = result.as_numpy("TEXT")
    seconds = result.as_numpy("AUDIO_SECONDS")
    if text is None or text.size != 1 or seconds is None or seconds.size != 1:
        raise MalformedResponseError(f"a partial without one TEXT and AUDIO_SECONDS (request {request_id})")
    token_ids = result.as_numpy("TOKEN_IDS")
    info = utterance_info(result, request_id)
    return Partial(
        text=_text(result, "TEXT"),
        language=_text(result, "DETECTED_LANGUAGE") or None,
        token_ids=tuple(int(t) for t in token_ids.reshape(-1)) if token_ids is not None else (),
        # float32 on the wire: milliseconds are all it carries meaningfully.
        audio_seconds=round(float(seconds.reshape(-1)[0]), 3),
        chunk=chunk,
        latency=latency,
        request_id=request_id,
        utterance=info.index,
        utterance_start=info.start,
    )
