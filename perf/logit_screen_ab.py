"""The exact decoder with and without its int8 logit screen, paired, on real speech prompts.

    python perf/logit_screen_ab.py --sizes 0.6b 1.7b --batch 1 8 --steps 40 \\
        --output-dir perf/results/logit-screen-ab

Both runners load the same fp32 export (:class:`DecoderRunner` with ``screen`` on and off); each
batch size prefills the same espeak-ng clips (perf/clips.py, 5 s) into one running batch per
runner, then the two batches step in turn, one step each, ``--steps`` times, every sequence forced
to keep generating. Alternating step by step, both see the same host (this shared machine's memory
bandwidth drifts by tens of percent within minutes), so the paired ratios measure the screen
alone. It checks that both produce the same tokens and reports the median step times, the median
of the per-pair ratios, and the screen's candidate rows per batch row. Writes ``report.md`` and
``results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.clips import clip_pool  # noqa: E402
from perf.machine import describe_cpu, describe_machine  # noqa: E402
from qwen3_asr_triton.decoding.decoder import DecodeBatch, DecoderRunner, Sequence  # noqa: E402
from qwen3_asr_triton.features import LogMel  # noqa: E402
from qwen3_asr_triton.model_spec import ModelSpec  # noqa: E402
from qwen3_asr_triton.pipeline import prepare_audio  # noqa: E402
from qwen3_asr_triton.prompt import PromptBuilder, to_prompt_table_ids  # noqa: E402
from qwen3_asr_triton.segmentation import MAX_ASR_SEGMENT_SECONDS  # noqa: E402
from qwen3_asr_triton.sessions import EncoderRunner  # noqa: E402
from qwen3_asr_triton.tokenizer import TextTokenizer  # noqa: E402

logger = logging.getLogger("logit_screen_ab")

SIZES = ("tiny", "0.6b", "1.7b")
# The benchmark's clip length (perf/benchmark.py): prompts of ~80 tokens.
CLIP_SECONDS = 5.0
CLIPS_DIR = REPO / ".cache" / "bench" / "clips"
# Untimed steps first (page faults of the embedding rows the screen recomputes, ONNX Runtime's first runs).
WARMUP_STEPS = 3


def prompts(export: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` clips' prompts in prompt-table form and their audio embeddings (fp32 encoder)."""
    spec = ModelSpec.load(export)
    builder = PromptBuilder(TextTokenizer.from_file(export), spec.audio_token_id)
    encoder = EncoderRunner(export / "encoder.onnx")
    out = []
    for clip in clip_pool(CLIPS_DIR, CLIP_SECONDS, count):
        windows = prepare_audio(clip.waveform, spec.features, MAX_ASR_SEGMENT_SECONDS, LogMel(spec.features))
        w = windows.segments[0].windows
        ids = to_prompt_table_ids(builder.asr_prompt(w.total_tokens), spec.audio_token_id, spec.text.vocab_size)
        out.append((ids, encoder.encode_windows(w.features, w.frames)))
    return out


def running_batch(runner: DecoderRunner, inputs: list[tuple[np.ndarray, np.ndarray]], steps: int) -> DecodeBatch:
    """The prompts prefilled into one running batch, each sequence forced to run ``steps`` more tokens."""
    batch = DecodeBatch(runner)
    eos = frozenset(runner.spec.eos_token_ids)
    for key, (ids, table) in enumerate(inputs):
        seq = Sequence(key=key, max_new_tokens=steps + 1, eos_ids=eos, min_new_tokens=steps + 1)
        batch.prefill(seq, runner.embed_prompt(ids, table), prompt_ids=ids)
    return batch


def measure(export: Path, batch_size: int, steps: int) -> dict:
    """Paired step times of the screened and the plain runner at one batch size."""
    inputs = prompts(export, batch_size)
    runners = {"screen": DecoderRunner(export, screen=True), "plain": DecoderRunner(export, screen=False)}
    if runners["screen"].screen is None:
        raise SystemExit(f"{export} has no logit screen (or its integer products are inexact on this CPU)")
    batches = {name: running_batch(r, inputs, WARMUP_STEPS + steps) for name, r in runners.items()}
    times: dict[str, list[float]] = {name: [] for name in runners}
    stats = runners["screen"].screen.stats
    for i in range(WARMUP_STEPS + steps):
        if i == WARMUP_STEPS:
            stats.rows = stats.recomputed = stats.fallbacks = 0
        for name, batch in batches.items():
            start = time.perf_counter()
            batch.step()
            if i >= WARMUP_STEPS:
                times[name].append(time.perf_counter() - start)
    tokens = {name: [s.tokens for s in batch.sequences] for name, batch in batches.items()}
    ratios = np.array(times["plain"]) / np.array(times["screen"])
    return {
        "batch": batch_size,
        "steps": steps,
        "screen_ms": float(np.median(times["screen"])) * 1e3,
        "plain_ms": float(np.median(times["plain"])) * 1e3,
        "paired_speedup_median": float(np.median(ratios)),
        "paired_speedup_p10_p90": [float(np.percentile(ratios, 10)), float(np.percentile(ratios, 90))],
        "same_tokens": tokens["screen"] == tokens["plain"],
        "candidates_per_row": stats.mean_candidates,
        "fallbacks": stats.fallbacks,
        "rows": stats.rows,
    }


def render(report: dict) -> str:
    """The report as markdown."""
    m = report["machine"]
    flags = ", ".join(f for f, on in m["flags"].items() if on) or "none of interest"
    lines = [
        "# The exact decoder with and without its int8 logit screen (paired)",
        "",
        f"Run {report['started']}: `{report['command']}`",
        "",
        f"CPU: {describe_cpu(m)}, {m['usable_cpus']} usable cores; flags: {flags}. Random checkpoints of the",
        "real dimensions; prompts from 5 s espeak-ng clips; every sequence forced to keep generating. The",
        "two runners step in turn, so both see the same host; speedup = plain step / screened step.",
        "",
        "| size | batch | screened step ms | plain step ms | paired speedup (median) | p10-p90 | same tokens "
        "| candidate rows per batch row | fallbacks |",
        "|---|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for size, levels in report["sizes"].items():
        for r in levels:
            low, high = r["paired_speedup_p10_p90"]
            same = "yes" if r["same_tokens"] else "**no**"
            lines.append(
                f"| {size} | {r['batch']} | {r['screen_ms']:.1f} | {r['plain_ms']:.1f} "
                f"| {r['paired_speedup_median']:.3f}x | {low:.2f}-{high:.2f} | {same} "
                f"| {r['candidates_per_row']:.0f} | {r['fallbacks']} of {r['rows']} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", choices=SIZES, default=["0.6b"], help="checkpoint dimensions")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="running sequences")
    p.add_argument("--steps", type=int, default=40, help="timed step pairs per batch size")
    p.add_argument("--output-dir", type=Path, help="write report.md and results.json here")
    args = p.parse_args(argv)
    if args.steps < 1 or min(args.batch) < 1:
        p.error("--steps and --batch must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    from tests.harness import cached_checkpoint, cached_export

    report: dict = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python perf/logit_screen_ab.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine(),
        "sizes": {},
    }
    for size in args.sizes:
        export = cached_export(cached_checkpoint("asr", size=size))
        report["sizes"][size] = []
        for batch in args.batch:
            logger.info("%s, batch %d", size, batch)
            report["sizes"][size].append(measure(export, batch, args.steps))
            logger.info("%s", report["sizes"][size][-1])
    text = render(report)
    print(text)
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "report.md").write_text(text)
        (args.output_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
