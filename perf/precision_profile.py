"""Each cpu precision's encoder and decoder against this machine's measured compute and memory ceilings.

    python perf/precision_profile.py --size 0.6b [--export DIR] [--precisions fp32 int8 bf16] \\
        [--batch 1 8 16] [--context 100] [--prefill-tokens 80] [--windows 4] [--json F] [--markdown F]

One run measures, on this machine and side by side:

- **Ceilings.** Memory read bandwidth (:func:`perf.decode_profile.measure_bandwidth`, a 1 GiB array)
  and the peak matrix-multiply rate of each precision's kernels on large square products: fp32 and
  bf16 with torch (oneDNN; bf16 is emulated through fp32 where the CPU lacks ``avx512_bf16``/AMX), int8
  with ONNX Runtime's ``MatMulInteger`` (uint8 x int8, the int8 graphs' kernel).
- **Encoder** (a batch of ``--windows`` 8 s windows): time, GFLOP/s and its share of that precision's
  ceiling; FLOPs counted from the architecture, the convolution front end apart from the transformer
  layers; the measured time split by operator (ONNX Runtime's profiler for fp32/int8, torch's for bf16),
  so the convolutions' share of the time stands next to their share of the FLOPs.
- **Decoder**: one step of ``DecodeBatch.step`` (the serving path) at each batch size with
  ``--context`` cached positions: ms, tokens/s, the bytes a step must read (weights at the precision's
  width plus the KV cache) over the time against the read bandwidth, and ``2 x params x batch`` FLOPs
  over the time against the compute ceiling; and the prefill of ``--prefill-tokens`` prompt tokens.

It measures; it asserts nothing. Weights are random (timings do not depend on values). The CPU flags
and the fast precision this CPU would be served in (qwen3_asr_triton/cpu_precision.py) head the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.decode_profile import (  # noqa: E402
    BANDWIDTH_BYTES,
    best_ms,
    build_batch,
    graph_weights,
    measure_bandwidth,
    prefill_call,
    repeatable_step,
)
from perf.machine import describe_cpu, describe_machine  # noqa: E402
from qwen3_asr_triton.artifacts import (  # noqa: E402
    DECODER_GRAPH,
    ENCODER_GRAPH,
    onnx_filename,
    torch_weights_filename,
)
from qwen3_asr_triton.cpu_precision import BF16, FP32, INT8, choose_fast_precision, read_cpu_flags  # noqa: E402
from qwen3_asr_triton.decoding.decoder import DecoderRunner  # noqa: E402
from qwen3_asr_triton.model_spec import EncoderSpec, ModelSpec, TextSpec  # noqa: E402
from qwen3_asr_triton.sessions import EncoderRunner, OrtOptions  # noqa: E402

logger = logging.getLogger("precision_profile")

SIZES = ("tiny", "0.6b", "1.7b")
PRECISIONS = (FP32, INT8, BF16)
# Batch sizes of the serving benchmark's concurrency levels c1, c8, c16.
DEFAULT_BATCHES = (1, 8, 16)
# Cached positions per sequence (a 5 s clip's ~80-token prompt plus ~20 generated tokens) and the prompt.
DEFAULT_CONTEXT = 100
DEFAULT_PREFILL_TOKENS = 80
# Windows per encoder call: what a burst of concurrent 5-8 s requests hands the dynamic batcher.
DEFAULT_WINDOWS = 4
DEFAULT_REPEATS = 5
DEFAULT_WARMUP = 1
# Square products for the compute ceilings: large enough that the kernels run at their peak.
GEMM_SIZE = 2048
MS_PER_S = 1e3
GIGA = 1e9
# Bytes per weight the precisions' decoder steps read (int8 graphs: counted from the graph itself).
WEIGHT_BYTES = {FP32: 4, BF16: 2}
# Operators of the encoder's convolution front end: ONNX op types and torch's aten ops whose names hold it.
CONV_MARK = "conv"
# A markdown heading's mark, repeated to its level.
TITLE = "#"


# ----------------------------------------------------------------------------- ceilings
def gemm_gflops(precision: str, threads: int, repeats: int) -> float:
    """Peak GFLOP/s (GOP/s for int8) of a ``GEMM_SIZE``-square product in ``precision``'s kernels."""
    n = GEMM_SIZE
    if precision == INT8:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        weight = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "b")
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
            "gemm",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
            [weight],
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
        ms = best_ms(lambda: session.run(None, {"a": a}), 1, repeats)
    else:
        import torch

        torch.set_num_threads(threads)
        dtype = torch.float32 if precision == FP32 else torch.bfloat16
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        # F.linear, as the modules call it: oneDNN's path (torch.mm in bf16 takes a much slower one).
        ms = best_ms(lambda: torch.nn.functional.linear(a, b), 1, repeats)
    return 2.0 * n**3 / (ms / MS_PER_S) / GIGA


