"""The torch runners on a GPU: token parity with fp32 on the CPU, bf16's accuracy, and a throughput sweep.

    python perf/gpu_torch_check.py --device cuda --size 0.6b [--batch 1 8 16 32 64] [--json F]

Prepared for the day a GPU machine is lent (torch with CUDA, no network, no TensorRT): it needs only
this repository and its venv. It makes (or reuses) a random checkpoint of the real architecture and
its export, then:

1. **Parity**: fp32 greedy tokens of the export's ONNX graphs on the CPU against the torch runners in
   fp32 on ``--device`` (TF32 off), clip by clip (the bundled sample, cut and scaled into
   ``--clips`` different inputs; espeak-ng is not needed).
2. **bf16 accuracy**: the torch runners in bf16 on the device against fp32 on the CPU, teacher-forced
   (perf/fast_accuracy.py's figures: KL, relative logit error, top-1 agreement).
3. **Throughput**: one decode step (``DecodeBatch.step``) at each ``--batch`` with ``--context``
   cached positions, and one prefill, fp32 and bf16 on the device. The KV cache stays in the
   scheduler's host buffers (numpy) and crosses to the device on every call, so these are lower
   bounds of what a device-resident cache would give.

At 0.6B it takes a few minutes on one GPU (most of it the export); ``--device cpu`` runs the same
checks here (tests/test_torch_runner.py runs it on the tiny model). It measures; the exit status is 1
when a clip's fp32 tokens differ, so a run's log says at once whether parity held.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.decode_profile import build_batch, prefill_call, repeatable_step  # noqa: E402
from perf.fast_accuracy import DECODER_ONLY, ENCODER_AND_DECODER, Graphs, clip_accuracy, pooled  # noqa: E402
from perf.machine import describe_machine  # noqa: E402
from qwen3_asr_triton.audio import load_audio  # noqa: E402
from qwen3_asr_triton.cpu_precision import BF16, FP32  # noqa: E402

logger = logging.getLogger("gpu_torch_check")

SAMPLE = REPO / "tests" / "data" / "sample_en.wav"
SIZES = ("tiny", "0.6b", "1.7b")
DEFAULT_BATCHES = (1, 8, 16, 32, 64)
DEFAULT_CONTEXT = 100
DEFAULT_PREFILL_TOKENS = 80
DEFAULT_CLIPS = 4
# Every clip decodes at least this many tokens (end tokens masked before), so parity covers real steps.
MIN_NEW_TOKENS = 16
MAX_NEW_TOKENS = 24
REPEATS = 5
MS_PER_S = 1e3


def sample_clips(count: int) -> dict[str, np.ndarray]:
    """``count`` different 16 kHz inputs from the bundled sample: whole, cut at different offsets, scaled."""
    wave = load_audio(SAMPLE.read_bytes())
    second = 16000
    clips = {"sample": wave}
    for i in range(1, count):
        start = (i * second) % max(1, wave.size - 3 * second)
        clips[f"sample-{i}"] = (wave[start:] * (1.0 - 0.15 * i)).astype(np.float32)
    return dict(list(clips.items())[:count])


def device_graphs(export: Path, precision: str, device: str) -> Graphs:
    from qwen3_asr_triton.torch_runner import TorchDecoderRunner, TorchEncoderRunner

    return Graphs(TorchEncoderRunner(export, precision, device), TorchDecoderRunner(export, precision, device))


def _best_ms(fn, repeats: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best * MS_PER_S


def throughput(graphs: Graphs, batches: list[int], context: int, prefill_tokens: int, sync) -> dict:
    """Decode-step and prefill times of one precision's decoder."""
    runner = graphs.decoder
    rng = np.random.default_rng(0)
    steps = []
    for batch in batches:
        ms = _best_ms(repeatable_step(build_batch(runner, batch, context, rng), context), REPEATS, sync)
        steps.append({"batch": batch, "ms": ms, "tokens_per_s": batch * MS_PER_S / ms})
        logger.info("decode batch %d: %.2f ms", batch, ms)
    prefill_ms = _best_ms(prefill_call(runner, prefill_tokens, rng), REPEATS, sync)
    return {"decode": steps, "prefill": {"tokens": prefill_tokens, "ms": prefill_ms}}


def run(args: argparse.Namespace) -> dict:
    import torch

    from qwen3_asr_triton.export.quantize import ensure_precision
    from tests.harness import cached_checkpoint, cached_export

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        # fp32 means fp32: TF32 (on by default for cuDNN's convolutions) would break parity.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        sync = torch.cuda.synchronize
    else:
        sync = lambda: None  # noqa: E731
    started = time.perf_counter()
    export = args.export or cached_export(cached_checkpoint("asr", size=args.size))
    ensure_precision(export, BF16)
    logger.info("export ready in %.0f s: %s", time.perf_counter() - started, export.name)
    clips = sample_clips(args.clips)
    reference = Graphs.load(export, FP32)
    exact = device_graphs(export, FP32, args.device)
    parity = []
    for name, wave in clips.items():
        result = clip_accuracy(export, reference, exact, name, wave, MAX_NEW_TOKENS, MIN_NEW_TOKENS)
        parity.append(
            {
                "clip": name,
                "tokens": len(result.reference_tokens),
                "equal": result.candidate_tokens == result.reference_tokens,
                "kl_mean": result.steps[ENCODER_AND_DECODER].summary().kl_mean,
            }
        )
        logger.info("parity %s: %s", name, parity[-1])
    bf16 = device_graphs(export, BF16, args.device)
    accuracy = [clip_accuracy(export, reference, bf16, n, w, MAX_NEW_TOKENS, MIN_NEW_TOKENS) for n, w in clips.items()]
    summary = pooled(accuracy)
    sweep = {
        FP32: throughput(exact, args.batch, args.context, args.prefill_tokens, sync),
        BF16: throughput(bf16, args.batch, args.context, args.prefill_tokens, sync),
    }
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 1),
        "device": args.device,
        "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "machine": describe_machine(),
        "size": args.size,
        "export": export.name,
        "parity_fp32": parity,
        "parity_holds": all(p["equal"] for p in parity),
        "bf16_accuracy": {v: summary[v].as_dict() for v in (DECODER_ONLY, ENCODER_AND_DECODER)},
        "throughput": sweep,
        "settings": {"context": args.context, "batch": args.batch, "clips": list(clips)},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="a torch device: cuda, cuda:1, cpu")
    p.add_argument("--size", choices=SIZES, default="0.6b")
    p.add_argument("--export", type=Path, default=None, help="an export directory (default: the cached one)")
    p.add_argument("--clips", type=int, default=DEFAULT_CLIPS)
    p.add_argument("--batch", type=int, nargs="+", default=list(DEFAULT_BATCHES))
    p.add_argument("--context", type=int, default=DEFAULT_CONTEXT)
    p.add_argument("--prefill-tokens", type=int, default=DEFAULT_PREFILL_TOKENS)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.clips < 1 or min(args.batch) < 1 or args.context < 1 or args.prefill_tokens < 1:
        p.error("--clips, --batch, --context and --prefill-tokens must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if report["parity_holds"] else 1


if __name__ == "__main__":
    sys.exit(main())
