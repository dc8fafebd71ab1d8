"""What the sync and asyncio clients share: channel arguments and request preparation."""

from __future__ import annotations

import uuid
from typing import Any

from .options import ClientOptions, TranscribeOptions
from .wire import AudioInput, audio_inputs, option_inputs, requested_outputs


def channel_kwargs(options: ClientOptions) -> dict[str, Any]:
    """Keyword arguments for ``tritonclient.grpc[.aio].InferenceServerClient``."""
    kwargs: dict[str, Any] = {"url": options.url}
    if options.tls is not None:
        tls = options.tls
        kwargs.update(
            ssl=True,
            root_certificates=str(tls.root_certificates) if tls.root_certificates else None,
            private_key=str(tls.private_key) if tls.private_key else None,
            certificate_chain=str(tls.certificate_chain) if tls.certificate_chain else None,
        )
    return kwargs


def new_request_id() -> str:
    """A unique id per request: Triton logs it, so a failure can be found in the server's log."""
    return uuid.uuid4().hex


def request_inputs(audio: AudioInput, options: TranscribeOptions, sample_rate: int | None) -> list:
    """Every input tensor of one transcription request."""
    return audio_inputs(audio, sample_rate) + option_inputs(options)


def infer_call(
    client_options: ClientOptions, audio: AudioInput, options: TranscribeOptions | None, sample_rate: int | None
) -> tuple[str, tuple, dict[str, Any]]:
    """``(request_id, args, kwargs)`` of one ``infer`` call, the same for the sync and asyncio clients."""
    request_id = new_request_id()
    inputs = request_inputs(audio, options or TranscribeOptions(), sample_rate)
    kwargs = {
        "model_version": client_options.model_version,
        "outputs": requested_outputs(),
        "request_id": request_id,
    }
    return request_id, (client_options.model, inputs), kwargs


def describe(options: ClientOptions, action: str) -> str:
    """Short description of a call for error messages ("infer qwen3_asr at 127.0.0.1:8001")."""
    return f"{action} at {options.url}"