# ----------------------------------------------------------------------------- FLOPs
def encoder_flops(spec: EncoderSpec, windows: int, window_frames: int) -> dict[str, float]:
    """Multiply-add FLOPs (x2) of the encoder on ``windows`` full windows: convolutions and the rest."""
    chunk = 2 * spec.n_window
    chunks = windows * (window_frames // chunk)
    ch = spec.conv_channels
    freq, frames, conv = spec.num_mel_bins, chunk, 0.0
    in_ch = 1
    for _ in range(3):  # three 3x3 stride-2 convolutions per 1 s chunk
        freq, frames = (freq - 1) // 2 + 1, (frames - 1) // 2 + 1
        conv += 2.0 * ch * freq * frames * in_ch * 9
        in_ch = ch
    tokens_per_chunk = frames
    conv_out = 2.0 * tokens_per_chunk * (ch * freq) * spec.d_model
    tokens = chunks * tokens_per_chunk
    per_window = tokens // windows
    d, f = spec.d_model, spec.ffn_dim
    layers = spec.num_layers * (tokens * 2.0 * (4 * d * d + 2 * d * f) + windows * 2.0 * 2 * per_window**2 * d)
    projector = tokens * 2.0 * (d * d + d * spec.output_dim)
    return {"conv": conv * chunks, "conv_out": conv_out * chunks, "layers": layers, "projector": projector}


def decoder_params(spec: TextSpec) -> tuple[int, int]:
    """(matrix parameters of the layers, of the output projection) of the decoder."""
    h, d = spec.hidden_size, spec.head_dim
    attn = h * spec.num_heads * d * 2 + h * spec.num_kv_heads * d * 2
    mlp = 3 * h * spec.intermediate_size
    return spec.num_layers * (attn + mlp), h * spec.vocab_size


# ----------------------------------------------------------------------------- runners
def load_runners(export: Path, precision: str, threads: int):
    """(encoder, decoder) runners of ``precision`` over ``export`` (bf16: the torch runners)."""
    options = OrtOptions(intra_op_threads=threads)
    if precision == BF16:
        from qwen3_asr_triton.torch_runner import TorchDecoderRunner, TorchEncoderRunner

        return TorchEncoderRunner(export, BF16, threads=threads), TorchDecoderRunner(export, BF16, threads=threads)
    suffix = "" if precision == FP32 else "-int8"
    encoder = EncoderRunner(export / onnx_filename(ENCODER_GRAPH + suffix), options)
    return encoder, DecoderRunner(export, options, graph=onnx_filename(DECODER_GRAPH + suffix))


def weight_bytes(export: Path, precision: str, spec: TextSpec, screened: bool = False) -> int:
    """Bytes of decoder weights one step reads (``screened``: fp32 layers, the output projection's int8 screen)."""
    if precision == INT8:
        return graph_weights(export / onnx_filename(DECODER_GRAPH + "-int8"), spec.vocab_size, spec.hidden_size).bytes
    layers, head = decoder_params(spec)
    if screened:
        return layers * WEIGHT_BYTES[precision] + head
    return (layers + head) * WEIGHT_BYTES[precision]


def encoder_op_times(
    export: Path, precision: str, encoder: EncoderRunner, features: np.ndarray, frames: np.ndarray, threads: int
) -> dict:
    """Milliseconds per operator type of one encoder call, from the engine's own profiler.

    bf16 profiles ``encoder`` (the torch runner) itself; the ONNX precisions need a session of their own,
    made with profiling on.
    """
    totals: dict[str, float] = defaultdict(float)
    if precision == BF16:
        import torch

        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            encoder(features, frames)
        # Self times: nested ops (linear -> addmm, conv2d -> mkldnn_convolution) are not counted twice.
        for event in prof.key_averages():
            if event.key.startswith("aten::") and event.self_cpu_time_total > 0:
                totals[event.key] += event.self_cpu_time_total / 1e3
        return dict(totals)
    import onnxruntime as ort

    suffix = "" if precision == FP32 else "-int8"
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "encoder")
        session = ort.InferenceSession(
            str(export / onnx_filename(ENCODER_GRAPH + suffix)), options, providers=["CPUExecutionProvider"]
        )
        feeds = {"input_features": features, "feature_lens": frames.astype(np.int64)}
        session.run(None, feeds)
        session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last_start = runs[-1]["ts"] if runs else 0
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= last_start:
            totals[event["args"]["op_name"]] += event["dur"] / 1e3
    return dict(totals)


