"""The prompt-prefix KV cache: keys, eviction, and decoding that reuses it (tiny decoder graph, no server)."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_asr_triton.decoding.decoder import DecoderRunner, greedy_decode
from qwen3_asr_triton.decoding.prefix_cache import PrefixCache, text_prefix
from qwen3_asr_triton.prompt import PromptBuilder, to_prompt_table_ids
from qwen3_asr_triton.tokenizer import TextTokenizer

# The cache unit tests below key on made-up ids (not prompts): ids >= VOCAB are audio, the rest arbitrary text.
VOCAB = 1000


def _kv(length: int) -> list[np.ndarray]:
    return [np.full((1, 2, length, 4), float(length), np.float32)] * 2


def test_text_prefix_stops_at_the_first_audio_position():
    ids = np.array([5, 6, 7, VOCAB, VOCAB + 1, 8, 9])
    assert text_prefix(ids, VOCAB) == (5, 6, 7)
    assert text_prefix(np.array([VOCAB, 3]), VOCAB) == ()
    assert text_prefix(np.array([1, 2, 3]), VOCAB) == ()  # no audio: nothing is shared


def test_cache_evicts_the_least_recently_used_and_skips_long_prefixes():
    cache = PrefixCache(entries=2, max_tokens=4)
    cache.put((1,), _kv(1))
    cache.put((1, 2), _kv(2))
    assert cache.get((1,)) is not None  # (1,) is now the most recent
    cache.put((1, 2, 3), _kv(3))
    assert cache.get((1, 2)) is None and cache.get((1,)) is not None and cache.get((1, 2, 3)) is not None
    cache.put((1, 2, 3, 4, 5), _kv(5))  # longer than max_tokens
    assert cache.get((1, 2, 3, 4, 5)) is None
    cache.put((7, 8), _kv(3))  # a cache whose length does not match its key is refused
    assert cache.get((7, 8)) is None
    assert len(cache) == 2
    with pytest.raises(ValueError):
        PrefixCache(entries=-1)


def test_peek_counts_nothing_and_shareable_prefixes_leave_a_token_to_prefill():
    cache = PrefixCache(entries=2, max_tokens=4)
    cache.put((1, 2), _kv(2))
    assert cache.peek((1, 2)) is not None and cache.peek((3,)) is None
    assert (cache.hits, cache.misses) == (0, 0)
    assert cache.shareable_prefix(np.array([1, 2, VOCAB, 3]), VOCAB) == (1, 2)
    assert cache.shareable_prefix(np.array([1, 2, 3, 4, 5, VOCAB]), VOCAB) is None  # longer than max_tokens
    assert cache.shareable_prefix(np.array([VOCAB, 1]), VOCAB) is None  # no text before the audio
    assert PrefixCache(entries=0).shareable_prefix(np.array([1, VOCAB]), VOCAB) is None


@pytest.fixture(scope="module")
def prompt(asr_export):
    runner = DecoderRunner(asr_export)
    spec = runner.spec
    rng = np.random.default_rng(3)
    table = rng.standard_normal((30, spec.text.hidden_size)).astype(np.float32)
    chat = PromptBuilder(TextTokenizer.from_file(asr_export), spec.audio_token_id).asr_prompt(30)
    head = chat.index(spec.audio_token_id)  # the template's text before the first audio placeholder
    ids = to_prompt_table_ids(chat, spec.audio_token_id, spec.text.vocab_size)
    return ids, table, head


def test_decoding_from_a_cached_prefix_matches_a_full_prefill(asr_export, prompt):
    ids, table, head = prompt
    runner = DecoderRunner(asr_export)
    uncached = PrefixCache(entries=0)
    reference = greedy_decode(runner, ids, table, 12, prefix_cache=uncached)
    assert len(uncached) == 0

    cache = PrefixCache()  # the caller's, kept across generations
    calls: list[int] = []
    original = runner.run

    def counting_run(inputs_embeds, *args):
        calls.append(inputs_embeds.shape[1])
        return original(inputs_embeds, *args)

    runner.run = counting_run
    first = greedy_decode(runner, ids, table, 12, prefix_cache=cache)
    assert calls[:2] == [head, ids.size - head]  # the prefix is prefilled on its own and stored
    assert len(cache) == 1 and cache.misses == 1
    calls.clear()
    second = greedy_decode(runner, ids, table, 12, prefix_cache=cache)
    assert calls[0] == ids.size - head  # the prefix came from the cache
    assert cache.hits == 1
    for result in (first, second):
        assert result.tokens == reference.tokens
        np.testing.assert_allclose(result.logprobs, reference.logprobs, atol=1e-4)
