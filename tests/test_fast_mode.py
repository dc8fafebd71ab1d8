"""The fast cpu mode: int8-weight copies of the encoder and decoder graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from qwen3_asr_triton.artifacts import DECODER_GRAPH, ENCODER_FILENAME, ENCODER_GRAPH, onnx_filename
from qwen3_asr_triton.decoding.decoder import DecoderRunner
from qwen3_asr_triton.export.quantize import ensure_precision, quantized_name
from qwen3_asr_triton.features import LogMel, split_windows, stack_windows
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.sessions import EncoderRunner
from qwen3_asr_triton.tokenizer import TextTokenizer


def int8_filename(graph: str) -> str:
    """The int8 graph file of ``graph`` (``decoder`` -> ``decoder-int8.onnx``)."""
    return onnx_filename(quantized_name(graph, "int8"))


@pytest.fixture(scope="module")
def int8_export(asr_export):
    ensure_precision(asr_export, "int8")
    return asr_export


def test_int8_graphs_use_integer_matmuls_and_are_smaller(int8_export):
    for graph in (ENCODER_GRAPH, DECODER_GRAPH):
        fp32 = int8_export / onnx_filename(graph)
        int8 = int8_export / int8_filename(graph)
        onnx.checker.check_model(str(int8))
        ops = {n.op_type for n in onnx.load(str(int8), load_external_data=False).graph.node}
        assert "MatMulInteger" in ops and "ReduceMax" in ops  # per-token activation scales
        assert "DynamicQuantizeLinear" not in ops  # ONNX Runtime's one scale per tensor
        size = lambda p: p.stat().st_size + p.with_name(p.name + ".data").stat().st_size  # noqa: E731
        assert size(int8) < 0.5 * size(fp32)


def test_int8_outputs_track_fp32(int8_export, clips):
    spec = ModelSpec.load(int8_export)
    wave = clips[1].waveform()
    win = split_windows(LogMel(spec.features)(wave), spec.features)
    feats = stack_windows(win.features)
    ref, _ = EncoderRunner(int8_export / ENCODER_FILENAME)(feats, win.frames)
    fast, _ = EncoderRunner(int8_export / int8_filename(ENCODER_GRAPH))(feats, win.frames)
    n = int(win.tokens[0])
    cos = np.sum(ref[0, :n] * fast[0, :n]) / (np.linalg.norm(ref[0, :n]) * np.linalg.norm(fast[0, :n]))
    assert cos > 0.9  # int8 noise on random weights; unrelated outputs would be near 0
    exact = DecoderRunner(int8_export)
    quick = DecoderRunner(int8_export, graph=int8_filename(DECODER_GRAPH))
    ids = TextTokenizer.from_file(int8_export).encode("<|im_start|>system\nHello world<|im_end|>")
    embeds = np.asarray(exact.embed[ids], np.float32)[None]
    args = (np.ones((1, len(ids)), np.int64), np.arange(len(ids))[None], exact.empty_past(1))
    a, _ = exact.run(embeds, *args)
    b, _ = quick.run(embeds, *args)
    assert np.corrcoef(a[0], b[0])[0, 1] > 0.9


def test_int8_decoder_rows_do_not_depend_on_their_batch(int8_export):
    # One activation scale per token: a quiet prompt batched with a loud one gets the logits it gets alone.
    # (With one scale per tensor, ONNX Runtime's dynamic quantisation, the loud row's scale swamped it.)
    runner = DecoderRunner(int8_export, graph=int8_filename(DECODER_GRAPH))
    ids = TextTokenizer.from_file(int8_export).encode("<|im_start|>system\nHello world<|im_end|>")
    quiet = np.asarray(runner.embed[ids], np.float32)[None]
    loud = 1000.0 * np.asarray(runner.embed[ids[::-1]], np.float32)[None]
    n = len(ids)

    def logits(embeds):
        b = embeds.shape[0]
        mask, pos = np.ones((b, n), np.int64), np.tile(np.arange(n), (b, 1))
        return runner.run(embeds, mask, pos, runner.empty_past(b))[0]

    alone = logits(quiet)[0]
    together = logits(np.concatenate([quiet, loud]))[0]
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5 * float(np.abs(alone).max()))