def profile_precision(
    export: Path,
    precision: str,
    spec: ModelSpec,
    args: argparse.Namespace,
    threads: int,
    read_gbps: float,
    ceiling: float,
) -> dict:
    """Encoder, decode steps and prefill of one precision."""
    rng = np.random.default_rng(0)
    encoder, decoder = load_runners(export, precision, threads)
    cfg = spec.features
    features = (0.5 * rng.standard_normal((args.windows, cfg.n_mels, cfg.window_frames))).astype(np.float32)
    frames = np.full(args.windows, cfg.window_frames, np.int64)
    enc_ms = best_ms(lambda: encoder(features, frames), args.warmup, args.repeats)
    flops = encoder_flops(spec.encoder, args.windows, cfg.window_frames)
    ops = encoder_op_times(export, precision, encoder, features, frames, threads)
    conv_ms = sum(ms for op, ms in ops.items() if CONV_MARK in op.lower())
    enc_gflops = sum(flops.values()) / (enc_ms / MS_PER_S) / GIGA
    encoder_result = {
        "windows": args.windows,
        "ms": enc_ms,
        "gflops": enc_gflops,
        "ceiling_share": enc_gflops / ceiling,
        "flops": flops,
        "conv_flops_share": (flops["conv"]) / sum(flops.values()),
        "op_ms": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "conv_time_share": conv_ms / sum(ops.values()) if ops else None,
    }
    text = spec.text
    layers, head = decoder_params(text)
    wbytes = weight_bytes(export, precision, text, screened=decoder.screen is not None)
    steps = []
    for batch in args.batch:
        decode = build_batch(decoder, batch, args.context, rng)
        ms = best_ms(repeatable_step(decode, args.context), args.warmup, args.repeats)
        kv_bytes = batch * (decode.width + 1) * text.kv_bytes_per_token
        gflops = 2.0 * (layers + head) * batch / (ms / MS_PER_S) / GIGA
        gbps = (wbytes + kv_bytes) / (ms / MS_PER_S) / GIGA
        steps.append(
            {
                "batch": batch,
                "ms": ms,
                "tokens_per_s": batch * MS_PER_S / ms,
                "bytes": wbytes + kv_bytes,
                "gbps": gbps,
                "bandwidth_share": gbps / read_gbps,
                "gflops": gflops,
                "ceiling_share": gflops / ceiling,
            }
        )
        logger.info("%s decode batch %d: %.1f ms", precision, batch, ms)
    prefill_ms = best_ms(prefill_call(decoder, args.prefill_tokens, rng), args.warmup, args.repeats)
    prefill_gflops = 2.0 * (layers * args.prefill_tokens + head) / (prefill_ms / MS_PER_S) / GIGA
    return {
        "encoder": encoder_result,
        "decode": steps,
        "weight_bytes": wbytes,
        "logit_screen": decoder.screen is not None,
        "prefill": {
            "tokens": args.prefill_tokens,
            "ms": prefill_ms,
            "gflops": prefill_gflops,
            "ceiling_share": prefill_gflops / ceiling,
        },
    }


