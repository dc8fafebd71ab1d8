"""What the OpenAI-compatible gateway costs: Triton direct vs Triton through the gateway vs vLLM, one run.

    python perf/gateway_bench.py                  # the three systems, tiny dims, c1 and c8 (~12-15 min)
    python perf/gateway_bench.py --smoke          # Triton direct + gateway, 2 clips, c1 only (~1-2 min)
    python perf/gateway_bench.py --systems direct gateway --repeats 3

On one random checkpoint (``--size``, default the tiny dims, whose head_dim 32 vLLM's CPU
attention accepts) and one pool of real 5 s speech clips (:func:`perf.clips.clip_pool`):

1. ``direct``: Triton's ``qwen3_asr`` over gRPC with the project's ``AsyncQwen3ASRClient``;
2. ``gateway``: the same Triton (the same process, started by ``scripts/serve_cpu.sh
   --openai-port``) through ``POST /v1/audio/transcriptions``, ``response_format`` json;
3. ``vllm``: vLLM's CPU build serving the same checkpoint, its own ``/v1/audio/transcriptions``
   (``perf/systems/vllm.py`` starts it; Triton is stopped first: never two servers at once).

Both HTTP systems are driven by the same httpx client (:mod:`perf.openai_audio`), and every
client lives on one asyncio loop in this process (:mod:`perf.aio`) while
:func:`perf.load.run_load` keeps C requests in flight. Each system is warmed up, then sends
``--requests-c1`` requests one at a time (latency: median, p90) and ``--requests-load`` at
``--load-concurrency`` (throughput: audio seconds and requests per wall second). Triton direct
and the gateway take turns (ABBA over ``--repeats`` rounds) so that the shared machine's load
drifts over both alike.

Output lengths are natural (the gateway has no length fields; vLLM's endpoint takes only a cap):
every request is capped at Triton's own default budget for the clip, and each system's generated
token counts are recorded (Triton: ``TOKEN_IDS``; gateway: ``verbose_json`` segments' tokens, one
untimed pass; vLLM: a streamed pass's ``usage`` and its ``vllm:generation_tokens_total`` counter
over every timed load), counted the same way (end token included), to report tokens per second.
Writes ``results.json``, ``README.md`` and ``gateway-bench.png`` into ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from perf.aio import LoopThread  # noqa: E402
from perf.clips import BenchClip, clip_pool  # noqa: E402
from perf.load import LoadResult, Reply, run_load  # noqa: E402
from perf.machine import describe_machine  # noqa: E402
from perf.openai_audio import TranscriptionsClient  # noqa: E402
from perf.systems.base import BENCH_CACHE, SystemConfig, SystemUnavailableError, parse_knobs  # noqa: E402

logger = logging.getLogger("gateway_bench")

SYSTEMS = ("direct", "gateway", "vllm")
LABELS = {
    "direct": "Triton direct (gRPC)",
    "gateway": "Triton via gateway (HTTP)",
    "vllm": "vLLM /v1/audio/transcriptions",
}
SIZES = ("tiny", "0.6b", "1.7b")
# The tiny dims: vLLM's CPU attention needs head_dim >= 32 and tiny has exactly 32; a request takes a
# fraction of a second, so the three systems (vLLM's compiled start-up included) fit in ~20 minutes.
# At 0.6B one 5 s clip takes seconds per request and vLLM minutes to start: over an hour here.
DEFAULT_SIZE = "tiny"
# The clips of perf/benchmark.py: 8 espeak-ng sentences in 8 languages, 5 s each.
DEFAULT_POOL = 8
DEFAULT_CLIP_SECONDS = 5.0
# The latency level (requests one at a time) and the throughput level (perf/benchmark.py's committed
# runs measure at 1 and 8; 8 keeps both cores busy without queueing far past the batch sizes).
LATENCY_CONCURRENCY = 1
DEFAULT_LOAD_CONCURRENCY = 8
# Requests per round: each clip six times at c1 (48 latencies per system and round, ~15-20 s at tiny
# dims here) and sixteen times under load (128 requests, ~15 s). A first run with 24 / 32 took 6.8 min
# in all and its 4 s rounds at c8 varied by 1.6x with the machine's load; these fit in ~12 minutes.
DEFAULT_REQUESTS_C1 = 48
DEFAULT_REQUESTS_LOAD = 128
# Rounds per level, Triton direct and the gateway alternating which goes first (ABBA ABBA): short
# rounds interleaved follow the shared machine's load better than two long ones.
DEFAULT_REPEATS = 4
# Deadline of one request, the client's: the gateway's default --timeout (the test servers' gateway
# answers 504 after its own 120 s first), far above any tiny-dims request.
REQUEST_TIMEOUT_S = 300.0
# Where results go; the smoke's outside the repository (it is a check, not a result).
DEFAULT_OUTPUT = REPO / "perf" / "results" / "gateway"
SMOKE_OUTPUT = BENCH_CACHE / "gateway-smoke"
# --smoke: two clips, latency level only, Triton direct and the gateway, one round of four requests each.
SMOKE = {
    "pool": 2,
    "levels": [LATENCY_CONCURRENCY],
    "requests_c1": 4,
    "repeats": 1,
    "systems": ["direct", "gateway"],
}
# The gateway's served model id (serve_cpu.sh starts it with its default --served-model-name).
GATEWAY_MODEL = "qwen3-asr"
# Percentiles reported for latency.
PCT_MEDIAN, PCT_TAIL = 50, 90
MS_PER_S = 1000.0


# ----------------------------------------------------------------------------- token counts
def default_budget(seconds: float) -> int:
    """Tokens Triton may generate for a clip of ``seconds`` when the request sets no MAX_NEW_TOKENS.

    Mirrors :meth:`qwen3_asr_triton.pipeline.AsrPipeline.budget` (base + per second of audio);
    the server also caps it at its ``max_new_tokens`` limit (4096), far above a short clip's.
    """
    from qwen3_asr_triton.pipeline import DEFAULT_TOKENS_BASE, DEFAULT_TOKENS_PER_SECOND

    return DEFAULT_TOKENS_BASE + math.ceil(DEFAULT_TOKENS_PER_SECOND * seconds)


def decode_tokens(reported: int, budget: int) -> int:
    """Tokens Triton generated for ``reported`` TOKEN_IDS, counted as vLLM counts them (end token included).

    TOKEN_IDS leave out the final end token; fewer ids than the budget means the decoder stopped on one.
    """
    return reported + 1 if reported < budget else reported


# ----------------------------------------------------------------------------- senders
class Sender:
    """A ``send(clip) -> Reply`` for :func:`run_load` that also keeps every transcript it saw, per clip."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.texts: dict[str, Counter[str]] = {}
        self._lock = threading.Lock()

    def seen(self, clip: BenchClip, text: str) -> None:
        """Remember that a request for ``clip`` answered ``text``."""
        with self._lock:
            self.texts.setdefault(clip.name, Counter())[text] += 1

    def __call__(self, clip: BenchClip) -> Reply:
        raise NotImplementedError


