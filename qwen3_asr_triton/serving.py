"""Helpers shared by the Triton python-backend models (the model.py files).

This module never imports ``triton_python_backend_utils``: the caller passes
its ``pb_utils`` module in, so everything here can be unit-tested with a fake
and the model.py files stay thin.

Error policy (per request, never per batch): :class:`~.errors.InputError` ->
``INVALID_ARG``; :class:`~.errors.CapacityError` -> ``UNAVAILABLE``;
:class:`~.errors.RequestCancelledError` -> ``CANCELLED``; anything else -> ``INTERNAL``
with the exception text, logged with its traceback (a :class:`~.errors.DownstreamError`, the
internal error of a model called through BLS, keeps that model's text and is said to be internal
once). Every message is cut to ``MAX_MESSAGE_CHARS``, and client values are quoted through
:func:`~.errors.excerpt`.

Triton 2.51's python backend reports every BLS error as ``INTERNAL``, so the
internal models also mark the message with the error class (``[invalid-input]``,
``[unavailable]``); :func:`raise_for_bls_error` reads the mark back and the entry
model, which answers clients, sends clean messages with the right code.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import math
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import (
    CapacityError,
    DownstreamError,
    InputError,
    RequestCancelledError,
    bounded_message,
    restarting,
)

if TYPE_CHECKING:
    from .audio import AudioLimits

logger = logging.getLogger("qwen3_asr_triton.serving")

# Threads numpy's BLAS may use in a model's worker process. The heavy work runs in ONNX Runtime's
# (or torch's) own threads; numpy's matrix products are small (a log-mel's filter bank: a 1 s chunk is
# 100 frames x 201 bins x 128 mels), and OpenBLAS's extra workers busy-wait after every product,
# taking cores from the graphs in the other processes. Measured at 32 live streams on a 2-core AMD
# EPYC: the streaming model used 0.65 cores with OpenBLAS's default of one thread per core and 0.26
# with one thread, and the whole server 1.81 against 1.52 cores for the same work
# (perf/results/live-captions/cpu-cuts/).
BLAS_THREADS = 1
# Kept so that the limit stays in force for the life of the worker.
_blas_limit: object | None = None


def model_parameters(args: dict[str, str]) -> dict[str, str]:
    """``parameters`` of the model config as plain strings."""
    config = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def version_dir(args: dict[str, str]) -> Path:
    """The model's version folder, where its artifacts were placed by the build."""
    return Path(args["model_repository"]) / args["model_version"]


def setup_worker(level: str = "INFO") -> None:
    """What every model's worker process sets up first.

    Logs to the server's output at ``level``; a worker that crashes (a fault in native code) first
    writes every thread's Python traceback there, so a dead stub says where it died; numpy's BLAS
    runs on :data:`BLAS_THREADS` threads (:func:`limit_blas_threads`).
    """
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not faulthandler.is_enabled():
        faulthandler.enable(all_threads=True)
    limit_blas_threads()


def limit_blas_threads(threads: int = BLAS_THREADS) -> list[dict[str, Any]]:
    """Limit every BLAS library loaded in this process (numpy's OpenBLAS; MKL or BLIS where numpy uses
    them) to ``threads`` threads. ONNX Runtime's and torch's own thread pools are not touched.

    Returns
    -------
    list of dict
        threadpoolctl's description of each BLAS library after the change (empty: none loaded).
    """
    global _blas_limit
    from threadpoolctl import threadpool_info, threadpool_limits

    before = {info["filepath"]: info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}
    _blas_limit = threadpool_limits(limits=threads, user_api="blas")
    after = [info for info in threadpool_info() if info["user_api"] == "blas"]
    for info in after:
        logger.info(
            "numpy's BLAS (%s %s): %s -> %s threads",
            info["internal_api"],
            info.get("version"),
            before.get(info["filepath"]),
            info["num_threads"],
        )
    return after


