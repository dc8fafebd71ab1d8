"""Loading checkpoint weights in either on-disk layout, with clear errors.

Returns the weights under the transformers ``-hf`` names
(``model.audio_tower.*``, ``model.multi_modal_projector.*``,
``model.language_model.*``, ``lm_head.*`` or, for the aligner, ``score.*``),
converting the original ``thinker.*`` names when needed and materialising tied
embeddings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from qwen3_asr_triton.model_spec import ModelSpec

logger = logging.getLogger(__name__)

# Original-layout prefix -> -hf prefix, applied in order (first match wins).
_ORIGINAL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("thinker.audio_tower.proj1.", "model.multi_modal_projector.linear_1."),
    ("thinker.audio_tower.proj2.", "model.multi_modal_projector.linear_2."),
    ("thinker.audio_tower.", "model.audio_tower."),
    ("thinker.model.", "model.language_model."),
)


class CheckpointError(ValueError):
    """The directory is not a usable Qwen3-ASR / ForcedAligner checkpoint."""


# Left in a checkpoint by export/random_checkpoint.py: its weights are random.
RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS.txt"


def _safetensor_files(root: Path) -> list[Path]:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [root / s for s in shards]
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{root} has no *.safetensors weights")
    return files


def canonical_name(name: str, kind: str) -> str:
    """The ``-hf`` name of a weight given under either layout."""
    if name.startswith("thinker.lm_head."):
        return ("score." if kind == "aligner" else "lm_head.") + name[len("thinker.lm_head.") :]
    for old, new in _ORIGINAL_PREFIXES:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def load_state_dict(
    checkpoint_dir: str | Path, spec: ModelSpec | None = None, keep_dtype: bool = False
) -> dict[str, torch.Tensor]:
    """All weights of a checkpoint under ``-hf`` names, as float32 unless ``keep_dtype``."""
    from safetensors import safe_open

    root = Path(checkpoint_dir)
    try:
        spec = spec or ModelSpec.from_checkpoint(root)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise CheckpointError(f"cannot read the config of {root}: {exc}") from exc
    state: dict[str, torch.Tensor] = {}
    for path in _safetensor_files(root):
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor = handle.get_tensor(key)
                state[canonical_name(key, spec.kind)] = tensor if keep_dtype else tensor.to(torch.float32)
    embed = "model.language_model.embed_tokens.weight"
    if embed not in state:
        raise CheckpointError(f"{root} has no {embed} (or thinker.model.embed_tokens.weight)")
    if spec.kind == "asr" and "lm_head.weight" not in state:
        if not spec.text.tie_word_embeddings:
            raise CheckpointError(f"{root} has no lm_head.weight and does not tie embeddings")
        state["lm_head.weight"] = state[embed]
    if spec.kind == "aligner" and "score.weight" not in state:
        raise CheckpointError(f"{root} is an aligner checkpoint without score (classifier) weights")
    logger.info("loaded %d tensors from %s", len(state), root)
    return state


def _read_spec(checkpoint: Path, flag: str) -> ModelSpec:
    try:
        return ModelSpec.from_checkpoint(checkpoint)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{flag} {checkpoint}: {exc}") from exc


def check_checkpoints(model: Path, aligner: Path | None) -> tuple[ModelSpec, ModelSpec | None]:
    """Specs of the checkpoints, with clear errors for unusable directories."""
    spec = _read_spec(model, "--model")
    if spec.kind != "asr":
        raise CheckpointError(f"--model {model} is a forced-aligner checkpoint; pass it with --aligner")
    aligner_spec = None
    if aligner is not None:
        aligner_spec = _read_spec(aligner, "--aligner")
        if aligner_spec.kind != "aligner":
            raise CheckpointError(f"--aligner {aligner} is not a forced-aligner checkpoint")
        if aligner_spec.features != spec.features:
            raise CheckpointError("the aligner's audio front end differs from the recogniser's; they must share it")
    for path in (model, aligner):
        if path is not None and (path / RANDOM_WEIGHTS_MARKER).is_file():
            logger.warning("*** %s has RANDOM weights: transcripts will be meaningless words ***", path)
    return spec, aligner_spec