class DirectSender(Sender):
    """Triton's ``qwen3_asr`` over gRPC with one ``AsyncQwen3ASRClient`` (one channel), default options."""

    def __init__(self, loop: LoopThread, grpc_url: str, budget: int) -> None:
        super().__init__(loop)
        from qwen3_asr_triton.client import ClientOptions, TranscribeOptions

        self.budget = budget
        self.options = TranscribeOptions()  # what the gateway asks for a request with only file and model
        self.client = loop.run(self._make(ClientOptions(url=grpc_url, timeout=REQUEST_TIMEOUT_S)))

    @staticmethod
    async def _make(options: object) -> object:
        from qwen3_asr_triton.client import AsyncQwen3ASRClient

        return AsyncQwen3ASRClient(options)  # gRPC's asyncio channel binds to the running loop

    def transcription(self, clip: BenchClip) -> object:
        """One request's :class:`~qwen3_asr_triton.client.Transcription`."""
        return self.loop.run(self.client.transcribe(clip.wav, self.options), REQUEST_TIMEOUT_S)

    def __call__(self, clip: BenchClip) -> Reply:
        result = self.transcription(clip)
        self.seen(clip, result.text)
        return Reply(result.token_ids, decode_tokens(len(result.token_ids), self.budget))

    def close(self) -> None:
        """Close the gRPC channel."""
        self.loop.run(self.client.close())


