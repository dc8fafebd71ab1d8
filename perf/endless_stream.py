"""One endless live stream with endpointing: flat server memory, and the last utterance as fast as the first?

    python perf/endless_stream.py --size tiny --minutes 60 --speed 8 [--out perf/results/endless-stream-tiny-60min]

Builds (once, cached) an fp32 cpu repository of a random checkpoint of ``--size``'s dimensions (as
``perf/soak.py`` does), starts a real server and plays one gRPC stream of ``--minutes`` of speech
through ``qwen3_asr_streaming`` with ENDPOINTING: espeak-ng sentences (``perf/stream_latency.py``'s)
separated by ``--pause-seconds`` of silence, cycled, in 1 s chunks sent ``--speed`` times faster than
real time. A stream that held all its audio (endpointing off) would be refused after 300 s; this one
holds the utterance being spoken.

Recorded per minute of stream audio: utterance finals, partial latency (chunk sent -> partial
received), utterance final latency (the chunk that ended it sent -> final received), and the server
tree's resident memory (RSS every 2 s of wall time, PSS once a minute). The report compares the first
and the last five stream minutes: latency p50 and PSS (flat when the last is within ``FLAT_TOLERANCE``
of the first after warm-up). Needs the perf extra (psutil, matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf.machine import describe_machine  # noqa: E402
from perf.procmem import TreeSampler  # noqa: E402
from perf.soak import build, run_folders  # noqa: E402
from perf.stream_latency import SENTENCES, synthesise  # noqa: E402
from qwen3_asr_triton.audio import TARGET_SAMPLE_RATE, load_audio  # noqa: E402
from qwen3_asr_triton.client import (  # noqa: E402
    AsyncQwen3ASRClient,
    ClientOptions,
    EndpointingOptions,
    Partial,
    StreamOptions,
    TranscribeOptions,
    Utterance,
)

logger = logging.getLogger("endless_stream")

# Memory is flat when the last five stream minutes' PSS is within this fraction of the first five's.
FLAT_TOLERANCE = 0.05
# Stream minutes compared at the start and at the end (the first one is warm-up).
WINDOW_MINUTES = 5
# Wall seconds between RSS samples (PSS, which walks every page, once a minute).
RSS_PERIOD = 2.0
PSS_PERIOD = 60.0
# Output cap per utterance: random weights otherwise ramble to the server's cap on every partial.
MAX_NEW_TOKENS = 32


def speech_frames(waves: list[np.ndarray], pause: float, minutes: float, chunk: int) -> list[np.ndarray]:
    """The stream's audio in chunks of ``chunk`` samples: sentences with pauses, cycled for ``minutes``."""
    gap = np.zeros(round(pause * TARGET_SAMPLE_RATE), np.float32)
    total = round(minutes * 60 * TARGET_SAMPLE_RATE)
    pieces, length, i = [], 0, 0
    while length < total:
        pieces += [waves[i % len(waves)], gap]
        length += waves[i % len(waves)].size + gap.size
        i += 1
    audio = np.concatenate(pieces)[:total]
    return [audio[at : at + chunk] for at in range(0, audio.size, chunk)]


async def paced(frames: list[np.ndarray], seconds_per_frame: float) -> AsyncIterator[np.ndarray]:
    """Yield the frames, each when it is due (``seconds_per_frame`` apart)."""
    began = time.monotonic()
    for i, frame in enumerate(frames):
        wait = began + i * seconds_per_frame - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        yield frame


async def play(url: str, frames: list[np.ndarray], speed: float, chunk_seconds: float) -> tuple[list, list, float]:
    """Stream ``frames``; (partials, utterances, wall seconds)."""
    options = ClientOptions(url=url, timeout=600.0)
    pacing = StreamOptions(chunk_seconds=chunk_seconds, speed=0, endpointing=EndpointingOptions())
    partials: list[Partial] = []
    utterances: list[Utterance] = []
    began = time.monotonic()
    async with AsyncQwen3ASRClient(options) as client:
        source = paced(frames, chunk_seconds / speed)
        request = TranscribeOptions(max_new_tokens=MAX_NEW_TOKENS)
        async with client.stream(source, request, pacing, sample_rate=TARGET_SAMPLE_RATE) as stream:
            async for event in stream:
                if isinstance(event, Partial):
                    partials.append(event)
                elif isinstance(event, Utterance):
                    utterances.append(event)
                    if event.index % 50 == 0:
                        logger.info("utterance %d at %.0f s of stream audio", event.index, event.end)
    return partials, utterances, time.monotonic() - began


def _p(values: list[float], pct: float) -> float | None:
    return round(float(np.percentile(values, pct)), 4) if values else None


def per_minute(partials: list[Partial], utterances: list[Utterance], minutes: int) -> list[dict]:
    """Latencies and counts per minute of stream audio."""
    rows = []
    for minute in range(minutes):
        lo, hi = minute * 60, (minute + 1) * 60
        part = [p.latency for p in partials if lo <= p.audio_seconds < hi]
        final = [u.latency for u in utterances if lo <= u.end < hi]
        rows.append(
            {
                "minute": minute,
                "partials": len(part),
                "partial_p50": _p(part, 50),
                "partial_p95": _p(part, 95),
                "utterances": len(final),
                "final_p50": _p(final, 50),
            }
        )
    return rows


