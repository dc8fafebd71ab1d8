"""The benchmark's markdown report and PNG plots, from its results JSON.

    python perf/report.py perf/results/results.json     # re-render report.md and plots from saved numbers

Ratios are written so that above 1 always means *ours is better*: throughput ours / peer,
latency and time to first token peer / ours, memory peer / ours.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script (re-rendering a results.json)
    sys.path.insert(0, str(REPO))

from perf.machine import describe_cpu  # noqa: E402
from qwen3_asr_triton.cpu_precision import BF16_FLAGS  # noqa: E402

logger = logging.getLogger(__name__)

OURS = "triton"
# Our precision -> the peers' rows it is compared with (equal precision; the reference is fp32 only).
PEERS = {"fp32": (("vllm", "fp32"), ("transformers", "fp32")), "fast": (("vllm", "fast"), ("transformers", "fp32"))}
REPORT_NAME = "report.md"
# One colour per system in every plot (matplotlib's default cycle).
SYSTEM_COLORS = {"triton": "C0", "vllm": "C1", "transformers": "C2"}
# Two systems' bandwidth probes further apart than this (relative to the lower) make memory-bound
# ratios (concurrency 1) a statement about the host as much as about the systems: the report says so.
BANDWIDTH_SPREAD_NOTE = 0.05


def _fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}{unit}"


def _ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den == 0:
        return "–"
    return f"{num / den:.2f}x"


def _runs(results: dict, size: str, precision: str) -> list[dict]:
    return [r for r in results["runs"] if r["size"] == size and r["precision"] == precision]


def _find(results: dict, size: str, system: str, precision: str) -> dict | None:
    for run in results["runs"]:
        if run["size"] == size and run["system"] == system and run["precision"] == precision:
            return run
    return None


def _level(run: dict | None, concurrency: int) -> dict | None:
    if run is None or run.get("status") != "ok":
        return None
    return next((lv for lv in run["levels"] if lv["concurrency"] == concurrency), None)


def _get(level: dict | None, part: str, key: str) -> float | None:
    if level is None or level.get(part) is None:
        return None
    return level[part].get(key)


def _peak_mib(run: dict | None) -> float | None:
    if run is None or run.get("status") != "ok":
        return None
    return run["memory"]["rss_mib"]


def machine_section(machine: dict) -> list[str]:
    """Markdown lines describing the machine."""
    flags = machine.get("flags", {})
    present = ", ".join(f for f, on in flags.items() if on) or "none"
    absent = ", ".join(f for f, on in flags.items() if not on) or "none"
    pkgs = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items() if v)
    load = machine.get("load_average_at_start")
    return [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {describe_cpu(machine)} |",
        f"| logical CPUs (usable) | {machine.get('logical_cpus')} ({machine.get('usable_cpus')}) |",
        f"| vector / matrix extensions present | {present} |",
        f"| absent | {absent} |",
        f"| fast mode here (`--precision fast`) | {machine.get('fast_precision', '–')} |",
        f"| memory | {_fmt(machine.get('memory_total_gib'), 1, ' GiB')} total, "
        f"{_fmt(machine.get('memory_available_gib'), 1, ' GiB')} available at start |",
        f"| load average at start | {', '.join(f'{x:.2f}' for x in load) if load else '–'} |",
        f"| kernel, Python | {machine.get('kernel')}, {machine.get('python')} |",
        f"| packages (benchmark venv) | {pkgs} |",
        "",
        *_bf16_note(flags),
    ]


def _bf16_note(flags: dict[str, bool]) -> list[str]:
    """Where the CPU has no bf16 instructions: what that means for the bf16 rows (nothing otherwise)."""
    if not flags or any(flags.get(flag) for flag in BF16_FLAGS):
        return []
    return [
        f"No bf16-capable CPU in this run (none of {', '.join(BF16_FLAGS)}): vLLM's bf16 runs emulated here, so "
        "ratios against it hold for CPUs without bf16 instructions only; our bf16 path, which `--precision fast` "
        "serves on CPUs with them, is tested for correctness here (tests/test_bf16_server.py, "
        "tests/test_torch_runner.py) and not timed in this report.",
        "",
    ]


def results_table(results: dict, size: str, precision: str) -> list[str]:
    """Per system and concurrency: throughput, TTFT, latency percentiles, peak memory."""
    lines = [
        "| system | concurrency | audio s / wall s | tokens / s | TTFT p50 (1-token request) | "
        "latency p50 | latency p95 | vLLM stream first chunk p50 | peak RSS (PSS) MiB | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in _runs(results, size, precision):
        if run["status"] != "ok":
            lines.append(f"| {run['label']} | – | {run['status']} | | | | | | | |")
            continue
        mem = run["memory"]
        for lv in run["levels"]:
            load, ttft, stream = lv["load"], lv.get("ttft"), lv.get("stream")
            errors = sum(len(part["errors"]) for part in (load, ttft, stream) if part)
            lines.append(
                f"| {run['label']} | {lv['concurrency']} | {_fmt(load['audio_per_wall'])} | "
                f"{_fmt(load['tokens_per_s'], 1)} | {_fmt(_get(lv, 'ttft', 'p50_s'), 3, ' s')} | "
                f"{_fmt(load['p50_s'], 3, ' s')} | {_fmt(load['p95_s'], 3, ' s')} | "
                f"{_fmt(stream['first_chunk_p50_s'], 3, ' s') if stream else '–'} | "
                f"{mem['rss_mib']:.0f} ({mem['pss_mib']:.0f}) | {errors} |"
            )
    return [*lines, ""]


def ratio_table(results: dict, size: str, precision: str, levels: Iterable[int]) -> list[str]:
    """Our ratios to each peer at equal precision (above 1: ours better)."""
    ours = _find(results, size, OURS, precision)
    if ours is None or ours["status"] != "ok":
        return ["Ours did not run at this precision: no ratios.", ""]
    lines = [
        "| vs peer | concurrency | throughput (ours / peer) | TTFT (peer / ours) | "
        "latency p50 (peer / ours) | latency p95 (peer / ours) | peak RSS (peer / ours) |",
        "|---|---|---|---|---|---|---|",
    ]
    any_row = False
    for system, peer_precision in PEERS[precision]:
        peer = _find(results, size, system, peer_precision)
        if peer is None or peer["status"] != "ok":
            continue
        for c in levels:
            mine, theirs = _level(ours, c), _level(peer, c)
            if mine is None or theirs is None:
                continue
            any_row = True
            lines.append(
                f"| {peer['label']} | {c} | "
                f"{_ratio(_get(mine, 'load', 'audio_per_wall'), _get(theirs, 'load', 'audio_per_wall'))} | "
                f"{_ratio(_get(theirs, 'ttft', 'p50_s'), _get(mine, 'ttft', 'p50_s'))} | "
                f"{_ratio(_get(theirs, 'load', 'p50_s'), _get(mine, 'load', 'p50_s'))} | "
                f"{_ratio(_get(theirs, 'load', 'p95_s'), _get(mine, 'load', 'p95_s'))} | "
                f"{_ratio(_peak_mib(peer), _peak_mib(ours))} |"
            )
    if not any_row:
        return ["No peer ran at this precision: no ratios.", ""]
    return [*lines, ""]


def _bandwidths(run: dict | None) -> list[float]:
    if run is None or run.get("status") != "ok":
        return []
    return [v for v in (run.get("bandwidth_gbps") or {}).values() if v]


def bandwidth_note(results: dict, size: str, precision: str) -> list[str]:
    """The memory read bandwidth probed around our run and each peer's (GB/s), and how far apart they are.

    Empty for runs that predate the probe. A step at concurrency 1 reads every weight once, so a host
    whose bandwidth moved between two runs moves their ratio there by as much.
    """
    ours = _bandwidths(_find(results, size, OURS, precision))
    if not ours:
        return []
    parts = [f"ours {' / '.join(f'{v:.1f}' for v in ours)}"]
    every = list(ours)
    for system, peer_precision in PEERS[precision]:
        peer = _find(results, size, system, peer_precision)
        theirs = _bandwidths(peer)
        if theirs:
            parts.append(f"{peer['label']} {' / '.join(f'{v:.1f}' for v in theirs)}")
            every += theirs
    if len(parts) == 1:
        return []
    spread = max(every) / min(every) - 1
    verdict = (
        f"{spread:.0%} apart: ratios at concurrency 1, where a step reads every weight once, carry that much of "
        "the host"
        if spread > BANDWIDTH_SPREAD_NOTE
        else f"within {spread:.0%}: the host's memory was alike for all"
    )
    return [
        f"Memory read bandwidth on the idle machine before / after each system's levels, GB/s: "
        f"{'; '.join(parts)} ({verdict}).",
        "",
    ]


def breakdown_table(run: dict) -> list[str]:
    """Triton's per-model time per request (statistics API deltas over each forced-length load)."""
    lines = [
        "| concurrency | model | requests | executions | mean batch | queue ms | compute input ms | "
        "compute infer ms | compute output ms | total ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in run["levels"]:
        for row in lv.get("triton_breakdown") or []:
            lines.append(
                f"| {lv['concurrency']} | {row['model']} | {row['requests']} | {row['executions']} | "
                f"{row['batch']:.2f} | {row['queue_ms']:.1f} | {row['compute_input_ms']:.1f} | "
                f"{row['compute_infer_ms']:.1f} | {row['compute_output_ms']:.1f} | {row['total_ms']:.1f} |"
            )
    return [*lines, ""]


def agreement_table(results: dict, size: str) -> list[str]:
    """Token agreement of every run's natural-stopping outputs with the fp32 reference."""
    rows = [r for r in results["runs"] if r["size"] == size and r.get("agreement")]
    if not rows:
        return ["No natural-stopping outputs to compare.", ""]
    ref = rows[0]["agreement"].get("reference", "?")
    lines = [
        f"Reference: **{ref}** (greedy, natural stopping, at most {results['settings']['natural_max_tokens']} "
        "tokens, every clip of the pool once).",
        "",
        "| system | positions equal | whole sequences equal | prefix before first difference | "
        "first difference at (per clip) |",
        "|---|---|---|---|---|",
    ]
    for run in rows:
        agr = run["agreement"]
        div = ", ".join("=" if d is None else str(d) for d in agr["first_divergence"])
        lines.append(
            f"| {run['label']} | {agr['position_rate']:.1%} ({agr['positions']} positions) | "
            f"{agr['sequence_rate']:.1%} of {agr['clips']} | {agr['prefix_rate']:.1%} | {div} |"
        )
    return [*lines, ""]


def accuracy_section(results: dict, size: str) -> list[str]:
    """The fast mode's teacher-forced figures against fp32 (empty where the run measured none)."""
    body = results.get("accuracy", {}).get(size)
    if not body:
        return []
    from perf.fast_accuracy import pooled_table

    weights = "random" if body["random_weights"] else "trained"
    return [
        f"### Fast mode accuracy: {body['precision']} against fp32, teacher-forced",
        "",
        f"Our fast mode's graphs ({body['precision']}, recipe {body['recipe']['name']}) and the fp32 graphs are fed "
        f"the same prompt and the fp32 greedy tokens on the {body['settings']['pool']} clips above ({weights} weights; "
        "perf/fast_accuracy.py, perf/results/fast-accuracy/README.md): KL divergence of the next-token "
        "distributions (nats), relative logit error, top-1 agreement overall and where fp32's top-1/top-2 margin "
        "exceeds 1 and 3. `decoder`: the fast decoder on fp32's audio embeddings; `encoder+decoder`: as served. "
        f"Free-running token agreement (each decoding its own tokens): {body['free_running']['position_rate']:.1%}.",
        "",
        *pooled_table(body["pooled"]),
        "",
    ]


def profile_section(results: dict, size: str) -> list[str]:
    """Where the time goes: our precisions against this machine's ceilings (empty where none was profiled)."""
    body = results.get("profiles", {}).get(size)
    if not body:
        return []
    from perf.precision_profile import render as render_profile

    return [render_profile(body, level=3), ""]


def system_details(results: dict) -> list[str]:
    """How each system was configured (commands, knobs, start-up times) and why any did not run."""
    lines = ["## Systems as run", ""]
    for run in results["runs"]:
        lines.append(f"- **{run['label']}** ({run['size']}): {run['status']}")
        if run.get("reason"):
            reason = run["reason"].strip().splitlines()
            lines.append(f"  - reason: `{reason[0][:300]}`" + (" (more in results.json)" if len(reason) > 1 else ""))
        for key, value in (run.get("config") or {}).items():
            if value is None:
                continue
            text = f"{value:.1f}" if isinstance(value, float) else value
            lines.append(f"  - {key}: `{text}`")
        if run.get("memory"):
            mem = run["memory"]
            lines.append(
                f"  - memory: peak RSS {mem['rss_mib']:.0f} MiB, PSS {mem['pss_mib']:.0f} MiB over "
                f"{mem['processes']} processes; RSS once ready {mem.get('ready_rss_mib', 0):.0f} MiB"
            )
        if probes := " / ".join(f"{v:.1f}" for v in _bandwidths(run)):
            lines.append(f"  - memory read bandwidth, idle, before / after the levels: {probes} GB/s")
    return [*lines, ""]


def _concurrency_axis(ax, runs: list[dict]) -> None:
    """Log-2 x axis labelled with the concurrency levels themselves, light grid."""
    levels = sorted({lv["concurrency"] for run in runs for lv in run["levels"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels)
    ax.set_xticklabels([str(c) for c in levels])
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)


def plot(results: dict, out_dir: Path) -> list[Path]:
    """Per model size: throughput vs concurrency (one PNG), latency p50/p95 vs concurrency (one PNG,
    a panel per precision). A system keeps its colour everywhere; fp32 solid, fast mode dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = results["settings"]
    paths = []
    for size in settings["sizes"]:
        runs = [r for r in results["runs"] if r["size"] == size and r["status"] == "ok"]
        if not runs:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for run in runs:
            xs = [lv["concurrency"] for lv in run["levels"]]
            ax.plot(
                xs,
                [lv["load"]["audio_per_wall"] for lv in run["levels"]],
                marker="o",
                color=SYSTEM_COLORS.get(run["system"]),
                linestyle="-" if run["precision"] == "fp32" else "--",
                label=run["label"],
            )
        ax.set(
            xlabel="concurrency",
            ylabel="audio seconds / wall second",
            title=f"Throughput, {size} dims, {settings['tokens']} tokens per {settings['clip_seconds']:g} s clip",
        )
        _concurrency_axis(ax, runs)
        ax.legend()
        paths.append(_save(fig, out_dir / f"throughput-{size}.png"))

        precisions = [p for p in settings["precisions"] if any(r["precision"] == p for r in runs)]
        fig, axes = plt.subplots(1, len(precisions), figsize=(6 * len(precisions), 4.5), squeeze=False)
        for ax, precision in zip(axes[0], precisions):
            shown = [r for r in runs if r["precision"] == precision or r["system"] == "transformers"]
            for run in shown:
                xs = [lv["concurrency"] for lv in run["levels"]]
                color = SYSTEM_COLORS.get(run["system"])
                for pct, style, marker in (("p50", "-", "o"), ("p95", "--", "x")):
                    ax.plot(
                        xs,
                        [lv["load"][f"{pct}_s"] for lv in run["levels"]],
                        marker=marker,
                        linestyle=style,
                        color=color,
                        label=f"{run['label']} {pct}",
                    )
            ax.set(xlabel="concurrency", ylabel="request latency (s)", title=f"Latency, {size} dims, {precision}")
            _concurrency_axis(ax, shown)
            ax.legend(fontsize="small")
        paths.append(_save(fig, out_dir / f"latency-{size}.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(results: dict, out_dir: Path) -> Path:
    """Write report.md and the plots into ``out_dir``; return the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = results["settings"]
    pngs = plot(results, out_dir)
    levels = sorted({lv["concurrency"] for r in results["runs"] if r["status"] == "ok" for lv in r["levels"]})
    lines = [
        "# Qwen3-ASR CPU benchmark: Triton (ours) vs vLLM-CPU vs transformers",
        "",
        f"Run {results['started']} ({results['duration_s'] / 60:.1f} min): `{results['command']}`",
        "",
        "All systems served the same random checkpoint of the real architecture, one after another on "
        "this machine (never two at once), with the same real speech clips "
        f"({settings['pool']} espeak-ng clips of exactly {settings['clip_seconds']:g} s, 16 kHz WAV), "
        f"and exactly {settings['tokens']} generated tokens per request (forced; checked on every answer). "
        f"Each concurrency level sends {settings['requests']} requests (at least as many as its concurrency), "
        "closed loop, after a warm-up.",
        "",
        "How to read it:",
        "",
        "- **audio s / wall s**: seconds of audio recognised per wall-clock second over the level "
        "(higher is better); **tokens / s** the same in generated tokens.",
        "- **TTFT**: the public APIs are unary, so time to first token is measured the same way for "
        "every system: the latency of the same requests with at most (and at least) 1 new token, at the "
        "same concurrency. vLLM additionally: the time to the first chunk of a streamed request "
        f"({settings['tokens']} tokens forced).",
        "- **latency p50 / p95**: client-side, per request, over the forced-length requests.",
        "- **peak RSS**: the largest sum of resident memory over the system's whole process tree "
        "(server, python stubs / engine workers), sampled every 0.25 s from ready to stop (start-up peaks "
        "are not included); shared pages count once per process, so it over-states. In brackets the PSS "
        "(shared pages split), read only between levels and at the end: a PSS read walks every page (a "
        "quarter of a CPU-second for a 5 GB process), too costly to sample under load on 2 cores. vLLM "
        "allocates its whole KV cache (`VLLM_CPU_KVCACHE_SPACE`) up front.",
        "- **Ratios**: above 1 means ours is better (throughput ours / peer; times and memory peer / ours). "
        "Compared at equal precision: our exact fp32 mode with vLLM float32 and our fast mode with vLLM's "
        "default bf16; the transformers reference is fp32 in both.",
        "- **memory read bandwidth**: probed on the idle machine (numpy, every core) right before and after "
        "each system's levels. A decoder step at concurrency 1 reads every weight once, so where the probes "
        "of two systems differ, their ratio there moves with them.",
        "- **transformers** runs one request at a time (no server, no batching across requests): concurrency 1 only.",
        "",
        *machine_section(results["machine"]),
    ]
    if settings.get("skipped"):
        lines += [
            "Left out of this run (`--skip`): "
            + ", ".join(f"`{pair}`" for pair in settings["skipped"])
            + ". A precision or level without its peer has no ratios.",
            "",
        ]
    for size in settings["sizes"]:
        lines += [f"## {size} dims", ""]
        for png in pngs:
            if png.stem.endswith(size):
                lines += [f"![{png.stem}]({png.name})", ""]
        for precision in settings["precisions"]:
            if not _runs(results, size, precision):
                continue
            lines += [f"### {precision}", "", *results_table(results, size, precision)]
            lines += [
                f"Ratios ({precision}; above 1: ours better):",
                "",
                *ratio_table(results, size, precision, levels),
                *bandwidth_note(results, size, precision),
            ]
            ours = _find(results, size, OURS, precision)
            if ours is not None and ours["status"] == "ok":
                lines += [
                    f"Triton time per request by model ({ours['label']}; statistics API, deltas over each "
                    "forced-length level; `decoder` is decoupled: its compute time ends when a request's execute "
                    "returns, not at its last token):",
                    "",
                    *breakdown_table(ours),
                ]
        lines += ["### Token agreement with the fp32 reference", "", *agreement_table(results, size)]
        lines += accuracy_section(results, size)
        lines += profile_section(results, size)
    lines += system_details(results)
    path = out_dir / REPORT_NAME
    path.write_text("\n".join(lines) + "\n")
    return path


def rerender_main(render_fn: Callable[[dict, Path], Path], description: str, producer: str) -> None:
    """Command line of a report module: re-render a results.json written by ``producer``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("results", type=Path, help=f"results.json written by {producer}")
    parser.add_argument("--output-dir", type=Path, help="default: the results file's folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = json.loads(args.results.read_text())
    path = render_fn(results, args.output_dir or args.results.parent)
    logger.info("wrote %s", path)


def main() -> None:
    rerender_main(render, __doc__.split("\n\n")[0], "perf/benchmark.py")


if __name__ == "__main__":
    sys.exit(main())
