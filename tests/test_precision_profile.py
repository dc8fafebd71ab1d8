"""perf/precision_profile.py: its FLOP counts, and a short run on the tiny model that writes a full report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen3_asr_triton.model_spec import EncoderSpec


def test_encoder_flops_count_the_convolutions_by_hand() -> None:
    from perf.precision_profile import encoder_flops

    spec = EncoderSpec(
        d_model=8,
        num_layers=1,
        num_heads=2,
        ffn_dim=16,
        output_dim=4,
        conv_channels=2,
        num_mel_bins=8,
        n_window=2,
        n_window_infer=8,
    )
    # One window of 8 frames = two chunks of 4; per chunk the 8 x 4 mel goes 4x2, 2x1, 1x1 (stride 2).
    flops = encoder_flops(spec, windows=1, window_frames=8)
    per_chunk = 2 * 2 * (4 * 2 * 1 * 9) + 2 * 2 * (2 * 1 * 2 * 9) + 2 * 2 * (1 * 1 * 2 * 9)
    assert flops["conv"] == 2 * per_chunk
    # One token per chunk: conv_out maps 2 channels x 1 frequency to d_model.
    assert flops["conv_out"] == 2 * (2 * 1 * (2 * 1) * 8)
    tokens = 2
    assert flops["layers"] == tokens * 2 * (4 * 64 + 2 * 8 * 16) + 2 * 2 * tokens**2 * 8
    assert flops["projector"] == tokens * 2 * (64 + 8 * 4)


def test_the_benchmark_profiles_the_precisions_its_runs_of_ours_computed_in() -> None:
    from perf.precision_profile import served_precisions

    both = (["triton", "vllm"], ["fp32", "fast"])
    assert served_precisions(*both, frozenset(), "fast", "int8") == ["fp32", "int8"]
    assert served_precisions(*both, frozenset(), "fast", "bf16") == ["fp32", "bf16"]
    assert served_precisions(*both, frozenset(), "int8", "bf16") == ["fp32", "int8"]  # the build's knob wins
    assert served_precisions(*both, frozenset({("triton", "fast")}), "fast", "int8") == ["fp32"]
    assert served_precisions(*both, frozenset({("triton", "fp32")}), "fast", "int8") == ["int8"]
    assert served_precisions(["vllm"], ["fp32", "fast"], frozenset(), "fast", "int8") == []
    assert served_precisions(["triton"], ["fp32"], frozenset(), "fast", "int8") == ["fp32"]


@pytest.mark.slow
def test_a_short_run_reports_every_precision(asr_export: Path, tmp_path: Path) -> None:
    from perf.precision_profile import main
    from qwen3_asr_triton.cpu_precision import choose_fast_precision, read_cpu_flags

    out = tmp_path / "profile.json"
    argv = ["--size", "tiny", "--export", str(asr_export), "--batch", "1", "2", "--windows", "1"]
    main([*argv, "--repeats", "1", "--warmup", "0", "--json", str(out), "--markdown", str(tmp_path / "p.md")])
    report = json.loads(out.read_text())
    assert report["fast_choice"]["precision"] == choose_fast_precision(read_cpu_flags(), True)[0]
    assert set(report["precisions"]) == {"fp32", "int8", "bf16"}
    assert all(v > 0 for v in report["ceilings"]["gflops"].values()) and report["ceilings"]["read_gbps"] > 0
    for result in report["precisions"].values():
        encoder = result["encoder"]
        assert encoder["ms"] > 0 and 0 < encoder["conv_flops_share"] < 1
        assert encoder["conv_time_share"] is not None and 0 < encoder["conv_time_share"] < 1
        assert [s["batch"] for s in result["decode"]] == [1, 2]
        assert all(s["ms"] > 0 and s["bytes"] > 0 for s in result["decode"])
    # bf16 reads two bytes per weight; fp32 four, but its output projection one (the int8 logit screen: on
    # this tiny model, whose projection is 97% of its weights, fewer bytes than bf16); int8 the fewest.
    from perf.precision_profile import decoder_params
    from qwen3_asr_triton.model_spec import ModelSpec

    layers, head = decoder_params(ModelSpec.load(asr_export).text)
    weights = {p: r["weight_bytes"] for p, r in report["precisions"].items()}
    assert report["precisions"]["fp32"]["logit_screen"] and not report["precisions"]["int8"]["logit_screen"]
    assert weights["fp32"] == 4 * layers + head and weights["bf16"] == 2 * (layers + head)
    assert weights["int8"] < min(weights["fp32"], weights["bf16"])
    assert "\n## Decoder step" in (tmp_path / "p.md").read_text()
    # The benchmark's report carries the same tables, one level down in each size's section.
    from perf.report import profile_section

    section = "\n".join(profile_section({"profiles": {"tiny": report}}, "tiny"))
    assert section.startswith("### Precisions against this machine's ceilings: tiny")
    for heading in ("#### Ceilings", "#### Encoder", "#### Decoder step", "#### Prefill"):
        assert f"\n{heading}" in section, heading
    assert "| int8 | 2 |" in section
    assert profile_section({"profiles": {}}, "tiny") == []
