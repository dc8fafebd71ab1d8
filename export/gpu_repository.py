"""The gpu build's last step: assemble the model repository from the built engines.

:func:`assemble_gpu_repository` fills the gpu config templates, checks them
against the TensorRT-LLM engine's own build config and lays out::

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

The gpu plan (:mod:`.gpu_plan`) runs it as its ``assemble`` step, a command of
its own: ``python -m qwen3_asr_triton.export.gpu_repository --model ... --output ...
--work-dir ...`` with every knob (:func:`main`).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from qwen3_asr_triton.model_spec import ModelSpec

from .assembly import Artifacts, common_artifacts, write_repository
from .build_options import BuildOptions, default_options
from .checkpoint import check_checkpoints
from .gpu_options import GpuOptions, decoder_limits
from .gpu_plan import GpuPaths
from .layout import ENGINE_DIRNAME, PLAN_FILENAME
from .options_cli import (
    add_build_arguments,
    add_knob_arguments,
    diarizer_source,
    given_options,
    options_from_args,
    work_dir,
)
from .repository_values import fill_repository_configs
from .versions import Versions, read_versions

logger = logging.getLogger(__name__)


def gpu_artifacts(paths: GpuPaths, has_aligner: bool) -> Artifacts:
    """Per model, (source file, path in the version folder) for the gpu target."""
    speaker = paths.speaker_export if paths.diarizer is not None else None
    files = common_artifacts(paths.asr_export, paths.aligner_export if has_aligner else None, speaker)
    engine = paths.trtllm_engine
    engine_files = sorted(p for p in engine.rglob("*") if p.is_file()) if engine.is_dir() else []
    files["encoder"] = [(paths.plan("encoder"), PLAN_FILENAME)]
    files["decoder"] = [(f, f"{ENGINE_DIRNAME}/{f.relative_to(engine)}") for f in engine_files]
    if has_aligner:
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


def assemble_gpu_repository(paths: GpuPaths, opts: BuildOptions, gpu: GpuOptions, versions: Versions) -> Path:
    """Fill the gpu configs and lay out the repository from the built artifacts (see module docstring)."""
    spec = ModelSpec.load(paths.asr_export)
    has_aligner = paths.aligner is not None
    configs = fill_repository_configs(
        spec, opts, "gpu", has_aligner, paths.templates, gpu, has_diarizer=paths.diarizer is not None
    )
    limits = decoder_limits(spec, opts, gpu)
    expected = {
        "max_batch_size": limits.max_batch_size,
        "max_input_len": limits.max_input_len,
        "max_seq_len": limits.max_seq_len,
        "max_num_tokens": limits.max_num_tokens,
        "max_prompt_embedding_table_size": limits.prompt_table_rows,
    }
    check_engine_config(paths.trtllm_engine, expected, spec.text.vocab_size)
    extra_info = {"gpu_options": asdict(gpu), "versions": asdict(versions), "decoder_limits": asdict(limits)}
    return write_repository(
        paths.output,
        configs,
        gpu_artifacts(paths, has_aligner),
        target="gpu",
        model=paths.model,
        aligner=paths.aligner,
        opts=opts,
        extra_info=extra_info,
        template_root=paths.templates,
        diarizer=paths.diarizer,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Assemble the gpu model repository from the built engines.")
    add_build_arguments(parser)
    add_knob_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        opts = default_options("gpu", **given_options(args, BuildOptions))
        gpu = options_from_args(args, GpuOptions)
        paths = GpuPaths.for_build(args.model, args.aligner, args.output, work_dir(args), diarizer_source(args))
        check_checkpoints(paths.model, paths.aligner)
        assemble_gpu_repository(paths, opts, gpu, read_versions())
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
