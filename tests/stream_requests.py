"""Raw gRPC bidirectional streaming to ``qwen3_asr_streaming`` (the wire contract, no client library)."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class StreamResult:
    partials: list[dict] = field(default_factory=list)
    utterances: list[dict] = field(default_factory=list)  # UTTERANCE_FINAL responses (the last may be final too)
    final: dict | None = None
    errors: list[str] = field(default_factory=list)


def _decode(result) -> dict:
    out = {}
    names = ("TEXT", "DETECTED_LANGUAGE", "TOKEN_IDS", "CONFIDENCE", "IS_FINAL", "AUDIO_SECONDS", "WORDS", "WORD_START")
    for name in (*names, "UTTERANCE_INDEX", "UTTERANCE_FINAL", "UTTERANCE_START", "UTTERANCE_END"):
        value = result.as_numpy(name)
        if value is None:
            continue
        value = value.reshape(-1)
        if value.dtype == np.object_:
            value = [v.decode("utf-8") for v in value]
        out[name] = value
    return out


def stream_pcm(
    url: str,
    wave: np.ndarray,
    sequence_id: int,
    chunk_seconds: float = 1.0,
    rate: int = 16000,
    pace: float = 0.0,
    drop_after: int | None = None,
    start_inputs: dict | None = None,
    timeout: float = 120.0,
    stop_on_error: bool = True,
) -> StreamResult:
    """Send ``wave`` in chunks on one gRPC stream; ``pace`` seconds between chunks; ``drop_after`` chunks
    then close the stream without END; ``stop_on_error`` stops waiting for the final at the first error
    response. Returns the partials and the final (IS_FINAL) response."""
    import tritonclient.grpc as grpcclient

    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    step = int(chunk_seconds * rate)
    count = max(1, int(np.ceil(wave.size / step)))
    if drop_after is not None:
        count = min(count, drop_after)
    result = StreamResult()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                res, err = responses.get(timeout=0.2)
            except queue.Empty:
                continue
            if err is not None:
                result.errors.append(str(err))
                continue
            decoded = _decode(res)
            if "UTTERANCE_FINAL" in decoded and bool(decoded["UTTERANCE_FINAL"][0]):
                result.utterances.append(decoded)
            if bool(decoded["IS_FINAL"][0]):
                result.final = decoded
                done.set()
            elif not result.utterances or result.utterances[-1] is not decoded:
                result.partials.append(decoded)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for i in range(count):
            part = np.ascontiguousarray(wave[i * step : (i + 1) * step], dtype=np.float32)
            inputs = [
                grpcclient.InferInput("WAVEFORM", [1, part.size], "FP32"),
                grpcclient.InferInput("SAMPLE_RATE", [1, 1], "INT32"),
            ]
            inputs[0].set_data_from_numpy(part[None])
            inputs[1].set_data_from_numpy(np.array([[rate]], np.int32))
            if i == 0:
                for name, (array, dtype) in (start_inputs or {}).items():
                    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
                    tensor.set_data_from_numpy(array)
                    inputs.append(tensor)
            last = drop_after is None and i == count - 1
            client.async_stream_infer(
                "qwen3_asr_streaming", inputs, sequence_id=sequence_id, sequence_start=(i == 0), sequence_end=last
            )
            if pace:
                time.sleep(pace)
        if drop_after is None:
            deadline = time.monotonic() + timeout
            while not done.is_set() and not (stop_on_error and result.errors) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            time.sleep(max(pace, 0.5))
    finally:
        done.set()
        client.stop_stream()
        client.close()
    return result
