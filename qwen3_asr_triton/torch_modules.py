"""Export-friendly torch modules of the Qwen3-ASR architecture.

The export traces its ONNX graphs from them (export/onnx_export.py), and the bf16 mode serves them
(:mod:`qwen3_asr_triton.torch_runner`): they live in the core because a served model runs them.

They compute what ``transformers.models.qwen3_asr`` computes, restated with
static shapes and explicit masks so that one graph serves every batch:

- :class:`AudioEncoder`: batch axis = independent 8 s attention windows. Per
  window, the mel is cut into 1 s chunks that go through the conv stack on
  their own (positions restart in every chunk), then all valid tokens of the
  window attend to each other. Invalid positions (the padded tail of the last
  chunk and padded chunks) are masked out as keys; since valid tokens are
  always a prefix of the row, row ``b`` yields ``embed_lens[b]`` embeddings.
- :class:`DecoderWithCache`: the Qwen3 decoder on ``inputs_embeds`` with an
  explicit KV cache (prefill when the past is empty, one step otherwise),
  returning the logits of the last position only.
- :class:`AlignerModel`: the aligner's Qwen3 body and classifier over a whole
  sequence, causal, no cache.

Parameter names equal the transformers names below ``model.audio_tower``,
``model.multi_modal_projector``, ``model.language_model`` so loading is a
strict ``load_state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from qwen3_asr_triton.model_spec import EncoderSpec, ModelSpec, TextSpec

# Additive attention bias for masked keys: exp() of it underflows to exactly 0
# in fp32, and it saturates to -inf (still exact) in fp16 TensorRT builds.
MASK_BIAS = -1e9
# Timescale of the encoder's sinusoidal positions (Whisper's).
MAX_TIMESCALE = 10000.0


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def sinusoid_table(length: int, channels: int) -> torch.Tensor:
    """``[length, channels]`` sin | cos positions, as the encoder computes them (fp32)."""
    increment = math.log(MAX_TIMESCALE) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2).float())
    scaled = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


class _EncoderAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * (self.head_dim**-0.5) + bias
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out_proj(out.transpose(1, 2).reshape(b, s, d))


class _EncoderLayer(nn.Module):
    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.self_attn = _EncoderAttention(spec.d_model, spec.num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(spec.d_model)
        self.fc1 = nn.Linear(spec.d_model, spec.ffn_dim)
        self.fc2 = nn.Linear(spec.ffn_dim, spec.d_model)
        self.final_layer_norm = nn.LayerNorm(spec.d_model)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), bias)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class _Projector(nn.Module):
    def __init__(self, d_model: int, out_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(d_model, d_model)
        self.linear_2 = nn.Linear(d_model, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x)))


class AudioEncoder(nn.Module):
    """AuT encoder + projector over a batch of attention windows.

    Inputs: ``input_features`` ``[W, n_mels, F]`` float32 (``F`` a multiple of the
    chunk size, at most one window) and ``feature_lens`` ``[W]`` int64 valid frames.
    Outputs: ``audio_embeds`` ``[W, (F / chunk) * tokens_per_chunk, output_dim]`` and
    ``embed_lens`` ``[W]`` int64 (valid rows are a prefix of each window).
    """

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        ch = spec.conv_channels
        self.chunk = 2 * spec.n_window
        self.conv2d1 = nn.Conv2d(1, ch, 3, 2, padding=1)
        self.conv2d2 = nn.Conv2d(ch, ch, 3, 2, padding=1)
        self.conv2d3 = nn.Conv2d(ch, ch, 3, 2, padding=1)
        freq = spec.num_mel_bins
        for _ in range(3):
            freq = (freq - 1) // 2 + 1
        self.conv_out = nn.Linear(ch * freq, spec.d_model, bias=False)
        self.layers = nn.ModuleList(_EncoderLayer(spec) for _ in range(spec.num_layers))
        self.ln_post = nn.LayerNorm(spec.d_model)
        tokens_per_chunk = self.chunk
        for _ in range(3):
            tokens_per_chunk = (tokens_per_chunk - 1) // 2 + 1
        self.tokens_per_chunk = tokens_per_chunk
        self.register_buffer("positions", sinusoid_table(tokens_per_chunk, spec.d_model), persistent=False)
        self.projector = _Projector(spec.d_model, spec.output_dim)

    @staticmethod
    def _conv_len(frames: torch.Tensor) -> torch.Tensor:
        for _ in range(3):
            frames = torch.where(frames > 0, torch.div(frames - 1, 2, rounding_mode="floor") + 1, frames * 0)
        return frames

    def forward(self, input_features: torch.Tensor, feature_lens: torch.Tensor):
        w, mels, frames = input_features.shape
        chunks = frames // self.chunk
        x = input_features.reshape(w, mels, chunks, self.chunk).permute(0, 2, 1, 3)
        x = x.reshape(w * chunks, 1, mels, self.chunk)
        x = F.gelu(self.conv2d1(x))
        x = F.gelu(self.conv2d2(x))
        x = F.gelu(self.conv2d3(x))
        n, c, f, t = x.shape
        x = self.conv_out(x.permute(0, 3, 1, 2).reshape(n, t, c * f)) + self.positions
        x = x.reshape(w, chunks * t, -1)
        # Valid frames per chunk -> valid tokens per chunk -> key mask over the window.
        starts = torch.arange(chunks, device=x.device, dtype=torch.int64) * self.chunk
        chunk_frames = torch.clamp(feature_lens[:, None] - starts[None, :], min=0, max=self.chunk)
        chunk_tokens = self._conv_len(chunk_frames)  # [W, C]
        slot = torch.arange(t, device=x.device, dtype=torch.int64)
        valid = (slot[None, None, :] < chunk_tokens[:, :, None]).reshape(w, chunks * t)
        bias = torch.where(valid, 0.0, MASK_BIAS).to(x.dtype)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        embeds = self.projector(self.ln_post(x))
        return embeds, chunk_tokens.sum(dim=1)

    @classmethod
    def from_state(cls, spec: ModelSpec, state: dict[str, torch.Tensor]) -> AudioEncoder:
        module = cls(spec.encoder)
        weights = sub_state(state, "model.audio_tower.")
        weights.update({f"projector.{k}": v for k, v in sub_state(state, "model.multi_modal_projector.").items()})
        module.load_state_dict(weights, strict=True)
        return module.eval()


def text_body(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Qwen3 body's weights (``model.language_model.*`` without the token embeddings)."""
    return {k: v for k, v in sub_state(state, "model.language_model.").items() if not k.startswith("embed_tokens")}


