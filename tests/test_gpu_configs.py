"""The gpu target's filled configs: backends, the decoder interface the entry model relies on, and
agreement between the configs and the engine build numbers (statically: nothing here runs TensorRT)."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2

from qwen3_asr_triton.bls import DECODER_INPUTS, DECODER_OUTPUTS
from qwen3_asr_triton.export.build_options import TARGET_DEFAULTS, BuildOptions, default_options
from qwen3_asr_triton.export.fill_config import parse_model_config
from qwen3_asr_triton.export.gpu_options import (
    DECODER_DTYPE,
    PROMPT_OVERHEAD_TOKENS,
    GpuOptions,
    aligner_lm_profile,
    decoder_limits,
    encoder_profile,
    max_audio_tokens,
)
from qwen3_asr_triton.export.repository_values import fill_repository_configs, models_for, template_values
from qwen3_asr_triton.model_spec import ModelSpec


@pytest.fixture(scope="module")
def spec(asr_checkpoint):
    return ModelSpec.from_checkpoint(asr_checkpoint)


@pytest.fixture(scope="module")
def aligner_spec(aligner_checkpoint):
    return ModelSpec.from_checkpoint(aligner_checkpoint)


@pytest.fixture(scope="module")
def configs(spec):
    return {
        target: {
            name: parse_model_config(text)
            for name, text in fill_repository_configs(spec, default_options(target), target, True).items()
        }
        for target in ("cpu", "gpu")
    }


def params(config) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


def io(tensors) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in tensors}


def test_gpu_models_and_backends(configs):
    gpu = configs["gpu"]
    assert sorted(gpu) == sorted(models_for(True, "gpu"))
    for name in ("encoder", "aligner_encoder", "aligner_lm"):
        assert gpu[name].platform == "tensorrt_plan", name
        assert [g.kind for g in gpu[name].instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    decoder = gpu["decoder"]
    assert decoder.backend == "tensorrtllm" and decoder.model_transaction_policy.decoupled
    p = params(decoder)
    assert p["gpt_model_type"] == "inflight_fused_batching"
    assert p["exclude_input_in_output"] == "true"
    assert p["gpt_model_path"] == "/models/decoder/1/engine"
    assert p["max_beam_width"] == "1" and p["enable_kv_cache_reuse"] == "false"
    assert 0 < float(p["kv_cache_free_gpu_mem_fraction"]) <= 1
    for name in ("qwen3_asr", "preprocess", "postprocess", "aligner"):
        assert gpu[name].backend == "python", name
    # The shared templates give identical python models on both targets, entry parameters and the
    # target's batching delay aside.
    for name in ("preprocess", "postprocess"):
        cpu_config, gpu_config = model_config_pb2.ModelConfig(), model_config_pb2.ModelConfig()
        cpu_config.CopyFrom(configs["cpu"][name])
        gpu_config.CopyFrom(gpu[name])
        cpu_config.ClearField("dynamic_batching")
        gpu_config.ClearField("dynamic_batching")
        assert gpu_config == cpu_config, name
    delays = TARGET_DEFAULTS["gpu"]
    assert gpu["preprocess"].dynamic_batching.max_queue_delay_microseconds == delays["preprocess_queue_delay_us"]
    assert gpu["encoder"].dynamic_batching.max_queue_delay_microseconds == delays["encoder_queue_delay_us"]


def test_entry_drives_the_gpu_models(configs, spec):
    entry = params(configs["gpu"]["qwen3_asr"])
    assert int(entry["pad_windows_to"]) == spec.features.window_frames
    assert entry["prompt_table_dtype"] == DECODER_DTYPE == "float16"
    assert params(configs["cpu"]["qwen3_asr"])["pad_windows_to"] == "0"
    aligner = params(configs["gpu"]["aligner"])
    assert aligner["runtime"] == "bls"
    assert aligner["encoder_model"] in configs["gpu"] and aligner["lm_model"] in configs["gpu"]
    assert int(aligner["pad_windows_to"]) == spec.features.window_frames
    assert int(aligner["encoder_max_batch"]) == configs["gpu"]["aligner_encoder"].max_batch_size
    assert "runtime" not in params(configs["cpu"]["aligner"]), "cpu keeps the in-process default"


def test_decoder_interface_is_the_same_on_both_targets(configs):
    cpu, gpu = configs["cpu"]["decoder"], configs["gpu"]["decoder"]
    cpu_in, gpu_in = io(cpu.input), io(gpu.input)
    for name in DECODER_INPUTS:
        if name == "prompt_embedding_table":
            assert cpu_in[name] == ("TYPE_FP32", [-1, -1]) and gpu_in[name] == ("TYPE_FP16", [-1, -1])
        else:
            assert cpu_in[name] == gpu_in[name], name
    cpu_out, gpu_out = io(cpu.output), io(gpu.output)
    for name in DECODER_OUTPUTS:
        assert cpu_out[name] == gpu_out[name], name
    assert cpu.max_batch_size == gpu.max_batch_size


def test_engine_numbers_match_the_configs(configs, spec, aligner_spec):
    opts, gpu_opts = BuildOptions(), GpuOptions()
    gpu = configs["gpu"]
    profile = encoder_profile(spec, opts, gpu_opts).shapes
    assert profile["input_features"][2] == (gpu["encoder"].max_batch_size, *gpu["encoder"].input[0].dims)
    assert profile["input_features"][0][1:] == profile["input_features"][2][1:], "frames fixed at a full window"
    lm = aligner_lm_profile(aligner_spec.text.hidden_size, gpu_opts).shapes
    assert lm["inputs_embeds"][2][1] == int(params(gpu["aligner"])["max_tokens"])
    assert gpu["aligner_lm"].max_batch_size == 0 and lm["inputs_embeds"][2][0] == 1
    limits = decoder_limits(spec, opts, gpu_opts)
    assert limits.max_batch_size == gpu["decoder"].max_batch_size
    assert limits.max_input_len == limits.max_audio_tokens + opts.max_context_tokens + PROMPT_OVERHEAD_TOKENS
    assert limits.max_seq_len == limits.max_input_len + opts.max_new_tokens
    assert limits.prompt_table_rows == opts.decoder_max_batch * limits.max_audio_tokens


def test_gpu_only_values_stay_off_the_cpu_target(spec):
    cpu = template_values(spec, BuildOptions(), "cpu", True)
    gpu = template_values(spec, BuildOptions(), "gpu", True)
    assert {"PROMPT_TABLE_TYPE", "DECODER_ENGINE_DIR", "ALIGNER_MAX_TOKENS"} <= set(gpu) - set(cpu)
    assert {"KV_CACHE_MB", "PREFILL_CHUNK", "INTRA_OP_THREADS"} <= set(cpu) - set(gpu)
    custom = template_values(spec, BuildOptions(), "gpu", False, GpuOptions(model_root="/srv/repo"))
    assert custom["DECODER_ENGINE_DIR"] == "/srv/repo/decoder/1/engine"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"trt_precision": "int8"},
        {"kv_cache_free_gpu_mem_fraction": 0.0},
        {"kv_cache_free_gpu_mem_fraction": 1.5},
        {"model_root": "models"},
        {"model_root": "/models with space"},
        {"aligner_opt_tokens": 9000},
        {"batch_scheduler_policy": "fifo"},
        {"max_num_tokens": 0},
    ],
)
def test_gpu_options_are_validated(kwargs):
    with pytest.raises(ValueError):
        GpuOptions(**kwargs)


def test_decoder_limits_refuse_impossible_engines(spec):
    with pytest.raises(ValueError, match="positions"):
        decoder_limits(spec, BuildOptions(max_new_tokens=10**6), GpuOptions())
    with pytest.raises(ValueError, match="chunked context"):
        decoder_limits(spec, BuildOptions(), GpuOptions(enable_chunked_context=False, max_num_tokens=4096))
    with pytest.raises(ValueError, match="prompt_table_rows"):
        decoder_limits(spec, BuildOptions(), GpuOptions(prompt_table_rows=100))
    with pytest.raises(ValueError):
        fill_repository_configs(spec, BuildOptions(max_new_tokens=10**6), "gpu", False)


def test_limits_cover_real_prompts_and_segments(spec, asr_export):
    """The engine's max_input_len bounds hold for the longest real prompt and the segmenter's overrun."""
    from qwen3_asr_triton.languages import ALIGNER_LANGUAGES
    from qwen3_asr_triton.prompt import PromptBuilder
    from qwen3_asr_triton.segmentation import split_segments
    from qwen3_asr_triton.tokenizer import TextTokenizer

    builder = PromptBuilder(TextTokenizer.from_file(asr_export), spec.audio_token_id)
    context = "hotword " * 20
    context_tokens = len(builder.context_ids(context))
    longest = max(ALIGNER_LANGUAGES, key=len)
    for language in (None, longest):
        prompt = builder.asr_prompt(10, context, language)
        assert len(prompt) - 10 - context_tokens <= PROMPT_OVERHEAD_TOKENS
    rate, limit = spec.features.sampling_rate, 20.0
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(int(70 * rate))).astype(np.float32)
    wave[int(24 * rate) : int(24.2 * rate)] = 0.0  # a quiet stretch past the limit: the cut overruns it
    segments = split_segments(wave, rate, limit)
    longest_tokens = max(spec.features.num_audio_tokens(spec.features.num_frames(s.num_samples)) for s in segments)
    assert max(s.num_samples for s in segments) > limit * rate, "the segmenter should overrun here"
    assert longest_tokens <= max_audio_tokens(spec, limit)
