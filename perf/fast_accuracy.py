"""The fast mode's accuracy against exact fp32, teacher-forced on the fp32 tokens.

    python perf/fast_accuracy.py --size tiny [--clip-seconds 5 --pool 8] [--export DIR] [--max-new-tokens N]

For each of the benchmark's speech clips (perf/clips.py) the fp32 graphs decode greedily, as the
exact mode serves it (the recogniser's prompt and default budget); then the fp32 decoder and the
fast precision's decoder are both fed that prompt and those tokens (teacher forcing,
:func:`qwen3_asr_triton.decoding.teacher.teacher_forced_logits`), and their next-token
distributions are compared step by step (:mod:`qwen3_asr_triton.decoding.fidelity`): KL divergence,
relative logit error, top-1 agreement overall and on steps where the fp32 top-1/top-2 margin
exceeds 1 and 3. Two variants:

- ``decoder``: the int8 decoder on the fp32 encoder's audio embeddings (the decoder's own error);
- ``encoder+decoder``: the int8 decoder on the int8 encoder's embeddings (what the fast mode serves).

The free-running token agreement of the fast mode (each precision decoding its own tokens, the
benchmark's measure, perf/agreement.py) is given next to it. Writes ``<size>.json`` (with the
machine's CPU flags) and ``<size>.md`` to ``perf/results/fast-accuracy/``. The checkpoints here
are random: see that folder's README for what the numbers do and do not say.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.agreement import token_agreement  # noqa: E402
from perf.machine import describe_machine  # noqa: E402
from qwen3_asr_triton.artifacts import DECODER_GRAPH, ENCODER_GRAPH, onnx_filename  # noqa: E402
from qwen3_asr_triton.decoding.decoder import DecoderRunner, greedy_decode  # noqa: E402
from qwen3_asr_triton.decoding.fidelity import FidelitySummary, StepFidelity  # noqa: E402
from qwen3_asr_triton.decoding.teacher import teacher_forced_logits  # noqa: E402
from qwen3_asr_triton.features import LogMel  # noqa: E402
from qwen3_asr_triton.model_spec import ModelSpec  # noqa: E402
from qwen3_asr_triton.pipeline import DEFAULT_TOKENS_BASE, DEFAULT_TOKENS_PER_SECOND, prepare_audio  # noqa: E402
from qwen3_asr_triton.prompt import PromptBuilder, to_prompt_table_ids  # noqa: E402
from qwen3_asr_triton.segmentation import MAX_ASR_SEGMENT_SECONDS  # noqa: E402
from qwen3_asr_triton.sessions import EncoderRunner  # noqa: E402
from qwen3_asr_triton.tokenizer import TextTokenizer  # noqa: E402

logger = logging.getLogger("fast_accuracy")

SIZES = ("tiny", "0.6b", "1.7b")
# The fast precisions to compare with fp32: export/quantize.py's int8 graphs (ONNX Runtime), and bf16,
# which runs the export's torch modules (qwen3_asr_triton/torch_runner.py: ONNX Runtime's CPU provider has no bf16).
INT8 = "int8"
BF16 = "bf16"
FAST_PRECISIONS = (INT8, BF16)
# The comparisons: which precision's encoder feeds the candidate decoder.
DECODER_ONLY = "decoder"
ENCODER_AND_DECODER = "encoder+decoder"
VARIANTS = (DECODER_ONLY, ENCODER_AND_DECODER)
# The benchmark's clips (perf/benchmark.py --clip-seconds 5 --pool 8).
DEFAULT_CLIP_SECONDS = 5.0
DEFAULT_POOL = 8
RESULTS = REPO / "perf" / "results" / "fast-accuracy"
# Where the comparison recipes' graphs are written (the served int8 graphs live in the export itself).
SCRATCH = REPO / ".cache" / "fast-accuracy"
# The served int8 recipe (export/quantize.py -> export/per_token_int8.py: 7-bit weights per channel, uint8
# activations with one scale per token) and, for comparison, ONNX Runtime's dynamic quantisation (int8
# weights per channel, uint8 activations with one scale per tensor; served before the per-token recipe)
# and changes of it. ONNX Runtime's U8S8 kernels on AVX2 / AVX-512 without VNNI sum pairs of u8 x s8
# products in int16 (VPMADDUBSW), which can saturate; its quantize_dynamic docstring offers 7-bit weights
# (``reduce_range``) or uint8 weights (U8U8 kernels, no saturation) against that.
SERVED_RECIPE = "served"
DYNAMIC_RECIPE = "dynamic"
RECIPES: dict[str, dict[str, object]] = {
    SERVED_RECIPE: {},
    DYNAMIC_RECIPE: {},
    "u8u8": {"weight_type": "QUInt8"},
    "reduce-range": {"reduce_range": True},
    "per-tensor": {"per_channel": False},
}
# Not a change of quantize_dynamic but another quantiser: ONNX Runtime's MatMulNBits with 8-bit weights in
# blocks of 128 input channels (symmetric) and accuracy level 4, whose kernels quantise the activations
# to int8 per row and block at run time (per-token scales, not one per tensor). Needs the onnx-ir package.
BLOCKWISE_RECIPE = "blockwise"
BLOCKWISE_SETTINGS = {"bits": 8, "block_size": 128, "is_symmetric": True, "accuracy_level": 4}
RECIPES[BLOCKWISE_RECIPE] = {"matmul_nbits": BLOCKWISE_SETTINGS}
# The served per-token rewrite with 8-bit weights stored as uint8 (ONNX Runtime's u8 x u8 kernels).
PER_TOKEN_U8_RECIPE = "per-token-u8"
RECIPES[PER_TOKEN_U8_RECIPE] = {"per_token_weight_format": "uint8"}  # per_token_int8.UINT8


@dataclass(frozen=True)
class Graphs:
    """One precision's encoder and decoder."""

    encoder: EncoderRunner
    decoder: DecoderRunner

    @classmethod
    def on_torch(cls, export_dir: Path, precision: str) -> Graphs:
        """The export's torch modules in ``precision`` (``"bf16"``; their weights are written once)."""
        from qwen3_asr_triton.export.quantize import ensure_precision
        from qwen3_asr_triton.torch_runner import TorchDecoderRunner, TorchEncoderRunner

        ensure_precision(export_dir, BF16)
        return cls(TorchEncoderRunner(export_dir, precision), TorchDecoderRunner(export_dir, precision))

    @classmethod
    def load(cls, export_dir: Path, precision: str) -> Graphs:
        """The graphs of ``precision`` in an export directory (``encoder.onnx`` or ``encoder-int8.onnx``...)."""
        suffix = "" if precision == "fp32" else f"-{precision}"
        return cls(
            EncoderRunner(export_dir / onnx_filename(ENCODER_GRAPH + suffix)),
            DecoderRunner(export_dir, graph=onnx_filename(DECODER_GRAPH + suffix)),
        )


