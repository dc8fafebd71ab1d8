"""The encoder and decoder on torch instead of ONNX Runtime: bf16 compute on any torch device.

ONNX Runtime's CPU provider has no bf16 kernels (a bf16 ``MatMul`` is refused), so bf16 runs the
export's own torch modules (:mod:`.torch_modules`, the graphs the ONNX files are traced from) with their
weights and activations in bf16: oneDNN's bf16 kernels on CPUs with AVX-512-bf16 or AMX, an emulation
(correct, slow) on CPUs without them, and the same code on CUDA. The runners keep the ONNX runners'
interfaces (numpy in, fp32 numpy out), so the in-flight scheduler, teacher forcing and greedy decoding
run on them unchanged; the KV cache stays in the caller's fp32 numpy buffers (bf16 values widen
exactly to fp32 and narrow back without loss).

Normalisations and RoPE tables follow transformers' bf16 recipe (RMSNorm in fp32 and cast back;
cos/sin computed in fp32 and cast to the activations' dtype). With ``precision="fp32"`` the runners
widen the bf16 weights and compute what the ONNX graphs compute (exactly so for checkpoints stored in
bf16, as the published ones are), which the tests and perf/gpu_torch_check.py use to check the plumbing.

It serves (:mod:`.runners` imports it for bf16), so it lives in the core; the build writes the weights
it loads (export/torch_weights.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from qwen3_asr_triton.artifacts import DECODER_GRAPH, ENCODER_GRAPH, torch_weights_filename
from qwen3_asr_triton.decoding.decoder import DecoderRunner
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.sessions import EncoderRunner
from qwen3_asr_triton.torch_modules import AudioEncoder, DecoderWithCache

logger = logging.getLogger(__name__)

# The torch dtypes a runner computes in, by the names the benchmark and the build use.
TORCH_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def torch_dtype(precision: str) -> torch.dtype:
    """``"bf16"`` -> ``torch.bfloat16`` (refusing names other than :data:`TORCH_PRECISIONS`)."""
    if precision not in TORCH_PRECISIONS:
        raise ValueError(f"torch precision must be one of {sorted(TORCH_PRECISIONS)}, got {precision!r}")
    return TORCH_PRECISIONS[precision]


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"torch weights {path} not found (build with --precision bf16 or fast)")
    return load_file(str(path))


def _set_threads(threads: int) -> None:
    """Intra-op threads for torch in this process (0: every core), as ``intra_op_threads`` is for ONNX Runtime."""
    torch.set_num_threads(threads or (os.cpu_count() or 1))


def _tensor(array: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.to(dtype=torch.float32).cpu().numpy()


class TorchDecoderRunner(DecoderRunner):
    """:class:`DecoderRunner` whose graph call runs :class:`.torch_modules.DecoderWithCache` in torch.

    Parameters
    ----------
    model_dir : path
        A folder with ``model_spec.json``, ``embed_tokens.npy`` and ``decoder-bf16.safetensors``
        (an export after export/torch_weights.py's ``write_torch_weights``, or a repository's decoder version folder).
    precision : str
        ``"bf16"`` or ``"fp32"`` (the bf16 weights widened: the plumbing's check against the graphs).
    device : str
        A torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    threads : int
        torch's intra-op threads (0: every core).
    """

    def __init__(self, model_dir: str | Path, precision: str = "bf16", device: str = "cpu", threads: int = 0):
        model_dir = Path(model_dir)
        self._load_tables(model_dir)
        self.screen = None  # the torch module computes every logit
        self.dtype = torch_dtype(precision)
        self.device = torch.device(device)
        _set_threads(threads)
        state = _load_weights(model_dir / torch_weights_filename(DECODER_GRAPH))
        with torch.device("meta"):
            module = DecoderWithCache(self.spec.text)
        module.load_state_dict(state, strict=True, assign=True)
        self.module = module.eval().to(device=self.device, dtype=self.dtype)
        logger.info("decoder on torch: %s on %s", precision, self.device)

    def run(
        self,
        inputs_embeds: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: list[np.ndarray],
        end_tokens: list[frozenset[int]] | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One call, as :meth:`DecoderRunner.run` (fp32 numpy in and out; computed in :attr:`dtype`; every
        logit computed, ``end_tokens`` unused)."""
        device, dtype = self.device, self.dtype
        with torch.inference_mode():
            outputs = self.module(
                _tensor(inputs_embeds, device, dtype),
                _tensor(attention_mask, device, torch.int64),
                _tensor(position_ids, device, torch.int64),
                *(_tensor(p, device, dtype) for p in past),
            )
        return _numpy(outputs[0]), [_numpy(t) for t in outputs[1:]]


class TorchEncoderRunner(EncoderRunner):
    """:class:`EncoderRunner` whose call runs :class:`.torch_modules.AudioEncoder` in torch (same arguments).

    ``model_dir`` holds ``model_spec.json`` and ``encoder-bf16.safetensors``; the other parameters
    are :class:`TorchDecoderRunner`'s.
    """

    def __init__(self, model_dir: str | Path, precision: str = "bf16", device: str = "cpu", threads: int = 0):
        model_dir = Path(model_dir)
        spec = ModelSpec.load(model_dir)
        self.dtype = torch_dtype(precision)
        self.device = torch.device(device)
        _set_threads(threads)
        module = AudioEncoder(spec.encoder)  # computes its position table: not built on the meta device
        module.load_state_dict(_load_weights(model_dir / torch_weights_filename(ENCODER_GRAPH)), strict=True)
        self.module = module.eval().to(device=self.device, dtype=self.dtype)
        logger.info("encoder on torch: %s on %s", precision, self.device)

    def __call__(self, features: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            embeds, lens = self.module(
                _tensor(features, self.device, self.dtype), _tensor(np.asarray(frames), self.device, torch.int64)
            )
        return _numpy(embeds), lens.cpu().numpy()
