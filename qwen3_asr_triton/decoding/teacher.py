"""Teacher forcing: a decoder graph's logits at every step of a given token sequence (numpy only).

Greedy decoding feeds each step the token the graph itself chose; to compare two graphs (fp32 and
int8) step by step both must see the same context, so here the caller's tokens (the fp32 greedy
output) are fed whatever the graph would have chosen. The prompt is prefilled in chunks of at
most :data:`.decoder.DEFAULT_PREFILL_CHUNK` tokens, then one graph call per token, into one KV
buffer allocated for the whole sequence (columns past the filled ones are masked, as in serving).
:meth:`.decoder.DecoderRunner.run` returns the logits of a call's last position only, so the steps
are run one by one rather than as one prefill of prompt plus tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .decoder import DEFAULT_PREFILL_CHUNK, DecoderRunner

logger = logging.getLogger(__name__)


def teacher_forced_logits(
    runner: DecoderRunner,
    prompt_ids: np.ndarray,
    prompt_table: np.ndarray | None,
    tokens: Sequence[int],
    chunk: int = DEFAULT_PREFILL_CHUNK,
) -> np.ndarray:
    """Logits of every generated position when ``tokens`` are fed after the prompt.

    Parameters
    ----------
    runner : DecoderRunner
        The decoder graph (any precision) and its token embedding table.
    prompt_ids : ``[S]`` int64
        The prompt in prompt-table form (audio positions as ``vocab_size + k``).
    prompt_table : ``[A, H]`` float32 or None
        The audio embeddings the prompt's audio ids index.
    tokens : ``T`` ints
        The forced sequence (e.g. the reference's greedy output, a final end token included).
    chunk : int
        Prompt tokens per prefill call.

    Returns
    -------
    ``[T, V]`` float32: row ``t`` is the distribution's logits for position ``t`` given the prompt and
    ``tokens[:t]`` (its argmax is what greedy decoding would choose there); the last token is never fed.
    """
    if len(tokens) == 0:
        raise ValueError("no tokens to force")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    embeds = runner.embed_prompt(np.asarray(prompt_ids, np.int64), prompt_table)
    prompt_len, steps = embeds.shape[0], len(tokens)
    columns = prompt_len + steps - 1  # every position whose keys a later call reads
    heads, head_dim = runner.kv_shape
    past = [np.zeros((1, heads, columns, head_dim), np.float32) for _ in range(2 * runner.num_layers)]
    logits = np.empty((steps, runner.spec.text.vocab_size), np.float32)

    def call(inputs: np.ndarray, done: int) -> np.ndarray:
        """Run ``[n, H]`` inputs after ``done`` cached positions; store their keys and values."""
        count = inputs.shape[0]
        mask = np.zeros((1, columns + count), np.int64)
        mask[0, :done] = 1
        mask[0, columns:] = 1
        positions = np.arange(done, done + count, dtype=np.int64)[None]
        out, new = runner.run(np.ascontiguousarray(inputs[None], np.float32), mask, positions, past)
        stop = min(done + count, columns)  # the last step's own keys are never read again
        for buffer, fresh in zip(past, new, strict=True):
            buffer[:, :, done:stop] = fresh[:, :, : stop - done]
        return out[0]

    done = 0
    while done < prompt_len:
        count = min(chunk, prompt_len - done)
        last = call(embeds[done : done + count], done)
        done += count
    logits[0] = last
    fed = np.asarray(runner.embed[np.asarray(tokens[:-1], np.int64)], np.float32)
    for t in range(1, steps):
        logits[t] = call(fed[t - 1 : t], done)
        done += 1
    logger.debug("teacher-forced %d steps after a %d-token prompt", steps, prompt_len)
    return logits
