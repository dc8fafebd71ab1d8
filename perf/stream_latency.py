"""Partial-result latency of ``qwen3_asr_streaming`` at several numbers of concurrent streams.

    python perf/stream_latency.py --url 127.0.0.1:8001 --streams 1 8 32 [--json out.json] [FILE ...]
    python perf/stream_latency.py --endpointing --streams 1 8 32 64 --max-new-tokens 32 [--server-pid PID]
    python perf/stream_latency.py --size tiny --endpointing ...   # builds (cached) and starts its own server

For each stream count N, N streams play real speech in real time (1 s chunks
by default, each stream looping its clip to ``--seconds``), starting at random
offsets within one chunk so that their chunks do not arrive in lockstep. All
streams share one asyncio client (one gRPC channel), as a gateway would.
Speech comes from the files given, or is synthesised with espeak-ng.

Reported per N (times in seconds, measured on the client):

- partial latency: for each partial, from handing its chunk to gRPC to receiving it;
- visible latency: for each chunk but the last, from sending it to receiving the
  first hypothesis that covers it (a later partial, or the final). Under load the
  server skips the partial of a chunk that a newer one superseded, so this is
  what a user waits to see a chunk's words; it exceeds the partial latency then;
- partials per chunk: partials received / chunks that could get one (all but END);
  below 1 when the server coalesces;
- final latency: from sending the END chunk to receiving the final result;
- errors: streams that failed, with the first messages.

With ``--endpointing`` the streams are live captions: sentences separated by
``--pause-seconds`` of silence, cut into utterances by the server's VAD. Then
only chunks inside an utterance count for partials per chunk and visible
latency (silence gets no partial), and the final latency is per utterance:
from sending the chunk that holds the end of its speech (its end minus the
padding) to receiving its final, so it includes the silence the VAD waits for
(``vad_min_silence_ms``, 500 ms by default) to know the speaker stopped. With
``--server-pid`` the server tree's resident memory is sampled every second
(first, last and peak per stream count); with ``--metrics-url`` the decoder's counters are read
before and after each level: its steps and their rows (a step runs at most
``max_running_sequences`` rows: full steps mean requests wait for a row), prefill calls and decode
rows per generation, and with both the server's CPU seconds per generation (what the machine pays
for each partial or final). ``--size`` builds (once, cached) an fp32 cpu repository of a
random checkpoint of those dimensions, as ``perf/soak.py`` does, serves it with ``scripts/serve_cpu.sh``
on free loopback ports and samples that server's memory and metrics.

The chunk's own duration (waiting for 1 s of audio to be captured) is not part
of any latency. The client runs in one Python process: at high N its own event
loop adds to what it measures, so run it on a machine other than the server's
for numbers about the server alone. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf.systems.base import parse_knobs  # noqa: E402
from qwen3_asr_triton.audio import TARGET_SAMPLE_RATE, load_audio  # noqa: E402
from qwen3_asr_triton.client import (  # noqa: E402
    AsyncQwen3ASRClient,
    ClientOptions,
    EndpointingOptions,
    Partial,
    Qwen3ASRError,
    StreamOptions,
    StreamStats,
    TranscribeOptions,
    Utterance,
)

logger = logging.getLogger("stream_latency")

# One stream, a busy meeting room (8) and a call-centre floor (32): the counts live-captioning users ask about.
DEFAULT_STREAMS = (1, 8, 32)
# 30 s of audio per stream: ~29 partials each, enough for a p95 even at N = 1.
DEFAULT_SECONDS = 30.0
# Silence between two plays of a clip when it is looped, like a pause between sentences (with endpointing,
# 1 s: longer than the 500 ms of silence that ends an utterance, as between a speaker's sentences).
LOOP_GAP_SECONDS = 0.5
ENDPOINTING_GAP_SECONDS = 1.0
# The server's default speech padding (vad_speech_pad_ms): an utterance's end lies this far after its speech.
SPEECH_PAD_SECONDS = 0.3
# Period of the server-memory samples (one /proc read per process of the tree).
MEMORY_PERIOD = 1.0
# Pause between two stream counts, so the next one starts on an idle server.
SETTLE_SECONDS = 2.0
# Longest wait for the model to be ready before a level: serve_cpu.sh's watchdog restarts Triton after a
# worker dies (21 s measured for the tiny repository; 0.6B loads take about a minute).
READY_WAIT_SECONDS = 180.0
# Deadline of each chunk's answer: far above any sane latency, so overload shows as a latency, not an error.
CHUNK_TIMEOUT_SECONDS = 120.0
PERCENTILES = (50, 95)
# Sentences spoken by espeak-ng when no files are given: (voice, text), a few languages, 4-7 s each.
SENTENCES = (
    ("en", "Streaming recognition sends the audio in small pieces and shows the words while the speaker talks."),
    ("en-us", "Please call me back tomorrow morning about the delivery of the new office chairs."),
    ("de", "Heute Abend treffen wir uns am Bahnhof und fahren dann gemeinsam in die Stadt."),
    ("fr-fr", "Nous avons bien reçu votre message et nous vous répondrons dans les plus brefs délais."),
    ("es", "El tren de las ocho llega con diez minutos de retraso a la estación central."),
    ("it", "La riunione di domani è stata spostata alle dieci e mezza nella sala grande."),
)


# ----------------------------------------------------------------------------- speech
def synthesise(directory: Path) -> list[Path]:
    """One WAV file per sentence of :data:`SENTENCES`, spoken by espeak-ng."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("no audio files given and espeak-ng is not installed (apt-get install espeak-ng)")
    paths = []
    for i, (voice, text) in enumerate(SENTENCES):
        path = directory / f"{i:02d}-{voice}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        paths.append(path)
    return paths