class HttpSender(Sender):
    """``/v1/audio/transcriptions`` (json) with :class:`TranscriptionsClient`; token counts come per clip.

    The json answer has no token counts: ``tokens`` maps a clip to the count an untimed pass measured.
    """

    def __init__(self, loop: LoopThread, base_url: str, fields: dict[str, str], api_key: str | None = None) -> None:
        super().__init__(loop)
        self.fields = fields
        self.tokens: dict[str, int] = {}
        self.client = loop.run(self._make(base_url, api_key))

    @staticmethod
    async def _make(base_url: str, api_key: str | None) -> TranscriptionsClient:
        return TranscriptionsClient(base_url, REQUEST_TIMEOUT_S, api_key)

    def call(self, coro_factory: Callable[[TranscriptionsClient], object]) -> object:
        """Run ``coro_factory(client)`` on the loop."""
        return self.loop.run(coro_factory(self.client), REQUEST_TIMEOUT_S)

    def __call__(self, clip: BenchClip) -> Reply:
        body = self.call(lambda client: client.transcribe(clip, self.fields))
        self.seen(clip, body["text"])
        return Reply((), self.tokens.get(clip.name, 0))

    def close(self) -> None:
        """Close the connections."""
        self.loop.run(self.client.aclose())


# ----------------------------------------------------------------------------- measuring
def merge_loads(loads: list[LoadResult]) -> LoadResult:
    """One result from several runs of one level: requests, wall time, audio and samples added up."""
    merged = LoadResult(loads[0].concurrency, 0, 0.0, 0.0)
    for load in loads:
        merged.requests += load.requests
        merged.wall_s += load.wall_s
        merged.audio_s += load.audio_s
        merged.latencies_s += load.latencies_s
        merged.tokens += load.tokens
        merged.errors += load.errors
    return merged


def summarize(load: LoadResult) -> dict[str, object]:
    """Latency percentiles, rates and token counts of one level (JSON-ready, raw samples included)."""
    ok = len(load.latencies_s)
    latencies = np.array(load.latencies_s, dtype=float)
    tokens = np.array(load.tokens, dtype=float)
    per_token = latencies[tokens > 0] / tokens[tokens > 0] * MS_PER_S if ok else np.array([])
    wall = load.wall_s if load.wall_s > 0 else float("nan")
    return {
        "concurrency": load.concurrency,
        "requests": load.requests,
        "ok": ok,
        "error_count": len(load.errors),
        "errors": load.errors[:5],
        "wall_s": load.wall_s,
        "audio_s": load.audio_s,
        "audio_per_wall": load.audio_s / wall if ok else 0.0,
        "requests_per_s": ok / wall if ok else 0.0,
        "tokens_per_s": float(tokens.sum()) / wall if ok else 0.0,
        "tokens_mean": float(tokens.mean()) if ok else None,
        "p50_s": load.latency(PCT_MEDIAN),
        "p90_s": load.latency(PCT_TAIL),
        "mean_s": float(latencies.mean()) if ok else None,
        "ms_per_token_p50": float(np.median(per_token)) if per_token.size else None,
        "latencies_s": [round(x, 6) for x in load.latencies_s],
        "tokens": [int(t) for t in load.tokens],
    }


def level_requests(args: argparse.Namespace, concurrency: int) -> int:
    """Requests per round at ``concurrency``: ``--requests-c1`` or ``--requests-load``, at least ``concurrency``."""
    wanted = args.requests_c1 if concurrency == LATENCY_CONCURRENCY else args.requests_load
    return max(wanted, concurrency)


