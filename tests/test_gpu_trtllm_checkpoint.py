"""The decoder checkpoint handed to TensorRT-LLM: transformers 4 field names added, nothing else changed."""

from __future__ import annotations

import json

import pytest

from qwen3_asr_triton.export.trtllm_checkpoint import legacy_config, write_trtllm_decoder

BASE = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "dtype": "bfloat16",
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "vocab_size": 151936,
}


def test_legacy_config_adds_the_old_spellings():
    out = legacy_config(BASE)
    assert out["rope_theta"] == 1_000_000.0 and out["rope_scaling"] is None and out["torch_dtype"] == "bfloat16"
    assert {k: out[k] for k in BASE} == BASE, "new-style fields are kept"
    assert legacy_config({**BASE, "rope_theta": 1e6})["rope_theta"] == 1e6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rope_parameters": {}}, "rope_theta"),
        ({"rope_theta": 10000.0}, "disagrees"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}}, "default RoPE"),
        ({"model_type": "qwen2"}, "Qwen3ForCausalLM"),
    ],
)
def test_legacy_config_refuses_what_it_cannot_translate(change, message):
    with pytest.raises(ValueError, match=message):
        legacy_config({**BASE, **change})


@pytest.mark.parametrize("layout", ["hf", "original"])
def test_written_decoder_reads_back_with_the_right_rope(layout, tmp_path):
    from safetensors import safe_open
    from transformers import AutoConfig

    from qwen3_asr_triton.model_spec import ModelSpec
    from tests.harness import cached_checkpoint

    checkpoint = cached_checkpoint("asr", layout=layout)
    spec = ModelSpec.from_checkpoint(checkpoint)
    out = write_trtllm_decoder(checkpoint, tmp_path / "decoder")
    raw = json.loads((out / "config.json").read_text())
    assert raw["rope_theta"] == spec.text.rope_theta == 1_000_000.0
    assert AutoConfig.from_pretrained(str(out)).rope_parameters["rope_theta"] == spec.text.rope_theta
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        names = set(handle.keys())
    assert (
        "model.embed_tokens.weight" in names
        and f"model.layers.{spec.text.num_layers - 1}.self_attn.q_norm.weight" in names
    )