# ----------------------------------------------------------------------------- report
def render(report: dict, level: int = 1) -> str:
    """The report as markdown; ``level``: the depth of its title (its sections one below)."""
    title, section = TITLE * level, TITLE * (level + 1)
    m = report["machine"]
    flags = ", ".join(f for f, on in m["flags"].items() if on) or "none of interest"
    absent = ", ".join(f for f, on in m["flags"].items() if not on)
    c = report["ceilings"]
    lines = [
        f"{title} Precisions against this machine's ceilings: {report['size']} ({report['export']})",
        "",
        f"CPU: {describe_cpu(m)}, {m['usable_cpus']} usable cores; flags: {flags} (absent: {absent}).",
        f"Fast mode on this CPU: **{report['fast_choice']['precision']}** ({report['fast_choice']['reason']}).",
        f"Started {report['started']}; `{report['command']}`; {report['threads']} threads per engine.",
        "",
        f"{section} Ceilings",
        "",
        f"- memory read: {c['read_gbps']:.1f} GB/s (perf/decode_profile.py's measure over a 1 GiB array)",
        f"- fp32 GEMM (torch `F.linear`, oneDNN, {GEMM_SIZE}^2): {c['gflops'][FP32]:.1f} GFLOP/s",
        f"- bf16 GEMM (torch `F.linear`, oneDNN): {c['gflops'][BF16]:.1f} GFLOP/s",
        f"- int8 GEMM (ONNX Runtime MatMulInteger, u8 x s8): {c['gflops'][INT8]:.1f} GOP/s",
        "",
        f"{section} Encoder: {report['settings']['windows']} windows of 8 s in one call",
        "",
        "| precision | ms | GFLOP/s | of ceiling | conv share of FLOPs | conv share of time | top operators (ms) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for p, r in report["precisions"].items():
        e = r["encoder"]
        top = ", ".join(f"{op} {ms:.0f}" for op, ms in list(e["op_ms"].items())[:4])
        conv_time = "n/a" if e["conv_time_share"] is None else f"{100 * e['conv_time_share']:.0f}%"
        lines.append(
            f"| {p} | {e['ms']:.0f} | {e['gflops']:.1f} | {100 * e['ceiling_share']:.0f}% "
            f"| {100 * e['conv_flops_share']:.0f}% | {conv_time} | {top} |"
        )
    lines += [
        "",
        f"{section} Decoder step at {report['settings']['context']} cached positions (`DecodeBatch.step`)",
        "",
        "| precision | batch | ms | tokens/s | MB read | GB/s | of bandwidth | GFLOP/s | of ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p, r in report["precisions"].items():
        for s in r["decode"]:
            lines.append(
                f"| {p} | {s['batch']} | {s['ms']:.1f} | {s['tokens_per_s']:.1f} | {s['bytes'] / 1e6:.0f} "
                f"| {s['gbps']:.1f} | {100 * s['bandwidth_share']:.0f}% | {s['gflops']:.1f} "
                f"| {100 * s['ceiling_share']:.0f}% |"
            )
    screened = [p for p, r in report["precisions"].items() if r.get("logit_screen")]
    if screened:
        lines += [
            "",
            f"{', '.join(screened)}: the output projection is read as its int8 logit screen (one byte per weight; the "
            "fp32 rows that can decide the token are recomputed, qwen3_asr_triton/decoding/logit_screen.py).",
        ]
    lines += [
        "",
        f"{section} Prefill of {report['settings']['prefill_tokens']} prompt tokens",
        "",
        "| precision | ms | GFLOP/s | of ceiling |",
        "|---|---:|---:|---:|",
    ]
    for p, r in report["precisions"].items():
        f = r["prefill"]
        lines.append(f"| {p} | {f['ms']:.0f} | {f['gflops']:.1f} | {100 * f['ceiling_share']:.0f}% |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--export", type=Path, default=None, help="an export directory (default: the cached one)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--batch", type=int, nargs="+", default=list(DEFAULT_BATCHES))
    p.add_argument("--context", type=int, default=DEFAULT_CONTEXT)
    p.add_argument("--prefill-tokens", type=int, default=DEFAULT_PREFILL_TOKENS)
    p.add_argument("--windows", type=int, default=DEFAULT_WINDOWS)
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    p.add_argument("--threads", type=int, default=0, help="threads per engine (0: every core)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args(argv)
    if min(args.batch) < 1 or args.context < 1 or args.windows < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--batch, --context, --windows and --repeats must be >= 1, --warmup >= 0")
    return args


def served_precisions(
    systems: list[str], precisions: list[str], skip: frozenset[tuple[str, str]], fast_knob: str, cpu_fast: str
) -> list[str]:
    """The cpu precisions our runs of a benchmark computed in, to profile beside them: fp32 for the exact
    mode, and the fast mode's precision (``fast_knob``; ``fast`` resolves to ``cpu_fast``, this CPU's choice).
    """
    from perf.fast_accuracy import precision_to_measure

    served = [FP32] if "triton" in systems and "fp32" in precisions and ("triton", "fp32") not in skip else []
    fast = precision_to_measure(systems, precisions, skip, fast_knob, cpu_fast)
    return served + ([fast] if fast else [])


def profile(args: argparse.Namespace, command: str) -> dict:
    """Measure the ceilings and profile each of ``args.precisions``; the report :func:`render` shows.

    ``args`` holds :func:`parse_args`'s fields (``perf/benchmark.py`` passes ``parse_args([...])``);
    ``command`` is recorded as the command that produced the report.
    """
    from qwen3_asr_triton.export.quantize import ensure_precision
    from tests.harness import cached_checkpoint, cached_export

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    threads = args.threads or os.cpu_count() or 1
    export = args.export or cached_export(cached_checkpoint("asr", size=args.size))
    for precision in args.precisions:
        ensure_precision(export, precision)
    spec = ModelSpec.load(export)
    machine = describe_machine()
    fast, reason = choose_fast_precision(read_cpu_flags(), True)
    logger.info("measuring the ceilings")
    read_gbps = measure_bandwidth(BANDWIDTH_BYTES, threads).read
    gflops = {p: gemm_gflops(p, threads, args.repeats) for p in PRECISIONS}
    results = {}
    for precision in args.precisions:
        logger.info("profiling %s", precision)
        results[precision] = profile_precision(export, precision, spec, args, threads, read_gbps, gflops[precision])
    return {
        "started": started,
        "command": command,
        "machine": machine,
        "fast_choice": {"precision": fast, "reason": reason},
        "size": args.size,
        "export": export.name,
        "threads": threads,
        "settings": {
            "batch": args.batch,
            "context": args.context,
            "prefill_tokens": args.prefill_tokens,
            "windows": args.windows,
            "repeats": args.repeats,
        },
        "ceilings": {"read_gbps": read_gbps, "gflops": gflops},
        "precisions": results,
        "torch_weights": {g: torch_weights_filename(g) for g in (ENCODER_GRAPH, DECODER_GRAPH)},
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    report = profile(args, f"python perf/precision_profile.py {argv_text}".strip())
    text = render(report)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