@dataclass(frozen=True)
class ClipAccuracy:
    """One clip: the fp32 greedy output and each variant's per-step figures on it."""

    name: str
    prompt_tokens: int
    reference_tokens: list[int]
    finish_reason: str
    candidate_tokens: list[int]  # the candidate's own greedy output (encoder + decoder), for the free-running rate
    steps: dict[str, StepFidelity]

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": len(self.reference_tokens),
            "finish_reason": self.finish_reason,
            "variants": {v: s.summary().as_dict() for v, s in self.steps.items()},
        }


def default_budget(seconds: float) -> int:
    """The recogniser's default generation budget for a segment (pipeline.Recognizer.budget)."""
    return DEFAULT_TOKENS_BASE + math.ceil(DEFAULT_TOKENS_PER_SECOND * seconds)


def clip_accuracy(
    export_dir: Path,
    reference: Graphs,
    candidate: Graphs,
    name: str,
    waveform: np.ndarray,
    max_new_tokens: int | None = None,
    min_new_tokens: int = 0,
) -> ClipAccuracy:
    """Teacher-forced comparison of ``candidate`` with ``reference`` on one 16 kHz clip (one segment).

    Parameters
    ----------
    export_dir : path
        The export (model spec, tokenizer) both precisions belong to.
    reference, candidate : Graphs
        fp32 and the fast precision.
    name : str
        The clip's name, for the report.
    waveform : ``[n]`` float32
        16 kHz mono speech, at most one recogniser segment long.
    max_new_tokens : int, optional
        Cap on the fp32 greedy output (default: the recogniser's budget for the clip's duration).
    min_new_tokens : int
        End tokens are not chosen before this many (more steps to compare where the model stops early).
    """
    spec = ModelSpec.load(export_dir)
    prompts = PromptBuilder(TextTokenizer.from_file(export_dir), spec.audio_token_id)
    segments = prepare_audio(waveform, spec.features, MAX_ASR_SEGMENT_SECONDS, LogMel(spec.features)).segments
    if len(segments) != 1:
        raise ValueError(f"clip {name} makes {len(segments)} segments; give clips of one segment")
    windows = segments[0].windows
    audio = {
        "fp32": reference.encoder.encode_windows(windows.features, windows.frames),
        "fast": candidate.encoder.encode_windows(windows.features, windows.frames),
    }
    prompt = prompts.asr_prompt(windows.total_tokens)
    ids = to_prompt_table_ids(prompt, spec.audio_token_id, spec.text.vocab_size)
    budget = max_new_tokens or default_budget(waveform.size / spec.features.sampling_rate)
    least = min(min_new_tokens, budget)
    exact = greedy_decode(reference.decoder, ids, audio["fp32"], budget, least, want_logprobs=False)
    fast = greedy_decode(candidate.decoder, ids, audio["fast"], budget, least, want_logprobs=False)
    ref_logits = teacher_forced_logits(reference.decoder, ids, audio["fp32"], exact.tokens)
    # Ties aside, teacher forcing on its own greedy tokens reproduces them (before ``least`` an end token was masked).
    mismatch = int(np.sum(np.argmax(ref_logits[least:], axis=-1) != np.asarray(exact.tokens[least:])))
    if mismatch:
        logger.warning("%s: fp32 teacher-forced argmax differs from its greedy tokens at %d steps", name, mismatch)
    steps = {}
    for variant, table in ((DECODER_ONLY, audio["fp32"]), (ENCODER_AND_DECODER, audio["fast"])):
        cand_logits = teacher_forced_logits(candidate.decoder, ids, table, exact.tokens)
        steps[variant] = StepFidelity.compare(ref_logits, cand_logits)
    return ClipAccuracy(name, len(ids), list(exact.tokens), exact.finish_reason, list(fast.tokens), steps)


