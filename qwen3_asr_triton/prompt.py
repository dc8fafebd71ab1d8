"""Prompt construction for the recogniser and the forced aligner.

Recogniser (the chat template of the ``-hf`` checkpoints)::

    <|im_start|>system\\n{context}<|im_end|>\\n<|im_start|>user\\n
    <|audio_start|><|audio_pad|> x N<|audio_end|><|im_end|>\\n<|im_start|>assistant\\n
    [language {Name}<asr_text>]          (only when a language is forced)

Aligner (no chat turns)::

    <|audio_start|><|audio_pad|> x N<|audio_end|>w1<timestamp><timestamp>w2<timestamp><timestamp>...

Control tokens split the text before BPE, so encoding the pieces between them
separately gives exactly the ids of encoding the rendered template.

Decoders receive audio the way TensorRT-LLM's prompt-tuning does: the N
``<|audio_pad|>`` ids are replaced by ``vocab_size + k`` (k = 0..N-1) and
row k of a prompt embedding table holds the k-th audio embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .tokenizer import TextTokenizer

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
AUDIO_START = "<|audio_start|>"
AUDIO_END = "<|audio_end|>"
AUDIO_PAD = "<|audio_pad|>"
ASR_TEXT = "<asr_text>"
TIMESTAMP = "<timestamp>"


@dataclass(frozen=True)
class PromptLimits:
    """Bounds on the text parts of a request.

    Attributes
    ----------
    max_context_tokens : int
        Longest CONTEXT accepted, in tokens (hotword lists and domain text;
        default 2048).
    """

    max_context_tokens: int = 2048

    def __post_init__(self) -> None:
        if self.max_context_tokens < 0:
            raise ValueError("PromptLimits.max_context_tokens must be >= 0")


class PromptBuilder:
    """Builds token-id prompts from a checkpoint's tokenizer."""

    def __init__(self, tokenizer: TextTokenizer, audio_token_id: int, limits: PromptLimits | None = None):
        self.tokenizer = tokenizer
        self.limits = limits or PromptLimits()
        self.audio_token_id = int(audio_token_id)
        pad_id = tokenizer.token_id(AUDIO_PAD)
        if pad_id != self.audio_token_id:
            raise ValueError(f"config audio_token_id {self.audio_token_id} != tokenizer id of {AUDIO_PAD} ({pad_id})")
        self.timestamp_id = tokenizer.token_id(TIMESTAMP)
        self._asr_suffix = tokenizer.encode(f"{AUDIO_END}{IM_END}\n{IM_START}assistant\n")
        self._audio_start = tokenizer.encode(AUDIO_START)
        self._audio_end = tokenizer.encode(AUDIO_END)

    def context_ids(self, context: str) -> list[int]:
        """Validated ids of a CONTEXT string."""
        self.tokenizer.check_plain_text(context, "CONTEXT")
        ids = self.tokenizer.encode(context) if context else []
        if len(ids) > self.limits.max_context_tokens:
            raise InputError(f"CONTEXT is {len(ids)} tokens; the limit is {self.limits.max_context_tokens}")
        return ids

    def asr_prompt(self, num_audio_tokens: int, context: str = "", language: str | None = None) -> list[int]:
        """Token ids of the recognition prompt with ``num_audio_tokens`` audio placeholders.

        ``language`` is a canonical name (see :mod:`.languages`) or None to auto-detect.
        """
        self.context_ids(context)  # validates
        head = self.tokenizer.encode(f"{IM_START}system\n{context}{IM_END}\n{IM_START}user\n{AUDIO_START}")
        tail = list(self._asr_suffix)
        if language:
            tail += self.tokenizer.encode(f"language {language}{ASR_TEXT}")
        return head + [self.audio_token_id] * int(num_audio_tokens) + tail

    def aligner_prompt(self, num_audio_tokens: int, words: list[str]) -> list[int]:
        """Token ids of the forced-aligner input: audio, then each word followed by two timestamp slots."""
        ids = list(self._audio_start) + [self.audio_token_id] * int(num_audio_tokens) + list(self._audio_end)
        for word in words:
            ids += [*self.tokenizer.encode(word), self.timestamp_id, self.timestamp_id]
        return ids


def to_prompt_table_ids(prompt_ids: list[int] | np.ndarray, audio_token_id: int, vocab_size: int) -> np.ndarray:
    """Replace the audio placeholders by fake ids ``vocab_size + k`` (TensorRT-LLM prompt tuning).

    Returns
    -------
    np.ndarray
        ``[len(prompt_ids)]`` int32.
    """
    ids = np.asarray(prompt_ids, dtype=np.int64).copy()
    positions = np.flatnonzero(ids == audio_token_id)
    ids[positions] = vocab_size + np.arange(positions.size)
    return ids.astype(np.int32)


def splice_prompt_embeddings(
    ids: np.ndarray, embed_table: np.ndarray, prompt_table: np.ndarray, vocab_size: int
) -> np.ndarray:
    """Input embeddings of a prompt in prompt-table form.

    Parameters
    ----------
    ids : np.ndarray
        ``[S]`` ids; values ``>= vocab_size`` index ``prompt_table``.
    embed_table : np.ndarray
        ``[vocab_size, H]`` token embeddings (may be a memory map).
    prompt_table : np.ndarray
        ``[N, H]`` audio embeddings.

    Returns
    -------
    np.ndarray
        ``[S, H]`` float32.
    """
    ids = np.asarray(ids, dtype=np.int64)
    check_prompt_table(ids, prompt_table.shape[0], vocab_size)
    fake = ids >= vocab_size
    out = np.empty((ids.size, embed_table.shape[1]), dtype=np.float32)
    out[~fake] = embed_table[ids[~fake]]
    if fake.any():
        out[fake] = prompt_table[ids[fake] - vocab_size]
    return out


def check_prompt_table(ids: np.ndarray, table_rows: int, vocab_size: int) -> None:
    """Raise :class:`InputError` when ``ids`` reference a prompt-table row past ``table_rows``."""
    ids = np.asarray(ids)
    audio = ids[ids >= vocab_size]
    row = int(audio.max()) - vocab_size if audio.size else -1
    if row >= table_rows:
        raise InputError(f"prompt references audio row {row} but the table has {table_rows} rows")
