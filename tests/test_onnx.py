"""The exported graphs: valid ONNX, and numerically the transformers model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from qwen3_asr_triton.artifacts import (
    ALIGNER_FILENAME,
    ALIGNER_GRAPH,
    DECODER_GRAPH,
    EMBED_FILENAME,
    ENCODER_FILENAME,
    ENCODER_GRAPH,
    onnx_filename,
)
from qwen3_asr_triton.decoding.decoder import DecodeBatch, DecoderRunner, Sequence
from qwen3_asr_triton.features import LogMel, split_windows, stack_windows
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.prompt import splice_prompt_embeddings, to_prompt_table_ids
from qwen3_asr_triton.sessions import AlignerRunner, EncoderRunner

# fp32 graph vs fp32 torch: different kernels and fusion, same maths.
ATOL = 2e-4


@pytest.mark.parametrize(
    ("which", "graph"),
    [("asr", ENCODER_GRAPH), ("asr", DECODER_GRAPH), ("aligner", ENCODER_GRAPH), ("aligner", ALIGNER_GRAPH)],
)
def test_graphs_are_valid_onnx_with_external_data(asr_export, aligner_export, which, graph):
    path = (asr_export if which == "asr" else aligner_export) / onnx_filename(graph)
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path), load_external_data=False)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert path.with_name(path.name + ".data").stat().st_size > 10 * path.stat().st_size
    assert all(
        init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer if np.prod(init.dims) > 1024
    )
    first = model.graph.input[0].type.tensor_type.shape.dim
    assert first[0].dim_param, "batch axis must be dynamic"
    assert {op.op_type for op in model.graph.node} <= ONNX_STANDARD_OPS, "only standard ops (TensorRT parses them)"


def test_repository_graphs_are_plain_files_the_checker_accepts(model_repository):
    # Hard-linked external data is refused by onnx ("potential hardlink attack"): the build must copy.
    graphs = sorted(model_repository.glob("*/1/*.onnx"))
    models = {g.parent.parent.name for g in graphs}
    assert models >= {"encoder", "decoder", "aligner", "qwen3_asr_streaming", "diarizer"}
    for graph in graphs:
        # The recogniser's and aligner's exports keep their weights in external data; Silero VAD's and
        # the diarizer's CAM++ graphs (small) hold their own.
        # (the decoder's body graph reads decoder.onnx.data, the file of the graph it was cut from).
        proto = onnx.load(str(graph), load_external_data=False)
        locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
        if graph.parent.parent.name not in ("qwen3_asr_streaming", "diarizer"):
            assert locations, graph
        for location in locations:
            assert (graph.parent / location).stat().st_nlink == 1, (graph, location)
        assert graph.stat().st_nlink == 1, graph
        onnx.checker.check_model(str(graph))


ONNX_STANDARD_OPS = {d.name for d in onnx.defs.get_all_schemas() if d.domain == ""}


def _reference_audio(reference, wave):
    inputs = reference.inputs(wave)
    with torch.no_grad():
        out = reference.model.get_audio_features(inputs["input_features"], inputs["input_features_mask"])
    return out.pooler_output.numpy()


def test_encoder_batches_windows_of_different_utterances(asr_export, reference, clips):
    encoder = EncoderRunner(asr_export / ENCODER_FILENAME)
    spec = ModelSpec.load(asr_export)
    chosen = [c for c in clips if c.name in ("en_yes", "en_long", "zh_park", "it_phone")]
    waves = [c.waveform() for c in chosen]
    windows = [split_windows(LogMel(spec.features)(w), spec.features) for w in waves]
    feats = [f for win in windows for f in win.features]
    frames = np.concatenate([win.frames for win in windows])
    embeds, lens = encoder(stack_windows(feats), frames)  # one call, all windows, padded to 8 s
    row = 0
    for wave, win, clip in zip(waves, windows, chosen):
        ours = np.concatenate([embeds[row + i, : lens[row + i]] for i in range(len(win.frames))])
        row += len(win.frames)
        ref = _reference_audio(reference, wave)
        assert ours.shape == ref.shape, clip.name
        assert np.abs(ours - ref).max() < ATOL, clip.name


def test_decoder_prefill_and_batched_steps_match_transformers(asr_export, reference, clips):
    runner = DecoderRunner(asr_export)
    spec = runner.spec
    batch = DecodeBatch(runner)
    prompts = []
    for clip in (clips[1], clips[5], clips[0]):  # different prompt lengths share one batch
        wave = clip.waveform()
        inputs = reference.inputs(wave)
        ids = inputs["input_ids"][0].numpy()
        audio = _reference_audio(reference, wave)
        embeds = splice_prompt_embeddings(
            to_prompt_table_ids(ids, spec.audio_token_id, spec.text.vocab_size),
            runner.embed,
            audio,
            spec.text.vocab_size,
        )
        seq = Sequence(key=clip.name, max_new_tokens=100, eos_ids=frozenset())
        batch.prefill(seq, embeds)
        prompts.append((seq, inputs))
    for _ in range(3):
        batch.step()
    model = reference.model
    for seq, inputs in prompts:
        ids = torch.cat([inputs["input_ids"], torch.tensor([seq.tokens[:-1]])], dim=1)
        with torch.no_grad():
            logits = model(
                input_ids=ids,
                input_features=inputs["input_features"],
                input_features_mask=inputs["input_features_mask"],
            ).logits[0]
        ref_tokens = logits[inputs["input_ids"].shape[1] - 1 :].argmax(-1).tolist()
        assert seq.tokens == ref_tokens, seq.key


def test_decoder_step_logits_are_close(asr_export, reference, clips):
    runner = DecoderRunner(asr_export)
    spec = runner.spec
    wave = clips[2].waveform()
    inputs = reference.inputs(wave)
    ids = inputs["input_ids"][0].numpy()
    embeds = splice_prompt_embeddings(
        to_prompt_table_ids(ids, spec.audio_token_id, spec.text.vocab_size),
        runner.embed,
        _reference_audio(reference, wave),
        spec.text.vocab_size,
    )
    s = len(ids)
    logits, cache = runner.run(embeds[None], np.ones((1, s), np.int64), np.arange(s)[None], runner.empty_past(1))
    nxt = int(logits[0].argmax())
    step_logits, _ = runner.run(
        runner.embed[[nxt]][None].astype(np.float32), np.ones((1, s + 1), np.int64), np.array([[s]]), cache
    )
    with torch.no_grad():
        full = reference.model(
            input_ids=torch.cat([inputs["input_ids"], torch.tensor([[nxt]])], 1),
            input_features=inputs["input_features"],
            input_features_mask=inputs["input_features_mask"],
        ).logits[0]
    assert np.abs(logits[0] - full[-2].numpy()).max() < ATOL
    assert np.abs(step_logits[0] - full[-1].numpy()).max() < ATOL


def test_aligner_graph_matches_transformers(aligner_export, reference, clips):
    spec = ModelSpec.load(aligner_export)
    encoder = EncoderRunner(aligner_export / ENCODER_FILENAME)
    aligner = AlignerRunner(aligner_export / ALIGNER_FILENAME)
    embed = np.load(aligner_export / EMBED_FILENAME, mmap_mode="r")
    wave = clips[1].waveform()
    inputs, _ = reference.aligner_processor.prepare_forced_aligner_inputs(
        audio=wave, transcript=clips[1].spec.text, return_tensors="pt"
    )
    win = split_windows(LogMel(spec.features)(wave), spec.features)
    audio = encoder.encode_windows(win.features, win.frames)
    ids = inputs["input_ids"][0].numpy()
    embeds = splice_prompt_embeddings(
        to_prompt_table_ids(ids, spec.audio_token_id, spec.text.vocab_size), embed, audio, spec.text.vocab_size
    )
    ours = aligner(embeds[None], np.ones((1, len(ids)), np.int64))[0]
    with torch.no_grad():
        ref = reference.aligner(**inputs).logits[0].numpy()
    assert ours.shape == ref.shape == (len(ids), spec.num_labels)
    assert np.abs(ours - ref).max() < ATOL


def test_extracted_decoder_gives_the_full_models_logits(asr_checkpoint, reference, tmp_path, clips):
    from transformers import Qwen3ForCausalLM

    from qwen3_asr_triton.export.extract_decoder import extract_decoder

    out = extract_decoder(asr_checkpoint, tmp_path / "qwen3")
    plain = Qwen3ForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    full = reference.model
    inputs = reference.inputs(clips[3].waveform(), "French", "Paris")
    with torch.no_grad():
        audio = full.get_audio_features(inputs["input_features"], inputs["input_features_mask"]).pooler_output
        embeds = full.model.get_input_embeddings()(inputs["input_ids"]).clone()
        embeds[inputs["input_ids"] == full.config.audio_token_id] = audio
        assert torch.equal(full(**inputs).logits, plain(inputs_embeds=embeds).logits)
        text_ids = inputs["input_ids"][:, :12]
        assert torch.equal(full(input_ids=text_ids).logits, plain(input_ids=text_ids).logits)