def recipe_export(export_dir: Path, recipe: str, scratch: Path) -> Path:
    """An export in ``scratch`` whose int8 graphs follow ``recipe`` (:data:`RECIPES`); the rest links to ``export_dir``.

    ``per-token-u8`` is the served rewrite with uint8 weights, ``blockwise`` ONNX Runtime's MatMulNBits; the others
    are ONNX Runtime's dynamic quantisation (``onnxruntime.quantization.quantize_dynamic``) with the settings
    served before the per-token recipe, changed by the recipe's keyword arguments.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from qwen3_asr_triton.export.external_data import save_with_external_data
    from qwen3_asr_triton.export.per_token_int8 import rewrite_graph

    changes = dict(RECIPES[recipe])
    if "weight_type" in changes:
        changes["weight_type"] = QuantType[str(changes["weight_type"])]
    target = scratch / f"{export_dir.name}-{recipe}"
    if (target / onnx_filename(DECODER_GRAPH + "-int8")).is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for f in export_dir.iterdir():
        if "-int8" not in f.name and not (target / f.name).exists():
            (target / f.name).symlink_to(f.resolve())
    for graph in (ENCODER_GRAPH, DECODER_GRAPH):
        if recipe == BLOCKWISE_RECIPE:
            _quantize_blockwise(export_dir / onnx_filename(graph), target / onnx_filename(graph + "-int8"))
            continue
        if recipe == PER_TOKEN_U8_RECIPE:
            weight_format = str(changes["per_token_weight_format"])
            rewrite_graph(export_dir / onnx_filename(graph), target / onnx_filename(graph + "-int8"), weight_format)
            continue
        settings = {
            "weight_type": QuantType.QInt8,
            "per_channel": True,
            "op_types_to_quantize": ["MatMul"],
            "use_external_data_format": True,
            "extra_options": {"MatMulConstBOnly": True},
            **changes,
        }
        raw = target / f".raw-{graph}.onnx"
        quantize_dynamic(str(export_dir / onnx_filename(graph)), str(raw), **settings)
        save_with_external_data(raw, target / onnx_filename(graph + "-int8"))
        for leftover in target.glob(f".raw-{graph}*"):
            leftover.unlink()
    logger.info("quantized %s with recipe %s", export_dir.name, recipe)
    return target


def _quantize_blockwise(src: Path, dst: Path) -> None:
    """``src`` with every constant-weight MatMul as MatMulNBits (:data:`BLOCKWISE_SETTINGS`), written to ``dst``."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from qwen3_asr_triton.export.external_data import save_with_external_data

    quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), **BLOCKWISE_SETTINGS)
    quantizer.process()
    raw = dst.with_name(f".raw-{dst.name}")
    quantizer.model.save_model_to_file(str(raw), use_external_data_format=True)
    save_with_external_data(raw, dst)
    for leftover in dst.parent.glob(f".raw-{dst.name}*"):
        leftover.unlink()


