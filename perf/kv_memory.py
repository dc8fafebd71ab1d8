"""Peak memory and wall time of the CPU decoder's KV cache, in process (no server).

Two cases, each in a fresh subprocess (so one case's peak RSS is not another's), on an exported
random checkpoint (``tiny`` or ``0.6b``):

``long``
    one long segment's prompt (``--audio-seconds`` of audio at 12.5 audio tokens a second: a
    20-minute segment is 15,000 rows of random audio embeddings) prefilled in chunks of
    ``DEFAULT_PREFILL_CHUNK`` tokens, then 8 decode steps (:func:`greedy_decode`).
``concurrent``
    16 prompts of 5 s (62 audio rows, ~80 tokens) through the in-flight scheduler (its ``step``
    called in this thread): they are prefilled, join, decode 32 steps together and leave one by
    one (request ``i`` generates ``32 + i`` tokens; no end token).

Peak RSS is sampled every 20 ms in a thread (psutil) and read from ``ru_maxrss``; the baseline
is the RSS after the runner is loaded, so ``peak - baseline`` is what decoding added.

Usage::

    .venv/bin/python perf/kv_memory.py --label before --sizes tiny 0.6b
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.machine import describe_machine  # noqa: E402

RESULTS = REPO / "perf" / "results" / "kv-memory"
AUDIO_TOKENS_PER_S = 12.5
CONCURRENCY = 16
CONCURRENT_STEPS = 32
LONG_STEPS = 8
MIB = 1024 * 1024


def export_dir(size: str) -> Path:
    """The cached export of a random ``size`` checkpoint (the newest under .cache/onnx, else built)."""
    from tests.harness import CACHE, cached_checkpoint, cached_export

    # onnx_export's STAMP_FILENAME, spelled here: that module imports torch, which would count in the measured RSS.
    found = sorted((CACHE / "onnx").glob(f"{size}-asr-hf-*/export_stamp.json"), key=lambda p: p.stat().st_mtime)
    if found:
        return found[-1].parent
    return cached_export(cached_checkpoint("asr", size=size))


class PeakRss:
    """Samples this process's RSS every ``interval`` seconds in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self._process = psutil.Process()
        self.interval = interval
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def prompt_builder(export: Path, spec):
    """The recogniser's prompts from the measured export's own tokenizer and audio token id."""
    from qwen3_asr_triton.prompt import PromptBuilder
    from qwen3_asr_triton.tokenizer import TextTokenizer

    return PromptBuilder(TextTokenizer.from_file(export), spec.audio_token_id)


