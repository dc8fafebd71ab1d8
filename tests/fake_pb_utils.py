"""A stand-in for ``triton_python_backend_utils`` so model.py files can be unit-tested without a server.

It implements the part of the python-backend API the models use: tensors,
requests with response senders, responses and errors, and metric families.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import weakref
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import numpy as np

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = 1) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors=None, error: TritonError | None = None) -> None:
        self._outputs = list(output_tensors or [])
        self._error = error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs


class ResponseSender:
    """Records what a decoupled model sends."""

    def __init__(self) -> None:
        self.responses: list[tuple[InferenceResponse | None, int]] = []
        self.cancelled = False
        self.done = threading.Event()

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        self.responses.append((response, flags))
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.done.set()

    def is_cancelled(self) -> bool:
        return self.cancelled


class InferenceRequest:
    _ids = 0

    def __init__(self, inputs: dict[str, np.ndarray]) -> None:
        InferenceRequest._ids += 1
        self.request_id_value = str(InferenceRequest._ids)
        self.inputs = [Tensor(k, v) for k, v in inputs.items()]
        self.sender = ResponseSender()

    def request_id(self) -> str:
        return self.request_id_value

    def get_response_sender(self) -> ResponseSender:
        return self.sender


class MetricFamily:
    COUNTER, GAUGE = 0, 1
    # The families still alive, by name: a model must release them in finalize() (qwen3_asr_triton.metrics).
    registry: ClassVar[weakref.WeakValueDictionary[str, MetricFamily]] = weakref.WeakValueDictionary()

    def __init__(self, name: str, description: str, kind: int) -> None:
        self.name, self.kind, self.metrics, self.labels = name, kind, [], []
        MetricFamily.registry[name] = self

    def Metric(self, labels=None):  # noqa: N802 - Triton's spelling
        metric = _Metric()
        self.metrics.append(metric)
        self.labels.append(dict(labels or {}))
        return metric


class _Metric:
    def __init__(self) -> None:
        self.value = 0.0

    def increment(self, by: float) -> None:
        self.value += by

    def set(self, value: float) -> None:
        self.value = value


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in request.inputs if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in response.output_tensors() if t.name() == name), None)


def module() -> ModuleType:
    return sys.modules[__name__]


def load_model(path: Path) -> ModuleType:
    """Import a model.py with this module installed as ``triton_python_backend_utils``."""
    sys.modules["triton_python_backend_utils"] = module()
    spec = importlib.util.spec_from_file_location(f"model_{path.parent.parent.name}", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded
