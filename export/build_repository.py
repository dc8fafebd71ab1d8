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

``build_engines.sh`` is the command-line front end. The gpu target
(``--target gpu``, inside NVIDIA's tritonserver TensorRT-LLM container) runs
the steps of :mod:`.gpu_plan` instead: the same export, then TensorRT plans,
the TensorRT-LLM engine and :func:`.gpu_repository.assemble_gpu_repository`;
``--dry-run`` prints every command of that plan without running any.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from qwen3_asr_triton.model_spec import SPEC_FILENAME, ModelSpec
from qwen3_asr_triton.tokenizer import TOKENIZER_FILENAME

from .checkpoint import CheckpointError
from .files import place_artifact
from .fill_config import fill_templates, template_for
from .gpu_options import GpuOptions, decoder_limits
from .gpu_plan import DECODER_DTYPE, GpuPaths
from .gpu_repository import assemble_gpu_repository, decoder_engine_dir, run_gpu_build
from .onnx_export import EMBED_FILENAME, export_checkpoint
from .quantize import PRECISIONS, ensure_precision, quantized_name
from .versions import read_versions

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_ROOT = REPO_ROOT / "model_repository"
BUILD_INFO = "build_info.json"
TARGETS = ("cpu", "gpu")
# Models that exist on the gpu target only (TensorRT plans behind the aligner's BLS calls).
GPU_ALIGNER_MODELS = ("aligner_encoder", "aligner_lm")
# numpy dtype of the decoder's prompt embedding table -> Triton data type.
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}


# Knobs for which 0 is meaningful (all threads; no batching delay; no rollback).
ZERO_ALLOWED = frozenset(
    {"intra_op_threads", "encoder_queue_delay_us", "preprocess_queue_delay_us", "stream_rollback_tokens"}
)


@dataclass(frozen=True)
class BuildOptions:
    """Knobs of a model repository (each maps to a config value; see README "Building")."""

    entry_instances: int = 8
    preprocess_instances: int = 2
    # Requests per preprocess execution and how long a first request waits for others: a burst
    # is answered together and so reaches the encoder as one batch (its first request alone
    # otherwise; README, Performance). cpu value; gpu in TARGET_DEFAULTS.
    preprocess_max_batch: int = 8
    preprocess_queue_delay_us: int = 50000
    postprocess_instances: int = 1
    aligner_instances: int = 1
    encoder_instances: int = 1
    encoder_max_batch: int = 16
    # cpu value; the gpu target's default is in TARGET_DEFAULTS.
    encoder_queue_delay_us: int = 20000
    decoder_max_batch: int = 64
    kv_cache_mb: int = 4096
    max_running_sequences: int = 16
    prefill_chunk: int = 512
    max_queue: int = 512
    max_new_tokens: int = 4096
    max_context_tokens: int = 2048
    max_audio_bytes: int = 256 * 1024 * 1024
    max_audio_seconds: float = 3600.0
    max_segment_seconds: float = 1200.0
    max_align_segment_seconds: float = 180.0
    intra_op_threads: int = 0
    # ONNX Runtime workers spin between operators during a run and stop when it returns (see session.py).
    ort_spin_wait: bool = True
    log_level: str = "INFO"
    # Streaming (qwen3_asr_streaming): chunks per execute, streams held, their length and idle timeout,
    # the official re-decoding rollback and the exact encoder-window reuse.
    stream_max_batch: int = 32
    max_streams: int = 256
    max_stream_seconds: float = 300.0
    stream_idle_seconds: float = 30.0
    stream_rollback_tokens: int = 5
    stream_reuse_windows: bool = True
    # cpu target: "fp32" serves the exact graphs (token parity with transformers), "int8" the fast
    # int8-weight copies of the encoder and decoder (export/quantize.py).
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                minimum = 0 if f.name in ZERO_ALLOWED else 1
                if value < minimum:
                    raise ValueError(f"{f.name} must be >= {minimum}, got {value}")
        if self.max_align_segment_seconds > self.max_segment_seconds:
            raise ValueError("max_align_segment_seconds must not exceed max_segment_seconds")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"unknown log level {self.log_level!r}")


# Defaults that differ on the gpu target. A cpu request takes seconds, so gathering a burst for
# 50 + 20 ms pays (measured at 0.6B: a wave of 8 requests encoded as one batch took 20.4-22.9 s
# against 25.9-28.1 s; README, Performance); a GPU request takes far less, and the same wait
# would be a large share of it.
TARGET_DEFAULTS: dict[str, dict[str, object]] = {
    "cpu": {},
    "gpu": {"preprocess_queue_delay_us": 5000, "encoder_queue_delay_us": 2000},
}