def pooled(results: list[ClipAccuracy]) -> dict[str, FidelitySummary]:
    """Each variant's summary over the steps of every clip."""
    return {v: StepFidelity.concatenate(r.steps[v] for r in results).summary() for v in VARIANTS}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def measure(
    export_dir: Path,
    precision: str,
    clips: list,
    recipe: str = SERVED_RECIPE,
    scratch: Path | None = None,
    max_new_tokens: int | None = None,
    min_new_tokens: int = 0,
) -> dict:
    """Teacher-forced figures of ``precision`` against fp32 on ``clips`` (objects with ``name`` and 16 kHz
    ``waveform``): the JSON-ready body of a report (per clip, pooled, free-running agreement)."""
    from qwen3_asr_triton.export.checkpoint import RANDOM_WEIGHTS_MARKER
    from qwen3_asr_triton.export.onnx_export import STAMP_FILENAME
    from qwen3_asr_triton.export.quantize import ensure_precision

    if precision not in FAST_PRECISIONS:
        raise ValueError(f"precision must be one of {FAST_PRECISIONS}, got {precision!r}")
    # The export's stamp names its checkpoint; random checkpoints carry a marker file.
    checkpoint = Path(json.loads((export_dir / STAMP_FILENAME).read_text())["checkpoint"])
    random_weights = (checkpoint / RANDOM_WEIGHTS_MARKER).is_file()
    t_quant = time.perf_counter()
    if precision == BF16:
        if recipe != SERVED_RECIPE:
            raise ValueError("a recipe changes the int8 quantisation; bf16 has none")
        candidate = Graphs.on_torch(export_dir, BF16)
    else:
        if recipe == SERVED_RECIPE:
            ensure_precision(export_dir, precision)
            graphs_dir = export_dir
        else:
            graphs_dir = recipe_export(export_dir, recipe, scratch or SCRATCH)
        candidate = Graphs.load(graphs_dir, precision)
    quantize_s = time.perf_counter() - t_quant
    reference = Graphs.load(export_dir, "fp32")
    results = []
    for clip in clips:
        result = clip_accuracy(
            export_dir, reference, candidate, clip.name, clip.waveform, max_new_tokens, min_new_tokens
        )
        logger.info("%s: %d steps (%s)", clip.name, len(result.reference_tokens), result.finish_reason)
        results.append(result)
    free = token_agreement(
        [r.reference_tokens for r in results],
        [r.candidate_tokens for r in results],
        ModelSpec.load(export_dir).eos_token_ids,
    )
    return {
        "quantize_s": round(quantize_s, 1),
        "precision": precision,
        "recipe": {"name": recipe, "quantize_dynamic_changes": RECIPES[recipe]},
        "export": export_dir.name,
        "random_weights": random_weights,
        "settings": {
            "pool": len(clips),
            "max_new_tokens": max_new_tokens,
            "min_new_tokens": min_new_tokens,
            "variants": {
                DECODER_ONLY: "candidate decoder on the fp32 encoder's audio embeddings",
                ENCODER_AND_DECODER: "candidate decoder on the candidate encoder's audio embeddings (served)",
            },
        },
        "clips": [r.as_dict() for r in results],
        "pooled": {v: s.as_dict() for v, s in pooled(results).items()},
        "free_running": free.as_dict(),
    }


