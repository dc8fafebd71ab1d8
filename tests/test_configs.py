"""Config templates and the strict filler."""

from __future__ import annotations

import pytest

from qwen3_asr_triton.export.build_options import BuildOptions
from qwen3_asr_triton.export.fill_config import TemplateError, fill_templates, fill_text, parse_model_config
from qwen3_asr_triton.export.repository_values import fill_repository_configs, models_for
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
    "DIARIZE": ("TYPE_BOOL", [1]),
    "NUM_SPEAKERS": ("TYPE_INT32", [1]),
    "MIN_SPEAKERS": ("TYPE_INT32", [1]),
    "MAX_SPEAKERS": ("TYPE_INT32", [1]),
}
CONTRACT_OUTPUTS = {
    "TEXT": ("TYPE_STRING", [1]),
    "DETECTED_LANGUAGE": ("TYPE_STRING", [1]),
    "TOKEN_IDS": ("TYPE_INT32", [-1]),
    "CONFIDENCE": ("TYPE_FP32", [1]),
    "WORDS": ("TYPE_STRING", [-1]),
    "WORD_START": ("TYPE_FP32", [-1]),
    "WORD_END": ("TYPE_FP32", [-1]),
    "SEGMENT_SPEAKER": ("TYPE_INT32", [-1]),
    "WORD_SPEAKER": ("TYPE_INT32", [-1]),
}


@pytest.fixture(scope="module")
def spec(asr_checkpoint):
    return ModelSpec.from_checkpoint(asr_checkpoint)


@pytest.mark.parametrize("target", ["cpu", "gpu"])
@pytest.mark.parametrize(("aligner", "diarizer"), [(True, True), (True, False), (False, False)])
def test_filled_configs_parse_and_keep_the_public_contract(spec, target, aligner, diarizer):
    from tritonclient.grpc import model_config_pb2

    filled = fill_repository_configs(spec, BuildOptions(), target, aligner, has_diarizer=diarizer)
    assert sorted(filled) == sorted(models_for(aligner, target, diarizer))
    assert ("diarizer" in filled) == diarizer
    assert f'string_value: "{str(diarizer).lower()}"' in filled["qwen3_asr"].split('"diarizer_enabled"')[1]
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


@pytest.mark.parametrize(
    "target, argv, preprocess_us, encoder_us",
    [
        ("cpu", [], BuildOptions().preprocess_queue_delay_us, BuildOptions().encoder_queue_delay_us),
        ("gpu", [], 5000, 2000),
        ("gpu", ["--preprocess-queue-delay-us", "0", "--encoder-queue-delay-us", "7"], 0, 7),
        ("cpu", ["--preprocess-max-batch", "3", "--encoder-queue-delay-us", "9"], 50000, 9),
    ],
)
def test_batching_delays_have_target_defaults_and_reach_the_configs(spec, target, argv, preprocess_us, encoder_us):
    import argparse

    from qwen3_asr_triton.export.build_options import default_options
    from qwen3_asr_triton.export.options_cli import add_option_arguments, given_options

    parser = argparse.ArgumentParser()
    add_option_arguments(parser, BuildOptions)
    opts = default_options(target, **given_options(parser.parse_args(argv), BuildOptions))
    assert (opts.preprocess_queue_delay_us, opts.encoder_queue_delay_us) == (preprocess_us, encoder_us)
    filled = fill_repository_configs(spec, opts, target, False)
    preprocess, encoder = parse_model_config(filled["preprocess"]), parse_model_config(filled["encoder"])
    assert preprocess.dynamic_batching.max_queue_delay_microseconds == preprocess_us
    assert preprocess.max_batch_size == opts.preprocess_max_batch
    assert encoder.dynamic_batching.max_queue_delay_microseconds == encoder_us
    assert (opts.preprocess_max_batch == 3) == ("--preprocess-max-batch" in argv)


@pytest.mark.parametrize("spin", [True, False])
def test_onnx_runtime_knobs_reach_every_cpu_graph_model(spec, spin):
    from qwen3_asr_triton.sessions import OrtOptions

    filled = fill_repository_configs(spec, BuildOptions(intra_op_threads=1, ort_spin_wait=spin), "cpu", True)
    for model in ("encoder", "decoder", "aligner"):
        params = {k: v.string_value for k, v in parse_model_config(filled[model]).parameters.items()}
        assert OrtOptions.from_parameters(params) == OrtOptions(intra_op_threads=1, ort_spin_wait=spin), model


@pytest.mark.parametrize("screen", [True, False])
def test_the_logit_screen_knob_reaches_the_cpu_decoder(spec, screen):
    import argparse

    from qwen3_asr_triton.export.build_options import default_options
    from qwen3_asr_triton.export.options_cli import add_option_arguments, given_options
    from qwen3_asr_triton.sessions import bool_parameter

    parser = argparse.ArgumentParser()
    add_option_arguments(parser, BuildOptions)
    argv = [] if screen else ["--logit-screen", "false"]
    opts = default_options("cpu", **given_options(parser.parse_args(argv), BuildOptions))
    assert opts.logit_screen is screen
    filled = fill_repository_configs(spec, opts, "cpu", True)
    params = {k: v.string_value for k, v in parse_model_config(filled["decoder"]).parameters.items()}
    assert bool_parameter(params, "logit_screen", not screen) is screen
    with pytest.raises(ValueError, match="logit_screen must be true or false"):
        bool_parameter({"logit_screen": "on"}, "logit_screen", True)


@pytest.mark.parametrize("intra, encoder, expected", [(0, 0, 0), (2, 0, 2), (0, 1, 1), (3, 1, 1)])
def test_encoder_threads_apply_to_the_encoder_alone(spec, intra, encoder, expected):
    filled = fill_repository_configs(spec, BuildOptions(intra_op_threads=intra, encoder_threads=encoder), "cpu", True)
    threads = {
        model: parse_model_config(filled[model]).parameters["intra_op_threads"].string_value
        for model in ("encoder", "decoder", "aligner")
    }
    assert threads == {"encoder": str(expected), "decoder": str(intra), "aligner": str(intra)}


@pytest.mark.parametrize(
    "params, message",
    [
        ({"ort_spin_wait": "yes please"}, "ort_spin_wait"),
        ({"intra_op_threads": "-1"}, "intra_op_threads"),
        ({"intra_op_threads": "two"}, "intra_op_threads"),
    ],
)
def test_onnx_runtime_parameters_are_validated(params, message):
    from qwen3_asr_triton.sessions import OrtOptions

    with pytest.raises(ValueError, match=message):
        OrtOptions.from_parameters(params)
    assert OrtOptions.from_parameters({}) == OrtOptions()


@pytest.mark.parametrize("spin", [True, False])
def test_sessions_get_the_spin_setting(tmp_path, spin):
    import onnx
    from onnx import TensorProto, helper

    from qwen3_asr_triton.sessions import OrtOptions, make_session

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "identity.onnx")
    session = make_session(tmp_path / "identity.onnx", OrtOptions(intra_op_threads=2, ort_spin_wait=spin))
    options = session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spin else "0")
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert options.intra_op_num_threads == 2
