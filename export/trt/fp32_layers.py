"""Polygraphy network post-processing: keep the numerically sensitive layers of a network in fp32.

Used as ``polygraphy convert ... --fp16 --precision-constraints obey
--trt-network-postprocess-script export/trt/fp32_layers.py``. With reduced
precision enabled, TensorRT may run every layer in fp16/bf16; LayerNorm,
softmax and the RMSNorm arithmetic (square, mean, rsqrt) overflow or lose too
much there, so they are pinned to fp32, inputs and outputs included.

Layers are chosen by TensorRT layer type (normalisation, softmax) and by the
module scope the ONNX exporter gave their nodes (``.../input_layernorm/Pow``,
``.../self_attn/q_norm/ReduceMean``, ``/ln_post/LayerNormalization``, ...),
which TensorRT's ONNX parser keeps in the layer names. The script imports only
``tensorrt`` (inside :func:`postprocess`), so it runs in the container's Python.
"""

from __future__ import annotations

# Module scopes whose every float layer belongs to a normalisation (LayerNorm or RMSNorm).
NORM_SCOPES = ("layernorm/", "layer_norm/", "q_norm/", "k_norm/", "/norm/", "ln_post/")
# TensorRT layer types kept in fp32 wherever they are.
FP32_TYPES = ("NORMALIZATION", "SOFTMAX")
# Layer types that carry no arithmetic worth constraining.
SKIP_TYPES = ("CONSTANT", "SHAPE", "IDENTITY", "SHUFFLE", "GATHER", "SLICE", "CONCATENATION")


def keep_fp32(name: str, type_name: str) -> bool:
    """Whether a layer named ``name`` of TensorRT type ``type_name`` must run in fp32."""
    if type_name in SKIP_TYPES:
        return False
    return type_name in FP32_TYPES or any(scope in name for scope in NORM_SCOPES)


def postprocess(network) -> None:
    """Pin the layers :func:`keep_fp32` selects to fp32 (polygraphy calls this with ``network=``)."""
    import tensorrt as trt

    floats = {trt.float32, trt.float16, trt.bfloat16}
    kept = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if not keep_fp32(layer.name, layer.type.name):
            continue
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if not any(t.dtype in floats for t in outputs):
            continue
        layer.precision = trt.float32
        for i, tensor in enumerate(outputs):
            if tensor.dtype in floats:
                layer.set_output_type(i, trt.float32)
        kept.append(layer.name)
    if not kept:
        raise RuntimeError("fp32_layers: no layer matched; did the layer naming of the ONNX export change?")
    print(f"fp32_layers: {len(kept)} of {network.num_layers} layers pinned to fp32")
