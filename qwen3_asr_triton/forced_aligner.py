"""Running the forced aligner on one segment: transcript + mel -> word start/end times.

(:mod:`.alignment` holds the pure text and timestamp maths this builds on.)

The aligner encodes the segment's audio with its own encoder, builds
``<|audio_start|> audio <|audio_end|> w1 <ts><ts> w2 <ts><ts> ...``, runs its
Qwen3 body and classifier once (no generation) and reads the argmax class at
every ``<timestamp>`` slot; :func:`~.alignment.word_times` turns classes into
monotonic seconds. Where the two graphs run (in-process ONNX Runtime, or other
Triton models) is up to the caller, through two callables.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .alignment import WordTime, split_words, word_times
from .features import EncoderWindows, split_windows
from .languages import ALIGNER_LANGUAGES
from .model_spec import ModelSpec
from .prompt import PromptBuilder, splice_prompt_embeddings, to_prompt_table_ids
from .tokenizer import TextTokenizer

# encode(windows) -> [N, H] audio embeddings
EncodeFn = Callable[[EncoderWindows], np.ndarray]
# classify(inputs_embeds [1, S, H], attention_mask [1, S]) -> logits [1, S, classes]
ClassifyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class ForcedAligner:
    """Word timestamps for a transcript of one audio segment."""

    def __init__(
        self, spec: ModelSpec, tokenizer: TextTokenizer, embed_table: np.ndarray, encode: EncodeFn, classify: ClassifyFn
    ) -> None:
        if spec.kind != "aligner":
            raise ValueError("ForcedAligner needs an aligner checkpoint")
        self.spec = spec
        self.prompts = PromptBuilder(tokenizer, spec.audio_token_id)
        self.embed = embed_table
        self.encode = encode
        self.classify = classify

    def words(self, text: str, language: str | None) -> list[str]:
        # Languages outside the aligner's set use the generic CJK / whitespace splitter.
        return split_words(text, language if language in ALIGNER_LANGUAGES else None)

    def timestamp_classes(self, mel: np.ndarray, words: list[str]) -> np.ndarray:
        """``[2 * len(words)]`` argmax classes for the words against ``[n_mels, T]`` features."""
        windows = split_windows(mel, self.spec.features)
        audio = self.encode(windows)
        ids = np.asarray(self.prompts.aligner_prompt(windows.total_tokens, words), dtype=np.int64)
        vocab = self.spec.text.vocab_size
        embeds = splice_prompt_embeddings(
            to_prompt_table_ids(ids, self.spec.audio_token_id, vocab), self.embed, audio, vocab
        )
        logits = self.classify(embeds[None], np.ones((1, ids.size), np.int64))
        slots = np.flatnonzero(ids == self.spec.timestamp_token_id)
        return np.argmax(logits[0, slots], axis=-1).astype(np.int64)

    def align(self, mel: np.ndarray, text: str, language: str | None) -> list[WordTime]:
        """Word times in seconds from the start of the segment (empty when there are no words)."""
        words = self.words(text, language)
        if not words:
            return []
        return word_times(words, self.timestamp_classes(mel, words), self.spec.timestamp_segment_ms)