def plot(out: Path, minutes: list[dict], memory: list[dict], wall: float, audio_minutes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    scale = audio_minutes / wall  # wall seconds -> stream minutes
    top.plot([m["wall"] * scale for m in memory], [m["rss_mib"] for m in memory], label="RSS (server tree)")
    pss = [(m["wall"] * scale, m["pss_mib"]) for m in memory if m["pss_mib"]]
    if pss:
        top.plot(*zip(*pss, strict=True), "o-", label="PSS")
    top.set_ylabel("MiB")
    top.legend()
    bottom.plot([m["minute"] for m in minutes], [m["partial_p50"] for m in minutes], label="partial p50")
    bottom.plot([m["minute"] for m in minutes], [m["partial_p95"] for m in minutes], label="partial p95")
    bottom.plot([m["minute"] for m in minutes], [m["final_p50"] for m in minutes], label="utterance final p50")
    bottom.set_xlabel("stream minute")
    bottom.set_ylabel("seconds")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(out / "endless-stream.png", dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--size", choices=("tiny", "0.6b", "1.7b"), help="build a repository of these dimensions")
    source.add_argument("--model-repository", type=Path, help="serve this built cpu repository")
    parser.add_argument("--minutes", type=float, default=60.0, help="stream audio (default %(default)g)")
    parser.add_argument("--speed", type=float, default=8.0, help="times faster than real time (default %(default)g)")
    parser.add_argument("--chunk-seconds", type=float, default=1.0)
    parser.add_argument("--pause-seconds", type=float, default=1.0, help="silence between sentences")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    if args.minutes < 2 * WINDOW_MINUTES or args.speed <= 0:
        parser.error(f"--minutes must be at least {2 * WINDOW_MINUTES} and --speed positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out, log_dir = run_folders("endless-stream", args)
    repository = args.model_repository or build(args.size, 1, log_dir)
    with tempfile.TemporaryDirectory(prefix="endless-") as tmp:
        waves = [load_audio(path.read_bytes()) for path in synthesise(Path(tmp))]
    frames = speech_frames(waves, args.pause_seconds, args.minutes, round(args.chunk_seconds * TARGET_SAMPLE_RATE))

    from tests.harness import start_server, stop_server

    started = datetime.now(timezone.utc)
    server = start_server(repository, log_dir / "server.log")
    try:
        with TreeSampler(server.process.pid, RSS_PERIOD, PSS_PERIOD) as sampler:
            partials, utterances, wall = asyncio.run(play(server.grpc_url, frames, args.speed, args.chunk_seconds))
    finally:
        stop_server(server)
    memory = [
        {"wall": round(t, 1), "rss_mib": round(rss, 1), "pss_mib": None if pss is None else round(pss, 1)}
        for t, rss, pss in sampler.history
    ]
    minutes = per_minute(partials, utterances, int(args.minutes))
    scale = args.minutes * 60 / wall  # wall seconds -> stream seconds
    pss = [(m["wall"] * scale / 60, m["pss_mib"]) for m in memory if m["pss_mib"]]
    first = [v for t, v in pss if 1 <= t < WINDOW_MINUTES + 1]
    last = [v for t, v in pss if t >= args.minutes - WINDOW_MINUTES]
    first_lat = [p.latency for p in partials if 60 <= p.audio_seconds < (WINDOW_MINUTES + 1) * 60]
    last_lat = [p.latency for p in partials if p.audio_seconds >= (args.minutes - WINDOW_MINUTES) * 60]
    first_utt = [u for u in utterances if u.end < 120]
    totals = {
        "utterances": len(utterances),
        "partials": len(partials),
        "stream_audio_seconds": round(args.minutes * 60, 1),
        "wall_seconds": round(wall, 1),
        "pss_first_mib": max(first) if first else None,
        "pss_last_mib": max(last) if last else None,
        "rss_max_mib": max(m["rss_mib"] for m in memory) if memory else None,
        "partial_p50_first": _p(first_lat, 50),
        "partial_p50_last": _p(last_lat, 50),
        "partial_p95_first": _p(first_lat, 95),
        "partial_p95_last": _p(last_lat, 95),
        "first_utterance_partial_p50": _p([p.latency for p in partials if first_utt and p.utterance == 0], 50),
        "last_utterance_partial_p50": _p(
            [p.latency for p in partials if utterances and p.utterance == utterances[-1].index], 50
        ),
    }
    totals["memory_flat"] = bool(first and last and max(last) <= max(first) * (1 + FLAT_TOLERANCE))
    report = {
        "started": started.isoformat(timespec="seconds"),
        "command": "python perf/endless_stream.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine(),
        "repository": repository.name,
        "speech": [f"espeak-ng:{voice}" for voice, _ in SENTENCES],
        "speed": args.speed,
        "chunk_seconds": args.chunk_seconds,
        "pause_seconds": args.pause_seconds,
        "max_new_tokens": MAX_NEW_TOKENS,
        "totals": totals,
        "minutes": minutes,
        "memory": memory,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(out, minutes, memory, wall, args.minutes)
    logger.info("totals: %s", json.dumps(totals))
    return 0 if totals["memory_flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
