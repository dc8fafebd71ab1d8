"""Checkpoint -> ONNX graphs and the side files the serving models read.

For a recogniser checkpoint it writes::

    OUT/encoder.onnx (+ .data)   AudioEncoder: windows -> audio embeddings
    OUT/decoder.onnx (+ .data)   DecoderWithCache: prefill and decode steps with an explicit KV cache
    OUT/embed_tokens.npy         [vocab, hidden] float32 token embeddings (spliced on the host)
    OUT/tokenizer.json           fast tokenizer
    OUT/model_spec.json          ModelSpec: ids, dims, limits, front-end parameters

and for a forced-aligner checkpoint ``encoder.onnx``, ``aligner.onnx``,
``embed_tokens.npy``, ``tokenizer.json`` and ``model_spec.json``. These graphs
are exactly what the TensorRT build of the gpu target consumes. Large weights
go to one external-data file per graph; every graph passes ``onnx.checker``.

Usage::

    qwen3-asr-export --checkpoint CKPT --output OUT [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from qwen3_asr_triton.artifacts import ALIGNER_FILENAME, DECODER_FILENAME, EMBED_FILENAME, ENCODER_FILENAME
from qwen3_asr_triton.model_spec import SPEC_FILENAME, ModelSpec
from qwen3_asr_triton.tokenizer import TOKENIZER_FILENAME
from qwen3_asr_triton.torch_modules import AlignerModel, AudioEncoder, DecoderWithCache

from .checkpoint import CheckpointError, load_state_dict
from .external_data import save_with_external_data
from .logit_screen_files import write_logit_screen

logger = logging.getLogger(__name__)

OPSET = 17  # LayerNormalization is native from 17; TensorRT 10 parses 9-20
STAMP_FILENAME = "export_stamp.json"
# Bump when the graphs' interface or numerics change, so cached exports are redone.
EXPORT_VERSION = 2


def decoder_io_names(num_layers: int) -> tuple[list[str], list[str]]:
    """Input and output names of the decoder graph, KV pairs in layer order."""
    past = [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    new = [f"new_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    return ["inputs_embeds", "attention_mask", "position_ids", *past], ["logits", *new]


def _export(
    module: torch.nn.Module,
    args: tuple,
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    tmp_dir = path.parent / f".tmp-{path.stem}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    tmp_path = tmp_dir / path.name
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(tmp_path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    save_with_external_data(tmp_path, path)
    shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("wrote %s", path)


def export_encoder(spec: ModelSpec, state: dict[str, torch.Tensor], path: Path) -> None:
    module = AudioEncoder.from_state(spec, state)
    frames = spec.features.window_frames
    feats = torch.randn(2, spec.encoder.num_mel_bins, frames)
    lens = torch.tensor([frames, frames - 150], dtype=torch.int64)
    _export(
        module,
        (feats, lens),
        path,
        ["input_features", "feature_lens"],
        ["audio_embeds", "embed_lens"],
        {
            "input_features": {0: "windows", 2: "frames"},
            "feature_lens": {0: "windows"},
            "audio_embeds": {0: "windows", 1: "tokens"},
            "embed_lens": {0: "windows"},
        },
    )


def export_decoder(spec: ModelSpec, state: dict[str, torch.Tensor], path: Path) -> None:
    module = DecoderWithCache.from_state(spec, state)
    t = spec.text
    batch, seq, past = 2, 3, 4
    inputs, outputs = decoder_io_names(t.num_layers)
    kv = [torch.randn(batch, t.num_kv_heads, past, t.head_dim) for _ in range(2 * t.num_layers)]
    args = (
        torch.randn(batch, seq, t.hidden_size),
        torch.ones(batch, past + seq, dtype=torch.int64),
        torch.arange(past, past + seq)[None].repeat(batch, 1),
        *kv,
    )
    axes = {
        "inputs_embeds": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "seq"},
        "logits": {0: "batch"},
    }
    axes.update({n: {0: "batch", 2: "past"} for n in inputs[3:]})
    axes.update({n: {0: "batch", 2: "seq"} for n in outputs[1:]})
    _export(module, args, path, inputs, outputs, axes)


def export_aligner(spec: ModelSpec, state: dict[str, torch.Tensor], path: Path) -> None:
    module = AlignerModel.from_state(spec, state)
    args = (torch.randn(2, 5, spec.text.hidden_size), torch.ones(2, 5, dtype=torch.int64))
    _export(
        module,
        args,
        path,
        ["inputs_embeds", "attention_mask"],
        ["logits"],
        {
            "inputs_embeds": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "logits": {0: "batch", 1: "seq"},
        },
    )


def write_tokenizer(checkpoint: Path, out: Path) -> None:
    """The checkpoint's tokenizer as one ``tokenizer.json`` (converted by transformers if needed)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    tokenizer.backend_tokenizer.save(str(out / TOKENIZER_FILENAME))


def checkpoint_fingerprint(checkpoint: Path) -> str:
    """Cheap identity of a checkpoint: names, sizes and mtimes of its files."""
    digest = hashlib.sha256(f"v{EXPORT_VERSION}".encode())
    for f in sorted(p for p in checkpoint.iterdir() if p.is_file()):
        st = f.stat()
        digest.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return digest.hexdigest()


def export_checkpoint(checkpoint: str | Path, output: str | Path, force: bool = False) -> ModelSpec:
    """Export every graph and side file of ``checkpoint`` into ``output``; skipped when up to date."""
    checkpoint, output = Path(checkpoint), Path(output)
    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint directory {checkpoint} does not exist")
    spec = ModelSpec.from_checkpoint(checkpoint)
    stamp = {"checkpoint": str(checkpoint.resolve()), "fingerprint": checkpoint_fingerprint(checkpoint)}
    stamp_path = output / STAMP_FILENAME
    if not force and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        logger.info("%s is up to date with %s; skipping export", output, checkpoint)
        if spec.kind == "asr":
            write_logit_screen(output)
        return spec
    output.mkdir(parents=True, exist_ok=True)
    stamp_path.unlink(missing_ok=True)
    state = load_state_dict(checkpoint, spec)
    export_encoder(spec, state, output / ENCODER_FILENAME)
    if spec.kind == "asr":
        export_decoder(spec, state, output / DECODER_FILENAME)
    else:
        export_aligner(spec, state, output / ALIGNER_FILENAME)
    np.save(output / EMBED_FILENAME, state["model.language_model.embed_tokens.weight"].numpy())
    write_tokenizer(checkpoint, output)
    spec.save(output)
    if spec.kind == "asr":
        write_logit_screen(output)
    stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
    logger.info("exported %s checkpoint %s to %s (%s)", spec.kind, checkpoint, output, SPEC_FILENAME)
    return spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a Qwen3-ASR or ForcedAligner checkpoint to ONNX.")
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--force", action="store_true", help="re-export even if the output is up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        export_checkpoint(args.checkpoint, args.output, args.force)
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