def with_weights(factory: Callable[[], nn.Module], parts: dict[str, dict[str, torch.Tensor]]) -> nn.Module:
    """``factory()`` holding the checkpoint's own tensors, in eval mode.

    The module is built on the meta device (no memory, no random init) and each
    submodule named in ``parts`` takes its tensors by reference (strict
    ``load_state_dict(assign=True)``), so a 1.7B decoder costs no second copy of
    its 8 GB of fp32 weights during export. Only for modules whose every tensor
    comes from the checkpoint (no computed buffers).
    """
    with torch.device("meta"):
        module = factory()
    for name, weights in parts.items():
        module.get_submodule(name).load_state_dict(weights, strict=True, assign=True)
    missing = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if missing:
        raise ValueError(f"no checkpoint tensor for {missing[:5]}")
    return module.eval()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In fp32 and cast back, as transformers does, so a bf16 module normalises as the reference does
        # (both casts are no-ops in the fp32 export).
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary(position_ids: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin ``[B, S, head_dim]`` for integer positions ``[B, S]`` (default RoPE)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = position_ids.float()[:, :, None] * inv_freq[None, None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class _DecoderAttention(nn.Module):
    def __init__(self, spec: TextSpec) -> None:
        super().__init__()
        self.spec = spec
        h, kv, d = spec.num_heads, spec.num_kv_heads, spec.head_dim
        self.q_proj = nn.Linear(spec.hidden_size, h * d, bias=False)
        self.k_proj = nn.Linear(spec.hidden_size, kv * d, bias=False)
        self.v_proj = nn.Linear(spec.hidden_size, kv * d, bias=False)
        self.o_proj = nn.Linear(h * d, spec.hidden_size, bias=False)
        self.q_norm = RMSNorm(d, spec.rms_norm_eps)
        self.k_norm = RMSNorm(d, spec.rms_norm_eps)

    def forward(self, x, cos, sin, past_bias, new_bias, past_k=None, past_v=None):
        """Attention of ``S`` new positions over the past cache and themselves.

        Grouped-query attention without copying keys or values per query head: the ``g`` query
        heads of a KV head are stacked along the sequence axis (``[B, kv, g * S, d]``), so every
        product reads the cache as it is. The past and the new keys are scored separately and
        only the scores are concatenated, so the cache itself is never copied; the new keys and
        values (``[B, kv, S, d]``) are returned for the caller to store.
        """
        spec = self.spec
        b, s, _ = x.shape
        kv, d = spec.num_kv_heads, spec.head_dim
        g = spec.num_heads // kv
        q = self.q_norm(self.q_proj(x).view(b, s, spec.num_heads, d)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, s, kv, d)).transpose(1, 2)
        v = self.v_proj(x).view(b, s, kv, d).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        # Head j uses KV head j // g (transformers' repeat_kv), so heads [i*g, (i+1)*g) share KV head i;
        # row gi * S + si of a group holds query si of its head gi, hence the new-position bias tiled g times.
        qg = q.reshape(b, kv, g * s, d)
        scale = d**-0.5
        scores = torch.matmul(qg, k.transpose(2, 3)) * scale + new_bias.repeat(1, 1, g, 1)
        if past_k is not None:
            past_scores = torch.matmul(qg, past_k.transpose(2, 3)) * scale + past_bias
            scores = torch.cat([past_scores, scores], dim=-1)
        probs = torch.softmax(scores, dim=-1)
        if past_k is not None:
            past_len = past_k.shape[2]
            out = torch.matmul(probs[..., :past_len], past_v) + torch.matmul(probs[..., past_len:], v)
        else:
            out = torch.matmul(probs, v)
        out = out.view(b, spec.num_heads, s, d).transpose(1, 2).reshape(b, s, -1)
        return self.o_proj(out), k, v


class _MLP(nn.Module):
    def __init__(self, spec: TextSpec) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(spec.hidden_size, spec.intermediate_size, bias=False)
        self.up_proj = nn.Linear(spec.hidden_size, spec.intermediate_size, bias=False)
        self.down_proj = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _DecoderLayer(nn.Module):
    def __init__(self, spec: TextSpec) -> None:
        super().__init__()
        self.self_attn = _DecoderAttention(spec)
        self.mlp = _MLP(spec)
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)

    def forward(self, x, cos, sin, past_bias, new_bias, past_k=None, past_v=None):
        attn, k, v = self.self_attn(self.input_layernorm(x), cos, sin, past_bias, new_bias, past_k, past_v)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), k, v