def looped(wave: np.ndarray, seconds: float, gap_seconds: float = LOOP_GAP_SECONDS) -> np.ndarray:
    """``wave`` repeated (with pauses of ``gap_seconds``) until it lasts at least ``seconds``."""
    gap = np.zeros(round(gap_seconds * TARGET_SAMPLE_RATE), np.float32)
    parts, total = [], 0
    while total < seconds * TARGET_SAMPLE_RATE:
        parts += [wave, gap]
        total += wave.size + gap.size
    return np.concatenate(parts[:-1])


# ----------------------------------------------------------------------------- one stream
@dataclass
class StreamRecord:
    """What one stream measured."""

    partials: list[Partial] = field(default_factory=list)
    utterances: list[Utterance] = field(default_factory=list)
    stats: StreamStats | None = None
    error: str | None = None
    chunk_seconds: float = 1.0

    def speech_chunks(self) -> list[int]:
        """Chunks but END that hold audio of an utterance (endpointing: silence gets no partial)."""
        if self.stats is None:
            return []
        chunks = range(self.stats.chunks - 1)
        if not self.utterances:
            return list(chunks)
        spans = [(u.start, u.end) for u in self.utterances]
        c = self.chunk_seconds
        return [i for i in chunks if any(start < (i + 1) * c and i * c < end for start, end in spans)]

    def utterance_final_latencies(self) -> list[float]:
        """Per utterance: from sending the chunk holding the end of its speech to receiving its final."""
        if self.stats is None:
            return []
        offsets, c = self.stats.chunk_offsets, self.chunk_seconds
        out = []
        for u in self.utterances:
            chunk = min(len(offsets) - 1, max(0, int((u.end - SPEECH_PAD_SECONDS) / c)))
            out.append(offsets[u.chunk] + u.latency - offsets[chunk])
        return out

    def visible_latencies(self) -> list[float]:
        """Per chunk but END: time from sending it to the first hypothesis covering it."""
        if self.stats is None:
            return []
        offsets = self.stats.chunk_offsets
        answers = [*self.partials, *self.utterances]
        arrivals = sorted((offsets[p.chunk] + p.latency, p.chunk) for p in answers)
        if self.stats.final_latency is not None:
            arrivals.append((offsets[-1] + self.stats.final_latency, len(offsets) - 1))
        out = []
        for chunk in self.speech_chunks():
            covering = [at for at, answered in arrivals if answered >= chunk]
            if covering:
                out.append(min(covering) - offsets[chunk])
        return out


