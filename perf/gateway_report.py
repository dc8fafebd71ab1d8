"""README.md and the PNG plot of ``perf/gateway_bench.py``, from its results JSON.

    python perf/gateway_report.py perf/results/gateway/results.json   # re-render from saved numbers

Ratios are plain ``A / B`` of the named systems' numbers; what each means is said in its column.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.report import _fmt, _save, machine_section, rerender_main  # noqa: E402

logger = logging.getLogger(__name__)

REPORT_NAME = "README.md"
PLOT_NAME = "gateway-bench.png"
# Order of the systems in tables and plots, and their colours (matplotlib's default cycle; Triton
# direct keeps perf/report.py's "triton" colour, vLLM its "vllm" one).
ORDER = ("direct", "gateway", "vllm")
COLORS = {"direct": "C0", "gateway": "C3", "vllm": "C1"}
# Figure size (inches) and resolution: three panels side by side, legible in a GitHub page.
FIGSIZE = (14, 4.2)
DPI = 110


def _runs(results: dict) -> list[dict]:
    runs = results["runs"]
    return [runs[name] for name in ORDER if name in runs]


def _level(run: dict, concurrency: int) -> dict | None:
    if run.get("status") != "ok":
        return None
    return next((lv for lv in run.get("levels", []) if lv["concurrency"] == concurrency), None)


def _ms(seconds: float | None) -> str:
    return _fmt(None if seconds is None else seconds * 1000.0, 0, " ms")


def _x(value: float | None) -> str:
    return _fmt(value, 2, "x")


def _signed_ms(value: float | None) -> str:
    return "–" if value is None else f"{value:+.0f} ms"


def results_table(results: dict) -> list[str]:
    """One row per system: latency at concurrency 1, throughput under load, tokens."""
    levels = results["settings"]["levels"]
    low, high = min(levels), max(levels)
    header = [
        "system",
        f"c{low} latency p50",
        f"c{low} p90",
        f"c{low} mean",
        "tokens / request (mean)",
        f"c{low} ms / token (p50)",
        f"c{low} tokens / s",
    ]
    if high != low:
        header += [
            f"c{high} audio s / wall s",
            f"c{high} requests / s",
            f"c{high} tokens / s",
            f"c{high} latency p50",
        ]
    header.append("requests (errors)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in _runs(results):
        if run["status"] != "ok":
            lines.append(f"| {run['label']} | {run['status']} |" + " |" * (len(header) - 2))
            continue
        one, load = _level(run, low), _level(run, high)
        cells = [
            run["label"],
            _ms(one["p50_s"]),
            _ms(one["p90_s"]),
            _ms(one["mean_s"]),
            _fmt(one["tokens_mean"], 1),
            _fmt(one["ms_per_token_p50"], 1),
            _fmt(one["tokens_per_s"], 1),
        ]
        if high != low:
            cells += [
                _fmt(load["audio_per_wall"], 2),
                _fmt(load["requests_per_s"], 2),
                _fmt(load["tokens_per_s"], 1),
                _ms(load["p50_s"]),
            ]
        levels_run = run["levels"]
        cells.append(f"{sum(lv['requests'] for lv in levels_run)} ({sum(lv['error_count'] for lv in levels_run)})")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def ratio_table(results: dict) -> list[str]:
    """The comparisons of :func:`perf.gateway_bench.compare`, one row per pair and level."""
    comparisons = results.get("comparisons") or {}
    if not comparisons:
        return ["Fewer than two systems ran: no ratios.", ""]
    names = {name: run["label"] for name, run in results["runs"].items()}
    lines = [
        "| A / B | concurrency | latency p50 | latency p90 | audio s / wall s | requests / s | tokens / s | "
        "ms / token (p50) | tokens / request | A - B, p50 | A - B, p90 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in comparisons.items():
        pair, level = key.rsplit("_c", 1)
        a, b = pair.split("_vs_")
        lines.append(
            f"| {names.get(a, a)} / {names.get(b, b)} | {level} | {_x(entry['p50_s_ratio'])} | "
            f"{_x(entry['p90_s_ratio'])} | {_x(entry['audio_per_wall_ratio'])} | {_x(entry['requests_per_s_ratio'])} | "
            f"{_x(entry['tokens_per_s_ratio'])} | {_x(entry['ms_per_token_p50_ratio'])} | "
            f"{_x(entry['tokens_mean_ratio'])} | {_signed_ms(entry.get('overhead_ms_p50'))} | "
            f"{_signed_ms(entry.get('overhead_ms_p90'))} |"
        )
    return [*lines, ""]


def rounds_table(results: dict) -> list[str]:
    """Median latency and throughput of every round, to show the run-to-run noise beside the differences."""
    lines = [
        "| system | concurrency | latency p50 per round (ms) | audio s / wall s per round |",
        "|---|---|---|---|",
    ]
    for run in _runs(results):
        if run["status"] != "ok":
            continue
        for level in run["levels"]:
            rounds = level.get("rounds") or []
            lines.append(
                f"| {run['label']} | {level['concurrency']} | "
                + ", ".join(_fmt(None if r["p50_s"] is None else r["p50_s"] * 1000, 0) for r in rounds)
                + " | "
                + ", ".join(_fmt(r["audio_per_wall"], 1) for r in rounds)
                + " |"
            )
    comparisons = results.get("comparisons") or {}
    for c in results["settings"]["levels"]:
        entry = comparisons.get(f"gateway_vs_direct_c{c}")
        if entry and entry.get("overhead_ms_p50_rounds"):
            values = ", ".join(f"{v:+.0f}" for v in entry["overhead_ms_p50_rounds"])
            lines.append(f"| gateway - direct, round by round | {c} | {values} | |")
    return [*lines, ""]


def headline(results: dict) -> list[str]:
    """The gateway's overhead in one paragraph (from the comparisons), when both Triton systems ran."""
    comparisons = results.get("comparisons") or {}
    levels = results["settings"]["levels"]
    one = comparisons.get(f"gateway_vs_direct_c{min(levels)}")
    if one is None:
        return []
    text = (
        f"**Gateway overhead** (same Triton, same requests, same outputs): at concurrency {min(levels)} the median "
        f"request took {_signed_ms(one['overhead_ms_p50'])} through the gateway ({_x(one['p50_s_ratio'])} of "
        f"direct gRPC), p90 {_signed_ms(one['overhead_ms_p90'])} ({_x(one['p90_s_ratio'])})"
    )
    spread = one.get("overhead_ms_p50_rounds") or []
    if len(spread) > 1:
        text += f" (median round by round: {min(spread):+.0f} to {max(spread):+.0f} ms)"
    load = comparisons.get(f"gateway_vs_direct_c{max(levels)}")
    if load is not None and max(levels) != min(levels):
        text += (
            f"; at concurrency {max(levels)} the gateway carried {_x(load['audio_per_wall_ratio'])} of direct's "
            f"throughput (audio s / wall s) and {_x(load['requests_per_s_ratio'])} of its requests per second"
        )
    vllm = comparisons.get(f"vllm_vs_gateway_c{min(levels)}")
    if vllm is not None:
        text += (
            f". vLLM's own endpoint against the gateway: median latency {_x(vllm['p50_s_ratio'])} at concurrency "
            f"{min(levels)} with {_x(vllm['tokens_mean_ratio'])} the tokens per request"
        )
        load = comparisons.get(f"vllm_vs_gateway_c{max(levels)}")
        if load is not None and max(levels) != min(levels):
            text += (
                f", throughput {_x(load['audio_per_wall_ratio'])} in audio s / wall s and "
                f"{_x(load['tokens_per_s_ratio'])} in tokens / s at concurrency {max(levels)}"
            )
    return [text + ".", ""]