def default_options(target: str, **overrides: object) -> BuildOptions:
    """:class:`BuildOptions` with ``target``'s defaults, then ``overrides``."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}")
    return BuildOptions(**{**TARGET_DEFAULTS[target], **overrides})


def models_for(has_aligner: bool, target: str = "cpu") -> list[str]:
    """The models of a repository for ``target``."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}")
    models = ["qwen3_asr", "qwen3_asr_deltas", "qwen3_asr_streaming", "preprocess", "encoder", "decoder", "postprocess"]
    if has_aligner:
        models.append("aligner")
        if target == "gpu":
            models += GPU_ALIGNER_MODELS
    return models


# Sequence-batcher candidate slots per stream the model admits (see "STREAM_CANDIDATES" below).
STREAM_CANDIDATE_FACTOR = 2


def template_values(
    spec: ModelSpec, opts: BuildOptions, target: str, has_aligner: bool, gpu: GpuOptions | None = None
) -> dict[str, object]:
    """The one value set every template of the repository is filled from (target-specific keys included)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}")
    prompt_dtype = "float32" if target == "cpu" else DECODER_DTYPE
    values: dict[str, object] = {
        "N_MELS": spec.features.n_mels,
        "AUDIO_DIM": spec.encoder.output_dim,
        "ENTRY_INSTANCES": opts.entry_instances,
        "PREPROCESS_INSTANCES": opts.preprocess_instances,
        "PREPROCESS_MAX_BATCH": opts.preprocess_max_batch,
        "PREPROCESS_QUEUE_DELAY_US": opts.preprocess_queue_delay_us,
        "POSTPROCESS_INSTANCES": opts.postprocess_instances,
        "ENCODER_INSTANCES": opts.encoder_instances,
        "ENCODER_MAX_BATCH": opts.encoder_max_batch,
        "ENCODER_QUEUE_DELAY_US": opts.encoder_queue_delay_us,
        "DECODER_MAX_BATCH": opts.decoder_max_batch,
        "MAX_QUEUE": opts.max_queue,
        "MAX_NEW_TOKENS": opts.max_new_tokens,
        "MAX_CONTEXT_TOKENS": opts.max_context_tokens,
        "MAX_AUDIO_BYTES": opts.max_audio_bytes,
        "MAX_AUDIO_SECONDS": opts.max_audio_seconds,
        "MAX_SEGMENT_SECONDS": opts.max_segment_seconds,
        "MAX_ALIGN_SEGMENT_SECONDS": opts.max_align_segment_seconds,
        "ALIGNER_ENABLED": "true" if has_aligner else "false",
        "PAD_WINDOWS_TO": 0 if target == "cpu" else spec.features.window_frames,
        "PROMPT_TABLE_DTYPE": prompt_dtype,
        "LOG_LEVEL": opts.log_level.upper(),
        "STREAM_MAX_BATCH": opts.stream_max_batch,
        "MAX_STREAMS": opts.max_streams,
        # Triton's sequence batcher queues a START beyond its candidate slots silently; with twice the
        # model's own bound, the model sees stream max_streams + 1 and refuses it at once (UNAVAILABLE),
        # and slots held by abandoned streams until the idle timeout never starve new ones.
        "STREAM_CANDIDATES": STREAM_CANDIDATE_FACTOR * opts.max_streams,
        "MAX_STREAM_SECONDS": opts.max_stream_seconds,
        "STREAM_IDLE_US": int(opts.stream_idle_seconds * 1_000_000),
        "STREAM_ROLLBACK_TOKENS": opts.stream_rollback_tokens,
        "STREAM_REUSE_WINDOWS": "true" if opts.stream_reuse_windows else "false",
    }
    if has_aligner:
        values["ALIGNER_INSTANCES"] = opts.aligner_instances
    if target == "cpu":
        values.update(
            {
                "KV_CACHE_MB": opts.kv_cache_mb,
                "MAX_RUNNING_SEQUENCES": opts.max_running_sequences,
                "PREFILL_CHUNK": opts.prefill_chunk,
                "INTRA_OP_THREADS": opts.intra_op_threads,
                "ORT_SPIN_WAIT": "true" if opts.ort_spin_wait else "false",
            }
        )
        return values
    gpu = gpu or GpuOptions()
    decoder_limits(spec, opts, gpu)  # refuses settings no engine can serve
    values.update(
        {
            "PROMPT_TABLE_TYPE": _TRITON_TYPES[prompt_dtype],
            "DECODER_ENGINE_DIR": decoder_engine_dir(gpu),
            "KV_CACHE_FREE_GPU_MEM_FRACTION": gpu.kv_cache_free_gpu_mem_fraction,
            "BATCH_SCHEDULER_POLICY": gpu.batch_scheduler_policy,
            "ENABLE_CHUNKED_CONTEXT": gpu.enable_chunked_context,
        }
    )
    if has_aligner:
        values["ALIGNER_MAX_TOKENS"] = gpu.aligner_max_tokens
    return values


def fill_repository_configs(
    spec: ModelSpec,
    opts: BuildOptions,
    target: str,
    has_aligner: bool,
    template_root: Path = TEMPLATE_ROOT,
    gpu: GpuOptions | None = None,
) -> dict[str, str]:
    """Filled, proto-validated config text per model for ``target``."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}")
    templates = {}
    for model in models_for(has_aligner, target):
        path = template_for(template_root / model, target)
        if path is None:
            raise FileNotFoundError(f"no config template for {model} ({target})")
        templates[model] = path
    return fill_templates(templates, template_values(spec, opts, target, has_aligner, gpu))