async def play(
    client: AsyncQwen3ASRClient,
    wave: np.ndarray,
    options: TranscribeOptions,
    pacing: StreamOptions,
    delay: float,
) -> StreamRecord:
    """Play ``wave`` as one stream after ``delay`` seconds."""
    await asyncio.sleep(delay)
    record = StreamRecord(chunk_seconds=pacing.chunk_seconds)
    stream = client.stream(wave, options, pacing, sample_rate=TARGET_SAMPLE_RATE)
    try:
        async with stream:
            async for event in stream:
                if isinstance(event, Partial):
                    record.partials.append(event)
                elif isinstance(event, Utterance):
                    record.utterances.append(event)
    except Qwen3ASRError as exc:
        record.error = str(exc)
    record.stats = stream.stats
    return record


# ----------------------------------------------------------------------------- one level
def summary(values: list[float]) -> dict[str, float | int | None]:
    """Count, p50, p95 and max of ``values`` (None without values)."""
    if not values:
        return {"count": 0, **{f"p{p}": None for p in PERCENTILES}, "max": None}
    array = np.asarray(values)
    out: dict[str, float | int | None] = {"count": len(values)}
    out.update({f"p{p}": round(float(np.percentile(array, p)), 4) for p in PERCENTILES})
    out["max"] = round(float(array.max()), 4)
    return out


def measure_level(records: list[StreamRecord], streams: int, wall: float) -> dict:
    """The numbers of one stream count."""
    stats = [r.stats for r in records if r.stats is not None]
    partials = [p for r in records for p in r.partials]
    eligible = sum(len(r.speech_chunks()) for r in records)
    errors = [r.error for r in records if r.error]
    endpointed = any(r.utterances for r in records)
    return {
        "streams": streams,
        "chunks": sum(s.chunks for s in stats),
        "partials": len(partials),
        "partials_per_chunk": round(len(partials) / eligible, 4) if eligible else None,
        "partial_latency": summary([p.latency for p in partials]),
        "visible_latency": summary([v for r in records for v in r.visible_latencies()]),
        "final_latency": summary(
            [v for r in records for v in r.utterance_final_latencies()]
            if endpointed
            else [s.final_latency for s in stats if s.final_latency is not None]
        ),
        "utterances": sum(len(r.utterances) for r in records),
        "errors": len(errors),
        "error_messages": sorted(set(errors))[:5],
        "audio_seconds": round(sum(s.audio_seconds for s in stats), 3),
        "wall_seconds": round(wall, 3),
    }