class RequestInputs:
    """Typed access to one request's input tensors, raising :class:`InputError` on misuse."""

    def __init__(self, pb_utils: ModuleType, request: Any) -> None:
        self._pb = pb_utils
        self._request = request

    def array(self, name: str) -> np.ndarray | None:
        tensor = self._pb.get_input_tensor_by_name(self._request, name)
        return None if tensor is None else tensor.as_numpy()

    def required(self, name: str) -> np.ndarray:
        """The input ``name``; :class:`InputError` when the request lacks it."""
        value = self.array(name)
        if value is None:
            raise InputError(f"missing input {name}")
        return value

    def item(self, name: str) -> np.ndarray | None:
        """The one item of a batching model's input: ``[1, ...]`` -> ``[...]``.

        Models with ``max_batch_size > 0`` get a leading batch dimension on every input; the
        internal models take one item per request, so a larger batch is refused.
        """
        value = self.array(name)
        if value is None:
            return None
        if value.ndim == 0 or value.shape[0] != 1:
            raise InputError(f"{name} must hold one item per request, got shape {list(value.shape)}")
        return value[0]

    def _single(self, name: str) -> Any | None:
        value = self.array(name)
        if value is None:
            return None
        if value.size != 1:
            raise InputError(f"{name} must hold exactly one value, got shape {list(value.shape)}")
        return value.reshape(-1)[0]

    def raw_bytes(self, name: str) -> bytes | None:
        value = self._single(name)
        if value is None:
            return None
        return bytes(value) if not isinstance(value, str) else value.encode()

    def text(self, name: str, default: str = "") -> str:
        value = self.raw_bytes(name)
        if value is None:
            return default
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{name} is not valid UTF-8") from exc

    def flag(self, name: str, default: bool = False) -> bool:
        value = self._single(name)
        return default if value is None else bool(value)

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self._single(name)
        return default if value is None else int(value)

    def number(self, name: str, default: float | None = None) -> float | None:
        """A floating-point scalar input; :class:`InputError` when it is NaN or infinite."""
        value = self._single(name)
        if value is None:
            return default
        number = float(value)
        if not math.isfinite(number):
            raise InputError(f"{name} must be a finite number, got {number}")
        return number


INPUT_MARK = "[invalid-input] "
CAPACITY_MARK = "[unavailable] "
CANCELLED_MARK = "[cancelled] "
_MARKS = ((INPUT_MARK, InputError), (CAPACITY_MARK, CapacityError), (CANCELLED_MARK, RequestCancelledError))
# How an internal error's message starts (once, however many models it passed through).
INTERNAL_PREFIX = "internal error: "


def request_waveform(inputs: RequestInputs, limits: AudioLimits) -> np.ndarray:
    """A request's audio as mono 16 kHz float32: ``AUDIO`` (file bytes) or ``WAVEFORM`` + ``SAMPLE_RATE``.

    Raises
    ------
    InputError
        Neither or both were sent, ``WAVEFORM`` came without its rate, or the audio breaks ``limits``.
    """
    # Imported here: only the models that read audio load the decoders (libsndfile, libsoxr).
    from .audio import load_audio, prepare_waveform

    audio = inputs.raw_bytes("AUDIO")
    wave = inputs.item("WAVEFORM")
    if (audio is None) == (wave is None):
        raise InputError("send exactly one of AUDIO (file bytes) or WAVEFORM (+ SAMPLE_RATE)")
    if audio is not None:
        return load_audio(audio, limits)
    rate = inputs.integer("SAMPLE_RATE")
    if rate is None:
        raise InputError("WAVEFORM needs SAMPLE_RATE")
    return prepare_waveform(wave, rate, limits)


