"""Names of the graphs and side files in an export directory.

The exporter (``qwen3_asr_triton.export.onnx_export``) writes them, the model
repository build places them and the serving code reads them back, so each name
is spelled here once. ``model_spec.json`` and ``tokenizer.json`` have their
constants beside their readers (:mod:`.model_spec`, :mod:`.tokenizer`).
"""

from __future__ import annotations

# ONNX graphs, by stem: the audio encoder (recogniser and aligner), the recogniser's decoder, the aligner's body.
ENCODER_GRAPH = "encoder"
DECODER_GRAPH = "decoder"
ALIGNER_GRAPH = "aligner"
ONNX_SUFFIX = ".onnx"


def onnx_filename(graph: str) -> str:
    """The file of a graph (``encoder`` -> ``encoder.onnx``; also ``decoder-int8``)."""
    return f"{graph}{ONNX_SUFFIX}"


ENCODER_FILENAME = onnx_filename(ENCODER_GRAPH)
DECODER_FILENAME = onnx_filename(DECODER_GRAPH)
ALIGNER_FILENAME = onnx_filename(ALIGNER_GRAPH)
# The fp32 decoder graph without its output projection: it ends at the last position's normed hidden state
# ``hidden_states [B, H]`` and reads its weights from ``decoder.onnx.data`` (no second copy on disk).
DECODER_BODY_FILENAME = onnx_filename("decoder-body")
# The output projection's int8 screen (qwen3_asr_triton/decoding/logit_screen.py): a MatMulInteger graph over
# the [H, V] uint8 rows, and the rows' scales and norms (npz).
SCREEN_GRAPH = "lm_head-u8"
SCREEN_GRAPH_FILENAME = onnx_filename(SCREEN_GRAPH)
SCREEN_TABLES_FILENAME = "lm_head-u8.npz"
# Silero VAD's 16 kHz sequence graph, copied from the silero-vad wheel next to the streaming model.
VAD_FILENAME = "silero_vad.onnx"
# [vocab, hidden] float32 token embeddings, spliced on the host (recogniser and aligner).
EMBED_FILENAME = "embed_tokens.npy"
# CAM++ speaker embeddings for diarization (fbank [B, T, 80] -> [B, 192]), from export/speaker_model.py.
SPEAKER_FILENAME = "speaker_embedding.onnx"
# The encoder's and decoder's weights for the torch runners (bf16; qwen3_asr_triton/torch_runner.py), by graph stem.
TORCH_WEIGHTS_SUFFIX = "-bf16.safetensors"


def torch_weights_filename(graph: str) -> str:
    """The torch weights of a graph (``decoder`` -> ``decoder-bf16.safetensors``)."""
    return f"{graph}{TORCH_WEIGHTS_SUFFIX}"
