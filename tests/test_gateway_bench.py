"""``perf/gateway_bench.py --smoke`` end to end: Triton direct and the gateway measured, with sane numbers.

The smoke (marked server and slow) builds (or reuses) the tiny bench repository, starts
``scripts/serve_cpu.sh`` with its gateway, sends a few requests one at a time to each, and writes
its report. Here it runs as a user would run it, in its own process, into a temporary folder. The
helpers' own tests need no server.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from perf.gateway_bench import compare, decode_tokens, default_budget
from perf.systems.vllm import transcription_fields

REPO = Path(__file__).resolve().parents[1]
# The smoke takes ~1.5 min here (Triton's start and stop are most of it); a first build of the
# bench repository adds a few minutes.
SMOKE_TIMEOUT_S = 900
# A tiny-dims request takes a fraction of a second here, seconds on a busy machine: 30 s is broken.
MAX_LATENCY_S = 30.0
# Whatever the machine's load, the gateway's hop costs milliseconds: seconds mean something is wrong.
MAX_OVERHEAD_MS = 5000.0


def _server_slow(test):
    """The marks of the tests that run the smoke (a real Triton server, over a minute)."""
    return pytest.mark.server(pytest.mark.slow(test))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, Path]:
    """The smoke's results and its output folder."""
    out = tmp_path_factory.mktemp("gateway-bench")
    proc = subprocess.run(
        [sys.executable, str(REPO / "perf" / "gateway_bench.py"), "--smoke", "--output-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads((out / "results.json").read_text()), out


@_server_slow
@pytest.mark.parametrize("name", ["direct", "gateway"])
def test_each_system_has_sane_latencies_and_rates(smoke, name: str) -> None:
    results, _ = smoke
    settings = results["settings"]
    run = results["runs"][name]
    assert run["status"] == "ok", run.get("reason")
    (level,) = run["levels"]
    assert level["concurrency"] == 1
    assert level["requests"] == level["ok"] == settings["requests_c1"] * settings["repeats"]
    assert level["error_count"] == 0, level["errors"]
    assert 0 < level["p50_s"] <= level["p90_s"] < MAX_LATENCY_S
    assert level["mean_s"] * level["ok"] <= level["wall_s"]  # one at a time: latencies fit in the wall time
    assert level["requests_per_s"] == pytest.approx(level["ok"] / level["wall_s"])
    assert level["audio_per_wall"] == pytest.approx(settings["clip_seconds"] * level["requests_per_s"])
    # Every request has its generated tokens (the gateway's from the verbose_json pass), within the budget.
    assert len(level["tokens"]) == level["ok"]
    assert all(1 <= t <= settings["token_budget"] for t in level["tokens"]), level["tokens"]
    assert level["tokens_per_s"] > 0
    assert run["consistency"]["differing_from_reference"] == 0
    assert set(run["outputs"]) == set(settings["clips"])


@_server_slow
def test_gateway_answers_what_triton_answers(smoke) -> None:
    results, _ = smoke
    gateway = results["runs"]["gateway"]
    assert gateway["same_tokens_as_direct"] and gateway["same_text_as_direct"], gateway["outputs"]
    assert (
        results["runs"]["gateway"]["levels"][0]["tokens_mean"] == results["runs"]["direct"]["levels"][0]["tokens_mean"]
    )


@_server_slow
def test_report_has_the_overhead(smoke) -> None:
    results, out = smoke
    entry = results["comparisons"]["gateway_vs_direct_c1"]
    assert math.isfinite(entry["overhead_ms_p50"]) and abs(entry["overhead_ms_p50"]) < MAX_OVERHEAD_MS
    assert entry["p50_s_ratio"] > 0 and entry["tokens_mean_ratio"] == pytest.approx(1.0)
    readme = (out / "README.md").read_text()
    assert "**Gateway overhead**" in readme and "Triton via gateway (HTTP)" in readme
    assert not (out / "gateway-bench.png").exists() and "gateway-bench.png" not in readme  # a smoke has no plot
    assert results["machine"]["cpu_model"] and "flags" in results["machine"]
    assert "vllm" not in results["runs"]


# ----------------------------------------------------------------------------- helpers, no server
def test_token_counts_include_the_end_token() -> None:
    budget = default_budget(5.0)
    assert budget == 114  # 64 + 10 per second of audio: the server's default for a 5 s clip
    assert decode_tokens(0, budget) == 1  # stopped at once: the end token alone
    assert decode_tokens(20, budget) == 21
    assert decode_tokens(budget, budget) == budget  # cut at the cap: no end token


def test_transcription_fields_cap_without_minimum() -> None:
    fields = transcription_fields(114)
    assert fields["max_completion_tokens"] == "114" and fields["response_format"] == "json"
    assert "stream" not in fields and "min_tokens" not in fields
    assert transcription_fields(8, stream=True)["stream_include_usage"] == "true"
    with pytest.raises(ValueError):
        transcription_fields(0)


def _run(p50: float, p90: float, rps: float, tokens: float) -> dict:
    level = {
        "p50_s": p50,
        "p90_s": p90,
        "mean_s": p50,
        "audio_per_wall": 5 * rps,
        "requests_per_s": rps,
        "tokens_per_s": tokens * rps,
        "ms_per_token_p50": p50 * 1000 / tokens,
        "tokens_mean": tokens,
    }
    return {"status": "ok", "levels": [{"concurrency": 1, **level}]}


def test_compare_gives_the_overhead_and_plain_ratios() -> None:
    runs = {"direct": _run(0.2, 0.3, 5.0, 10), "gateway": _run(0.25, 0.33, 4.0, 10), "vllm": _run(0.5, 0.6, 2.0, 20)}
    out = compare(runs, [1])
    gateway = out["gateway_vs_direct_c1"]
    assert gateway["overhead_ms_p50"] == pytest.approx(50.0)
    assert gateway["overhead_ms_p90"] == pytest.approx(30.0)
    assert gateway["p50_s_ratio"] == pytest.approx(1.25)
    assert gateway["overhead_ms_per_request_wall"] == pytest.approx(50.0)
    vllm = out["vllm_vs_gateway_c1"]
    assert vllm["p50_s_ratio"] == pytest.approx(2.0) and vllm["tokens_mean_ratio"] == pytest.approx(2.0)
    assert "overhead_ms_p50" not in vllm
    runs["vllm"] = {"status": "failed"}
    assert set(compare(runs, [1])) == {"gateway_vs_direct_c1"}
