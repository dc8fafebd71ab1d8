"""The cpu encoder's and decoder's runner for a version folder, at the precision its config names.

Both models call these when they load. The configured precision (fp32 | int8 | bf16 | fast) is
resolved against this machine's CPU flags (:mod:`qwen3_asr_triton.cpu_precision`), so a repository
built elsewhere serves in what suits the CPU it runs on, and the choice and its reason go to the log.
fp32 and int8 run the ONNX graph placed as ``<graph>.onnx``; bf16 runs the torch modules on their
bf16 weights (:mod:`.torch_runner`, imported only then: torch is needed only for bf16).

They serve, so they live in the core: the model glue imports no part of the export package
(pyproject.toml ``[tool.importlinter]``).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path

from qwen3_asr_triton.artifacts import ENCODER_FILENAME
from qwen3_asr_triton.cpu_precision import BF16, FP32, read_cpu_flags, resolve_precision
from qwen3_asr_triton.decoding.decoder import DecoderRunner
from qwen3_asr_triton.sessions import EncoderRunner, OrtOptions, bool_parameter

logger = logging.getLogger(__name__)


def torch_installed() -> bool:
    """Whether torch can be imported here (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def runtime_precision(params: Mapping[str, str], model: str) -> str:
    """The precision ``model`` computes in on this CPU, from its ``precision`` parameter; logged with the reason."""
    configured = params.get("precision", FP32)
    flags = read_cpu_flags()
    precision, reason = resolve_precision(configured, flags, torch_installed())
    logger.info("%s computes in %s (configured %s: %s)", model, precision, configured, reason)
    return precision


def encoder_runner(folder: Path, params: Mapping[str, str]) -> EncoderRunner:
    """The audio encoder of a version folder at its configured precision."""
    options = OrtOptions.from_parameters(params)
    if runtime_precision(params, "encoder") == BF16:
        from .torch_runner import TorchEncoderRunner

        return TorchEncoderRunner(folder, BF16, threads=options.intra_op_threads)
    return EncoderRunner(folder / ENCODER_FILENAME, options)


def decoder_runner(folder: Path, params: Mapping[str, str]) -> DecoderRunner:
    """The decoder of a version folder at its configured precision (fp32 with the logit screen unless
    ``logit_screen`` is false or the folder has none: :mod:`.decoding.logit_screen`)."""
    options = OrtOptions.from_parameters(params)
    screen = bool_parameter(params, "logit_screen", True)
    if runtime_precision(params, "decoder") == BF16:
        from .torch_runner import TorchDecoderRunner

        return TorchDecoderRunner(folder, BF16, threads=options.intra_op_threads)
    return DecoderRunner(folder, options, screen=screen)
