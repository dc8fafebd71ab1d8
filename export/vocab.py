"""The real Qwen2/Qwen3 vocabulary as a ``tokenizers`` fast tokenizer.

The 151,643 byte-level BPE ranks of Qwen ship in the PyPI package ``dashscope``
(``dashscope/resources/qwen.tiktoken``: base64 bytes and rank per line). A
tiktoken rank table is turned into BPE merges by replaying BPE on each token
with only lower ranks allowed: it always ends in exactly two parts, and that
pair is the token's merge. Added tokens follow Qwen3 (151643-151668) and
Qwen3-ASR (151669 onwards); the strings of 151671-151675 and 151677-151703
are not public and get ``<|reserved_N|>`` placeholders.
"""

from __future__ import annotations

import base64
import logging
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

logger = logging.getLogger(__name__)

# Qwen's pre-tokenizer split (dashscope/tokenizers/qwen_tokenizer.py, identical in Qwen2's tokenizer.json).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
FIRST_ADDED_ID = 151643
# (text, special) of the added tokens from FIRST_ADDED_ID on; None marks an unknown string.
_ADDED: list[tuple[str | None, bool]] = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
    ("<|audio_start|>", True),  # 151669
    ("<|audio_end|>", True),  # 151670
    *[(None, True)] * 5,  # 151671-151675
    ("<|audio_pad|>", True),  # 151676
    *[(None, True)] * 27,  # 151677-151703
    ("<asr_text>", False),  # 151704: not special, survives skip_special_tokens
    ("<timestamp>", True),  # 151705
]


def added_tokens() -> list[tuple[int, str, bool]]:
    """``(id, text, special)`` of every added token."""
    out = []
    for offset, (text, special) in enumerate(_ADDED):
        tid = FIRST_ADDED_ID + offset
        out.append((tid, text if text is not None else f"<|reserved_{tid}|>", special))
    return out


def qwen_tiktoken_path() -> Path:
    """Location of ``qwen.tiktoken`` inside the installed ``dashscope`` package."""
    try:
        path = resources.files("dashscope") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError as exc:  # pragma: no cover - dependency missing
        raise RuntimeError("the 'dashscope' package (export extra) is needed for the Qwen vocabulary") from exc
    return Path(str(path))


def load_ranks(path: Path | None = None) -> dict[bytes, int]:
    """Token bytes -> BPE rank from a tiktoken file."""
    ranks: dict[bytes, int] = {}
    for line in (path or qwen_tiktoken_path()).read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=False)}


def _merge_of(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two parts BPE joins last to form ``token`` (only lower ranks allowed before it)."""
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} does not reduce to one merge")
    return parts[0], parts[1]


def build_tokenizer(ranks: dict[bytes, int] | None = None) -> Tokenizer:
    """Byte-level BPE tokenizer equivalent to Qwen's tiktoken encoding, with Qwen3-ASR's added tokens."""
    ranks = ranks or load_ranks()
    byte_map = _bytes_to_unicode()

    def as_text(b: bytes) -> str:
        return "".join(byte_map[x] for x in b)

    vocab = {as_text(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, _rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) > 1:
            left, right = _merge_of(tok, ranks)
            merges.append((as_text(left), as_text(right)))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    specials = []
    for tid, text, special in added_tokens():
        if tid != tokenizer.get_vocab_size(with_added_tokens=True):
            raise RuntimeError(f"added token {text} would get id {tokenizer.get_vocab_size()} not {tid}")
        token = AddedToken(text, special=special, normalized=False)
        (tokenizer.add_special_tokens if special else tokenizer.add_tokens)([token])
        specials.append(text)
    logger.info("built Qwen tokenizer: %d ranks, %d merges, %d added tokens", len(vocab), len(merges), len(specials))
    return tokenizer
