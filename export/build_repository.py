"""Checkpoint(s) -> a filled Triton model repository.

Stages (each can be re-run; the ONNX export is skipped when up to date):

1. read and check the checkpoints (clear error for anything that is not a
   Qwen3-ASR / Qwen3-ForcedAligner checkpoint);
2. export the ONNX graphs and side files into the work directory;
3. fill the config templates of ``model_repository/`` for the target with one
   value set (strict: missing and unknown keys fail, every result is parsed
   by the Triton model-config proto);
4. assemble the repository: configs, the models' ``model.py`` and each model's
   artifacts in its version folder (copies: ONNX refuses hard-linked weights).

This module is the command line (``build_engines.sh`` is its front end); the
work is done by the modules below it, imported one way::

    build_repository    CLI: parse, pick the target, run it
    cpu_build           the cpu target: export, fill, assemble in-process
    gpu_plan            the gpu target's commands, run or printed (--dry-run); its last
                        step runs gpu_repository (assemble) as a command of its own
    gpu_repository      the gpu target's assembly from the built engines
    assembly            writing a repository, for both targets
    repository_values   the template values and filled configs, for both targets
    options_cli         options dataclasses <-> command-line flags, both ways
    gpu_options         the gpu target's knobs and the engine limits derived from them
    build_options       the shared knobs and each target's defaults
    layout              names and places of a build

The gpu target (``--target gpu``, inside NVIDIA's tritonserver TensorRT-LLM
container) runs the steps of :mod:`.gpu_plan` instead of the in-process cpu
build: the same export, then TensorRT plans, the TensorRT-LLM engine and the
assembly; ``--dry-run`` prints every command of that plan without running any.
"""

from __future__ import annotations

import argparse
import logging

from .build_options import TARGETS, BuildOptions, default_options
from .checkpoint import check_checkpoints
from .cpu_build import build_cpu_repository
from .gpu_options import GpuOptions
from .gpu_plan import GpuPaths, run_gpu_build
from .options_cli import (
    add_build_arguments,
    add_knob_arguments,
    diarizer_source,
    given_options,
    options_from_args,
    work_dir,
)
from .versions import read_versions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a Triton model repository from checkpoints.")
    add_build_arguments(parser)
    parser.add_argument("--target", choices=TARGETS, default="cpu")
    parser.add_argument("--dry-run", action="store_true", help="print every command of the build, run none")
    parser.add_argument("--stage", action="append", default=[], help="gpu: run only these steps (repeatable)")
    parser.add_argument("--force", action="store_true", help="gpu: re-run steps even when up to date")
    add_knob_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    work = work_dir(args)
    try:
        opts = default_options(args.target, **given_options(args, BuildOptions))
        if args.target == "cpu":
            if args.stage or args.force:
                raise ValueError("--stage and --force apply to the gpu target only")
            if args.dry_run:
                print(f"# cpu build (one in-process step): export ONNX into {work}, fill configs, assemble")
                print(" ".join(["python -m qwen3_asr_triton.export.build_repository", *(argv or [])]))
                return
            build_cpu_repository(args.model, args.aligner, args.output, work, opts, diarizer_source(args))
            return
        if opts.precision != "fp32":
            raise ValueError("--precision selects the cpu graphs; the gpu target uses --trt-precision")
        gpu = options_from_args(args, GpuOptions)
        paths = GpuPaths.for_build(args.model, args.aligner, args.output, work, diarizer_source(args))
        check_checkpoints(paths.model, paths.aligner)
        run_gpu_build(paths, opts, gpu, read_versions(), args.dry_run, args.stage, args.force)
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
