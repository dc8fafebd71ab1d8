"""The gpu build as an ordered list of commands (:class:`~.steps.Step`).

::

    preflight              container  pinned TensorRT / TensorRT-LLM / Polygraphy, a visible GPU
    export-asr             venv       checkpoint -> ONNX graphs + side files (cached)
    export-aligner         venv       aligner checkpoint -> ONNX graphs + side files (with --aligner)
    extract-decoder        venv       decoder -> Qwen3ForCausalLM checkpoint TensorRT-LLM reads correctly
    ort-<graph>            venv       ONNX Runtime reference outputs on fixed inputs (polygraphy)
    trt-<graph>            container  ONNX -> TensorRT plan: optimisation profile, fp16/bf16, norms in fp32
    compare-<graph>        container  the plan on the same inputs against the ONNX Runtime outputs
    trtllm-convert         container  Qwen3 checkpoint -> TensorRT-LLM checkpoint (fp16)
    trtllm-build           container  TensorRT-LLM engine: prompt table, paged KV cache, in-flight batching
    assemble               venv       filled configs + model.py files + plans + engine -> model repository

``<graph>`` is ``encoder`` and, with an aligner, ``aligner_encoder`` and
``aligner_lm``. Every number in these commands comes from
:mod:`.gpu_options`, the same place the configs are filled from.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from qwen3_asr_triton.model_spec import SPEC_FILENAME, ModelSpec

from .gpu_options import GpuOptions, Profile, aligner_lm_profile, decoder_limits, encoder_profile
from .steps import Step
from .versions import Versions

if TYPE_CHECKING:
    from .build_repository import BuildOptions

DECODER_DTYPE = "float16"
ENGINE_DIRNAME = "engine"
PLAN_FILENAME = "model.plan"


@dataclass(frozen=True)
class GpuPaths:
    """Where the gpu build reads and writes."""

    repo_root: Path
    model: Path
    aligner: Path | None
    output: Path
    work_dir: Path
    venv_python: Path

    @property
    def asr_export(self) -> Path:
        return self.work_dir / "onnx-asr"

    @property
    def aligner_export(self) -> Path:
        return self.work_dir / "onnx-aligner"

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


def option_flags(options: object) -> list[str]:
    """``--flag value`` for every field of an options dataclass (bools as true/false)."""
    out = []
    for f in fields(options):  # type: ignore[arg-type]
        value = getattr(options, f.name)
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out += [f"--{f.name.replace('_', '-')}", text]
    return out


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
            paths.asr_export / "encoder.onnx",
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
                paths.aligner_export / "encoder.onnx",
                paths.aligner_export,
                encoder_profile(aligner_spec, opts, gpu),
                "load_encoder_data",
                batch,
            ),
            TrtGraph(
                "aligner_lm",
                paths.aligner_export / "aligner.onnx",
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
    files = ("encoder.onnx", SPEC_FILENAME, "tokenizer.json", "embed_tokens.npy", *extra)
    return Step(
        name,
        (py, "-m", "qwen3_asr_triton.export.onnx_export", "--checkpoint", str(checkpoint), "--output", str(out)),
        "venv",
        f"export the ONNX graphs and side files of {what}",
        inputs=(checkpoint,),
        outputs=tuple(out / f for f in files),
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
            _export_step("export-aligner", py, paths.aligner, paths.aligner_export, "the aligner", ("aligner.onnx",))
        )
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
    assemble = [py, "-m", "qwen3_asr_triton.export.build_repository", "--target", "gpu", "--stage", "assemble"]
    assemble += ["--model", str(paths.model)]
    if paths.aligner is not None:
        assemble += ["--aligner", str(paths.aligner)]
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
                paths.repo_root / "model_repository",
            ),
            outputs=(paths.output / "build_info.json",),
        )
    )
    return steps
