"""Everything the serving code needs to know about a checkpoint, read from its files.

Two on-disk layouts exist:

- the transformers-native ``-hf`` layout (``audio_config`` / ``text_config`` at the
  top of ``config.json``), written by ``save_pretrained``;
- the original layout of the ``Qwen/Qwen3-ASR-*`` repositories, where both sit
  inside ``thinker_config`` (and the aligner's class count is ``classify_num``).

:func:`read_model_config` returns the ``-hf`` form for either; :class:`ModelSpec`
is the validated, flattened result that the exporter writes next to the ONNX
graphs (``model_spec.json``) and every serving component reads back. Token ids,
dimensions and limits therefore come from the checkpoint, never from literals.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .features import FeatureConfig
from .tokenizer import TOKENIZER_FILENAME

SPEC_FILENAME = "model_spec.json"
# Milliseconds per aligner timestamp class when the checkpoint does not say (official default).
DEFAULT_TIMESTAMP_SEGMENT_MS = 80.0
# Tokens whose ids a checkpoint's config names (audio_token_id, timestamp_token_id, eos_token_id); when
# a config leaves one out, its id is read from the checkpoint's own tokenizer by the token's text,
# never assumed (a wrong audio id silently breaks recognition).
AUDIO_TOKEN = "<|audio_pad|>"
TIMESTAMP_TOKEN = "<timestamp>"
EOS_TOKENS = ("<|endoftext|>", "<|im_end|>")

_AUDIO_RENAMES = {
    "num_attention_heads": "encoder_attention_heads",
    "num_hidden_layers": "encoder_layers",
    "hidden_size": "d_model",
    "intermediate_size": "encoder_ffn_dim",
}


def convert_original_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Flatten an original ``thinker_config`` config into the transformers ``-hf`` form."""
    if "thinker_config" not in raw:
        return dict(raw)
    thinker = dict(raw["thinker_config"])
    out: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("thinker_config", "support_languages")}
    out["audio_config"] = dict(thinker.get("audio_config", {}))
    out["text_config"] = dict(thinker.get("text_config", {}))
    for key in ("audio_token_id", "timestamp_token_id", "timestamp_segment_time", "initializer_range"):
        if key in thinker:
            out[key] = thinker[key]
    if "classify_num" in thinker:
        out["num_labels"] = int(thinker["classify_num"])
        out["architectures"] = ["Qwen3ASRForTokenClassification"]
    else:
        out.setdefault("architectures", ["Qwen3ASRForConditionalGeneration"])
    out["model_type"] = "qwen3_asr"
    return out


