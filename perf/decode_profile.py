"""Where the time of one CPU decoder step goes: ONNX Runtime compute, our Python, and the memory floor.

    python perf/decode_profile.py --export .cache/onnx/0.6b-asr-hf-<hash> [--graph decoder-int8.onnx] \\
        [--batch 1 4 8 16] [--context 100] [--prefill-tokens 80] [--threads 0] [--json out.json]

For each batch size B, with every sequence holding ``--context`` cached positions, one decoder
step is timed three ways; (a) and (b) alternate, so that load from other processes hits both
alike, and the best of ``--repeats`` counts (medians go to the JSON):

(a) :meth:`DecoderRunner.run` on prepared inputs: ONNX Runtime compute and overhead (for the fp32
    graph of an export with the logit screen: the body graph, the screen's integer product and the
    fp32 rows it recomputes, qwen3_asr_triton/decoding/logit_screen.py);
(b) :meth:`DecodeBatch.step`, the serving path: (a) plus building the inputs, greedy choice
    (argmax and a log-softmax over the vocabulary per row: float32 exp, float64 sum) and bookkeeping, so
    (b) - (a) is our Python overhead; the share of it spent in :meth:`DecodeBatch.choose` is
    timed on its own;
(c) a memory floor: the bytes one step must move (every weight of the graph, lm_head included (its
    int8 copy with the screen),
    the allocated past KV cache it reads and the new position it returns) divided by the
    read bandwidth measured here with numpy (the fastest of a threaded max-reduction, a BLAS
    dot product and the read side of a copy, over a 1 GiB array). ``floor / (a)`` is the share of the step explained
    by memory traffic; near 1 the step is memory bound, and only fewer bytes (int8 weights,
    smaller caches) make it faster.

The compute estimate is ``2 x parameters x B`` FLOPs per step (attention over the cache is
left out); achieved GFLOP/s shows how far batching moves the step towards compute bound.
Time to first token is explained by the log-mel features and encoder of one clip plus the
prefill of its prompt. Weights and KV caches are random: timings do not depend on values.
It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.machine import describe_cpu, describe_machine  # noqa: E402
from qwen3_asr_triton.artifacts import ENCODER_FILENAME  # noqa: E402
from qwen3_asr_triton.decoding.decoder import DECODER_FILENAME, DecodeBatch, DecoderRunner, Sequence  # noqa: E402
from qwen3_asr_triton.features import LogMel, split_windows  # noqa: E402
from qwen3_asr_triton.sessions import EncoderRunner, OrtOptions  # noqa: E402

logger = logging.getLogger("decode_profile")

# The batch sizes of the serving benchmark's concurrency levels.
DEFAULT_BATCHES = (1, 4, 8, 16)
# Cached positions per sequence: the prompt of a 5 s clip (~80 tokens) plus ~20 generated tokens.
DEFAULT_CONTEXT = 100
# Prompt of a 5 s clip: 5 s x 13 audio tokens per second (features.tokens_per_chunk) + ~15 template tokens.
DEFAULT_PREFILL_TOKENS = 80
# The clip length whose encoder window and prefill make up the time to first token.
DEFAULT_CLIP_SECONDS = 5.0
# Untimed runs: the first calls of a session allocate its buffers and page in its weights.
DEFAULT_WARMUP = 2
# Timed runs per measurement (the best counts): enough to catch a quiet moment on a busy machine, few enough
# for the 0.6B model.
DEFAULT_REPEATS = 10
# 1 GiB: far larger than any CPU cache, so the bandwidth measured is DRAM's.
BANDWIDTH_BYTES = 1 << 30
# Timed bandwidth runs after one untimed one; the best is kept (other processes only slow a run down).
BANDWIDTH_RUNS = 5
# Sequences never finish here: no end tokens and a budget no profile reaches.
NEVER = 1 << 30
# Decimal units, as bandwidths are usually quoted.
BYTES_PER_MB = 1e6
BYTES_PER_GB = 1e9
MS_PER_S = 1e3


@dataclass(frozen=True)
class Bandwidth:
    """Best-of-N memory bandwidth in GB/s (1e9 bytes/s)."""

    read_max: float
    read_dot: float
    copy: float
    threads: int
    array_gib: float

    @property
    def read(self) -> float:
        """The fastest read seen (a copy reads its source at ``copy / 2``): what the floor divides by."""
        return max(self.read_max, self.read_dot, self.copy / 2)


@dataclass(frozen=True)
class GraphWeights:
    """Initializers of one ONNX graph."""

    params: int
    bytes: int
    lm_head_params: int
    lm_head_bytes: int
    data_file_bytes: int


@dataclass(frozen=True)
class StepProfile:
    """One batch size's step timings (best of the repeats, and medians) and derived figures."""

    batch: int
    context: int
    graph_ms: float
    step_ms: float
    choose_ms: float
    graph_median_ms: float
    step_median_ms: float
    kv_bytes: int
    step_bytes: int
    floor_ms: float
    gflops: float

    @property
    def overhead_ms(self) -> float:
        return self.step_ms - self.graph_ms

    @property
    def overhead_pct(self) -> float:
        return 100.0 * self.overhead_ms / self.step_ms

    @property
    def floor_fraction(self) -> float:
        return self.floor_ms / self.graph_ms

    @property
    def tokens_per_s(self) -> float:
        return self.batch * MS_PER_S / self.step_ms


