"""Time to refusal, peak and retained memory of over-limit requests, against a real server.

Two requests an outside probe sent: a FLAC of 3,700 s of silence at 384 kHz (over the 3,600 s limit;
a small file that decodes to 1.4 billion samples), and 300 MB of random bytes as ``AUDIO`` (over the
256 MiB limit). Each goes to the clients' gRPC port (the gRPC guard, which refuses an over-size message
from its length); the 300 MB request is then sent once more to Triton's own gRPC port (loopback only,
what clients reached before the guard), in the same run. For each: seconds until the error arrives
(the 300 MB message is serialized before the clock starts), the peak resident set of everything
serve_cpu.sh runs (sampled every 50 ms: guard, gateway, Triton and its workers), its proportional set
size (PSS: shared memory counted once) and the python backend's shared-memory regions in /dev/shm (all
servers on the machine) before and 3 s after; then a good request must still be answered.

    python perf/fault_memory.py --model-repository DIR [--out perf/results/fault-memory]

Needs the perf extra (psutil): ``EXTRAS=export,serve,gateway,test,perf ./scripts/setup_env.sh``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf.machine import describe_machine  # noqa: E402
from perf.procmem import MIB, tree_memory  # noqa: E402
from qwen3_asr_triton.supervision import SHM_PREFIX  # noqa: E402
from tests.harness import start_server, stop_server  # noqa: E402
from tests.triton_requests import transcribe  # noqa: E402

logger = logging.getLogger("fault_memory")

# Where the generated FLAC is kept: FFmpeg needs ~1 min to encode 3,700 s at 384 kHz.
CACHE = REPO / ".cache" / "perf"
# Peak sampling period: a refusal takes a fraction of a second to a few seconds.
SAMPLE_SECONDS = 0.05
# After the answer, time for the workers to return memory before "retained" is read.
SETTLE_SECONDS = 3.0


def long_flac(seconds: int = 3700, known_length: bool = True) -> bytes:
    """``seconds`` of digital silence at 384 kHz, mono 16-bit FLAC (FFmpeg's encoder: under a MB).

    ``known_length=False`` writes it to a pipe, as a live encoder does: FFmpeg cannot seek back to
    fill in the header, so the file does not say how long it is and only decoding tells.
    """
    path = CACHE / f"silence-{seconds}s-384k{'' if known_length else '-unknown-length'}.flac"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.flac")
        command = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=384000:cl=mono"]
        command += ["-t", str(seconds), "-c:a", "flac", "-sample_fmt", "s16", "-f", "flac"]
        if known_length:
            subprocess.run([*command, str(tmp)], check=True)
        else:
            with tmp.open("wb") as out:
                subprocess.run([*command, "pipe:1"], check=True, stdout=out)
        tmp.rename(path)
    return path.read_bytes()


def shm_mib() -> float:
    return sum(p.stat().st_size for p in Path("/dev/shm").glob(f"{SHM_PREFIX}*")) / MIB


def serialized_audio_request(audio: bytes) -> bytes:
    """A ``ModelInferRequest`` for ``qwen3_asr`` with ``audio`` as AUDIO, serialized before the clock starts.

    tritonclient takes about a second to build and serialize a 300 MB request on this machine; sending
    prepared bytes times what the server does, not the client.
    """
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name="qwen3_asr")
    request.inputs.add(name="AUDIO", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(len(audio).to_bytes(4, "little") + audio)
    request.outputs.add(name="TEXT")
    return request.SerializeToString()


def send_serialized(url: str, serialized: bytes) -> None:
    """One ModelInfer call with prepared bytes; raises grpc.RpcError on the refusal."""
    import grpc

    with grpc.insecure_channel(url, options=[("grpc.max_send_message_length", -1)]) as channel:
        channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(serialized, timeout=120)


def measure(url: str, pid: int, name: str, **request) -> dict:
    _, pss_before, _ = tree_memory(pid)
    shm_before = shm_mib()
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_memory(pid, pss=False)[0])
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    rss_before = tree_memory(pid, pss=False)[0]
    sampler.start()
    started = time.monotonic()
    try:
        if "serialized" in request:
            send_serialized(url, request["serialized"])
        else:
            transcribe(url, **request)
        answer = "answered"
    except Exception as exc:  # the expected refusal
        answer = str(exc)[:160]
    seconds = time.monotonic() - started
    time.sleep(SETTLE_SECONDS)
    stop.set()
    sampler.join()
    _, pss_after, _ = tree_memory(pid)
    result = {
        "request": name,
        "answer": answer,
        "seconds_to_answer": round(seconds, 3),
        "rss_before_mib": round(rss_before, 1),
        "rss_peak_mib": round(peak[0], 1),
        "pss_before_mib": round(pss_before, 1),
        "pss_after_mib": round(pss_after, 1),
        "pss_retained_mib": round(pss_after - pss_before, 1),
        "shm_before_mib": round(shm_before, 1),
        "shm_after_mib": round(shm_mib(), 1),
    }
    logger.info("%s", json.dumps(result))
    return result


def run_requests(repository: Path, out: Path, requests: list[tuple[str, str, dict]]) -> list[dict]:
    """``(name, port, request)`` in order; port "guard" is the clients' gRPC port, "triton" Triton's own."""
    server = start_server(repository, out / "server.log")
    try:
        urls = {"guard": server.grpc_url, "triton": server.triton_grpc_url}
        return [
            {"port": port, **measure(urls[port], server.process.pid, name, **request)}
            for name, port, request in requests
        ]
    finally:
        stop_server(server)
        (out / "server.log").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO / "perf" / "results" / "fault-memory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    flac = long_flac()
    unknown = long_flac(known_length=False)
    accepted = long_flac(600, known_length=False)
    args.out.mkdir(parents=True, exist_ok=True)
    good = sorted((REPO / "tests" / "data").glob("*.wav"))[0].read_bytes()
    big = serialized_audio_request(os.urandom(300_000_000))
    results = run_requests(
        args.model_repository,
        args.out,
        [
            ("warm-up", "guard", {"audio": good, "max_new_tokens": 4}),
            (f"FLAC, 3700 s at 384 kHz ({len(flac) / 1e6:.1f} MB)", "guard", {"audio": flac}),
            (
                f"FLAC, 3700 s at 384 kHz, no length in its header ({len(unknown) / 1e6:.1f} MB)",
                "guard",
                {"audio": unknown},
            ),
            (
                f"FLAC, 600 s at 384 kHz, no length in its header, accepted ({len(accepted) / 1e6:.1f} MB)",
                "guard",
                {"audio": accepted, "max_new_tokens": 4},
            ),
            ("300 MB of random bytes as AUDIO", "guard", {"serialized": big}),
            ("a good request afterwards", "guard", {"audio": good, "max_new_tokens": 4}),
            ("300 MB of random bytes as AUDIO, to Triton's own port", "triton", {"serialized": big}),
            ("a good request afterwards", "guard", {"audio": good, "max_new_tokens": 4}),
        ],
    )[1:]
    report = {"machine": describe_machine(), "repository": args.model_repository.name, "results": results}
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