def read_model_config(checkpoint_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint directory, in the ``-hf`` form."""
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint_dir} is not a Qwen3-ASR checkpoint: no config.json")
    raw = json.loads(path.read_text())
    cfg = convert_original_config(raw)
    if "audio_config" not in cfg or "text_config" not in cfg:
        raise ValueError(f"{path} has no audio_config/text_config (nor thinker_config): not a Qwen3-ASR checkpoint")
    return cfg


@dataclass(frozen=True)
class EncoderSpec:
    """The AuT audio encoder and its projector."""

    d_model: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    output_dim: int
    conv_channels: int
    num_mel_bins: int
    n_window: int
    n_window_infer: int

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"encoder d_model {self.d_model} not divisible by {self.num_heads} heads")


@dataclass(frozen=True)
class TextSpec:
    """The Qwen3 decoder (or the aligner's Qwen3 body)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    max_position_embeddings: int

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")

    @property
    def kv_bytes_per_token(self) -> int:
        """fp32 KV-cache bytes one token occupies across all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 4


@dataclass(frozen=True)
class ModelSpec:
    """Validated description of a Qwen3-ASR or Qwen3-ForcedAligner checkpoint."""

    kind: str  # "asr" or "aligner"
    encoder: EncoderSpec
    text: TextSpec
    features: FeatureConfig
    audio_token_id: int
    timestamp_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    num_labels: int = 0
    timestamp_segment_ms: float = DEFAULT_TIMESTAMP_SEGMENT_MS

    def __post_init__(self) -> None:
        if self.kind not in ("asr", "aligner"):
            raise ValueError(f"kind must be 'asr' or 'aligner', got {self.kind!r}")
        if self.kind == "aligner" and self.num_labels <= 0:
            raise ValueError("an aligner checkpoint needs num_labels (classify_num) > 0")
        if not self.eos_token_ids:
            raise ValueError("at least one EOS token id is required")
        for tid in (self.audio_token_id, self.timestamp_token_id, *self.eos_token_ids):
            if not 0 <= tid < self.text.vocab_size:
                raise ValueError(f"token id {tid} outside the vocabulary of {self.text.vocab_size}")

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | Path) -> ModelSpec:
        root = Path(checkpoint_dir)
        cfg = read_model_config(root)
        audio = {_AUDIO_RENAMES.get(k, k): v for k, v in cfg["audio_config"].items()}
        text = cfg["text_config"]
        archs = " ".join(cfg.get("architectures") or [])
        kind = "aligner" if ("TokenClassification" in archs or cfg.get("num_labels")) else "asr"
        rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        # The original configs carry M-RoPE sections; audio and text share one
        # position stream, which makes it plain 1-D RoPE.
        if rope_type not in ("default", "mrope", None):
            raise ValueError(f"unsupported rope type {rope_type!r} in {root}")
        rope_theta = float(rope.get("rope_theta", text.get("rope_theta", 1_000_000.0)))
        gen = _read_json(root / "generation_config.json")
        tokens = _TokenIds(root)
        eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
        if eos is None:
            eos = [tokens.get(token, "eos_token_id") for token in EOS_TOKENS]
        eos_ids = tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
        proc = _read_json(root / "processor_config.json")
        # transformers 5 nests the feature extractor in processor_config.json; older
        # checkpoints ship it as preprocessor_config.json.
        pre = proc.get("feature_extractor") or _read_json(root / "preprocessor_config.json")
        n_window = int(audio.get("n_window", 50))
        features = FeatureConfig(
            sampling_rate=int(pre.get("sampling_rate", 16000)),
            n_fft=int(pre.get("n_fft", 400)),
            hop_length=int(pre.get("hop_length", 160)),
            n_mels=int(pre.get("feature_size", audio.get("num_mel_bins", 128))),
            min_samples=int(pre.get("min_length", 8000)),
            chunk_frames=2 * n_window,
            window_frames=int(audio.get("n_window_infer", 800)),
        )
        hidden = int(text["hidden_size"])
        num_heads = int(text["num_attention_heads"])
        return cls(
            kind=kind,
            encoder=EncoderSpec(
                d_model=int(audio["d_model"]),
                num_layers=int(audio["encoder_layers"]),
                num_heads=int(audio["encoder_attention_heads"]),
                ffn_dim=int(audio["encoder_ffn_dim"]),
                output_dim=int(audio["output_dim"]),
                conv_channels=int(audio.get("downsample_hidden_size", 480)),
                num_mel_bins=int(audio.get("num_mel_bins", 128)),
                n_window=n_window,
                n_window_infer=int(audio.get("n_window_infer", 800)),
            ),
            text=TextSpec(
                hidden_size=hidden,
                intermediate_size=int(text["intermediate_size"]),
                num_layers=int(text["num_hidden_layers"]),
                num_heads=num_heads,
                num_kv_heads=int(text.get("num_key_value_heads", num_heads)),
                head_dim=int(text.get("head_dim") or hidden // num_heads),
                vocab_size=int(text["vocab_size"]),
                rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
                rope_theta=rope_theta,
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", True))),
                max_position_embeddings=int(text.get("max_position_embeddings", 65536)),
            ),
            features=features,
            audio_token_id=int(cfg.get("audio_token_id") or tokens.get(AUDIO_TOKEN, "audio_token_id")),
            timestamp_token_id=int(cfg.get("timestamp_token_id") or tokens.get(TIMESTAMP_TOKEN, "timestamp_token_id")),
            eos_token_ids=eos_ids,
            pad_token_id=int(gen.get("pad_token_id", cfg.get("pad_token_id", eos_ids[-1]))),
            # save_pretrained stores the class count only as id2label.
            num_labels=int(cfg.get("num_labels") or len(cfg.get("id2label") or {})) if kind == "aligner" else 0,
            timestamp_segment_ms=float(
                proc.get("timestamp_segment_time", cfg.get("timestamp_segment_time", DEFAULT_TIMESTAMP_SEGMENT_MS))
            ),
        )

    # ------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        data = dict(data)
        if data.pop("extra", None):  # an empty field of older builds' spec files
            raise ValueError("model spec: unknown field 'extra'")
        return cls(
            kind=data.pop("kind"),
            encoder=EncoderSpec(**data.pop("encoder")),
            text=TextSpec(**data.pop("text")),
            features=FeatureConfig(**data.pop("features")),
            eos_token_ids=tuple(data.pop("eos_token_ids")),
            **data,
        )

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SPEC_FILENAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ModelSpec:
        return cls.from_dict(json.loads((Path(directory) / SPEC_FILENAME).read_text()))


class _TokenIds:
    """Ids of named tokens from a checkpoint's tokenizer.json, read on first use."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._vocab: dict[str, int] | None = None

    def get(self, token: str, key: str) -> int:
        if self._vocab is None:
            path = self._root / TOKENIZER_FILENAME
            data = _read_json(path)
            self._vocab = {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}
            self._vocab.update((data.get("model") or {}).get("vocab") or {})
        if token not in self._vocab:
            raise ValueError(f"{self._root}: the config has no {key} and the tokenizer no {token!r}")
        return self._vocab[token]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}
