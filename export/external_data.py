"""Weights stored outside an ONNX graph: where a tensor's bytes are, and writing graphs with their data beside them.

Graphs of real size keep their weights in ``<name>.onnx.data`` (protobuf caps a file at 2 GB). These
helpers find a tensor's bytes there (:func:`external_source`), read or memory-map them
(:func:`read_tensor`, :func:`map_tensor`) and write a graph with every large tensor moved out, one
tensor at a time (:func:`write_with_external_data`). They import onnx, not torch, so every export step
can use them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

# Tensors of at least this many bytes go to the external data file (small ones stay in the graph).
EXTERNAL_MIN_BYTES = 1024
# External tensors start on 4 KiB (page) boundaries, so a runtime may map them in place.
EXTERNAL_ALIGN = 4096
# Bytes copied at a time when moving external data (bounds the copy's memory).
COPY_CHUNK_BYTES = 64 * 1024 * 1024


def _graph_tensors(graph) -> Iterator:
    """Every TensorProto of ``graph``: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def external_data_file(graph: Path) -> Path:
    """The file holding a graph's weights: ``<name>.data`` next to it."""
    return graph.with_name(graph.name + ".data")


def save_with_external_data(tmp_path: Path, path: Path) -> None:
    """Re-save a graph with all weights in ``<name>.data`` next to ``path`` and check it.

    Tensor bytes are streamed one tensor at a time, from wherever the exporter
    put them (inside the model file, or external files next to it), so peak
    memory is the graph without its weights plus one copy buffer, not the
    whole model (a 1.7B decoder is 8 GB of fp32 weights). Tensors under
    ``EXTERNAL_MIN_BYTES`` stay in (or come back into) the graph.
    """
    import onnx

    write_with_external_data(onnx.load(str(tmp_path), load_external_data=False), tmp_path.parent, path)


def write_with_external_data(model, folder: Path, path: Path) -> None:
    """Write ``model`` to ``path`` with its large tensors in ``<name>.data`` next to it, and check it.

    Tensors stored outside the graph are read from their files in ``folder``, one at a time; tensors
    held in the graph (``raw_data``) are moved out. See :func:`save_with_external_data`.
    """
    import onnx

    data_file = external_data_file(path)
    for stale in (path, data_file):
        stale.unlink(missing_ok=True)
    with open(data_file, "wb") as out:
        for tensor in _graph_tensors(model.graph):
            source = external_source(tensor, folder)
            if source:
                length = source[2]
            elif tensor.HasField("raw_data"):
                length = len(tensor.raw_data)
            else:
                continue  # typed fields (float_data, ...): small constants, left as they are
            if length < EXTERNAL_MIN_BYTES:
                if source:
                    _load_inline(tensor, source)
                continue
            out.write(b"\0" * (-out.tell() % EXTERNAL_ALIGN))
            offset = out.tell()
            if source:
                _copy_span(*source, out)
            else:
                out.write(tensor.raw_data)
                tensor.ClearField("raw_data")
            set_external_location(tensor, (data_file.name, offset, length))
    onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path))


def external_source(tensor, folder: Path) -> tuple[Path, int, int] | None:
    """``(file, offset, length)`` of a tensor stored outside the graph, else None."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo

    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    info = ExternalDataInfo(tensor)
    source, offset = folder / info.location, info.offset or 0
    length = info.length if info.length is not None else source.stat().st_size - offset
    return source, offset, length


def set_external_location(tensor, where: tuple[str, int, int] | None) -> None:
    """Point ``tensor`` at ``(location, offset, length)`` of an external file, or back into the graph."""
    import onnx

    del tensor.external_data[:]
    if where is None:
        tensor.data_location = onnx.TensorProto.DEFAULT
        return
    for key, value in zip(("location", "offset", "length"), where):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)
    tensor.data_location = onnx.TensorProto.EXTERNAL


def read_tensor(tensor, folder: Path) -> np.ndarray:
    """A graph tensor's values, from the graph or from its external data file in ``folder`` (symlinks allowed)."""
    from onnx import numpy_helper

    source = external_source(tensor, folder)
    if source is None:
        return numpy_helper.to_array(tensor)
    inline = type(tensor)()
    inline.CopyFrom(tensor)
    _load_inline(inline, source)
    return numpy_helper.to_array(inline)


def map_tensor(tensor, folder: Path) -> np.ndarray:
    """A float32 tensor stored in an external data file in ``folder``, memory-mapped read-only.

    Raises
    ------
    ValueError
        The tensor is held in the graph, is not float32, or its span is shorter than its shape.
    """
    import onnx

    source = external_source(tensor, folder)
    if source is None or tensor.data_type != onnx.TensorProto.FLOAT:
        raise ValueError(f"initializer {tensor.name} is not external float32 data")
    path, offset, length = source
    shape = tuple(tensor.dims)
    if length < 4 * int(np.prod(shape)):  # a span without a recorded length runs to the end of the file
        raise ValueError(f"initializer {tensor.name}: {length} bytes in {path.name}, shape {shape}")
    return np.memmap(path, np.float32, "r", offset, shape)


def _load_inline(tensor, source: tuple[Path, int, int]) -> None:
    """Bring an external tensor's bytes (``(file, offset, length)``) back into the graph."""
    set_external_location(tensor, None)
    tensor.raw_data = _read_span(*source)


def _read_span(source: Path, offset: int, length: int) -> bytes:
    with open(source, "rb") as src:
        src.seek(offset)
        return src.read(length)


def _copy_span(source: Path, offset: int, length: int, dst) -> None:
    """Copy ``length`` bytes at ``offset`` of ``source`` to ``dst`` in bounded chunks."""
    with open(source, "rb") as src:
        src.seek(offset)
        while length:
            chunk = src.read(min(length, COPY_CHUNK_BYTES))
            if not chunk:
                raise OSError(f"external data file {source} ends {length} bytes early")
            dst.write(chunk)
            length -= len(chunk)
