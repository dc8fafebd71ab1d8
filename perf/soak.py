"""Soak test: a real server under steady load for N minutes; errors, wrong answers, latency and memory per minute.

    python perf/soak.py --size 0.6b --minutes 60 --concurrency 8 [--out perf/results/soak-0.6b-60min]

``--size`` builds (once, cached) an fp32 cpu repository of a random checkpoint of that size's
dimensions, as ``perf/benchmark.py`` does. Before the load, every clip of the pool is transcribed
alone: that answer is the expected one, and every answer under load is compared with it token for
token (the decoder is exact in fp32 whatever the batch). Each minute records the requests, errors,
wrong answers, p50/p95 latency and the server tree's memory (RSS and PSS); the report says whether
memory stayed flat after warm-up (the last minute's PSS within ``FLAT_TOLERANCE`` of the second's).
Needs the perf extra (psutil): ``EXTRAS=export,serve,gateway,test,perf ./scripts/setup_env.sh``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf.clips import clip_pool  # noqa: E402
from perf.machine import describe_machine  # noqa: E402
from perf.procmem import tree_memory  # noqa: E402
from perf.systems.base import BENCH_CACHE, SystemConfig, parse_knobs  # noqa: E402
from perf.systems.triton import TritonSystem  # noqa: E402
from tests.triton_requests import transcribe  # noqa: E402

logger = logging.getLogger("soak")

# Flat memory: the last minute's PSS may exceed the second minute's (after warm-up) by this fraction.
FLAT_TOLERANCE = 0.05
# Output budget per request: enough for the clip's transcript on trained weights; random weights stop early.
MAX_NEW_TOKENS = 48
# Clip length (s) and pool size: a mix of requests that batch together in the encoder and decoder.
CLIP_SECONDS = 5.0
POOL = 8


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))], 3)


class Minute:
    """What one minute of load saw."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.wrong = 0

    def summary(self, index: int, memory: tuple[float, float, int]) -> dict[str, object]:
        rss, pss, processes = memory
        return {
            "minute": index,
            "requests": len(self.latencies) + len(self.errors),
            "errors": len(self.errors),
            "wrong_answers": self.wrong,
            "p50_s": percentile(self.latencies, 50),
            "p95_s": percentile(self.latencies, 95),
            "rss_mib": round(rss, 1),
            "pss_mib": round(pss, 1),
            "processes": processes,
            "first_errors": self.errors[:3],
        }


def run_folders(kind: str, args: argparse.Namespace) -> tuple[Path, Path]:
    """The results folder (``args.out`` or perf/results/KIND-LABEL-Mmin) and a fresh log folder, both made."""
    label = args.size or args.model_repository.name
    out = args.out or REPO / "perf" / "results" / f"{kind}-{label}-{args.minutes:g}min"
    out.mkdir(parents=True, exist_ok=True)
    log_dir = BENCH_CACHE / "logs" / f"{kind}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    log_dir.mkdir(parents=True, exist_ok=True)
    return out, log_dir


