"""The TensorRT-vs-ONNX-Runtime comparison steps of the gpu plan, run here as far as they can be.

The ONNX Runtime half (``ort-<graph>``) runs exactly as the build runs it. The TensorRT half
(``compare-<graph>``) needs a GPU; its command is replayed with Polygraphy's ONNX Runtime runner on the
ONNX graph in place of the TensorRT runner on the plan, which checks that the saved inputs, the saved
reference outputs and the comparison flags work together, and that a wrong reference fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qwen3_asr_triton.export.build_options import BuildOptions
from qwen3_asr_triton.export.gpu_options import GpuOptions
from qwen3_asr_triton.export.gpu_plan import GpuPaths, TrtGraph, trt_graphs, trt_steps
from qwen3_asr_triton.export.steps import environment_for
from qwen3_asr_triton.model_spec import ModelSpec
from tests.test_deploy_static import require_tool

REPO = Path(__file__).resolve().parents[1]


def run_step(step, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    env = environment_for(step, os.environ, None)
    env.update(env_extra or {})
    return subprocess.run(list(step.argv), env=env, capture_output=True, text=True, timeout=600)


def onnxrt_replay(argv: tuple[str, ...], graph: TrtGraph, venv_polygraphy: str) -> tuple[str, ...]:
    """The compare command with the ONNX Runtime runner on the ONNX graph instead of TensorRT on the plan."""
    out = [venv_polygraphy, *argv[1:]]
    out[2] = str(graph.onnx)
    out[out.index("--model-type") + 1] = "onnx"
    out[out.index("--trt")] = "--onnxrt"
    return tuple(out)


@pytest.fixture(scope="module")
def setup(asr_checkpoint, aligner_checkpoint, asr_export, aligner_export, tmp_path_factory):
    require_tool("polygraphy")
    work = tmp_path_factory.mktemp("pg")
    paths = GpuPaths(REPO, asr_checkpoint, aligner_checkpoint, work / "repo", work / "work", Path(sys.executable))
    paths.trt.mkdir(parents=True)
    gpu = GpuOptions(encoder_opt_batch=3, aligner_opt_tokens=48, aligner_max_tokens=256)
    graphs = trt_graphs(paths, ModelSpec.load(asr_export), ModelSpec.load(aligner_export), BuildOptions(), gpu)
    exports = {"encoder": asr_export, "aligner_encoder": aligner_export, "aligner_lm": aligner_export}
    graphs = [
        TrtGraph(g.name, exports[g.name] / g.onnx.name, exports[g.name], g.profile, g.loader, g.loader_env)
        for g in graphs
    ]
    return paths, gpu, graphs


@pytest.mark.parametrize("name", ["encoder", "aligner_lm"])
def test_reference_and_comparison_commands_work(setup, name):
    paths, gpu, graphs = setup
    graph = next(g for g in graphs if g.name == name)
    ort, trt, compare = trt_steps(paths, graph, gpu)
    result = run_step(ort)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert all(p.stat().st_size > 0 for p in ort.outputs)
    assert trt.outputs == (paths.plan(name),) and compare.inputs[0] == paths.plan(name)
    replay = onnxrt_replay(compare.argv, graph, paths.polygraphy_venv)
    result = subprocess.run(list(replay), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PASSED" in result.stdout + result.stderr
    assert compare.outputs[0].is_file(), "the accuracy report is the step's output"


def test_comparison_fails_against_a_wrong_reference(setup, tmp_path):
    paths, gpu, graphs = setup
    graph = next(g for g in graphs if g.name == "encoder")
    ort, _, compare = trt_steps(paths, graph, gpu)
    if not all(p.is_file() for p in ort.outputs):
        assert run_step(ort).returncode == 0
    other = tmp_path / "other.json"
    argv = list(ort.argv)
    argv[argv.index("--save-inputs") + 1] = str(tmp_path / "other.inputs.json")
    argv[argv.index("--save-outputs") + 1] = str(other)
    shifted = type(ort)(ort.name, tuple(argv), ort.environment, ort.description, env=ort.env)
    assert run_step(shifted, {"QWEN3_ASR_PG_SEED": "1"}).returncode == 0
    replay = list(onnxrt_replay(compare.argv, graph, paths.polygraphy_venv))
    replay[replay.index("--load-outputs") + 1] = str(other)
    replay[replay.index("--save-accuracy-results") + 1] = str(tmp_path / "report.json")
    result = subprocess.run(replay, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0, "outputs of other inputs must not pass the comparison"
