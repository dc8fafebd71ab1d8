"""What the gRPC guard costs: the same Triton process reached through the guard and on its own port, one run.

    python perf/grpc_guard_bench.py                 # tiny dims, c1 and c8, 4 ABBA rounds (~5 min)
    python perf/grpc_guard_bench.py --repeats 2 --requests-load 64

One server (``scripts/serve_cpu.sh``, started by :class:`perf.systems.triton.TritonSystem`) serves the
random checkpoint (``--size``); two senders send the same clips (:func:`perf.clips.clip_pool`) with
one ``AsyncQwen3ASRClient`` each and the server's default token budget:

1. ``direct``: Triton's own gRPC endpoint (loopback, ``--triton-grpc-port``);
2. ``guard``: the clients' port, served by ``qwen3-asr serve-grpc``, which checks each message and
   forwards its bytes to that same endpoint.

The two take turns (ABBA over ``--repeats`` rounds) at concurrency 1 (latency) and ``--load-concurrency``
(throughput), as in ``perf/gateway_bench.py``, whose sender and measuring code this reuses. Every answer
through the guard must equal the direct one. The guard's resident memory and CPU time are read from
/proc before and after. Writes ``results.json`` and ``README.md`` into ``--output-dir``.
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

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.aio import LoopThread  # noqa: E402
from perf.clips import clip_pool  # noqa: E402
from perf.gateway_bench import (  # noqa: E402
    DEFAULT_CLIP_SECONDS,
    DEFAULT_LOAD_CONCURRENCY,
    DEFAULT_POOL,
    DEFAULT_REPEATS,
    DEFAULT_REQUESTS_C1,
    DEFAULT_REQUESTS_LOAD,
    LATENCY_CONCURRENCY,
    MS_PER_S,
    SIZES,
    DirectSender,
    default_budget,
    measure,
    warm_up,
)
from perf.machine import describe_cpu, describe_machine  # noqa: E402
from perf.systems.base import BENCH_CACHE, SystemConfig  # noqa: E402

logger = logging.getLogger("grpc_guard_bench")

DEFAULT_OUTPUT = REPO / "perf" / "results" / "grpc-guard"
# Clock ticks per second of /proc/<pid>/stat's utime and stime (Linux's USER_HZ, 100 on every platform).
USER_HZ = 100
LATENCY_KEYS = ("p50_s", "p90_s", "mean_s")


def guard_usage(server) -> dict[str, float]:
    """The guard process's resident memory (MiB) and CPU seconds so far, from /proc."""
    (pid,) = server.guard_pids()
    rss_kib = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS")
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_ticks = int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of the whole line)
    return {"rss_mib": rss_kib / 1024, "cpu_s": cpu_ticks / USER_HZ}


def compare(levels: dict[str, list[dict]]) -> list[dict]:
    """Per level: guard / direct ratios and guard - direct differences in milliseconds."""
    rows = []
    for direct, guard in zip(levels["direct"], levels["guard"]):
        row = {"concurrency": direct["concurrency"]}
        for key in LATENCY_KEYS:
            row[f"{key}_ratio"] = guard[key] / direct[key] if direct[key] else None
            row[f"overhead_ms_{key[:-2]}"] = (guard[key] - direct[key]) * MS_PER_S
        row["audio_per_wall_ratio"] = guard["audio_per_wall"] / direct["audio_per_wall"]
        row["requests_per_s_ratio"] = guard["requests_per_s"] / direct["requests_per_s"]
        rows.append(row)
    return rows