def _onnx_files(export_dir: Path, graph: str) -> list[Path]:
    main = export_dir / f"{graph}.onnx"
    return [main, main.with_name(main.name + ".data")]


def _graph_files(export_dir: Path, graph: str, precision: str) -> list[tuple[Path, str]]:
    """A graph at ``precision`` placed as ``<graph>.onnx``; its data file keeps the name the graph refers to."""
    main, data = _onnx_files(export_dir, quantized_name(graph, precision))
    return [(main, f"{graph}.onnx"), (data, data.name)]


def cpu_artifacts(
    asr_dir: Path, aligner_dir: Path | None, precision: str = "fp32"
) -> dict[str, list[tuple[Path, str]]]:
    """Per model, (source file, name in the version folder) for the cpu target."""
    spec, tok = (asr_dir / SPEC_FILENAME, SPEC_FILENAME), (asr_dir / TOKENIZER_FILENAME, TOKENIZER_FILENAME)
    files = {
        "qwen3_asr": [spec, tok],
        "qwen3_asr_deltas": [spec, tok],
        "qwen3_asr_streaming": [spec, tok],
        "preprocess": [spec],
        "encoder": [spec, *_graph_files(asr_dir, "encoder", precision)],
        "decoder": [
            spec,
            (asr_dir / EMBED_FILENAME, EMBED_FILENAME),
            *_graph_files(asr_dir, "decoder", precision),
        ],
        "postprocess": [tok],
    }
    if aligner_dir is not None:
        files["aligner"] = [
            (aligner_dir / SPEC_FILENAME, SPEC_FILENAME),
            (aligner_dir / TOKENIZER_FILENAME, TOKENIZER_FILENAME),
            (aligner_dir / EMBED_FILENAME, EMBED_FILENAME),
            *[(p, p.name) for g in ("encoder", "aligner") for p in _onnx_files(aligner_dir, g)],
        ]
    return files


def _prepare_output(output: Path) -> None:
    """An empty ``output``; a previous build there is cleared (its folder kept: it may be a mount point)."""
    if output.exists():
        if not (output / BUILD_INFO).is_file() and any(output.iterdir()):
            raise FileExistsError(
                f"{output} exists, is not empty and was not built by this tool; refusing to overwrite it"
            )
        # build_info.json goes last, so an interrupted clean-up can be resumed.
        for child in sorted(output.iterdir(), key=lambda p: p.name == BUILD_INFO):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    output.mkdir(parents=True, exist_ok=True)


def check_checkpoints(model: Path, aligner: Path | None) -> tuple[ModelSpec, ModelSpec | None]:
    """Specs of the checkpoints, with clear errors for unusable directories."""
    try:
        spec = ModelSpec.from_checkpoint(model)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise CheckpointError(f"--model {model}: {exc}") from exc
    if spec.kind != "asr":
        raise CheckpointError(f"--model {model} is a forced-aligner checkpoint; pass it with --aligner")
    aligner_spec = None
    if aligner is not None:
        try:
            aligner_spec = ModelSpec.from_checkpoint(aligner)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise CheckpointError(f"--aligner {aligner}: {exc}") from exc
        if aligner_spec.kind != "aligner":
            raise CheckpointError(f"--aligner {aligner} is not a forced-aligner checkpoint")
        if aligner_spec.features != spec.features:
            raise CheckpointError("the aligner's audio front end differs from the recogniser's; they must share it")
    for path in (model, aligner):
        if path is not None and (path / "RANDOM_WEIGHTS.txt").is_file():
            logger.warning("*** %s has RANDOM weights: transcripts will be meaningless words ***", path)
    return spec, aligner_spec


