"""How to run Silero VAD for many live streams: frame by frame, batched across streams, or a chunk per call.

    python perf/vad_choice.py [--streams 1 8 32 64] [--out perf/results/vad-choice]

Silero VAD scores 16 kHz audio in 32 ms frames and is recurrent (each frame needs the state left by
the one before), so a stream's frames are scored in order. Three ways to score one second of audio
(31 frames) for each of N streams, all on ONNX Runtime with one thread, as the streaming model runs:

- ``per-frame``: the wheel's streaming graph, one call per frame and stream (its documented use);
- ``batched``: the same graph, one call per frame for all N streams together (batch N);
- ``sequence``: the wheel's sequence graph, one call per stream for its 31 frames.

Reported: CPU milliseconds per frame and per stream-second of audio, and each way's share of one core at
N real-time streams. It also checks that the three give the same probabilities (max difference).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf.machine import describe_machine  # noqa: E402
from qwen3_asr_triton.export.files import silero_vad_graph  # noqa: E402
from qwen3_asr_triton.vad import CONTEXT_SAMPLES, FRAME_SAMPLES, SileroVad, VadStream  # noqa: E402

# One second of 16 kHz audio: the chunk a live stream typically sends.
FRAMES = 31
# Repetitions per measurement (the fastest is kept: the others caught the machine busy).
REPEATS = 5


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def frames_with_context(audio: np.ndarray) -> np.ndarray:
    """``[streams, FRAMES, 576]``: each frame with the previous frame's last 64 samples."""
    frames = audio.reshape(audio.shape[0], FRAMES, FRAME_SAMPLES)
    context = np.zeros((audio.shape[0], FRAMES, CONTEXT_SAMPLES), np.float32)
    context[:, 1:] = frames[:, :-1, -CONTEXT_SAMPLES:]
    return np.concatenate([context, frames], axis=2)


def best(run) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(REPEATS):
        began = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - began)
    return min(times), out


def measure(streams: int, stock, vad: SileroVad, audio: np.ndarray) -> dict:
    x = frames_with_context(audio)
    sr = np.array(16000, np.int64)

    def per_frame() -> np.ndarray:
        out = np.zeros((streams, FRAMES), np.float32)
        for s in range(streams):
            state = np.zeros((2, 1, 128), np.float32)
            for f in range(FRAMES):
                prob, state = stock.run(None, {"input": x[s, f : f + 1], "state": state, "sr": sr})
                out[s, f] = prob[0, 0]
        return out

    def batched() -> np.ndarray:
        out = np.zeros((streams, FRAMES), np.float32)
        state = np.zeros((2, streams, 128), np.float32)
        for f in range(FRAMES):
            prob, state = stock.run(None, {"input": x[:, f], "state": state, "sr": sr})
            out[:, f] = prob[:, 0]
        return out

    def sequence() -> np.ndarray:
        return np.stack([vad.score(VadStream(), audio[s]) for s in range(streams)])

    rows = {}
    reference = None
    for name, run in (("per-frame", per_frame), ("batched", batched), ("sequence", sequence)):
        seconds, probs = best(run)
        reference = probs if reference is None else reference
        per_frame_ms = seconds / (streams * FRAMES) * 1000
        rows[name] = {
            "ms_per_frame": round(per_frame_ms, 4),
            "ms_per_stream_second": round(seconds / streams * 1000, 3),
            "core_share_at_real_time": round(seconds, 4),  # one second of audio for every stream
            "max_abs_diff_vs_per_frame": float(np.max(np.abs(probs - reference))),
        }
    return {"streams": streams, **rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--out", type=Path, default=REPO / "perf" / "results" / "vad-choice")
    args = parser.parse_args(argv)
    graph = silero_vad_graph()
    stock = session(graph.with_name("silero_vad_16k_op15.onnx"))
    vad = SileroVad(graph)
    rng = np.random.default_rng(0)
    levels = []
    for streams in args.streams:
        # Noise with bursts: probabilities across the range, like speech and pauses.
        audio = (rng.standard_normal((streams, FRAMES * FRAME_SAMPLES)) * rng.uniform(0.001, 0.3)).astype(np.float32)
        levels.append(measure(streams, stock, vad, audio))
        row = levels[-1]
        print(
            f"N={streams:>3}: ms per frame  per-frame {row['per-frame']['ms_per_frame']:.3f}  "
            f"batched {row['batched']['ms_per_frame']:.3f}  sequence {row['sequence']['ms_per_frame']:.3f}  "
            f"(max diff {row['sequence']['max_abs_diff_vs_per_frame']:.1e})"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "python perf/vad_choice.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine(),
        "graphs": {"per-frame, batched": "silero_vad_16k_op15.onnx", "sequence": graph.name},
        "frames_per_call": FRAMES,
        "levels": levels,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
