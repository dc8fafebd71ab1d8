"""Checks on a raw KServe v2 ``ModelInferRequest`` before it may reach Triton.

Triton 2.51's gRPC front end multiplies a tensor's declared shape by its element size in a
64-bit integer that can overflow: a request declaring 2**62 ``FP32`` samples and carrying no
data passes its size check, and the python worker that receives it dies. These checks redo the
arithmetic in Python integers (no overflow), so every tensor carries exactly the data its shape
and datatype say, before a byte is forwarded. Pure functions on bytes and protobuf messages: no
gRPC server, no Triton.

>>> from tritonclient.grpc import service_pb2 as pb
>>> msg = pb.ModelInferRequest(model_name="qwen3_asr")
>>> tensor = msg.inputs.add(name="WAVEFORM", datatype="FP32", shape=[1, 2**62])
>>> check_infer_request(msg)
Traceback (most recent call last):
...
RejectedRequestError: input 'WAVEFORM' [1, 4611686018427387904] 'FP32' declares 4611686018427387904 elements; ...
"""

from __future__ import annotations

import struct

from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from qwen3_asr_triton.errors import excerpt

# Bytes per element of each fixed-size KServe v2 datatype (the protocol's definition).
ELEMENT_BYTES = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "BF16": 2,
    "FP32": 4,
    "FP64": 8,
}
# The typed field of InferTensorContents that carries each datatype when raw contents are not used
# (FP16 and BF16 have none: they travel as raw bytes only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# A raw BYTES element is a 4-byte little-endian length followed by that many bytes.
BYTES_PREFIX = struct.Struct("<I")
# Most elements one BYTES tensor may have. This deployment's BYTES inputs (audio file, language,
# context) hold one element per request, and a client batch is at most a few hundred; the bound keeps
# the walk over length prefixes (one Python step per element) cheap for any message size.
MAX_BYTES_ELEMENTS = 4096
# Parameters that point a tensor at a shared-memory region: this endpoint registers none, so a
# tensor naming one is refused rather than passed on.
SHARED_MEMORY_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
# Longest model, tensor or request id accepted: real names are a few dozen characters, and Triton
# quotes names back whole in its own error messages.
MAX_NAME_CHARS = 256


class RejectedRequestError(ValueError):
    """A request this endpoint refuses; the message quotes at most a short excerpt of the input."""


class UnknownModelError(RejectedRequestError):
    """A request for a model this endpoint does not serve (``NOT_FOUND``)."""


def check_public_model(request: pb.ModelInferRequest, public: frozenset[str]) -> None:
    """Refuse a request for a model outside ``public``: one the server does not have, or one of the
    pipeline's internal stages, which only its own models call (which of the two is not said).

    Raises
    ------
    UnknownModelError
        When ``request.model_name`` is not in ``public``.
    """
    if request.model_name not in public:
        raise UnknownModelError(
            f"unknown model {excerpt(request.model_name)}: this endpoint serves {', '.join(sorted(public))}"
        )


def parse_infer_request(raw: bytes) -> pb.ModelInferRequest:
    """Decode a serialized ``ModelInferRequest``.

    Raises
    ------
    RejectedRequestError
        When the bytes are not a valid message.
    """
    request = pb.ModelInferRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError:
        raise RejectedRequestError(f"malformed ModelInferRequest ({len(raw)} bytes)") from None
    return request


def _check_name(kind: str, name: str) -> None:
    if len(name) > MAX_NAME_CHARS:
        raise RejectedRequestError(f"{kind} {excerpt(name)} is longer than {MAX_NAME_CHARS} characters")


def _label(tensor: pb.ModelInferRequest.InferInputTensor) -> str:
    shape = list(tensor.shape)
    shown = shape if len(shape) <= 8 else [*shape[:8], "..."]
    return f"input {excerpt(tensor.name)} {shown} {excerpt(tensor.datatype, 20)}"


