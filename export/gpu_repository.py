"""The gpu build: run (or print) its plan, and assemble the model repository from the built engines.

:func:`run_gpu_build` executes :func:`~.gpu_plan.gpu_plan` step by step (or
prints every command with ``dry_run``); its last step calls
:func:`assemble_gpu_repository`, which fills the gpu config templates, checks
them against the TensorRT-LLM engine's own build config and lays out::

    qwen3_asr/1/        model.py, model_spec.json, tokenizer.json     (python, BLS entry)
    qwen3_asr_deltas/1/ model.py, model_spec.json, tokenizer.json     (python, BLS, decoupled: text as generated)
    qwen3_asr_streaming/1/  model.py, model_spec.json, tokenizer.json (python, BLS, sequence batcher)
    preprocess/1/       model.py, model_spec.json                     (python)
    encoder/1/          model.plan                                    (tensorrt_plan)
    decoder/1/engine/   config.json, rank0.engine                     (tensorrtllm)
    postprocess/1/      model.py, tokenizer.json                      (python)
    aligner/1/          model.py, model_spec.json, tokenizer.json, embed_tokens.npy   (python, BLS)
    aligner_encoder/1/  model.plan                                    (tensorrt_plan)
    aligner_lm/1/       model.plan                                    (tensorrt_plan)
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen3_asr_triton.model_spec import SPEC_FILENAME, ModelSpec
from qwen3_asr_triton.tokenizer import TOKENIZER_FILENAME

from .files import place_artifact
from .fill_config import parse_model_config
from .gpu_options import GpuOptions, decoder_limits
from .gpu_plan import ENGINE_DIRNAME, PLAN_FILENAME, GpuPaths, gpu_plan
from .steps import Runner, run_steps
from .versions import Versions

if TYPE_CHECKING:
    from .build_repository import BuildOptions

logger = logging.getLogger(__name__)
EMBED_FILENAME = "embed_tokens.npy"


def decoder_engine_dir(gpu: GpuOptions) -> str:
    """The engine folder as Triton sees it (``gpt_model_path`` of the decoder config)."""
    return f"{gpu.model_root.rstrip('/')}/decoder/1/{ENGINE_DIRNAME}"


def gpu_artifacts(paths: GpuPaths, has_aligner: bool) -> dict[str, list[tuple[Path, str]]]:
    """Per model, (source file, path in the version folder) for the gpu target."""
    asr = paths.asr_export
    spec, tok = (asr / SPEC_FILENAME, SPEC_FILENAME), (asr / TOKENIZER_FILENAME, TOKENIZER_FILENAME)
    engine = paths.trtllm_engine
    engine_files = sorted(p for p in engine.rglob("*") if p.is_file()) if engine.is_dir() else []
    files = {
        "qwen3_asr": [spec, tok],
        "qwen3_asr_deltas": [spec, tok],
        "qwen3_asr_streaming": [spec, tok],
        "preprocess": [spec],
        "postprocess": [tok],
        "encoder": [(paths.plan("encoder"), PLAN_FILENAME)],
        "decoder": [(f, f"{ENGINE_DIRNAME}/{f.relative_to(engine)}") for f in engine_files],
    }
    if has_aligner:
        al = paths.aligner_export
        files["aligner"] = [(al / n, n) for n in (SPEC_FILENAME, TOKENIZER_FILENAME, EMBED_FILENAME)]
        files["aligner_encoder"] = [(paths.plan("aligner_encoder"), PLAN_FILENAME)]
        files["aligner_lm"] = [(paths.plan("aligner_lm"), PLAN_FILENAME)]
    return files


def check_engine_config(engine_dir: Path, expected: dict[str, int], vocab_size: int) -> None:
    """Refuse an engine whose own build config contradicts the filled configs.

    ``expected`` maps build-config keys (``max_batch_size``, ...) to the values
    the plan built with; keys the engine's ``config.json`` does not carry are
    logged and skipped.
    """
    path = engine_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the trtllm-build stage first")
    config: dict[str, Any] = json.loads(path.read_text())
    pretrained = config.get("pretrained_config", {})
    build = config.get("build_config", {})
    problems = []
    if pretrained.get("architecture") != "Qwen3ForCausalLM":
        problems.append(f"architecture {pretrained.get('architecture')!r}, expected 'Qwen3ForCausalLM'")
    if pretrained.get("vocab_size") != vocab_size:
        got = pretrained.get("vocab_size")
        problems.append(f"vocab_size {got}, expected {vocab_size} (prompt-table ids start there)")
    for key, want in expected.items():
        if key not in build:
            logger.warning("engine build config has no %s; not checked", key)
        elif build[key] != want:
            problems.append(f"{key} {build[key]}, expected {want}")
    if problems:
        raise ValueError(f"{path} does not match this build: " + "; ".join(problems))


def assemble_gpu_repository(
    paths: GpuPaths,
    opts: BuildOptions,
    gpu: GpuOptions,
    versions: Versions,
    fill: Callable[..., dict[str, str]],
    prepare_output: Callable[[Path], None],
) -> Path:
    """Fill the gpu configs and lay out the repository from the built artifacts (see module docstring)."""
    spec = ModelSpec.load(paths.asr_export)
    has_aligner = paths.aligner is not None
    configs = fill(spec, opts, "gpu", has_aligner, gpu=gpu)
    limits = decoder_limits(spec, opts, gpu)
    expected = {
        "max_batch_size": limits.max_batch_size,
        "max_input_len": limits.max_input_len,
        "max_seq_len": limits.max_seq_len,
        "max_num_tokens": limits.max_num_tokens,
        "max_prompt_embedding_table_size": limits.prompt_table_rows,
    }
    check_engine_config(paths.trtllm_engine, expected, spec.text.vocab_size)
    artifacts = gpu_artifacts(paths, has_aligner)
    prepare_output(paths.output)
    template_root = paths.repo_root / "model_repository"
    for name, text in configs.items():
        version = paths.output / name / "1"
        version.mkdir(parents=True)
        (paths.output / name / "config.pbtxt").write_text(text)
        if parse_model_config(text).backend == "python":
            shutil.copy2(template_root / name / "1" / "model.py", version / "model.py")
        for src, dst_name in artifacts.get(name, []):
            place_artifact(src, version / dst_name)
    info = {
        "target": "gpu",
        "model": str(paths.model),
        "aligner": str(paths.aligner) if paths.aligner else None,
        "options": asdict(opts),
        "gpu_options": asdict(gpu),
        "versions": asdict(versions),
        "decoder_limits": asdict(limits),
        "models": sorted(configs),
    }
    (paths.output / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    logger.info("gpu model repository ready: %s (%s)", paths.output, ", ".join(sorted(configs)))
    return paths.output


def run_gpu_build(
    paths: GpuPaths,
    opts: BuildOptions,
    gpu: GpuOptions,
    versions: Versions,
    dry_run: bool = False,
    stages: Sequence[str] = (),
    force: bool = False,
    out: Callable[[str], None] = print,
    runner: Runner = subprocess.run,
) -> list[str]:
    """Run the gpu plan (or print it); returns the names of the steps that ran (or would run)."""
    steps = gpu_plan(paths, opts, gpu, versions)
    spec = ModelSpec.from_checkpoint(paths.model)
    limits = decoder_limits(spec, opts, gpu)
    table = limits.prompt_table_gib(spec.text.hidden_size)
    if table > 2:
        logger.warning(
            "the decoder's prompt-table buffer takes %.1f GiB (%d rows); lower --max-segment-seconds, "
            "--decoder-max-batch or --prompt-table-rows to shrink it",
            table,
            limits.prompt_table_rows,
        )
    if dry_run:
        names = {s.name for s in steps}
        unknown = sorted(set(stages) - names)
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are: {', '.join(s.name for s in steps)}")
        out(f"# gpu build plan: {len(steps)} steps; '[venv]' = project environment, '[container]' = NGC image tools")
        for step in steps:
            if stages and step.name not in stages:
                continue
            out(f"# [{step.environment}] {step.name}: {step.description}")
            out(step.render())
        return [s.name for s in steps if not stages or s.name in stages]
    return run_steps(steps, paths.stamps, only=stages, force=force, venv_bin=paths.venv_python.parent, runner=runner)