def warm_up(send: Callable[[BenchClip], Reply], clips: list[BenchClip], levels: list[int]) -> None:
    """Every clip once, then one wave at the highest level (first calls, connections, compiled shapes)."""
    for clip in clips:
        send(clip)
    if max(levels) > 1:
        run_load(send, clips, max(levels), max(levels))


def measure(
    senders: dict[str, Sender],
    clips: list[BenchClip],
    args: argparse.Namespace,
    tokens_counter: Callable[[], float | None] | None = None,
) -> dict[str, list[dict]]:
    """Each sender's levels; at every level the senders take turns, ABBA over ``args.repeats`` rounds.

    ``tokens_counter`` (one sender only) reads the server's generated-token counter around each run.
    """
    out: dict[str, list[dict]] = {name: [] for name in senders}
    for c in args.levels:
        loads: dict[str, list[LoadResult]] = {name: [] for name in senders}
        server_tokens: float | None = 0.0 if tokens_counter is not None else None
        for round_index in range(args.repeats):
            order = list(senders) if round_index % 2 == 0 else list(reversed(senders))
            for name in order:
                before = tokens_counter() if tokens_counter is not None else None
                load = run_load(senders[name], clips, c, level_requests(args, c))
                if tokens_counter is not None:
                    after = tokens_counter()
                    server_tokens = None if before is None or after is None else server_tokens + after - before
                loads[name].append(load)
                logger.info(
                    "%s c=%s round %s: p50 %.3f s, p90 %.3f s, %.2f audio s/s, %.2f req/s, errors %s",
                    name,
                    c,
                    round_index + 1,
                    load.latency(PCT_MEDIAN) or 0.0,
                    load.latency(PCT_TAIL) or 0.0,
                    load.audio_per_wall,
                    len(load.latencies_s) / load.wall_s if load.wall_s else 0.0,
                    len(load.errors),
                )
        for name in senders:
            level = summarize(merge_loads(loads[name]))
            level["rounds"] = [
                {"wall_s": ld.wall_s, "p50_s": ld.latency(PCT_MEDIAN), "audio_per_wall": ld.audio_per_wall}
                for ld in loads[name]
            ]
            if tokens_counter is not None:
                level["server_tokens"] = server_tokens
                if server_tokens is not None and level["wall_s"]:
                    # The server's own count of what the timed requests generated: exact under batching.
                    level["tokens_per_s"] = server_tokens / level["wall_s"]
            out[name].append(level)
    return out


def consistency(sender: Sender, reference: dict[str, str]) -> dict[str, object]:
    """How many timed answers differed from the clip's reference transcript (the untimed pass's)."""
    answers = sum(sum(c.values()) for c in sender.texts.values())
    differing = sum(n for name, c in sender.texts.items() for text, n in c.items() if text != reference.get(name))
    return {"answers": answers, "differing_from_reference": differing}


def new_record(name: str) -> dict:
    """The JSON record of one system, before it ran."""
    return {"system": name, "label": LABELS[name], "status": "ok", "load_average": {"start": os.getloadavg()}}


def fail_records(records: dict[str, dict], exc: BaseException) -> None:
    """Mark every record that has no levels yet as failed / not available, with the reason."""
    status = "not available" if isinstance(exc, SystemUnavailableError) else "failed"
    for record in records.values():
        if not record.get("levels"):
            record.update(status=status, reason=f"{type(exc).__name__}: {exc}"[-3000:])