def build(
    size: str, concurrency: int, log_dir: Path, precision: str = "fp32", knobs: dict[str, str] | None = None
) -> Path:
    """The cached repository of ``size`` (``precision``: the benchmark's fp32 or fast), built in a child process
    (the export's memory, 4 GB at 0.6B dimensions, would otherwise stay with the load generator for the whole soak).

    ``knobs``: build_engines.sh knobs without their dashes (``{"ort-spin-wait": "false"}``), as the
    benchmark's ``--triton-knob``.
    """
    flags = ["--build-only", "--size", size, "--concurrency", str(concurrency), "--log-dir", str(log_dir)]
    flags += ["--precision", precision]
    for knob, value in sorted((knobs or {}).items()):
        flags += ["--triton-knob", f"{knob}={value}"]
    done = subprocess.run(
        [sys.executable, __file__, *flags],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(done.stdout.strip().splitlines()[-1])


def build_here(
    size: str, concurrency: int, log_dir: Path, precision: str = "fp32", knobs: dict[str, str] | None = None
) -> Path:
    from tests.harness import cached_checkpoint

    config = SystemConfig(cached_checkpoint("asr", size=size), size, precision, concurrency, log_dir, dict(knobs or {}))
    system = TritonSystem(config)
    system.prepare()
    return system.repository


def soak(url: str, root_pid: int, clips, expected: dict[str, list[int]], minutes: float, concurrency: int) -> list:
    """Send requests from ``concurrency`` threads for ``minutes``; one summary per minute."""
    rows: list[dict] = []
    current = Minute()
    lock = threading.Lock()
    stop = threading.Event()

    def worker(offset: int) -> None:
        nonlocal current
        i = offset
        while not stop.is_set():
            clip = clips[i % len(clips)]
            i += concurrency
            started = time.monotonic()
            try:
                out = transcribe(url, audio=clip.wav, max_new_tokens=MAX_NEW_TOKENS)
                ok = out["TOKEN_IDS"].tolist() == expected[clip.name]
                with lock:
                    current.latencies.append(time.monotonic() - started)
                    current.wrong += 0 if ok else 1
            except Exception as exc:  # counted, and the soak goes on
                with lock:
                    current.errors.append(str(exc)[:200])

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    end = time.monotonic() + minutes * 60
    for thread in threads:
        thread.start()
    index = 0
    while time.monotonic() < end:
        time.sleep(max(0.0, min(60.0, end - time.monotonic())))
        index += 1
        with lock:
            finished, current = current, Minute()
        rows.append(finished.summary(index, tree_memory(root_pid)))
        logger.info("%s", json.dumps(rows[-1]))
    stop.set()
    for thread in threads:
        thread.join(timeout=600)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--size", choices=("tiny", "0.6b", "1.7b"), help="build a repository of these dimensions")
    source.add_argument("--model-repository", type=Path, help="serve this built cpu repository")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default perf/results/soak-SIZE)")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=("fp32", "fast"), default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--triton-knob", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build_only:
        print(build_here(args.size, args.concurrency, args.log_dir, args.precision, parse_knobs(args.triton_knob)))
        return 0
    if args.minutes <= 0 or args.concurrency < 1:
        parser.error("--minutes must be positive and --concurrency at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out, log_dir = run_folders("soak", args)
    repository = args.model_repository or build(args.size, args.concurrency, log_dir)
    clips = clip_pool(BENCH_CACHE / "clips", CLIP_SECONDS, POOL)

    from tests.harness import start_server, stop_server

    started = datetime.now(timezone.utc)
    server = start_server(repository, log_dir / "server.log")
    try:
        expected = {
            c.name: transcribe(server.grpc_url, audio=c.wav, max_new_tokens=MAX_NEW_TOKENS)["TOKEN_IDS"].tolist()
            for c in clips
        }
        rows = soak(server.grpc_url, server.process.pid, clips, expected, args.minutes, args.concurrency)
    finally:
        stop_server(server)
    settled, last = rows[min(1, len(rows) - 1)]["pss_mib"], rows[-1]["pss_mib"]
    report = {
        "started": started.isoformat(timespec="seconds"),
        "command": "python perf/soak.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine(),
        "repository": repository.name,
        "concurrency": args.concurrency,
        "max_new_tokens": MAX_NEW_TOKENS,
        "clips": [c.name for c in clips],
        "totals": {
            "requests": sum(r["requests"] for r in rows),
            "errors": sum(r["errors"] for r in rows),
            "wrong_answers": sum(r["wrong_answers"] for r in rows),
            "pss_after_warmup_mib": settled,
            "pss_last_minute_mib": last,
            "memory_flat": bool(last <= settled * (1 + FLAT_TOLERANCE)),
        },
        "minutes": rows,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("totals: %s", json.dumps(report["totals"]))
    ok = report["totals"]["errors"] == 0 and report["totals"]["wrong_answers"] == 0 and report["totals"]["memory_flat"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