async def run_level(
    client: AsyncQwen3ASRClient,
    waves: list[np.ndarray],
    streams: int,
    options: TranscribeOptions,
    pacing: StreamOptions,
    rng: random.Random,
    server_pid: int | None = None,
    metrics_url: str | None = None,
) -> dict:
    delays = [rng.uniform(0, pacing.chunk_seconds) if streams > 1 else 0.0 for _ in range(streams)]
    began = time.perf_counter()
    sampler = contextlib.nullcontext()
    if server_pid:
        from perf.procmem import TreeSampler, tree_cpu_seconds  # psutil: the perf extra, needed with --server-pid

        sampler = TreeSampler(server_pid, MEMORY_PERIOD)
        server_cpu = tree_cpu_seconds(server_pid)
    if metrics_url:
        from perf.prometheus import decoder_batching, decoder_counters, read_page

        decoder_before = decoder_counters(await asyncio.to_thread(read_page, metrics_url))
    client_cpu = time.process_time()
    with sampler:
        records = await asyncio.gather(
            *(play(client, waves[i % len(waves)], options, pacing, delays[i]) for i in range(streams))
        )
    wall = time.perf_counter() - began
    level = measure_level(list(records), streams, wall)
    # Cores in use over the level: CPU seconds / wall seconds (2.0 is all of a 2-core machine).
    level["client_cores"] = round((time.process_time() - client_cpu) / wall, 3)
    if metrics_url:
        decoder_after = decoder_counters(await asyncio.to_thread(read_page, metrics_url))
        level["decoder"] = decoder_batching(decoder_before, decoder_after, wall)
    if server_pid:
        rss = [round(value, 1) for _, value, _ in sampler.history]
        level["server_rss_mib"] = {"first": rss[0], "last": rss[-1], "max": max(rss)}
        spent = tree_cpu_seconds(server_pid)
        cores = {name: (seconds - server_cpu.get(name, 0.0)) / wall for name, seconds in spent.items()}
        level["server_cores"] = round(sum(cores.values()), 3)
        level["server_cores_by_process"] = {
            name: round(v, 3) for name, v in sorted(cores.items(), key=lambda kv: -kv[1])
        }
    level["server_core_seconds_per_generation"] = core_seconds_per_generation(level)
    return level


def core_seconds_per_generation(level: dict) -> float | None:
    """The server's CPU seconds per decoder generation (partial or final) over a level, when both are known.

    Cores / generations a second: what one more partial costs the whole server, the figure that says
    how many generations a second the machine can afford.
    """
    generations = (level.get("decoder") or {}).get("generations_per_s")
    if not generations or "server_cores" not in level:
        return None
    return round(level["server_cores"] / generations, 4)


# ----------------------------------------------------------------------------- report
def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(levels: list[dict]) -> str:
    """The results as a fixed-width text table."""
    head = (
        f"{'streams':>7} {'chunks':>6} {'part/chunk':>10} | {'partial p50':>11} {'p95':>6} {'max':>6} | "
        f"{'visible p50':>11} {'p95':>6} {'max':>6} | {'final p50':>9} {'p95':>6} {'max':>6} | {'errors':>6}"
    )
    lines = [head, "-" * len(head)]
    for level in levels:
        ppc = level["partials_per_chunk"]
        cells = [f"{level['streams']:>7} {level['chunks']:>6} {'-' if ppc is None else f'{ppc:.2f}':>10}"]
        for key, width in (("partial_latency", 11), ("visible_latency", 11), ("final_latency", 9)):
            stats = level[key]
            cells.append(f"{_cell(stats['p50']):>{width}} {_cell(stats['p95']):>6} {_cell(stats['max']):>6}")
        cells.append(f"{level['errors']:>6}")
        if "server_cores" in level:
            cells.append(f"cores server {level['server_cores']:.2f} client {level['client_cores']:.2f}")
        if "server_rss_mib" in level:
            rss = level["server_rss_mib"]
            cells.append(f"rss {rss['first']}->{rss['last']} (max {rss['max']}) MiB")
        lines.append(" | ".join(cells))
    for level in levels:
        if "server_cores_by_process" in level:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in level["server_cores_by_process"].items() if v >= 0.01)
            lines.append(f"  N={level['streams']} server cores by process: {parts}")
    for level in levels:
        if "decoder" in level:
            line = f"  N={level['streams']} decoder: {decoder_line(level['decoder'])}"
            if level.get("server_core_seconds_per_generation") is not None:
                line += f"; server CPU {level['server_core_seconds_per_generation']:.3f} core-s per generation"
            lines.append(line)
    for level in levels:
        for message in level["error_messages"]:
            lines.append(f"  N={level['streams']} error: {message}")
    return "\n".join(lines)