def run_triton(
    checkpoint: Path, clips: list[BenchClip], budget: int, args: argparse.Namespace, names: list[str]
) -> dict[str, dict]:
    """Start Triton with its gateway (serve_cpu.sh), measure ``names`` (direct / gateway), stop it."""
    from perf.systems.triton import TritonSystem
    from tests.harness import GATEWAY_API_KEY, GATEWAY_ARGS

    config = SystemConfig(checkpoint, args.size, "fp32", max(args.levels), args.log_dir, {})
    system = TritonSystem(config)
    records = {name: new_record(name) for name in names}
    loop = LoopThread("triton-clients")
    senders: dict[str, Sender] = {}
    try:
        system.prepare()
        system.start()
        server = system.server
        if "direct" in names:
            senders["direct"] = DirectSender(loop, server.grpc_url, budget)
        if "gateway" in names:
            senders["gateway"] = HttpSender(
                loop, server.openai_url, {"model": GATEWAY_MODEL, "response_format": "json"}, GATEWAY_API_KEY
            )
        logger.info("Triton at %s, gateway at %s: warming up", server.grpc_url, server.openai_url)
        for sender in senders.values():
            warm_up(sender, clips, args.levels)
        # Untimed reference pass: each clip's output once per system, with its token count.
        direct_outputs = {}
        reference = senders.get("direct") or DirectSender(loop, server.grpc_url, budget)
        for clip in clips:
            result = reference.transcription(clip)
            direct_outputs[clip.name] = {
                "tokens": len(result.token_ids),
                "decode_tokens": decode_tokens(len(result.token_ids), budget),
                "text": result.text,
            }
        if reference is not senders.get("direct"):
            reference.close()
        if "direct" in names:
            records["direct"]["outputs"] = direct_outputs
        if "gateway" in names:
            gateway = senders["gateway"]
            verbose = {"model": GATEWAY_MODEL, "response_format": "verbose_json"}
            outputs = {}
            for clip in clips:
                body = gateway.call(lambda client, clip=clip: client.transcribe(clip, verbose))
                count = sum(len(seg.get("tokens") or ()) for seg in body.get("segments") or ())
                outputs[clip.name] = {
                    "tokens": count,
                    "decode_tokens": decode_tokens(count, budget),
                    "text": body["text"],
                }
                gateway.tokens[clip.name] = outputs[clip.name]["decode_tokens"]
            records["gateway"]["outputs"] = outputs
            records["gateway"]["same_tokens_as_direct"] = all(
                outputs[n]["tokens"] == direct_outputs[n]["tokens"] for n in outputs
            )
            records["gateway"]["same_text_as_direct"] = all(
                outputs[n]["text"] == direct_outputs[n]["text"] for n in outputs
            )
        levels = measure(senders, clips, args)
        reference_texts = {n: o["text"] for n, o in direct_outputs.items()}
        for name, sender in senders.items():
            records[name]["levels"] = levels[name]
            records[name]["consistency"] = consistency(sender, reference_texts)
        describe = system.describe()
        if "direct" in names:
            records["direct"]["config"] = {
                **describe,
                "input": "AUDIO (16 kHz PCM16 WAV bytes) over gRPC, no MAX_NEW_TOKENS / MIN_NEW_TOKENS",
                "client": "qwen3_asr_triton.client.AsyncQwen3ASRClient (one gRPC channel), TranscribeOptions() "
                f"(server's default budget), deadline {REQUEST_TIMEOUT_S:g} s",
            }
        if "gateway" in names:
            records["gateway"]["config"] = {
                **describe,
                "input": "multipart file (the same WAV bytes), model, response_format json",
                "gateway": f"qwen3-asr serve-openai started by serve_cpu.sh --openai-port PORT --openai-args "
                f"'{GATEWAY_ARGS}', API key from QWEN3_ASR_API_KEY (tests/harness.py start_server)",
                "client": f"httpx.AsyncClient (perf/openai_audio.py), multipart WAV, response_format json, "
                f"model {GATEWAY_MODEL}",
            }
    except Exception as exc:
        logger.exception("Triton run failed")
        fail_records(records, exc)
    finally:
        for sender in senders.values():
            try:
                sender.close()
            except Exception:  # closing must not hide the run's own outcome
                logger.exception("closing a client failed")
        loop.close()
        system.stop()
        for record in records.values():
            record["load_average"]["end"] = os.getloadavg()
    return records