def comparability(results: dict) -> list[str]:
    """Which numbers may be compared, from what the run itself observed."""
    runs = results["runs"]
    lines = ["## Which numbers are comparable", ""]
    gateway, direct, vllm = runs.get("gateway"), runs.get("direct"), runs.get("vllm")
    if gateway and direct and gateway.get("status") == "ok" and direct.get("status") == "ok":
        same = gateway.get("same_tokens_as_direct") and gateway.get("same_text_as_direct")
        differing = (gateway.get("consistency") or {}).get("differing_from_reference")
        lines.append(
            "- **Triton direct vs gateway: directly comparable.** One Triton process served both, with the same "
            "clips, the same options (the server's default budget; no language, no prompt) and greedy decoding; "
            + (
                "every clip gave the same token ids' count and the same text both ways"
                if same
                else "**but the untimed pass found outputs that differ between them** (see the per-clip table)"
            )
            + (f", and {differing} timed gateway answers differed from the direct text" if differing else "")
            + ". The difference is the gateway's hop: HTTP and multipart parsing, an asyncio gRPC call from "
            "another process, JSON rendering; plus the client's own cost (httpx multipart here, the project's "
            "async gRPC client there). Direct and gateway rounds alternated (ABBA) so the machine's load drifted "
            "over both alike."
        )
    if vllm and vllm.get("status") == "ok":
        lines.append(
            "- **vLLM vs gateway / direct: not equal work.** Same checkpoint (random weights), same clips, fp32, "
            "same cap on output length (`max_completion_tokens` = Triton's default budget), but vLLM's "
            "transcription endpoint builds its own prompt and cannot force a length (its `TranscriptionRequest` "
            "has a cap, no minimum and no `ignore_eos`), so a random model generates different numbers of tokens "
            "on each. Latency and audio seconds per wall second compare requests of different lengths; "
            "**tokens / s** and **ms / token** normalise for that but still spread the fixed cost of a request "
            "(upload, audio decoding, encoder, prefill) over different token counts, so they favour the system that "
            "generated more. Forced-length comparisons with vLLM (through its chat completions route) are in "
            "`perf/results/0.6b*` and `perf/results/1.7b*`."
        )
    lines.append(
        "- Token counts are counted alike: generated tokens including the final end token (Triton's `TOKEN_IDS` "
        "and the gateway's `segments[].tokens` leave it out, one is added when a request stopped before its "
        "budget; vLLM's `usage.completion_tokens` and `vllm:generation_tokens_total` include it). The gateway's "
        "and vLLM's json answers carry no counts: theirs come from one untimed pass per clip (gateway "
        "`verbose_json`, vLLM streamed with usage), and vLLM's tokens / s from its counter over the timed requests."
    )
    lines.append(
        "- The random checkpoint has the tiny dims unless the command says otherwise: a request is mostly fixed "
        "cost (HTTP, gRPC, Python, audio decoding, scheduling), so the gateway's share is as large here as it "
        "will ever be; at real dims the same milliseconds are a far smaller fraction of a request."
    )
    return [*lines, ""]