def decoder_line(batching: dict) -> str:
    """One level's decoder batching (:func:`perf.prometheus.decoder_batching`) in words."""
    cells = {key: "-" if value is None else f"{value:.1f}" for key, value in batching.items()}
    return (
        f"{cells['steps_per_s']} steps/s of {cells['rows_per_step']} rows (largest batch so far"
        f" {batching['max_running']:.0f}), {cells['prefill_calls_per_s']} prefill calls/s of"
        f" {cells['prompts_per_prefill_call']} prompts, {cells['generations_per_s']} generations/s of"
        f" {cells['rows_per_generation']} decode rows"
    )


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="speech files (default: synthesised with espeak-ng)")
    parser.add_argument("--url", default="127.0.0.1:8001", help="gRPC endpoint (default: %(default)s)")
    parser.add_argument("--model", default="qwen3_asr_streaming", help="streaming model (default: %(default)s)")
    parser.add_argument("--streams", type=int, nargs="+", default=list(DEFAULT_STREAMS), help="stream counts")
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, help="audio per stream (default: %(default)g)"
    )
    parser.add_argument("--chunk-seconds", type=float, default=1.0, help="audio per chunk (default: %(default)g)")
    parser.add_argument("--speed", type=float, default=1.0, help="playback speed, 1 = real time (default: %(default)g)")
    parser.add_argument("--language", help="force a language (default: detect)")
    parser.add_argument("--max-new-tokens", type=int, help="cap on generated tokens (default: the server's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the start offsets (default: %(default)s)")
    parser.add_argument(
        "--endpointing", action="store_true", help="live captions: the server's VAD cuts utterances (see above)"
    )
    parser.add_argument(
        "--pause-seconds",
        type=float,
        help=f"silence between sentences (default {LOOP_GAP_SECONDS:g}, "
        f"{ENDPOINTING_GAP_SECONDS:g} with --endpointing)",
    )
    parser.add_argument("--server-pid", type=int, help="sample this process tree's memory (the tritonserver pid)")
    parser.add_argument(
        "--metrics-url",
        help="Triton's metrics page (http://127.0.0.1:8002/metrics): report how the decoder batched each level",
    )
    parser.add_argument("--size", choices=("tiny", "0.6b", "1.7b"), help="build and serve a repository of this size")
    parser.add_argument(
        "--precision",
        choices=("fp32", "fast"),
        default="fp32",
        help="with --size: the repository's precision (fast: int8 or bf16 from the CPU flags; default %(default)s)",
    )
    parser.add_argument(
        "--triton-knob",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="with --size: a build_engines.sh knob, e.g. ort-spin-wait=false (as perf/benchmark.py's)",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.triton_knob and not args.size:
        parser.error("--triton-knob needs --size (a server this benchmark builds)")
    args.triton_knob = parse_knobs(args.triton_knob)
    if args.pause_seconds is None:
        args.pause_seconds = ENDPOINTING_GAP_SECONDS if args.endpointing else LOOP_GAP_SECONDS
    if any(n < 1 for n in args.streams) or args.seconds <= 0 or args.pause_seconds < 0:
        parser.error("--streams must be positive integers and --seconds positive")
    try:
        endpointing = EndpointingOptions() if args.endpointing else None
        args.pacing = StreamOptions(chunk_seconds=args.chunk_seconds, speed=args.speed, endpointing=endpointing)
        args.options = TranscribeOptions(language=args.language, max_new_tokens=args.max_new_tokens)
        args.client_options = ClientOptions(url=args.url, stream_model=args.model, timeout=CHUNK_TIMEOUT_SECONDS)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def load_speech(files: list[Path], seconds: float, pause: float = LOOP_GAP_SECONDS) -> list[np.ndarray]:
    """The given files (or synthesised speech), decoded to 16 kHz mono and looped to ``seconds``."""
    if files:
        waves = [load_audio(path.read_bytes()) for path in files]
    else:
        with tempfile.TemporaryDirectory(prefix="stream-latency-") as tmp:
            waves = [load_audio(path.read_bytes()) for path in synthesise(Path(tmp))]
    return [looped(wave, seconds, pause) for wave in waves if wave.size]


async def wait_ready(client: AsyncQwen3ASRClient, model: str, limit: float = READY_WAIT_SECONDS) -> None:
    """Wait until ``model`` is ready (after a crash the server's watchdog restarts Triton); log the wait."""
    began = time.monotonic()
    while True:
        try:
            if (await client.health(timeout=5, model=model)).ok:
                break
        except Qwen3ASRError:  # the server is restarting: not yet
            pass
        if time.monotonic() - began > limit:
            raise RuntimeError(f"{model} not ready after {limit:g} s")
        await asyncio.sleep(1.0)
    if time.monotonic() - began > 1.0:
        logger.warning("waited %.0f s for %s to be ready again before the next level", time.monotonic() - began, model)


async def benchmark(args: argparse.Namespace, waves: list[np.ndarray]) -> list[dict]:
    rng = random.Random(args.seed)
    async with AsyncQwen3ASRClient(args.client_options) as client:
        health = await client.health(timeout=10, model=args.model)
        if not health.ok:
            raise RuntimeError(f"model {args.model} at {args.url} is not ready")
        # Warm-up, not measured: the channel's connection and the first request's set-up.
        await play(client, waves[0][: 2 * TARGET_SAMPLE_RATE], args.options, StreamOptions(speed=0), 0.0)
        levels = []
        for n in args.streams:
            await wait_ready(client, args.model)
            logger.info("%d stream%s of >= %g s of audio each...", n, "" if n == 1 else "s", args.seconds)
            levels.append(
                await run_level(client, waves, n, args.options, args.pacing, rng, args.server_pid, args.metrics_url)
            )
            await asyncio.sleep(SETTLE_SECONDS)
    return levels


def start_own_server(args: argparse.Namespace):
    """Build (cached) and start a server of ``args.size``; points ``args`` at it."""
    from datetime import datetime, timezone

    from perf.soak import build
    from perf.systems.base import BENCH_CACHE
    from tests.harness import start_server

    log_dir = BENCH_CACHE / "logs" / f"stream-latency-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    log_dir.mkdir(parents=True, exist_ok=True)
    # The build's concurrency defaults (16 entry instances and decoder sequences), as perf/benchmark.py uses.
    repository = build(args.size, 16, log_dir, args.precision, args.triton_knob)
    server = start_server(repository, log_dir / "server.log")
    args.url, args.server_pid, args.metrics_url = server.grpc_url, server.process.pid, server.metrics_url
    args.client_options = ClientOptions(url=args.url, stream_model=args.model, timeout=CHUNK_TIMEOUT_SECONDS)
    logger.info("serving %s at %s (logs in %s)", repository.name, args.url, log_dir)
    return server


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    server = None
    try:
        waves = load_speech(args.files, args.seconds, args.pause_seconds)
        if args.size:
            server = start_own_server(args)
        levels = asyncio.run(benchmark(args, waves))
    except (OSError, RuntimeError, ValueError, Qwen3ASRError) as exc:
        logger.error("%s", exc)
        return 1
    finally:
        if server is not None:
            from tests.harness import stop_server

            stop_server(server)
    print(
        f"qwen3_asr_streaming at {args.url}: {args.chunk_seconds:g} s chunks at {args.speed:g}x real time, "
        f"{args.seconds:g} s per stream{', endpointing' if args.endpointing else ''}; latencies in seconds"
    )
    print(table(levels))
    if args.json:
        keys = (
            *("url", "model", "size", "precision", "seconds", "chunk_seconds"),
            *("speed", "seed", "endpointing", "pause_seconds"),
        )
        config = {k: getattr(args, k) for k in (*keys, "max_new_tokens", "triton_knob")}
        from perf.machine import describe_machine

        config["machine"] = describe_machine()
        config["files"] = [str(f) for f in args.files] or [f"espeak-ng:{voice}" for voice, _ in SENTENCES]
        args.json.write_text(json.dumps({"config": config, "levels": levels}, indent=2) + "\n", encoding="utf-8")
        logger.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