def precision_to_measure(
    systems: list[str], precisions: list[str], skip: frozenset[tuple[str, str]], fast_knob: str, cpu_fast: str
) -> str | None:
    """The fast precision whose accuracy a benchmark run reports: the one our fast runs compute in.

    ``fast_knob`` is the build's precision for our fast mode (``fast`` resolves to ``cpu_fast``, this
    CPU's choice); None where the run has no fast run of ours.
    """
    if "triton" not in systems or "fast" not in precisions or ("triton", "fast") in skip:
        return None
    chosen = cpu_fast if fast_knob == "fast" else fast_knob
    return chosen if chosen in FAST_PRECISIONS else None


def pooled_table(pooled_figures: dict[str, dict]) -> list[str]:
    """Markdown table lines of a report's ``pooled`` figures (one row per variant)."""
    lines = [
        "| variant | steps | KL mean | KL max | rel. logit err mean | max | top-1 all | top-1, margin > 1 (n) "
        "| top-1, margin > 3 (n) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, s in pooled_figures.items():
        buckets = " | ".join(f"{_fmt(b['agreement'])} ({b['steps']})" for b in s["by_margin"])
        lines.append(
            f"| {variant} | {s['steps']} | {s['kl_mean']:.3g} | {s['kl_max']:.3g} | {s['relative_error_mean']:.3g} "
            f"| {s['relative_error_max']:.3g} | {s['top1_agreement']:.3f} | {buckets} |"
        )
    return lines


def render(report: dict) -> str:
    """The markdown table of a report (pooled over its clips)."""
    lines = [
        f"# Fast mode ({report['precision']}, recipe {report['recipe']['name']}) vs fp32, teacher-forced:"
        f" {report['size']} ({'random' if report['random_weights'] else 'trained'} weights)",
        "",
        f"{len(report['clips'])} clips of {report['settings']['clip_seconds']:g} s, "
        f"{report['pooled'][VARIANTS[0]]['steps']} teacher-forced steps; free-running token agreement "
        f"(encoder+decoder) {report['free_running']['position_rate']:.3f}. See README.md.",
        "",
        *pooled_table(report["pooled"]),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--precision", choices=FAST_PRECISIONS, default="int8")
    parser.add_argument("--clip-seconds", type=float, default=DEFAULT_CLIP_SECONDS)
    parser.add_argument("--pool", type=int, default=DEFAULT_POOL, help="how many of the benchmark's clips")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="cap (default: the recogniser's budget)")
    parser.add_argument("--min-new-tokens", type=int, default=0, help="end tokens masked before this many")
    parser.add_argument("--export", type=Path, default=None, help="an export directory (default: the cached one)")
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=SERVED_RECIPE,
        help="int8 settings: the served ones (export/quantize.py) or a change of them, quantized into --scratch",
    )
    parser.add_argument("--scratch", type=Path, default=SCRATCH)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from perf.clips import clip_pool
    from perf.systems.base import BENCH_CACHE
    from tests.harness import cached_checkpoint, cached_export

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    machine = describe_machine()
    export_dir = args.export or cached_export(cached_checkpoint("asr", size=args.size))
    clips = clip_pool(BENCH_CACHE / "clips", args.clip_seconds, args.pool)
    if args.precision == BF16 and args.recipe != SERVED_RECIPE:
        raise SystemExit("--recipe changes the int8 quantisation; bf16 has none")
    body = measure(
        export_dir, args.precision, clips, args.recipe, args.scratch, args.max_new_tokens, args.min_new_tokens
    )
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    report = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t0, 1),
        "command": f"python perf/fast_accuracy.py {argv_text}".strip(),
        "machine": machine,
        "size": args.size,
        **body,
    }
    report["settings"]["clip_seconds"] = args.clip_seconds
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.size if args.precision == INT8 else f"{args.size}-{args.precision}"
    stem = stem if args.recipe == SERVED_RECIPE else f"{stem}-{args.recipe}"
    (args.output_dir / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    table = render(report)
    (args.output_dir / f"{stem}.md").write_text(table)
    logger.info("wrote %s in %.0f s", args.output_dir / f"{stem}.json", report["duration_s"])
    print(table)


if __name__ == "__main__":
    main()