def _element_count(tensor: pb.ModelInferRequest.InferInputTensor, max_elements: int) -> int:
    if any(dim < 0 for dim in tensor.shape):
        raise RejectedRequestError(f"{_label(tensor)}: dimensions must not be negative")
    count = 1
    for dim in tensor.shape:
        count *= dim  # a Python integer: no overflow, whatever the client declared
    if count > max_elements:
        raise RejectedRequestError(
            f"{_label(tensor)} declares {count} elements; this endpoint takes at most {max_elements}"
        )
    return count


def _check_shared_memory(kind: str, name: str, parameters) -> None:
    for key in SHARED_MEMORY_PARAMETERS:
        if key in parameters:
            raise RejectedRequestError(f"{kind} {excerpt(name)}: shared memory is not available through this endpoint")


def _check_raw_bytes(label: str, count: int, data: bytes) -> None:
    if count > MAX_BYTES_ELEMENTS:
        raise RejectedRequestError(f"{label}: at most {MAX_BYTES_ELEMENTS} BYTES elements per tensor, got {count}")
    offset, size = 0, len(data)
    for index in range(count):
        if offset + BYTES_PREFIX.size > size:
            raise RejectedRequestError(f"{label}: raw contents end before element {index} of {count}")
        (length,) = BYTES_PREFIX.unpack_from(data, offset)
        offset += BYTES_PREFIX.size + length
        if offset > size:
            raise RejectedRequestError(f"{label}: element {index} declares {length} bytes past the end of the contents")
    if offset != size:
        raise RejectedRequestError(f"{label}: {size - offset} bytes after its {count} elements")


def check_infer_request(request: pb.ModelInferRequest) -> None:
    """Refuse a request whose tensors do not carry exactly what their shapes and datatypes declare.

    Checked: model, tensor and id names of a bounded length; for every input a known datatype, no
    negative dimension, an element count (the shape's product, computed without overflow) no larger
    than the message could hold; raw contents for all inputs or for none; raw contents of exactly
    count x element size bytes (BYTES: exactly ``count`` length-prefixed elements); typed contents
    of exactly ``count`` values; no shared-memory region named by an input or a requested output.

    Parameters
    ----------
    request : ModelInferRequest
        The decoded message.

    Raises
    ------
    RejectedRequestError
        The first problem found, naming the input (quoted as a short excerpt).
    """
    # No element takes less than one byte of the message (a BYTES element takes four), so a count
    # above the message's own size cannot be backed by data.
    max_elements = max(request.ByteSize(), 1)
    _check_name("model name", request.model_name)
    _check_name("model version", request.model_version)
    _check_name("request id", request.id)
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RejectedRequestError(f"{len(raw)} raw input contents for {len(request.inputs)} inputs")
    for index, tensor in enumerate(request.inputs):
        _check_name("input", tensor.name)
        _check_shared_memory("input", tensor.name, tensor.parameters)
        label = _label(tensor)
        datatype = tensor.datatype
        if datatype != "BYTES" and datatype not in ELEMENT_BYTES:
            raise RejectedRequestError(f"{label}: unknown datatype")
        count = _element_count(tensor, max_elements)
        if raw:
            if tensor.HasField("contents"):
                raise RejectedRequestError(f"{label}: both raw and typed contents")
            data = raw[index]
            if datatype == "BYTES":
                _check_raw_bytes(label, count, data)
            elif len(data) != count * ELEMENT_BYTES[datatype]:
                raise RejectedRequestError(
                    f"{label} needs {count * ELEMENT_BYTES[datatype]} bytes of raw contents, got {len(data)}"
                )
            continue
        field = CONTENTS_FIELD.get(datatype)
        carried = len(getattr(tensor.contents, field)) if field else 0
        if carried != count:
            how = f"{field}" if field else "raw contents (the only way to send it)"
            raise RejectedRequestError(f"{label} declares {count} elements but carries {carried} in {how}")
        if datatype == "BYTES" and count > MAX_BYTES_ELEMENTS:
            raise RejectedRequestError(f"{label}: at most {MAX_BYTES_ELEMENTS} BYTES elements per tensor, got {count}")
    for output in request.outputs:
        _check_name("output", output.name)
        _check_shared_memory("output", output.name, output.parameters)