class Qwen3Body(nn.Module):
    """Qwen3 decoder layers and final norm (no embedding table, no head)."""

    def __init__(self, spec: TextSpec) -> None:
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleList(_DecoderLayer(spec) for _ in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)

    @staticmethod
    def attention_bias(attention_mask: torch.Tensor, query_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive biases from ``attention_mask [B, P + S]``: ``[B, 1, 1, P]`` over the past
        (padding only: every past position precedes the new ones) and ``[B, 1, S, S]`` over the
        new positions (causal and padding)."""
        past = attention_mask.shape[1] - query_len
        keep = attention_mask > 0
        past_bias = torch.where(keep[:, None, None, :past], 0.0, MASK_BIAS)
        pos = torch.arange(query_len, device=attention_mask.device)
        causal = (pos[None, :] <= pos[:, None])[None, None]
        new_bias = torch.where(causal & keep[:, None, None, past:], 0.0, MASK_BIAS)
        return past_bias, new_bias

    def forward(self, inputs_embeds, attention_mask, position_ids, past=None):
        cos, sin = (t.to(inputs_embeds.dtype) for t in rotary(position_ids, self.spec.head_dim, self.spec.rope_theta))
        biases = self.attention_bias(attention_mask, inputs_embeds.shape[1])
        past_bias, new_bias = (b.to(inputs_embeds.dtype) for b in biases)
        if past is None:  # no cache (the aligner): nothing to score but the new positions
            past_bias = None
        x = inputs_embeds
        news = []
        for i, layer in enumerate(self.layers):
            pk, pv = (past[2 * i], past[2 * i + 1]) if past is not None else (None, None)
            x, k, v = layer(x, cos, sin, past_bias, new_bias, pk, pv)
            news += [k, v]
        return self.norm(x), news


class DecoderWithCache(nn.Module):
    """Qwen3 decoder step: ``(inputs_embeds, attention_mask, position_ids, *past) -> (logits, *new)``.

    Shapes: ``inputs_embeds [B, S, H]``, ``attention_mask [B, P + S]`` (1 = attend; masked past
    columns are unused cache space), ``position_ids [B, S]``, past ``[B, kv_heads, P, head_dim]`` and
    new ``[B, kv_heads, S, head_dim]`` per layer as key, value pairs (only the new positions are
    returned: the caller stores them); ``logits [B, vocab]`` of the last position.
    """

    def __init__(self, spec: TextSpec) -> None:
        super().__init__()
        self.body = Qwen3Body(spec)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        hidden, new = self.body(inputs_embeds, attention_mask, position_ids, list(past))
        return (self.lm_head(hidden[:, -1, :]), *new)

    @classmethod
    def from_state(cls, spec: ModelSpec, state: dict[str, torch.Tensor]) -> DecoderWithCache:
        return with_weights(
            lambda: cls(spec.text), {"body": text_body(state), "lm_head": {"weight": state["lm_head.weight"]}}
        )


class AlignerModel(nn.Module):
    """Aligner body + classifier: ``(inputs_embeds [B, S, H], attention_mask [B, S]) -> logits [B, S, C]``."""

    def __init__(self, spec: TextSpec, num_labels: int, score_bias: bool = False) -> None:
        super().__init__()
        self.body = Qwen3Body(spec)
        self.score = nn.Linear(spec.hidden_size, num_labels, bias=score_bias)

    def forward(self, inputs_embeds, attention_mask):
        seq = inputs_embeds.shape[1]
        positions = torch.arange(seq, device=inputs_embeds.device)[None, :].expand(inputs_embeds.shape[0], seq)
        hidden, _ = self.body(inputs_embeds, attention_mask, positions)
        return self.score(hidden)

    @classmethod
    def from_state(cls, spec: ModelSpec, state: dict[str, torch.Tensor]) -> AlignerModel:
        return with_weights(
            lambda: cls(spec.text, spec.num_labels, score_bias="score.bias" in state),
            {"body": text_body(state), "score": sub_state(state, "score.")},
        )
