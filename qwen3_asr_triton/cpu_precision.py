"""Which precision the cpu target's encoder and decoder compute in, chosen at load time from the CPU flags.

A repository is often built on one machine and served on others (a Kubernetes node pool of mixed
CPUs), so the fast mode is chosen where the model loads, not where it is built:

- ``fp32``: the exact ONNX graphs (token parity with transformers). Never chosen for the user.
- ``int8``: the int8-weight ONNX graphs (export/quantize.py, ONNX Runtime's integer kernels; VNNI is
  used where the CPU has it, without a choice of ours).
- ``bf16``: the export's torch modules in bf16 (qwen3_asr_triton/torch_runner.py; ONNX Runtime's CPU provider has
  no bf16 kernels). Weights and activations keep fp32's range, with 8 bits of mantissa.
- ``fast``: a repository holding both, ``bf16`` where the CPU has bf16 instructions and torch is
  installed, ``int8`` elsewhere (:func:`choose_fast_precision`).

Why that split (perf/results/fast-accuracy/ and perf/results/cpu-precision/):

- Accuracy: on the tiny model bf16 moves the logits ~11x less than int8 (KL 0.0008 against 0.0093 nats,
  teacher-forced), and bf16 keeps every activation's own scale, where int8 quantises each token's
  activations with one scale (export/per_token_int8.py), which outlier channels of trained models stretch.
- Speed where bf16 is emulated (AVX2, AVX-512 without bf16): oneDNN computes bf16 through fp32 with
  conversions, slower than the fp32 graphs, so int8 is the fast mode there.
- Speed where it is not (``avx512_bf16``, ``amx_bf16``): oneDNN's bf16 kernels do twice fp32's
  multiply-adds per instruction (AMX far more) and read half the bytes; it is what vLLM's CPU backend
  serves in bf16.
"""

from __future__ import annotations

from pathlib import Path

FP32 = "fp32"
INT8 = "int8"
BF16 = "bf16"
FAST = "fast"
# The values of the build's ``--precision`` knob (and of the encoder's and decoder's ``precision`` parameter).
PRECISIONS = (FP32, INT8, BF16, FAST)
# What a repository of each precision holds for the encoder and decoder: ONNX graphs (at which
# precision), torch weights, or both.
GRAPH_PRECISION = {FP32: FP32, INT8: INT8, BF16: None, FAST: INT8}
HOLDS_TORCH_WEIGHTS = {FP32: False, INT8: False, BF16: True, FAST: True}
# CPU flags (as Linux names them in /proc/cpuinfo) of native bf16 arithmetic: AVX-512's VDPBF16PS
# (Cooper Lake, Zen 4 and later) and AMX's bf16 tiles (Sapphire Rapids and later).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def read_cpu_flags(path: Path = CPUINFO) -> frozenset[str]:
    """The first processor's flags in ``/proc/cpuinfo`` (empty where the file is missing or unreadable)."""
    try:
        text = path.read_text()
    except OSError:
        return frozenset()
    return parse_cpu_flags(text)


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The ``flags`` line of the first processor in a ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def has_native_bf16(flags: frozenset[str]) -> bool:
    """Whether the CPU computes bf16 products itself (rather than oneDNN emulating them through fp32)."""
    return any(flag in flags for flag in BF16_FLAGS)


def choose_fast_precision(flags: frozenset[str], torch_available: bool) -> tuple[str, str]:
    """``fast`` resolved for this CPU: (``"bf16"`` or ``"int8"``, the reason, for the server log)."""
    native = [flag for flag in BF16_FLAGS if flag in flags]
    if native and torch_available:
        return BF16, f"the CPU has {'+'.join(native)}"
    if native:
        return INT8, f"the CPU has {'+'.join(native)} but torch is not installed"
    return INT8, "the CPU has no bf16 instructions; emulated bf16 is slower than int8"


def resolve_precision(configured: str, flags: frozenset[str], torch_available: bool) -> tuple[str, str]:
    """The precision a model computes in for the configured one: ``fast`` is chosen, the others kept.

    Raises
    ------
    ValueError
        An unknown precision, or ``bf16`` without torch.
    """
    if configured not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {configured!r}")
    if configured == FAST:
        return choose_fast_precision(flags, torch_available)
    if configured == BF16 and not torch_available:
        raise ValueError("precision bf16 runs on torch, which is not installed (pip install torch)")
    if configured == BF16 and not has_native_bf16(flags):
        return BF16, "as configured; this CPU has no bf16 instructions, so it is emulated and slow"
    return configured, "as configured"
