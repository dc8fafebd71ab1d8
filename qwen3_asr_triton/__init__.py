"""Shared, framework-free logic for serving Qwen3-ASR on Triton.

Everything in this package is pure Python + numpy (+ onnxruntime and the
``tokenizers`` library for the decoding helpers): no torch and no Triton
imports, so Triton python-backend models, the export tooling and the client
can all import it. Sub-packages:

- ``qwen3_asr_triton.export``: checkpoint loading, random checkpoints, ONNX export (needs torch).
- ``qwen3_asr_triton.client``: gRPC client library and CLI.
"""

__version__ = "0.1.0"
