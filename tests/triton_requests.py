"""Raw tritonclient requests to ``qwen3_asr`` (the wire contract, without the project's client library)."""

from __future__ import annotations

import numpy as np

from qwen3_asr_triton.client.wire import OUTPUTS


def build_inputs(
    module,
    audio: bytes | None = None,
    waveform: np.ndarray | None = None,
    rate: int | None = None,
    language: str | None = None,
    context: str | None = None,
    timestamps: bool | None = None,
    max_new_tokens: int | None = None,
    min_new_tokens: int | None = None,
) -> list:
    """InferInput list for tritonclient.grpc or tritonclient.http (``module``)."""
    items = []

    def add(name, array, dtype):
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        items.append(tensor)

    if audio is not None:
        add("AUDIO", np.array([audio], dtype=np.object_), "BYTES")
    if waveform is not None:
        add("WAVEFORM", np.asarray(waveform), "FP32" if np.asarray(waveform).dtype == np.float32 else "FP64")
    if rate is not None:
        add("SAMPLE_RATE", np.array([rate], np.int32), "INT32")
    if language is not None:
        add("LANGUAGE", np.array([language.encode()], dtype=np.object_), "BYTES")
    if context is not None:
        add("CONTEXT", np.array([context.encode()], dtype=np.object_), "BYTES")
    if timestamps is not None:
        add("RETURN_TIMESTAMPS", np.array([timestamps]), "BOOL")
    if max_new_tokens is not None:
        add("MAX_NEW_TOKENS", np.array([max_new_tokens], np.int32), "INT32")
    if min_new_tokens is not None:
        add("MIN_NEW_TOKENS", np.array([min_new_tokens], np.int32), "INT32")
    return items


def transcribe(
    url: str, protocol: str = "grpc", client_timeout: float | None = None, **kwargs
) -> dict[str, np.ndarray]:
    """One unary request; returns every output as numpy (strings decoded). ``client_timeout``: gRPC only."""
    if protocol == "grpc":
        import tritonclient.grpc as module

        deadline = {"client_timeout": client_timeout}
    else:
        import tritonclient.http as module

        if client_timeout is not None:
            raise ValueError("client_timeout is for gRPC requests")
        deadline = {}
    client = module.InferenceServerClient(url)
    try:
        result = client.infer(
            "qwen3_asr",
            build_inputs(module, **kwargs),
            outputs=[module.InferRequestedOutput(n) for n in OUTPUTS],
            **deadline,
        )
    finally:
        client.close()
    out = {}
    for name in OUTPUTS:
        value = result.as_numpy(name)
        if value is not None and value.dtype == np.object_:
            value = np.array([v.decode("utf-8") for v in value.reshape(-1)], dtype=object)
        out[name] = value
    return out