def triton_error(pb_utils: ModuleType, exc: BaseException, marked: bool = True):
    """The ``pb_utils.TritonError`` for an exception (see module docstring); messages are bounded."""
    if isinstance(exc, InputError):
        message, code, mark = str(exc), pb_utils.TritonError.INVALID_ARG, INPUT_MARK
    elif isinstance(exc, CapacityError):
        message, code, mark = str(exc), pb_utils.TritonError.UNAVAILABLE, CAPACITY_MARK
    elif isinstance(exc, RequestCancelledError):
        message, code, mark = str(exc), pb_utils.TritonError.CANCELLED, CANCELLED_MARK
    elif isinstance(exc, DownstreamError):
        # The called model logged its traceback and wrote the message; say once that it is internal.
        logger.error("%s", exc)
        message, code, mark = f"{INTERNAL_PREFIX}{exc}", pb_utils.TritonError.INTERNAL, ""
    else:
        logger.error("internal error: %s", exc, exc_info=exc)
        message, code, mark = f"{INTERNAL_PREFIX}{type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL, ""
    return pb_utils.TritonError(bounded_message((mark if marked else "") + message), code)


def error_response(pb_utils: ModuleType, exc: BaseException, marked: bool = True):
    """An error response; ``marked=False`` for the model that answers clients directly."""
    return pb_utils.InferenceResponse(output_tensors=[], error=triton_error(pb_utils, exc, marked))


def string_tensor(pb_utils: ModuleType, name: str, values: list[str]):
    """A TYPE_STRING tensor of UTF-8 strings, shape ``[len(values)]``."""
    return pb_utils.Tensor(name, np.array([v.encode("utf-8") for v in values], dtype=np.object_))


def raise_for_bls_error(response: Any, model: str) -> None:
    """Turn an error in a BLS response into an exception of the downstream error's class."""
    if not response.has_error():
        return
    message = response.error().message()
    for mark, cls in _MARKS:
        if mark in message:
            raise cls(message.split(mark, 1)[1])
    if restarting(message):
        # A python stub that died (Triton 2.51 never restarts one: the watchdog restarts the server), or the
        # server shutting down for that restart: fail fast, and say it passes.
        raise CapacityError(f"the {model} worker is not running; the server is restarting it, retry shortly")
    raise DownstreamError(f"{model}: {message.removeprefix(INTERNAL_PREFIX)}")


def transcript_outputs(pb_utils: ModuleType, transcript: Any) -> list:
    """Output tensors of a :class:`~.pipeline.Transcript` (the entry models' public outputs)."""
    return [
        string_tensor(pb_utils, "TEXT", [transcript.text]),
        string_tensor(pb_utils, "DETECTED_LANGUAGE", [transcript.language]),
        pb_utils.Tensor("TOKEN_IDS", np.asarray(transcript.token_ids, dtype=np.int32)),
        pb_utils.Tensor("CONFIDENCE", np.array([transcript.confidence], np.float32)),
        string_tensor(pb_utils, "WORDS", [w.word for w in transcript.words]),
        pb_utils.Tensor("WORD_START", np.array([w.start for w in transcript.words], np.float32)),
        pb_utils.Tensor("WORD_END", np.array([w.end for w in transcript.words], np.float32)),
        string_tensor(pb_utils, "SEGMENT_TEXT", [s.text for s in transcript.segments]),
        pb_utils.Tensor("SEGMENT_START", np.array([s.start for s in transcript.segments], np.float32)),
        pb_utils.Tensor("SEGMENT_END", np.array([s.end for s in transcript.segments], np.float32)),
        pb_utils.Tensor("SEGMENT_TOKENS", np.array([len(s.token_ids) for s in transcript.segments], np.int32)),
        pb_utils.Tensor("SEGMENT_LOGPROB", np.array([s.avg_logprob for s in transcript.segments], np.float32)),
        pb_utils.Tensor("SEGMENT_SPEAKER", np.asarray(transcript.segment_speakers, dtype=np.int32)),
        pb_utils.Tensor("WORD_SPEAKER", np.asarray(transcript.word_speakers, dtype=np.int32)),
    ]