def run_vllm(checkpoint: Path, clips: list[BenchClip], budget: int, args: argparse.Namespace) -> dict:
    """Start vLLM on the same checkpoint, measure its ``/v1/audio/transcriptions``, stop it."""
    from perf.systems.vllm import TRANSCRIPTION_INPUT, VllmSystem, transcription_fields

    config = SystemConfig(checkpoint, args.size, "fp32", max(args.levels), args.log_dir, dict(args.vllm_knob))
    system = VllmSystem(config)
    record = new_record("vllm")
    loop = LoopThread("vllm-client")
    sender: HttpSender | None = None
    try:
        system.prepare()
        system.start()
        logger.info("vLLM ready after %.0f s at %s: warming up", system.ready_seconds or 0.0, system.base_url)
        sender = HttpSender(loop, system.base_url, transcription_fields(budget))
        warm_up(sender, clips, args.levels)
        streamed = transcription_fields(budget, stream=True)
        outputs = {}
        for clip in clips:
            answer = sender.call(lambda client, clip=clip: client.transcribe_stream(clip, streamed))
            if answer.completion_tokens is None:
                raise RuntimeError("vLLM's streamed transcription gave no usage")
            outputs[clip.name] = {
                "tokens": answer.completion_tokens,
                "decode_tokens": answer.completion_tokens,
                "text": answer.text,
            }
            sender.tokens[clip.name] = answer.completion_tokens
        record["outputs"] = outputs
        record["levels"] = measure({"vllm": sender}, clips, args, system.generation_tokens_total)["vllm"]
        record["consistency"] = consistency(sender, {n: o["text"] for n, o in outputs.items()})
        record["config"] = {
            **system.describe(),
            "request_timeout_s": REQUEST_TIMEOUT_S,  # this benchmark's client, not VllmSystem's own
            "input": TRANSCRIPTION_INPUT,
            "max_completion_tokens": budget,
        }
    except Exception as exc:
        logger.exception("vLLM run failed")
        fail_records({"vllm": record}, exc)
        record["config"] = system.describe()
    finally:
        if sender is not None:
            try:
                sender.close()
            except Exception:  # closing must not hide the run's own outcome
                logger.exception("closing the vLLM client failed")
        loop.close()
        system.stop()
        record["load_average"]["end"] = os.getloadavg()
    return record