def outputs_table(results: dict) -> list[str]:
    """Generated tokens (end token included) per clip and system, from the untimed passes."""
    runs = [run for run in _runs(results) if run.get("outputs")]
    if not runs:
        return []
    lines = [
        "| clip | " + " | ".join(run["label"] for run in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for clip in results["settings"]["clips"]:
        cells = [str(run["outputs"].get(clip, {}).get("decode_tokens", "–")) for run in runs]
        lines.append(f"| {clip} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def systems_section(results: dict) -> list[str]:
    """How each system was set up, and why any did not run."""
    lines = ["## Systems as run", ""]
    for run in _runs(results):
        lines.append(f"- **{run['label']}**: {run['status']}")
        if run.get("reason"):
            reason = run["reason"].strip().splitlines()
            lines.append(f"  - reason: `{reason[0][:300]}`" + (" (more in results.json)" if len(reason) > 1 else ""))
        for key, value in (run.get("config") or {}).items():
            if value is None or isinstance(value, dict):
                continue
            text = f"{value:.1f}" if isinstance(value, float) else value
            lines.append(f"  - {key}: `{text}`")
        load = run.get("load_average") or {}
        if load.get("start") and load.get("end"):
            lines.append(
                "  - load average (1, 5, 15 min) at start / end: "
                f"{', '.join(f'{x:.2f}' for x in load['start'])} / {', '.join(f'{x:.2f}' for x in load['end'])}"
            )
    return [*lines, ""]


def plot(results: dict, out_dir: Path) -> Path | None:
    """Latency at concurrency 1 (p50 bar, p90 tick), throughput under load, tokens per second: one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run for run in _runs(results) if run["status"] == "ok"]
    if not runs:
        return None
    levels = results["settings"]["levels"]
    low, high = min(levels), max(levels)
    names = [run["label"] for run in runs]
    colors = [COLORS[run["system"]] for run in runs]
    xs = range(len(runs))
    fig, axes = plt.subplots(1, 3, figsize=FIGSIZE)

    ax = axes[0]
    p50 = [_level(run, low)["p50_s"] * 1000 for run in runs]
    p90 = [_level(run, low)["p90_s"] * 1000 for run in runs]
    ax.bar(xs, p50, color=colors, label="p50")
    ax.scatter(xs, p90, color="black", marker="_", s=400, label="p90", zorder=3)
    for x, value in zip(xs, p50):
        ax.annotate(f"{value:.0f}", (x, value), ha="center", va="bottom", fontsize="small")
    ax.set(ylabel="request latency (ms)", title=f"Latency at concurrency {low}")
    ax.legend(fontsize="small")

    ax = axes[1]
    if high != low:
        audio = [_level(run, high)["audio_per_wall"] for run in runs]
        ax.bar(xs, audio, color=colors)
        for x, run, value in zip(xs, runs, audio):
            ax.annotate(
                f"{value:.1f}\n({_level(run, high)['requests_per_s']:.2f} req/s)",
                (x, value),
                ha="center",
                va="bottom",
                fontsize="small",
            )
        ax.set(ylabel="audio seconds / wall second", title=f"Throughput at concurrency {high}")
        ax.margins(y=0.2)
    else:
        ax.set_axis_off()

    ax = axes[2]
    bars = [(low, "")] + ([(high, "//")] if high != low else [])
    width = 0.8 / len(bars)
    for i, (c, hatch) in enumerate(bars):
        offset = (i - (len(bars) - 1) / 2) * width
        values = [_level(run, c)["tokens_per_s"] for run in runs]
        ax.bar([x + offset for x in xs], values, width, color=colors, hatch=hatch, edgecolor="white", label=f"c{c}")
    ax.set(ylabel="generated tokens / second", title="Tokens per second (lengths differ for vLLM)")
    ax.legend(fontsize="small")

    for ax in axes:
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=12, fontsize="small")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(
        f"{results['settings']['size']} dims, {results['settings']['clip_seconds']:g} s clips, "
        f"{results['machine'].get('cpu_model')}",
        fontsize="medium",
    )
    return _save(fig, out_dir / PLOT_NAME)


def render(results: dict, out_dir: Path) -> Path:
    """Write README.md and the plot into ``out_dir``; return the README's path.

    A smoke run (a check, not a result) gets no plot, so it needs no matplotlib (the perf extra).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = results["settings"]
    png = None if settings.get("smoke") else plot(results, out_dir)
    levels = settings["levels"]
    load_line = (
        f"then {settings['requests_load']} requests at concurrency {max(levels)} (throughput), "
        if max(levels) != min(levels)
        else ""
    )
    lines = [
        "# OpenAI-compatible gateway: overhead against Triton direct, and vLLM's transcription endpoint",
        "",
        f"Run {results['started']} ({results['duration_s'] / 60:.1f} min in all, start-ups included): "
        f"`{results['command']}`",
        "",
        *headline(results),
        "## What was measured",
        "",
        f"- One random checkpoint (`{settings['checkpoint']}`, {settings['size']} dims, fp32 everywhere) and the "
        f"same {settings['pool']} espeak-ng speech clips of exactly {settings['clip_seconds']:g} s (16 kHz WAV) "
        "for every system; greedy decoding, output lengths natural (random weights: each system stops where "
        f"its model emits an end token), capped at {settings['token_budget']} tokens (Triton's default budget "
        "for a clip of this length).",
        "- **Triton direct (gRPC)**: the `qwen3_asr` model with `qwen3_asr_triton.client.AsyncQwen3ASRClient`. "
        "**Triton via gateway (HTTP)**: the same Triton process through `qwen3-asr serve-openai` "
        "(`scripts/serve_cpu.sh --openai-port`), `POST /v1/audio/transcriptions`, `response_format=json`. "
        "**vLLM**: vLLM's CPU build on the same checkpoint, its own `/v1/audio/transcriptions`, "
        "`response_format=json`, started after Triton was stopped (never two servers at once).",
        "- Client: both HTTP systems by the same `httpx.AsyncClient` code (`perf/openai_audio.py`: the multipart "
        "form OpenAI's SDK sends, without the SDK's own layers); all clients on one asyncio loop in the "
        "benchmark process, bound to 127.0.0.1, with `perf/load.py`'s closed loop keeping N requests in flight.",
        f"- Per system, after a warm-up (every clip once, then one wave at the highest level): "
        f"{settings['requests_c1']} requests one at a time (latency p50, p90, mean), {load_line}"
        f"per round, {settings['repeats']} round(s); Triton direct and the gateway alternate from round to round "
        "(ABBA). Latency is client-side, from sending to the parsed answer.",
        "- Rates: audio s / wall s and requests / s over the level's wall time (rounds added up); tokens / s "
        "the generated tokens (end token included) over the same time; ms / token is each request's latency "
        "over its tokens (so it includes the request's fixed cost), median over requests.",
        "",
        f"![gateway benchmark]({png.name})" if png else "",
        "",
        "## Results",
        "",
        *results_table(results),
        "Ratios, measured in this run (A / B of the numbers above; `A - B` in milliseconds):",
        "",
        *ratio_table(results),
        "Every round (Triton direct and the gateway ran back to back within a round, in alternating order; "
        "the spread from round to round is the machine's noise):",
        "",
        *rounds_table(results),
        *comparability(results),
        "## Generated tokens per clip (untimed pass, end token included)",
        "",
        *outputs_table(results),
        *machine_section(results["machine"]),
        *systems_section(results),
    ]
    path = out_dir / REPORT_NAME
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    """Re-render README.md and the plot from a results.json."""
    rerender_main(render, __doc__.split("\n\n")[0], "perf/gateway_bench.py")


if __name__ == "__main__":
    sys.exit(main())
