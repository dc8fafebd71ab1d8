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

import numpy as np
import tritonclient.grpc as grpcclient

from .errors import MalformedResponseError
from .options import TranscribeOptions
from .types import Partial
from .wire import make_tensor, option_inputs


def chunk_inputs(
    samples: np.ndarray, sample_rate: int, options: TranscribeOptions | None = None
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
    """
    pcm = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
    tensors = [
        make_tensor("WAVEFORM", pcm, "FP32"),
        make_tensor("SAMPLE_RATE", np.array([[sample_rate]], dtype=np.int32), "INT32"),
    ]
    if options is not None:
        tensors += option_inputs(options, batched=True)
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
    return Partial(
        text=_text(result, "TEXT"),
        language=_text(result, "DETECTED_LANGUAGE") or None,
        token_ids=tuple(int(t) for t in token_ids.reshape(-1)) if token_ids is not None else (),
        # float32 on the wire: milliseconds are all it carries meaningfully.
        audio_seconds=round(float(seconds.reshape(-1)[0]), 3),
        chunk=chunk,
        latency=latency,
        request_id=request_id,
    )