def render(results: dict, out: Path) -> Path:
    """README.md of one run: the table of both systems and the ratios."""
    machine = results["machine"]
    flags = ", ".join(flag for flag, present in machine.get("flags", {}).items() if present) or "-"
    lines = [
        "# gRPC guard: its cost against Triton's own gRPC port",
        "",
        f"Run {results['started']} with `{results['command']}` ({results['duration_s'] / 60:.1f} min).",
        f"Machine: {describe_cpu(machine)}, {machine.get('usable_cpus', '?')} usable CPUs, flags {flags}.",
        f"Checkpoint `{results['settings']['checkpoint']}` ({results['settings']['size']} dims), "
        f"{results['settings']['pool']} clips of {results['settings']['clip_seconds']:g} s, "
        f"{results['settings']['repeats']} rounds, direct and guard alternating (ABBA).",
        "",
        "| concurrency | system | requests | errors | p50 ms | p90 ms | audio s / wall s | requests / s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("direct", "guard"):
        for level in results["levels"][name]:
            lines.append(
                f"| {level['concurrency']} | {name} | {level['ok']} | {level['error_count']} | "
                f"{level['p50_s'] * MS_PER_S:.1f} | {level['p90_s'] * MS_PER_S:.1f} | "
                f"{level['audio_per_wall']:.2f} | {level['requests_per_s']:.2f} |"
            )
    lines += [
        "",
        "| concurrency | p50 guard / direct | p50 guard - direct | throughput guard / direct |",
        "|---|---|---|---|",
    ]
    for row in results["comparisons"]:
        lines.append(
            f"| {row['concurrency']} | {row['p50_s_ratio']:.3f}x | {row['overhead_ms_p50']:+.1f} ms | "
            f"{row['audio_per_wall_ratio']:.3f}x |"
        )
    usage = results["guard_usage"]
    cpu_s = usage["after"]["cpu_s"] - usage["before"]["cpu_s"]
    timed = results["timed_requests_through_guard"]
    lines += [
        "",
        f"Every answer through the guard equal to the direct one: {results['same_answers']}.",
        f"The guard process: {usage['before']['rss_mib']:.0f} MiB resident before the timed rounds, "
        f"{usage['after']['rss_mib']:.0f} MiB after; {cpu_s:.1f} CPU s over {timed} timed requests "
        f"({cpu_s / max(timed, 1) * MS_PER_S:.2f} ms per request).",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--pool", type=int, default=DEFAULT_POOL)
    parser.add_argument("--clip-seconds", type=float, default=DEFAULT_CLIP_SECONDS)
    parser.add_argument("--load-concurrency", type=int, default=DEFAULT_LOAD_CONCURRENCY)
    parser.add_argument("--requests-c1", type=int, default=DEFAULT_REQUESTS_C1)
    parser.add_argument("--requests-load", type=int, default=DEFAULT_REQUESTS_LOAD)
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if min(args.pool, args.requests_c1, args.requests_load, args.repeats, args.load_concurrency) < 1:
        parser.error("pool, requests, repeats and concurrency must be >= 1")
    args.levels = sorted({LATENCY_CONCURRENCY, args.load_concurrency})
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run both senders against one server; write results.json and README.md; return the results."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = datetime.now(timezone.utc)
    log_dir = BENCH_CACHE / "logs" / f"grpc-guard-{started.strftime('%Y%m%d-%H%M%S')}"
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    from perf.systems.triton import TritonSystem
    from tests.harness import cached_checkpoint

    clips = clip_pool(BENCH_CACHE / "clips", args.clip_seconds, args.pool)
    checkpoint = cached_checkpoint("asr", size=args.size)
    budget = default_budget(args.clip_seconds)
    system = TritonSystem(SystemConfig(checkpoint, args.size, "fp32", args.load_concurrency, log_dir, {}))
    loop = LoopThread("guard-bench-clients")
    senders = {}
    try:
        system.prepare()
        system.start()
        server = system.server
        senders = {
            "direct": DirectSender(loop, server.triton_grpc_url, budget),
            "guard": DirectSender(loop, server.grpc_url, budget),
        }
        for sender in senders.values():
            warm_up(sender, clips, args.levels)
        same = all(
            senders["guard"].transcription(clip).token_ids == senders["direct"].transcription(clip).token_ids
            for clip in clips
        )
        before = guard_usage(server)
        levels = measure(senders, clips, args)
        after = guard_usage(server)
        describe = system.describe()
    finally:
        for sender in senders.values():
            sender.close()
        loop.close()
        system.stop()
    timed = sum(level["requests"] for level in levels["guard"])
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    results = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": time.perf_counter() - t0,
        "command": f"python perf/grpc_guard_bench.py {argv_text}".strip(),
        "machine": describe_machine(),
        "settings": {
            "size": args.size,
            "checkpoint": checkpoint.name,
            "levels": args.levels,
            "requests_c1": args.requests_c1,
            "requests_load": args.requests_load,
            "repeats": args.repeats,
            "clip_seconds": args.clip_seconds,
            "pool": args.pool,
            "token_budget": budget,
            "server": describe,
        },
        "same_answers": same,
        "guard_usage": {"before": before, "after": after},
        "timed_requests_through_guard": timed,
        "levels": {
            name: [{k: v for k, v in level.items() if k not in ("latencies_s", "tokens")} for level in data]
            for name, data in levels.items()
        },
        "comparisons": compare(levels),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report = render(results, args.output_dir)
    print(report.read_text())
    return results


if __name__ == "__main__":
    main()
