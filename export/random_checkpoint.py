"""Randomly initialised Qwen3-ASR / Qwen3-ForcedAligner checkpoints of the real architecture.

Real weights cannot be downloaded where this project is tested, so tests and
benchmarks run on checkpoints that have the real architecture, the real
on-disk format (``save_pretrained``: config.json, safetensors in bf16,
generation config, tokenizer files with the real Qwen vocabulary, feature
extractor and processor config with the chat template) and random weights
scaled so that the greedy output depends on the audio and the prompt:

- linear and conv weights ~ N(0, (gain / sqrt(fan_in))^2), biases small;
- the decoder's q/k RMSNorm weights around ``qk_norm`` (sharper attention:
  without it long clips collapse into one repeated token);
- the ``<|im_end|>`` embedding row scaled by ``eos_boost`` so that greedy
  decoding stops by itself after a few to a few dozen tokens.

Usage::

    qwen3-asr-checkpoint --size tiny --kind asr --output /tmp/qwen3-asr-tiny
    qwen3-asr-checkpoint --size 0.6b --kind aligner --output /tmp/aligner --layout original
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from qwen3_asr_triton.tokenizer import TOKENIZER_FILENAME

from .checkpoint import RANDOM_WEIGHTS_MARKER
from .vocab import build_tokenizer

logger = logging.getLogger(__name__)

VOCAB_SIZE = 151936  # embedding rows of every Qwen3 checkpoint (padded beyond the 151706 used ids)
# Classes of the published aligner: 5000 x 80 ms covers 400 s.
ALIGNER_CLASSES = 5000

# Dimensions per size. 0.6b / 1.7b follow the published configs; "tiny" keeps the
# real vocabulary, token ids, front end and window layout with small widths
# (head_dim 32: the smallest vLLM's CPU attention accepts).
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "tiny": {
        "audio": dict(
            d_model=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=256, downsample_hidden_size=32
        ),
        "text": dict(
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
        ),
    },
    "0.6b": {
        "audio": dict(
            d_model=896, encoder_layers=18, encoder_attention_heads=14, encoder_ffn_dim=3584, downsample_hidden_size=480
        ),
        "text": dict(
            hidden_size=1024,
            intermediate_size=3072,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
        ),
    },
    "1.7b": {
        "audio": dict(
            d_model=1024,
            encoder_layers=24,
            encoder_attention_heads=16,
            encoder_ffn_dim=4096,
            downsample_hidden_size=480,
        ),
        "text": dict(
            hidden_size=2048,
            intermediate_size=6144,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
        ),
    },
}


@dataclass(frozen=True)
class InitOptions:
    """How random weights are drawn (see module docstring)."""

    seed: int = 0
    gain: float = 2.0
    bias_std: float = 0.05
    norm_std: float = 0.1
    embed_std: float = 1.0
    qk_norm: float = 3.0
    eos_boost: float = 3.0
    final_norm: float = 0.05

    def __post_init__(self) -> None:
        for name in ("gain", "embed_std", "qk_norm", "eos_boost", "final_norm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"InitOptions.{name} must be positive")


def make_config(size: str, kind: str):
    """A transformers ``Qwen3ASRConfig`` for ``size`` and ``kind`` ('asr' or 'aligner')."""
    from transformers import Qwen3ASRConfig

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    if kind not in ("asr", "aligner"):
        raise ValueError("kind must be 'asr' or 'aligner'")
    dims = SIZES[size]
    text = dict(
        dims["text"],
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=65536,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=True,
    )
    audio = dict(
        dims["audio"], output_dim=dims["text"]["hidden_size"], num_mel_bins=128, n_window=50, n_window_infer=800
    )
    extra = {}
    if kind == "aligner":
        extra = dict(
            num_labels=ALIGNER_CLASSES, architectures=["Qwen3ASRForTokenClassification"], tie_word_embeddings=False
        )
    else:
        extra = dict(architectures=["Qwen3ASRForConditionalGeneration"])
    return Qwen3ASRConfig(audio_config=audio, text_config=text, **extra)


@torch.no_grad()
def randomize_(model: torch.nn.Module, opts: InitOptions, eos_token_id: int) -> None:
    """Overwrite every parameter of ``model`` in place (see module docstring)."""
    gen = torch.Generator().manual_seed(opts.seed)

    def normal_(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float32) * std + mean)

    for name, param in model.named_parameters():
        if name.endswith("embed_tokens.weight"):
            normal_(param, opts.embed_std)
            param[eos_token_id] *= opts.eos_boost
        elif name.endswith(("q_norm.weight", "k_norm.weight")):
            normal_(param, opts.norm_std, opts.qk_norm)
        elif name.endswith("language_model.norm.weight"):
            normal_(param, opts.norm_std * opts.final_norm, opts.final_norm)
        elif param.ndim == 1 and ("norm" in name or "ln_" in name):
            normal_(param, opts.norm_std, 0.0 if name.endswith(".bias") else 1.0)
        elif name.endswith(".bias"):
            normal_(param, opts.bias_std)
        else:
            fan_in = math.prod(param.shape[1:])
            normal_(param, opts.gain / math.sqrt(fan_in))


def write_processor(output: Path, kind: str) -> None:
    """Tokenizer (real Qwen vocabulary), feature extractor and chat template, via ``save_pretrained``."""
    from transformers import Qwen2Tokenizer, Qwen3ASRFeatureExtractor, Qwen3ASRProcessor

    from .chat_templates import ALIGNER_CHAT_TEMPLATE, ASR_CHAT_TEMPLATE

    tokenizer = Qwen2Tokenizer(
        tokenizer_object=build_tokenizer(),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=131072,
        extra_special_tokens={
            "audio_token": "<|audio_pad|>",
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
        },
    )
    processor = Qwen3ASRProcessor(
        feature_extractor=Qwen3ASRFeatureExtractor(),
        tokenizer=tokenizer,
        chat_template=ALIGNER_CHAT_TEMPLATE if kind == "aligner" else ASR_CHAT_TEMPLATE,
    )
    processor.save_pretrained(str(output))


def to_original_layout(output: Path) -> None:
    """Rewrite a saved ``-hf`` checkpoint in the original ``thinker.*`` layout (config and weights)."""
    from safetensors.torch import load_file, save_file

    cfg = json.loads((output / "config.json").read_text())
    is_aligner = "num_labels" in cfg or any("TokenClassification" in a for a in cfg.get("architectures", []))
    thinker = {
        "audio_config": cfg.pop("audio_config"),
        "text_config": cfg.pop("text_config"),
        "audio_token_id": cfg.pop("audio_token_id"),
    }
    if is_aligner:
        id2label = cfg.pop("id2label", None)
        cfg.pop("label2id", None)
        thinker["classify_num"] = int(cfg.pop("num_labels", len(id2label or {})))
    thinker["text_config"]["tie_word_embeddings"] = bool(cfg.get("tie_word_embeddings", True))
    thinker["text_config"]["rope_scaling"] = {
        "rope_type": "default",
        "mrope_section": [24, 20, 20],
        "interleaved": True,
        "rope_theta": thinker["text_config"].get("rope_parameters", {}).get("rope_theta", 1e6),
    }
    new_cfg = {
        "architectures": ["Qwen3ASRForConditionalGeneration"],
        "model_type": "qwen3_asr",
        "thinker_config": thinker,
        "support_languages": [],
        **{k: v for k, v in cfg.items() if k in ("timestamp_token_id",)},
    }
    (output / "config.json").write_text(json.dumps(new_cfg, indent=2) + "\n")
    head = "thinker.lm_head." if not is_aligner else "score."
    for shard in sorted(output.glob("*.safetensors")):
        tensors = load_file(str(shard))
        renamed = {}
        for key, value in tensors.items():
            new = key.replace("model.multi_modal_projector.linear_1.", "thinker.audio_tower.proj1.")
            new = new.replace("model.multi_modal_projector.linear_2.", "thinker.audio_tower.proj2.")
            new = new.replace("model.language_model.", "thinker.model.")
            new = new.replace("model.audio_tower.", "thinker.audio_tower.")
            if is_aligner and new.startswith("score."):
                new = "thinker.lm_head." + new[len("score.") :]
            elif new.startswith("lm_head."):
                new = head + new[len("lm_head.") :]
            renamed[new] = value.contiguous()
        save_file(renamed, str(shard), metadata={"format": "pt"})


def write_random_checkpoint(
    output: str | Path,
    size: str = "tiny",
    kind: str = "asr",
    opts: InitOptions | None = None,
    layout: str = "hf",
) -> Path:
    """Write a random checkpoint to ``output`` (replaced if it exists) and return its path."""
    from transformers import GenerationConfig, Qwen3ASRForConditionalGeneration, Qwen3ASRForTokenClassification

    opts = opts or InitOptions()
    if layout not in ("hf", "original"):
        raise ValueError("layout must be 'hf' or 'original'")
    out = Path(output)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = make_config(size, kind)
    cls = Qwen3ASRForTokenClassification if kind == "aligner" else Qwen3ASRForConditionalGeneration
    with torch.device("meta"):
        model = cls(config)
    model = model.to_empty(device="cpu")
    eos_id = 151645  # <|im_end|>; checked against the tokenizer below
    randomize_(model, opts, eos_id)
    if kind == "asr":
        model.tie_weights()
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        eos_token_id=[151643, 151645], pad_token_id=151645, do_sample=False, max_new_tokens=512
    )
    model.save_pretrained(str(out))
    write_processor(out, kind)
    tok = json.loads((out / TOKENIZER_FILENAME).read_text())
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    if ids["<|im_end|>"] != eos_id or ids["<|audio_pad|>"] != config.audio_token_id:
        raise RuntimeError("tokenizer ids disagree with the config")
    if layout == "original":
        to_original_layout(out)
    (out / RANDOM_WEIGHTS_MARKER).write_text(
        f"Randomly initialised {size} {kind} checkpoint (seed {opts.seed}); its outputs are meaningless.\n"
    )
    logger.info("wrote random %s %s checkpoint to %s", size, kind, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--kind", choices=["asr", "aligner"], default="asr")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=["hf", "original"], default="hf")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write_random_checkpoint(args.output, args.size, args.kind, InitOptions(seed=args.seed), args.layout)


if __name__ == "__main__":
    main()
