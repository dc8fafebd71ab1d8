"""Random checkpoints: real format, real architecture, both layouts, outputs that depend on the input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from qwen3_asr_triton.export.checkpoint import CheckpointError, load_state_dict
from qwen3_asr_triton.export.random_checkpoint import make_config
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.tokenizer import TextTokenizer
from tests.harness import cached_checkpoint


def test_checkpoint_is_in_the_transformers_format(asr_checkpoint, aligner_checkpoint):
    for ckpt in (asr_checkpoint, aligner_checkpoint):
        names = {p.name for p in ckpt.iterdir()}
        assert {
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "processor_config.json",
            "chat_template.jinja",
        } <= names
        assert json.loads((ckpt / "config.json").read_text())["dtype"] == "bfloat16"
    assert (asr_checkpoint / "generation_config.json").is_file()
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(str(aligner_checkpoint)).num_labels == 5000
    spec = ModelSpec.from_checkpoint(asr_checkpoint)
    assert spec.kind == "asr" and spec.eos_token_ids == (151643, 151645) and spec.audio_token_id == 151676
    assert ModelSpec.from_checkpoint(aligner_checkpoint).kind == "aligner"
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize(
    ("size", "audio", "text"),
    [
        ("0.6b", (896, 18, 14, 3584), (1024, 3072, 28, 16, 8, 128)),
        ("1.7b", (1024, 24, 16, 4096), (2048, 6144, 28, 16, 8, 128)),
    ],
)
def test_real_sizes_have_the_published_dimensions(size, audio, text):
    from transformers import Qwen3ASRForConditionalGeneration

    cfg = make_config(size, "asr")
    a, t = cfg.audio_config, cfg.text_config
    assert (a.d_model, a.encoder_layers, a.encoder_attention_heads, a.encoder_ffn_dim) == audio
    assert (
        t.hidden_size,
        t.intermediate_size,
        t.num_hidden_layers,
        t.num_attention_heads,
        t.num_key_value_heads,
        t.head_dim,
    ) == text
    with torch.device("meta"):
        model = Qwen3ASRForConditionalGeneration(cfg)
    encoder = sum(p.numel() for p in model.model.audio_tower.parameters())
    total = sum(p.numel() for n, p in model.named_parameters() if n != "lm_head.weight")
    # The 1.7B encoder is ~300M parameters; totals are 0.78B and 2.04B with tied embeddings.
    expected = {"0.6b": (184.7e6, 0.782e9), "1.7b": (314.3e6, 2.038e9)}[size]
    assert abs(encoder - expected[0]) < 0.1e6 and abs(total - expected[1]) < 1e6


def test_outputs_depend_on_audio_and_prompt(recognizer, clips):
    outputs, lengths = {}, []
    for clip in clips:
        wave = clip.waveform()
        plain = recognizer.transcribe(wave, None, "", False, 48)
        outputs[clip.name] = tuple(plain.token_ids)
        lengths.append(len(plain.token_ids))
        forced = recognizer.transcribe(wave, "English", "", False, 48)
        hinted = recognizer.transcribe(wave, None, "Meeting about GPUs.", False, 48)
        assert len({tuple(plain.token_ids), tuple(forced.token_ids), tuple(hinted.token_ids)}) == 3, clip.name
    assert len(set(outputs.values())) == len(clips), "different audio must give different tokens"
    assert min(lengths) < 48, "some generations should stop on EOS by themselves"
    assert max(lengths) > 4, "some generations should run for more than a few tokens"


def test_original_layout_loads_to_the_same_weights(asr_checkpoint, aligner_checkpoint):
    for kind, hf in (("asr", asr_checkpoint), ("aligner", aligner_checkpoint)):
        original = cached_checkpoint(kind, layout="original")
        assert "thinker_config" in json.loads((original / "config.json").read_text())
        spec_hf, spec_orig = ModelSpec.from_checkpoint(hf), ModelSpec.from_checkpoint(original)
        assert spec_hf == spec_orig
        a, b = load_state_dict(hf, spec_hf), load_state_dict(original, spec_orig)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_checkpoints_get_clear_errors(tmp_path, asr_checkpoint):
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        ModelSpec.from_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ValueError, match="not a Qwen3-ASR checkpoint"):
        ModelSpec.from_checkpoint(tmp_path)
    broken = tmp_path / "no-weights"
    shutil.copytree(asr_checkpoint, broken, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors"):
        load_state_dict(broken)


def test_token_ids_missing_from_the_config_come_from_the_tokenizer_or_fail(tmp_path, asr_checkpoint):
    """No silent default ids: a config without them is read from the tokenizer by the tokens' text."""
    full = ModelSpec.from_checkpoint(asr_checkpoint)
    bare = tmp_path / "bare"
    shutil.copytree(asr_checkpoint, bare, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((bare / "config.json").read_text())
    for key in ("audio_token_id", "timestamp_token_id", "eos_token_id"):
        config.pop(key, None)
    (bare / "config.json").write_text(json.dumps(config))
    (bare / "generation_config.json").unlink()
    spec = ModelSpec.from_checkpoint(bare)
    tok = TextTokenizer.from_file(asr_checkpoint)
    assert spec.audio_token_id == tok.token_id("<|audio_pad|>") == full.audio_token_id
    assert spec.timestamp_token_id == tok.token_id("<timestamp>") == full.timestamp_token_id
    assert set(spec.eos_token_ids) == {tok.token_id("<|endoftext|>"), tok.token_id("<|im_end|>")}
    # A tokenizer without the audio token: a clear error, not a guess.
    tokenizer = json.loads((bare / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] != "<|audio_pad|>"]
    (bare / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ValueError, match=r"no audio_token_id and the tokenizer no '<\|audio_pad\|>'"):
        ModelSpec.from_checkpoint(bare)