def build_cpu_repository(
    model: Path, aligner: Path | None, output: Path, work_dir: Path, opts: BuildOptions | None = None
) -> Path:
    """Build a cpu-target model repository at ``output`` (replacing a previous build there)."""
    opts = opts or BuildOptions()
    model, output, work_dir = model.resolve(), output.resolve(), work_dir.resolve()
    aligner = aligner.resolve() if aligner is not None else None
    spec, _ = check_checkpoints(model, aligner)
    configs = fill_repository_configs(spec, opts, "cpu", aligner is not None)
    asr_dir = work_dir / "onnx-asr"
    export_checkpoint(model, asr_dir)
    ensure_precision(asr_dir, opts.precision)
    aligner_dir = None
    if aligner is not None:
        aligner_dir = work_dir / "onnx-aligner"
        export_checkpoint(aligner, aligner_dir)
    _prepare_output(output)
    artifacts = cpu_artifacts(asr_dir, aligner_dir, opts.precision)
    for name, text in configs.items():
        (output / name / "1").mkdir(parents=True)
        (output / name / "config.pbtxt").write_text(text)
        shutil.copy2(TEMPLATE_ROOT / name / "1" / "model.py", output / name / "1" / "model.py")
        for src, dst_name in artifacts.get(name, []):
            place_artifact(src, output / name / "1" / dst_name)
    info = {
        "target": "cpu",
        "model": str(model),
        "aligner": str(aligner) if aligner else None,
        "options": asdict(opts),
        "models": sorted(configs),
    }
    (output / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    logger.info("model repository ready: %s (%s)", output, ", ".join(sorted(configs)))
    return output


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_option_arguments(parser: argparse.ArgumentParser, options_cls: type = BuildOptions) -> None:
    """One ``--flag`` per options field (``kv_cache_mb`` -> ``--kv-cache-mb``)."""
    defaults = options_cls()
    group = parser.add_argument_group(f"{options_cls.__name__} knobs")
    for f in fields(options_cls):
        default = getattr(defaults, f.name)
        kind = _parse_bool if isinstance(default, bool) else type(default)
        per_target = "".join(f"; {t} {values[f.name]}" for t, values in TARGET_DEFAULTS.items() if f.name in values)
        # SUPPRESS: a flag left out is absent from args, so the target's default applies.
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=kind,
            default=argparse.SUPPRESS,
            help=f"(default {default}{per_target})",
        )


def given_options(args: argparse.Namespace, options_cls: type) -> dict[str, object]:
    """The ``options_cls`` fields set on the command line (flags left out are absent: SUPPRESS)."""
    return {f.name: getattr(args, f.name) for f in fields(options_cls) if hasattr(args, f.name)}


def options_from_args(args: argparse.Namespace, options_cls: type):
    """``options_cls`` from the command line over its class defaults."""
    return options_cls(**given_options(args, options_cls))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a Triton model repository from checkpoints.")
    parser.add_argument("--model", required=True, type=Path, help="Qwen3-ASR checkpoint directory")
    parser.add_argument("--aligner", type=Path, help="Qwen3-ForcedAligner checkpoint (enables timestamps)")
    parser.add_argument("--output", required=True, type=Path, help="model repository to write")
    parser.add_argument("--work-dir", type=Path, help="where exported graphs are cached (default: <output>.work)")
    parser.add_argument("--target", choices=TARGETS, default="cpu")
    parser.add_argument("--dry-run", action="store_true", help="print every command of the build, run none")
    parser.add_argument("--stage", action="append", default=[], help="gpu: run only these steps (repeatable)")
    parser.add_argument("--force", action="store_true", help="gpu: re-run steps even when up to date")
    add_option_arguments(parser, BuildOptions)
    add_option_arguments(parser, GpuOptions)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    work_dir = args.work_dir or args.output.with_name(args.output.name + ".work")
    try:
        opts = default_options(args.target, **given_options(args, BuildOptions))
        if args.target == "cpu":
            if args.stage or args.force:
                raise ValueError("--stage and --force apply to the gpu target only")
            if args.dry_run:
                print(f"# cpu build (one in-process step): export ONNX into {work_dir}, fill configs, assemble")
                print(" ".join(["python -m qwen3_asr_triton.export.build_repository", *(argv or [])]))
                return
            build_cpu_repository(args.model, args.aligner, args.output, work_dir, opts)
            return
        if opts.precision != "fp32":
            raise ValueError("--precision selects the cpu graphs; the gpu target uses --trt-precision")
        gpu = options_from_args(args, GpuOptions)
        paths = GpuPaths(
            REPO_ROOT,
            args.model.resolve(),
            args.aligner.resolve() if args.aligner else None,
            args.output.resolve(),
            work_dir.resolve(),
            Path(sys.executable),
        )
        check_checkpoints(paths.model, paths.aligner)
        if args.stage == ["assemble"] and not args.dry_run:
            assemble_gpu_repository(paths, opts, gpu, read_versions(), fill_repository_configs, _prepare_output)
            return
        run_gpu_build(paths, opts, gpu, read_versions(), args.dry_run, args.stage, args.force)
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError, RuntimeError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
