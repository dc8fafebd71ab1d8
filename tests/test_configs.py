"""Config templates and the strict filler."""

from __future__ import annotations

import pytest

from qwen3_asr_triton.export.build_repository import BuildOptions, fill_repository_configs, models_for
from qwen3_asr_triton.export.fill_config import TemplateError, fill_templates, fill_text, parse_model_config
from qwen3_asr_triton.model_spec import ModelSpec

CONTRACT_INPUTS = {
    "AUDIO": ("TYPE_STRING", [1]),
    "WAVEFORM": ("TYPE_FP32", [-1]),
    "SAMPLE_RATE": ("TYPE_INT32", [1]),
    "LANGUAGE": ("TYPE_STRING", [1]),
    "CONTEXT": ("TYPE_STRING", [1]),
    "RETURN_TIMESTAMPS": ("TYPE_BOOL", [1]),
    "MAX_NEW_TOKENS": ("TYPE_INT32", [1]),
    "MIN_NEW_TOKENS": ("TYPE_INT32", [1]),
}
CONTRACT_OUTPUTS = {
    "TEXT": ("TYPE_STRING", [1]),
    "DETECTED_LANGUAGE": ("TYPE_STRING", [1]),
    "TOKEN_IDS": ("TYPE_INT32", [-1]),
    "CONFIDENCE": ("TYPE_FP32", [1]),
    "WORDS": ("TYPE_STRING", [-1]),
    "WORD_START": ("TYPE_FP32", [-1]),
    "WORD_END": ("TYPE_FP32", [-1]),
}


@pytest.fixture(scope="module")
def spec(asr_checkpoint):
    return ModelSpec.from_checkpoint(asr_checkpoint)


@pytest.mark.parametrize("target", ["cpu", "gpu"])
@pytest.mark.parametrize("aligner", [True, False])
def test_filled_configs_parse_and_keep_the_public_contract(spec, target, aligner):
    from tritonclient.grpc import model_config_pb2

    filled = fill_repository_configs(spec, BuildOptions(), target, aligner)
    assert sorted(filled) == sorted(models_for(aligner, target))
    assert all("${" not in text for text in filled.values())
    entry = parse_model_config(filled["qwen3_asr"])
    assert entry.max_batch_size == 0
    inputs = {i.name: (model_config_pb2.DataType.Name(i.data_type), list(i.dims)) for i in entry.input}
    outputs = {o.name: (model_config_pb2.DataType.Name(o.data_type), list(o.dims)) for o in entry.output}
    assert inputs == CONTRACT_INPUTS
    assert {k: outputs[k] for k in CONTRACT_OUTPUTS} == CONTRACT_OUTPUTS
    assert all(i.optional for i in entry.input)
    decoder = parse_model_config(filled["decoder"])
    assert decoder.model_transaction_policy.decoupled


def test_filler_refuses_missing_unknown_and_malformed(tmp_path):
    good = 'name: "m"\nbackend: "python"\nmax_batch_size: ${BATCH}\n'
    path = tmp_path / "config.pbtxt.in"
    path.write_text(good)
    assert "max_batch_size: 4" in fill_templates({"m": path}, {"BATCH": 4})["m"]
    with pytest.raises(TemplateError, match="no value for BATCH"):
        fill_templates({"m": path}, {})
    with pytest.raises(TemplateError, match="not used by any template: EXTRA"):
        fill_templates({"m": path}, {"BATCH": 4, "EXTRA": 1})
    with pytest.raises(TemplateError, match="malformed placeholder"):
        fill_text("max_batch_size: $BATCH\n", {"BATCH": 1})
    with pytest.raises(TemplateError, match="malformed placeholder"):
        fill_text("max_batch_size: ${batch}\n", {"batch": 1})
    with pytest.raises(TemplateError, match="quote"):
        fill_text('parameters { key: "a" value: { string_value: "${V}" } }', {"V": 'x" } }'})
    path.write_text(good.replace("max_batch_size", "max_bacth_size"))
    with pytest.raises(TemplateError, match="not a valid Triton model config"):
        fill_templates({"m": path}, {"BATCH": 4})
    path.write_text(good.replace('"m"', '"other"'))
    with pytest.raises(TemplateError, match="expected 'm'"):
        fill_templates({"m": path}, {"BATCH": 4})


def test_build_options_are_validated():
    with pytest.raises(ValueError):
        BuildOptions(kv_cache_mb=0)
    with pytest.raises(ValueError):
        BuildOptions(max_align_segment_seconds=2000)