@dataclass(frozen=True)
class FirstToken:
    """Best times (ms) of what precedes the first token of one clip."""

    clip_seconds: float
    audio_tokens: int
    features_ms: float
    encoder_ms: float
    prefill_tokens: int
    prefill_ms: float
    prefill_gflops: float

    @property
    def total_ms(self) -> float:
        return self.features_ms + self.encoder_ms + self.prefill_ms


def _best_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()  # untimed: first touch, thread start-up
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_bandwidth(nbytes: int, threads: int, runs: int = BANDWIDTH_RUNS) -> Bandwidth:
    """Memory bandwidth of this machine, measured with numpy on a float32 array.

    Parameters
    ----------
    nbytes : int
        Size of the source array (and of the copy's destination).
    threads : int
        Threads sharing the ``max`` and ``copyto`` work (numpy releases the GIL in both), as many
        as ONNX Runtime uses, since one core alone may not saturate the memory bus.
    runs : int
        Timed runs of each kernel; the fastest counts.

    Returns
    -------
    Bandwidth
        Read, two ways, each ``nbytes / time``: a max-reduction split over ``threads`` threads
        (one stream per thread; ``max`` has SIMD kernels, float32 ``sum``'s pairwise summation
        runs below DRAM speed on some CPUs), and BLAS ``dot`` of the array's two halves (two
        streams, OpenBLAS's own threads: the access pattern of a matrix-vector product).
        Copy: ``2 x nbytes / time`` of ``copyto`` (bytes read plus bytes written, as STREAM counts them).
    """
    src = np.ones(nbytes // np.dtype(np.float32).itemsize, dtype=np.float32)
    dst = np.zeros_like(src)
    edges = np.linspace(0, src.size, threads + 1).astype(np.int64)
    parts = [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]
    half = src.size // 2
    with ThreadPoolExecutor(threads) as pool:
        read_max = _best_seconds(lambda: list(pool.map(lambda s: src[s].max(), parts)), runs)
        read_dot = _best_seconds(lambda: np.dot(src[:half], src[half : 2 * half]), runs)
        copy = _best_seconds(lambda: list(pool.map(lambda s: np.copyto(dst[s], src[s]), parts)), runs)
    return Bandwidth(
        read_max=src.nbytes / read_max / BYTES_PER_GB,
        read_dot=2 * half * src.itemsize / read_dot / BYTES_PER_GB,
        copy=2 * src.nbytes / copy / BYTES_PER_GB,
        threads=threads,
        array_gib=src.nbytes / (1 << 30),
    )


def graph_weights(path: Path, vocab_size: int, hidden_size: int) -> GraphWeights:
    """Parameter count and bytes of a graph's initializers (external data is not loaded)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx.load(str(path), load_external_data=False)
    params = nbytes = lm_head_params = lm_head = 0
    for init in model.graph.initializer:
        count = int(np.prod(init.dims, dtype=np.int64))
        size = count * tensor_dtype_to_np_dtype(init.data_type).itemsize
        params += count
        nbytes += size
        if sorted(init.dims) == sorted((vocab_size, hidden_size)):
            lm_head_params += count
            lm_head += size
    data = path.with_name(path.name + ".data")
    return GraphWeights(params, nbytes, lm_head_params, lm_head, data.stat().st_size if data.is_file() else 0)


def step_weights(export: Path, graph: str, runner: DecoderRunner) -> GraphWeights:
    """The weights one step reads: the graph's, or with the logit screen the body graph's plus the
    screen's one byte per output projection weight (the fp32 rows it recomputes are a few)."""
    t = runner.spec.text
    full = graph_weights(export / graph, t.vocab_size, t.hidden_size)
    if runner.screen is None:
        return full
    head = t.vocab_size * t.hidden_size
    return GraphWeights(full.params, full.bytes - full.lm_head_bytes + head, head, head, full.data_file_bytes)


def build_batch(runner: DecoderRunner, batch: int, context: int, rng: np.random.Generator) -> DecodeBatch:
    """A running batch of ``batch`` sequences with ``context`` cached positions each (random caches)."""
    t = runner.spec.text
    cache = [
        rng.standard_normal((1, t.num_kv_heads, context, t.head_dim), dtype=np.float32) for _ in range(2 * t.num_layers)
    ]
    decode = DecodeBatch(runner)
    for key in range(batch):
        token = int(rng.integers(t.vocab_size))
        seq = Sequence(key=key, max_new_tokens=NEVER, eos_ids=frozenset(), length=context, tokens=[token])
        decode.join(seq, cache)
    return decode


def repeatable_step(decode: DecodeBatch, context: int) -> Callable[[], None]:
    """A call that runs one :meth:`DecodeBatch.step` from the same state each time (the cache as built by
    :func:`build_batch`, every sequence back at ``context`` cached positions and its first token)."""
    kv, seqs = list(decode.kv or []), list(decode.sequences)

    def step() -> None:
        decode.kv = kv
        for s in seqs:
            s.length, s.tokens[:] = context, s.tokens[:1]
        decode.step()

    return step


def prefill_call(runner: DecoderRunner, tokens: int, rng: np.random.Generator) -> Callable[[], None]:
    """A call that prefills a ``tokens``-long prompt of random audio rows (ids >= vocab_size index the
    prompt table) into a fresh batch and chooses its first token."""
    text = runner.spec.text
    ids = text.vocab_size + np.arange(tokens)
    table = rng.standard_normal((tokens, text.hidden_size), dtype=np.float32)
    embeds = runner.embed_prompt(ids, table)
    return lambda: DecodeBatch(runner).prefill(Sequence(key=0, max_new_tokens=NEVER, eos_ids=frozenset()), embeds)


def profile_step(
    runner: DecoderRunner,
    batch: int,
    context: int,
    weights: GraphWeights,
    read_gbps: float,
    warmup: int,
    repeats: int,
    rng: np.random.Generator,
) -> StepProfile:
    """Time (a) the graph alone, (b) :meth:`DecodeBatch.step` and :meth:`DecodeBatch.choose`, in turn.

    Best of ``repeats`` counts: the machine may be shared, and other processes only slow a step down.
    """
    decode = build_batch(runner, batch, context, rng)
    kv = list(decode.kv or [])
    seqs = list(decode.sequences)
    tokens = np.array([s.tokens[-1] for s in seqs], dtype=np.int64)
    width = decode.width  # allocated cache columns; those past ``context`` are masked, as in the serving path
    mask = np.ones((batch, width + 1), dtype=np.int64)
    mask[:, context:width] = 0
    feeds = (
        np.asarray(runner.embed[tokens], dtype=np.float32)[:, None, :],
        mask,
        np.full((batch, 1), context, dtype=np.int64),
        kv,
    )
    scratch = Sequence(key="scratch", max_new_tokens=NEVER, eos_ids=frozenset())
    graph, step, choose = [], [], []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        logits, _ = runner.run(*feeds, [scratch.eos_ids] * batch)
        a = time.perf_counter() - start
        decode.kv = kv  # every step starts from the same cache width
        for s in seqs:
            s.length, s.tokens[:] = context, s.tokens[:1]
        start = time.perf_counter()
        decode.step()
        b = time.perf_counter() - start
        start = time.perf_counter()
        for row in logits:
            decode.choose(scratch, row)
        c = time.perf_counter() - start
        scratch.tokens.clear()
        scratch.logprobs.clear()
        if i >= warmup:
            graph.append(a)
            step.append(b)
            choose.append(c)
    t = runner.spec.text
    # The allocated past cache, read by attention, plus the new position the graph returns (written).
    kv_bytes = batch * (width + 1) * t.kv_bytes_per_token
    step_bytes = weights.bytes + kv_bytes
    graph_ms = min(graph) * MS_PER_S
    return StepProfile(
        batch=batch,
        context=context,
        graph_ms=graph_ms,
        step_ms=min(step) * MS_PER_S,
        choose_ms=min(choose) * MS_PER_S,
        graph_median_ms=float(np.median(graph)) * MS_PER_S,
        step_median_ms=float(np.median(step)) * MS_PER_S,
        kv_bytes=kv_bytes,
        step_bytes=step_bytes,
        floor_ms=step_bytes / (read_gbps * BYTES_PER_GB) * MS_PER_S,
        gflops=2.0 * weights.params * batch / (graph_ms / MS_PER_S) / BYTES_PER_GB,
    )


def best_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * MS_PER_S


def profile_first_token(
    model_dir: Path,
    runner: DecoderRunner,
    weights: GraphWeights,
    options: OrtOptions,
    clip_seconds: float,
    prefill_tokens: int,
    warmup: int,
    repeats: int,
    rng: np.random.Generator,
) -> FirstToken:
    """Best times of log-mel features and encoder for one clip, and of a prompt's prefill.

    The prefill's compute estimate is ``2 x params x tokens``, but lm_head counted once: the graph
    returns the logits of the last position only.
    """
    spec = runner.spec
    cfg = spec.features
    wave = (0.1 * rng.standard_normal(int(clip_seconds * cfg.sampling_rate))).astype(np.float32)
    log_mel = LogMel(cfg)
    windows = split_windows(log_mel(wave), cfg)
    features_ms = best_ms(lambda: split_windows(log_mel(wave), cfg), warmup, repeats)
    encoder = EncoderRunner(model_dir / ENCODER_FILENAME, options)
    encoder_ms = best_ms(lambda: encoder.encode_windows(windows.features, windows.frames), warmup, repeats)
    prefill_ms = best_ms(prefill_call(runner, prefill_tokens, rng), warmup, repeats)
    flops = 2.0 * ((weights.params - weights.lm_head_params) * prefill_tokens + weights.lm_head_params)
    gflops = flops / (prefill_ms / MS_PER_S) / BYTES_PER_GB
    return FirstToken(clip_seconds, windows.total_tokens, features_ms, encoder_ms, prefill_tokens, prefill_ms, gflops)


def render(
    machine: dict[str, object],
    args: argparse.Namespace,
    threads: int,
    bandwidth: Bandwidth,
    weights: GraphWeights,
    steps: list[StepProfile],
    first: FirstToken | None,
    kv_bytes_per_token: int,
) -> str:
    """The results as markdown."""
    mb = BYTES_PER_MB
    lines = [
        f"# Decoder step profile: {args.export.name}/{args.graph}",
        "",
        f"CPU: {describe_cpu(machine)} ({machine['usable_cpus']} usable cores), ONNX Runtime intra-op threads: "
        f"{threads}, load average at start: {machine['load_average_at_start']}.",
        "",
        f"Memory bandwidth (numpy, best of {BANDWIDTH_RUNS} after a warm-up run, {bandwidth.array_gib:.1f} GiB "
        f"float32 array): read {bandwidth.read:.1f} GB/s (fastest of `max` over {bandwidth.threads} threads' "
        f"slices: {bandwidth.read_max:.1f}, BLAS `dot` of its two halves: {bandwidth.read_dot:.1f}, read side of the "
        f"copy: {bandwidth.copy / 2:.1f}), copy {bandwidth.copy:.1f} GB/s with {bandwidth.threads} "
        "threads (`copyto`, bytes read + written).",
        "",
        f"Weights: {weights.params / 1e6:.1f} M parameters, {weights.bytes / mb:.0f} MB of initializers "
        f"({weights.data_file_bytes / mb:.0f} MB in {args.graph}.data), "
        f"of which lm_head {weights.lm_head_bytes / mb:.0f} MB"
        f"{' (the int8 logit screen)' if weights.lm_head_bytes == weights.lm_head_params else ''}. "
        f"KV cache: {kv_bytes_per_token / 1e3:.1f} kB per token (fp32).",
        "",
        f"Step at {args.context} cached tokens per sequence; best of {args.repeats} steps after {args.warmup} "
        "warm-up (medians in the JSON). (a) `DecoderRunner.run` alone (the graph; with the logit screen also its "
        "integer product and recomputed rows); (b) `DecodeBatch.step()`; overhead = (b) - (a); "
        "choose = `DecodeBatch.choose` for every row (argmax + log-softmax: float32 exp, float64 sum); "
        "floor = (weights + allocated past KV read + new position written) / read bandwidth; "
        "floor/(a) = share of the graph time explained by "
        "memory traffic; "
        "GFLOP/s = 2 x params x batch / (a); tokens/s = batch / (b).",
        "",
        "| batch | (a) graph ms | (b) step ms | overhead ms | overhead % | choose ms | MB/step | KV MB "
        "| floor ms | floor/(a) | GFLOP/s | tokens/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        lines.append(
            f"| {s.batch} | {s.graph_ms:.2f} | {s.step_ms:.2f} | {s.overhead_ms:.2f} | {s.overhead_pct:.1f} "
            f"| {s.choose_ms:.2f} | {s.step_bytes / mb:.0f} | {s.kv_bytes / mb:.1f} | {s.floor_ms:.2f} "
            f"| {s.floor_fraction:.2f} | {s.gflops:.1f} | {s.tokens_per_s:.1f} |"
        )
    if first is not None:
        lines += [
            "",
            f"Time to first token of a {first.clip_seconds:g} s clip ({first.audio_tokens} audio tokens; best of "
            f"{args.repeats}): features (`LogMel`, `split_windows`) + encoder ({ENCODER_FILENAME}) + prefill of "
            f"{first.prefill_tokens} prompt tokens (`DecodeBatch.prefill`, first token chosen); prefill GFLOP/s = "
            "2 x (params - lm_head) x tokens (+ lm_head once) / prefill.",
            "",
            "| features ms | encoder ms | prefill ms | total ms | prefill ms/token | prefill GFLOP/s |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {first.features_ms:.1f} | {first.encoder_ms:.1f} | {first.prefill_ms:.1f} | {first.total_ms:.1f} "
            f"| {first.prefill_ms / first.prefill_tokens:.2f} | {first.prefill_gflops:.1f} |",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--export", type=Path, required=True, help="ONNX export directory (decoder, encoder, spec)")
    p.add_argument("--graph", default=DECODER_FILENAME, help="decoder graph file, e.g. decoder-int8.onnx")
    p.add_argument("--batch", type=int, nargs="+", default=list(DEFAULT_BATCHES), help="batch sizes")
    p.add_argument("--context", type=int, default=DEFAULT_CONTEXT, help="cached tokens per sequence")
    p.add_argument("--prefill-tokens", type=int, default=DEFAULT_PREFILL_TOKENS, help="prompt tokens (0: skip TTFT)")
    p.add_argument("--clip-seconds", type=float, default=DEFAULT_CLIP_SECONDS, help="clip length for the encoder")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed runs before each measurement")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed runs (the best is reported)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.context < 1 or args.repeats < 1 or args.warmup < 0 or min(args.batch) < 1:
        p.error("--context, --repeats and --batch must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    machine = describe_machine()
    threads = args.threads or os.cpu_count() or 1
    logger.info("measuring memory bandwidth (%d threads)", threads)
    bandwidth = measure_bandwidth(BANDWIDTH_BYTES, threads)
    logger.info("bandwidth: %s", bandwidth)
    options = OrtOptions(intra_op_threads=args.threads)
    runner = DecoderRunner(args.export, options, graph=args.graph)
    t = runner.spec.text
    weights = step_weights(args.export, args.graph, runner)
    rng = np.random.default_rng(0)
    steps = []
    for batch in args.batch:
        logger.info("profiling decode steps at batch %d", batch)
        steps.append(profile_step(runner, batch, args.context, weights, bandwidth.read, args.warmup, args.repeats, rng))
        logger.info("%s", steps[-1])
    first = None
    if args.prefill_tokens > 0:
        logger.info("profiling time to first token")
        clip, tokens = args.clip_seconds, args.prefill_tokens
        first = profile_first_token(args.export, runner, weights, options, clip, tokens, args.warmup, args.repeats, rng)
    print(render(machine, args, threads, bandwidth, weights, steps, first, t.kv_bytes_per_token))
    if args.json:
        result = {
            "export": str(args.export),
            "graph": args.graph,
            "threads": threads,
            "machine": machine,
            "bandwidth_gbps": {**asdict(bandwidth), "read": bandwidth.read},
            "weights": asdict(weights),
            "steps": [
                {**asdict(s), "overhead_ms": s.overhead_ms, "overhead_pct": s.overhead_pct}
                | {"floor_fraction": s.floor_fraction, "tokens_per_s": s.tokens_per_s}
                for s in steps
            ],
            "first_token": None if first is None else {**asdict(first), "total_ms": first.total_ms},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        logger.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