# ----------------------------------------------------------------------------- comparisons
def _level(record: dict | None, concurrency: int) -> dict | None:
    if record is None or record.get("status") != "ok":
        return None
    return next((lv for lv in record.get("levels", []) if lv["concurrency"] == concurrency), None)


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def compare(runs: dict[str, dict], levels: list[int]) -> dict[str, object]:
    """The ratios the report prints: gateway against direct, vLLM against the gateway and direct.

    Every ratio is ``A / B`` of the named systems' numbers (no "better" direction folded in);
    ``overhead_ms`` are differences gateway - direct.
    """
    out: dict[str, object] = {}
    pairs = (("gateway", "direct"), ("vllm", "gateway"), ("vllm", "direct"))
    for a, b in pairs:
        for c in levels:
            la, lb = _level(runs.get(a), c), _level(runs.get(b), c)
            if la is None or lb is None:
                continue
            entry: dict[str, float | None] = {
                f"{key}_ratio": _ratio(la[key], lb[key])
                for key in (
                    "p50_s",
                    "p90_s",
                    "mean_s",
                    "audio_per_wall",
                    "requests_per_s",
                    "tokens_per_s",
                    "ms_per_token_p50",
                    "tokens_mean",
                )
            }
            if (a, b) == ("gateway", "direct"):
                for key in ("p50_s", "p90_s", "mean_s"):
                    entry[f"overhead_ms_{key[:-2]}"] = (la[key] - lb[key]) * MS_PER_S
                # Round by round (the two ran back to back in each round): the spread shows the noise.
                entry["overhead_ms_p50_rounds"] = [
                    (ra["p50_s"] - rb["p50_s"]) * MS_PER_S
                    for ra, rb in zip(la.get("rounds", []), lb.get("rounds", []))
                    if ra["p50_s"] is not None and rb["p50_s"] is not None
                ]
                # The added time per request at throughput: 1 / requests per second, gateway - direct.
                if la["requests_per_s"] and lb["requests_per_s"]:
                    entry["overhead_ms_per_request_wall"] = (1 / la["requests_per_s"] - 1 / lb["requests_per_s"]) * (
                        MS_PER_S
                    )
            out[f"{a}_vs_{b}_c{c}"] = entry
    return out


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--smoke`` overrides the sizes of the run, see :data:`SMOKE`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--size", choices=SIZES, default=DEFAULT_SIZE, help="checkpoint dims (default tiny)")
    parser.add_argument("--pool", type=int, default=DEFAULT_POOL, help="distinct clips the requests cycle through")
    parser.add_argument("--clip-seconds", type=float, default=DEFAULT_CLIP_SECONDS)
    parser.add_argument("--load-concurrency", type=int, default=DEFAULT_LOAD_CONCURRENCY)
    parser.add_argument("--requests-c1", type=int, default=DEFAULT_REQUESTS_C1, help="per round, concurrency 1")
    parser.add_argument("--requests-load", type=int, default=DEFAULT_REQUESTS_LOAD, help="per round, under load")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="rounds (direct and gateway alternate)")
    parser.add_argument(
        "--vllm-knob",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="perf/systems/vllm.py knob, e.g. eager=1 (no torch.compile)",
    )
    parser.add_argument("--output-dir", type=Path)
    parser.add_argument("--smoke", action="store_true", help="2 clips, c1 only, Triton direct and gateway only")
    args = parser.parse_args(argv)
    args.levels = [LATENCY_CONCURRENCY, args.load_concurrency]
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    args.levels = sorted(set(args.levels))
    args.output_dir = args.output_dir or (SMOKE_OUTPUT if args.smoke else DEFAULT_OUTPUT)
    args.vllm_knob = parse_knobs(args.vllm_knob)
    if min(args.pool, args.requests_c1, args.requests_load, args.repeats, args.load_concurrency) < 1:
        parser.error("pool, requests, repeats and concurrency must be >= 1")
    args.systems = [name for name in SYSTEMS if name in args.systems]
    return args


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C: the running servers are stopped on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; write results.json, README.md and the plot; return the results."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = datetime.now(timezone.utc)
    args.log_dir = BENCH_CACHE / "logs" / f"gateway-{started.strftime('%Y%m%d-%H%M%S')}"
    args.log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    from perf.gateway_report import render
    from tests.harness import cached_checkpoint

    machine = describe_machine()
    clips = clip_pool(BENCH_CACHE / "clips", args.clip_seconds, args.pool)
    checkpoint = cached_checkpoint("asr", size=args.size)
    budget = default_budget(args.clip_seconds)
    logger.info(
        "checkpoint %s, %s clips of %g s, budget %s tokens", checkpoint.name, len(clips), args.clip_seconds, budget
    )
    runs: dict[str, dict] = {}
    triton_names = [name for name in args.systems if name in ("direct", "gateway")]
    if triton_names:
        runs.update(run_triton(checkpoint, clips, budget, args, triton_names))
    if "vllm" in args.systems:
        runs["vllm"] = run_vllm(checkpoint, clips, budget, args)

    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    results = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": time.perf_counter() - t0,
        "command": f"python perf/gateway_bench.py {argv_text}".strip(),
        "machine": machine,
        "settings": {
            "size": args.size,
            "checkpoint": checkpoint.name,
            "systems": args.systems,
            "levels": args.levels,
            "requests_c1": level_requests(args, LATENCY_CONCURRENCY),
            "requests_load": level_requests(args, max(args.levels)),
            "repeats": args.repeats,
            "clip_seconds": args.clip_seconds,
            "pool": args.pool,
            "clips": [clip.name for clip in clips],
            "token_budget": budget,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "vllm_knobs": args.vllm_knob,
            "smoke": args.smoke,
            "logs": str(args.log_dir.relative_to(REPO)),
        },
        "runs": runs,
        "comparisons": compare(runs, args.levels),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report = render(results, args.output_dir)
    logger.info("wrote %s and %s", report, args.output_dir / "results.json")
    print(report.read_text())
    return results


if __name__ == "__main__":
    main()
