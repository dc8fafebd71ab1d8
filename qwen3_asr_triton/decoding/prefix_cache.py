"""Reuse of the KV cache of a prompt's text prefix across requests.

Every recognition prompt starts with the same text before its audio (the chat
template's system turn with the request's context, then ``<|audio_start|>``),
so the keys and values of those positions are the same for every request with
the same context. :class:`PrefixCache` keeps them, keyed by the prefix's token
ids, so a prefill starts after the prefix instead of recomputing it.

The cache belongs to whoever plans prefills, not to the runner: the in-flight
scheduler's policy (:class:`.policy.SchedulerPolicy`, which explains why) or the
caller of :func:`.decoder.greedy_decode`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

# Distinct prefixes kept (one per context string in use); the least recently used goes first.
PREFIX_CACHE_ENTRIES = 8
# Longer prefixes (long context strings) are not kept: they are rare, and each position holds
# layers x 2 x kv_heads x head_dim floats (229 kB for the 0.6B model).
PREFIX_CACHE_MAX_TOKENS = 256


def text_prefix(prompt_ids: np.ndarray, vocab_size: int) -> tuple[int, ...]:
    """The ids before the first audio position of a prompt in prompt-table form (audio ids ``>= vocab_size``)."""
    ids = np.asarray(prompt_ids).reshape(-1)
    audio = np.flatnonzero(ids >= vocab_size)
    end = int(audio[0]) if audio.size else 0  # a prompt without audio has nothing worth sharing
    return tuple(int(i) for i in ids[:end])


class PrefixCache:
    """Least-recently-used store of ``2 * layers`` arrays ``[1, kv_heads, L, head_dim]`` per prefix.

    The arrays are only read after they are stored (a prefill starting from one reads it once and
    writes its next chunk into buffers of its own), so entries are shared without copies.
    """

    def __init__(self, entries: int = PREFIX_CACHE_ENTRIES, max_tokens: int = PREFIX_CACHE_MAX_TOKENS) -> None:
        if entries < 0 or max_tokens < 0:
            raise ValueError("prefix cache entries and max_tokens must be >= 0")
        self.entries = entries
        self.max_tokens = max_tokens
        self._store: OrderedDict[tuple[int, ...], list[np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def cacheable(self, key: tuple[int, ...]) -> bool:
        return self.entries > 0 and 0 < len(key) <= self.max_tokens

    def shareable_prefix(self, prompt_ids: np.ndarray, vocab_size: int) -> tuple[int, ...] | None:
        """The prompt's text prefix (:func:`text_prefix`) when this cache may hold it, else None.

        The prefix must leave at least one prompt token to prefill (that one's logits pick the first
        token) and be :meth:`cacheable`.
        """
        prefix = text_prefix(prompt_ids, vocab_size)
        return prefix if len(prefix) < np.asarray(prompt_ids).size and self.cacheable(prefix) else None

    def peek(self, key: tuple[int, ...]) -> list[np.ndarray] | None:
        """The entry for ``key`` without counting a hit or miss or refreshing it (see :meth:`get`)."""
        with self._lock:
            return self._store.get(key)

    def get(self, key: tuple[int, ...]) -> list[np.ndarray] | None:
        with self._lock:
            cache = self._store.get(key)
            if cache is None:
                self.misses += 1
                return None
            self._store.move_to_end(key)
            self.hits += 1
            return cache

    def put(self, key: tuple[int, ...], cache: list[np.ndarray]) -> None:
        if not self.cacheable(key) or cache[0].shape[2] != len(key):
            return
        with self._lock:
            self._store[key] = cache
            self._store.move_to_end(key)
            while len(self._store) > self.entries:
                self._store.popitem(last=False)

    def __len__(self) -> int:
        return len(self._store)