def prompt(spec, builder, audio_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The recognition prompt without context (system turn, user turn with ``<|audio_start|>``, the audio,
    ``<|audio_end|>``, end of turn, assistant turn) in prompt-table ids (audio as ``vocab_size + k``), and
    ``[audio_rows, hidden]`` random audio rows."""
    from qwen3_asr_triton.prompt import to_prompt_table_ids

    table = np.random.default_rng(seed).standard_normal((audio_rows, spec.text.hidden_size), dtype=np.float32)
    ids = to_prompt_table_ids(builder.asr_prompt(audio_rows), spec.audio_token_id, spec.text.vocab_size)
    return ids.astype(np.int64), table


def run_long(runner, builder, audio_seconds: float) -> dict:
    from qwen3_asr_triton.decoding.decoder import greedy_decode

    ids, table = prompt(runner.spec, builder, round(audio_seconds * AUDIO_TOKENS_PER_S), 0)
    result = greedy_decode(runner, ids, table, max_new_tokens=LONG_STEPS + 1, eos_ids=frozenset())
    return {"prompt_tokens": int(ids.size), "generated": len(result.tokens)}


def run_concurrent(runner, builder) -> dict:
    from qwen3_asr_triton.decoding.scheduler import GenerationRequest, InflightScheduler, SchedulerConfig

    config = SchedulerConfig(max_running_sequences=CONCURRENCY, max_kv_tokens=1 << 30, prefill_chunk=512)
    sched = InflightScheduler(runner, config)
    done: dict = {}
    for i in range(CONCURRENCY):
        ids, table = prompt(runner.spec, builder, round(5 * AUDIO_TOKENS_PER_S), i)
        sched.submit(
            GenerationRequest(
                key=i,
                prompt_ids=ids,
                prompt_table=table,
                max_new_tokens=CONCURRENT_STEPS + i,
                eos_ids=frozenset(),
                on_done=lambda req, seq, err: done.__setitem__(req.key, err or len(seq.tokens)),
            )
        )
    while len(done) < CONCURRENCY:
        sched.step()
    errors = [v for v in done.values() if isinstance(v, Exception)]
    if errors:
        raise errors[0]
    stats = sched.stats
    return {"prompt_tokens": int(ids.size), "generated": sum(done.values()), "max_running": stats.max_running}


def run_case(size: str, case: str, audio_seconds: float, trace: bool = False) -> dict:
    """One case in this process: load the runner, then measure the case alone.

    With ``trace``, tracemalloc also records the peak of Python's and numpy's own allocations (the
    KV buffers and their copies, not ONNX Runtime's arena) as ``numpy_peak_mib``.
    """
    from qwen3_asr_triton.decoding.decoder import DecoderRunner

    export = export_dir(size)
    runner = DecoderRunner(export)
    builder = prompt_builder(export, runner.spec)
    if case == "concurrent":  # a warm-up call, so ONNX Runtime's first-run allocations are in the baseline
        ids, table = prompt(runner.spec, builder, 4, 99)
        from qwen3_asr_triton.decoding.decoder import greedy_decode

        greedy_decode(runner, ids, table, max_new_tokens=2, eos_ids=frozenset())
    baseline = PeakRss()._process.memory_info().rss
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    with PeakRss() as rss:
        info = run_long(runner, builder, audio_seconds) if case == "long" else run_concurrent(runner, builder)
    wall = time.perf_counter() - start
    if trace:
        info["numpy_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / MIB, 1)
        info["kv_mib"] = round(info["prompt_tokens"] * runner.spec.text.kv_bytes_per_token / MIB, 1)
        tracemalloc.stop()
    t = runner.spec.text
    return {
        "size": size,
        "case": case,
        "audio_seconds": audio_seconds if case == "long" else 5.0,
        **info,
        "wall_s": round(wall, 2),
        "baseline_rss_mib": round(baseline / MIB, 1),
        "peak_rss_mib": round(rss.peak / MIB, 1),
        "added_rss_mib": round((rss.peak - baseline) / MIB, 1),
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "kv_mib_per_1k_tokens": round(1000 * t.kv_bytes_per_token / MIB, 1),
    }


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "qwen3_asr_triton/decoding"], cwd=REPO, capture_output=True, text=True
    )
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def table(results: dict) -> str:
    """Markdown table: one row per size and case, each run's peak RSS (added by decoding) and wall time."""
    runs = results["runs"]
    labels = list(runs)
    head = "| size | case | prompt tokens |" + "".join(
        f" {label} peak RSS MiB (added) | {label} wall s |" for label in labels
    )
    lines = [head, "|" + "---|" * (3 + 2 * len(labels))]
    keys = []
    for run in runs.values():
        keys += [(c["size"], c["case"]) for c in run["cases"] if (c["size"], c["case"]) not in keys]
    for size, case in keys:
        cells = [size, case, ""]
        for label in labels:
            row = next((c for c in runs[label]["cases"] if (c["size"], c["case"]) == (size, case)), None)
            if row is None or "error" in row:
                cells += ["-", "-"]
                continue
            cells[2] = str(row["prompt_tokens"]) + (f" ({row['audio_seconds']:.0f} s)" if case == "long" else " x 16")
            peak = f"{row['peak_rss_mib']:.0f} ({row['added_rss_mib']:.0f})"
            if "numpy_peak_mib" in row:
                peak += f", numpy peak {row['numpy_peak_mib']:.0f}, KV {row['kv_mib']:.0f}"
            cells += [peak, f"{row['wall_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", default="run", help="name of this run in results.json (e.g. before, after)")
    p.add_argument("--sizes", nargs="+", default=["tiny", "0.6b"])
    p.add_argument("--cases", nargs="+", default=["long", "concurrent"])
    p.add_argument("--audio-seconds", type=float, default=1200.0, help="the long case's segment")
    p.add_argument("--long-seconds", nargs="*", default=[], help="per size, e.g. 0.6b=600 (overrides)")
    p.add_argument("--trace", action="store_true", help="also the peak of numpy's allocations (tracemalloc)")
    p.add_argument("--table", action="store_true", help="print the table of --out's runs and exit")
    p.add_argument("--one", nargs=2, metavar=("SIZE", "CASE"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS / "results.json")
    p.add_argument("--commit", help="the commit this code is (default: git HEAD here, +dirty if decoding/ changed)")
    args = p.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())), end="")
        return
    if args.one:
        print(json.dumps(run_case(*args.one, args.audio_seconds, args.trace)))
        return
    seconds = {k: float(v) for k, v in (s.split("=") for s in args.long_seconds)}
    rows = []
    for size in args.sizes:
        for case in args.cases:
            audio = seconds.get(size, args.audio_seconds)
            cmd = [sys.executable, __file__, "--one", size, case, "--audio-seconds", str(audio)]
            cmd += ["--trace"] if args.trace else []
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                rows.append({"size": size, "case": case, "error": out.stderr.strip().splitlines()[-1:]})
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": {}}
    results["runs"][args.label] = {"commit": args.commit or commit(), "machine": describe_machine(), "cases": rows}
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
