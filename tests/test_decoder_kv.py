"""The decoder's KV memory: whole blocks, written in place, freed per sequence (tiny graph, no server)."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_asr_triton.decoding.decoder import KV_BLOCK, DecodeBatch, DecoderRunner, Sequence, greedy_decode, kv_columns
from qwen3_asr_triton.prompt import IM_END, IM_START
from qwen3_asr_triton.tokenizer import TextTokenizer

# Text tokens of every prompt here: a system turn (``<|im_start|>system\n`` ... ``<|im_end|>\n``) around
# the audio rows, so a prompt of ``n`` audio rows is ``n + 5`` tokens.
TEXT_TOKENS = 5


@pytest.fixture(scope="module")
def runner(asr_export):
    return DecoderRunner(asr_export)


@pytest.fixture(scope="module")
def system_turn(asr_export) -> tuple[list[int], list[int]]:
    """The checkpoint's ids of ``<|im_start|>system\\n`` and ``<|im_end|>\\n`` (its tokenizer's, not literals)."""
    tokenizer = TextTokenizer.from_file(asr_export)
    head, tail = tokenizer.encode(f"{IM_START}system\n"), tokenizer.encode(f"{IM_END}\n")
    assert len(head) + len(tail) == TEXT_TOKENS
    return head, tail


def _prompt(runner, system_turn, n_audio: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_audio`` random audio rows (prompt-table ids ``vocab_size + k``) inside a system turn."""
    spec = runner.spec
    table = np.random.default_rng(seed).standard_normal((n_audio, spec.text.hidden_size)).astype(np.float32)
    head, tail = system_turn
    ids = np.array([*head, *range(spec.text.vocab_size, spec.text.vocab_size + n_audio), *tail])
    return ids, table


def _sequence(key, max_new: int = 1000) -> Sequence:
    return Sequence(key=key, max_new_tokens=max_new, eos_ids=frozenset())


def _held_bytes(batch: DecodeBatch) -> int:
    return sum(b.nbytes for b in batch.kv or [])


def test_a_long_prompt_grows_by_whole_blocks_and_joins_an_empty_batch_without_a_copy(runner, system_turn):
    """2,000 tokens in chunks of 512: after each chunk the buffers hold whole blocks, just enough;
    the past is moved at most once per chunk (no concatenation of intermediate copies), and the
    finished prompt's buffers become the batch's as they are."""
    ids, table = _prompt(runner, system_turn, 2000 - TEXT_TOKENS, 0)
    batch = DecodeBatch(runner)
    job = batch.start_prefill(_sequence(0), runner.embed_prompt(ids, table))
    moved = 0
    while job.done < ids.size:
        before, done = job.copied, job.done
        grew = job.past is None or job.past[0].shape[2] < done + job.next_tokens(512)
        batch.run_prefills([job], [job.next_tokens(512)])
        assert job.past[0].shape[2] == kv_columns(job.done) and job.past[0].shape[2] % KV_BLOCK == 0
        assert job.copied - before == (done if grew and done else 0)  # one move of the past, only to grow
        moved += job.copied - before
    assert moved < 3 * ids.size  # (0 + 512 + 1024 + 1536): linear in chunks, not a copy per block
    layers = list(job.past)
    job.sequence.length = job.done
    job.sequence.tokens.append(1)
    batch.join(job.sequence, job.past, adopt=True)
    assert all(a is b for a, b in zip(batch.kv, layers, strict=True)) and batch.copies == 0
    for _ in range(kv_columns(ids.size) - ids.size):  # steps within the last block write in place
        batch.step()
    assert all(a is b for a, b in zip(batch.kv, layers, strict=True)) and batch.copies == 0
    batch.step()  # the block is full: the columns grow by one block
    assert batch.width == kv_columns(ids.size) + KV_BLOCK and batch.copies == kv_columns(ids.size)


def test_joining_and_leaving_move_only_the_sequences_concerned(runner, system_turn):
    batch = DecodeBatch(runner)
    lengths = (30, 50, 20, 40)
    for key, n in enumerate(lengths):
        job = batch.start_prefill(_sequence(key), runner.embed_prompt(*_prompt(runner, system_turn, n, key)))
        batch.advance_prefill(job, 512)
    assert batch.width == kv_columns(max(n + TEXT_TOKENS for n in lengths))
    joined = sum(n + TEXT_TOKENS for n in lengths[1:])  # the first was adopted; the others were copied in once each
    assert batch.copies == joined
    assert batch.cached_positions == 4 * batch.width and _held_bytes(batch) == 4 * batch.width * (
        runner.spec.text.kv_bytes_per_token
    )
    rows = [[k[r].copy() for k in batch.kv] for r in range(4)]
    batch.remove([3])  # the last row: nothing moves, its memory goes
    assert batch.copies == joined and [s.key for s in batch.sequences] == [0, 1, 2]
    assert _held_bytes(batch) == 3 * batch.width * runner.spec.text.kv_bytes_per_token
    batch.remove([0])  # a hole: the last row moves into it, the middle row stays where it is
    assert [s.key for s in batch.sequences] == [2, 1]
    assert batch.copies == joined + lengths[2] + TEXT_TOKENS
    for row, key in enumerate((2, 1)):
        for now, then in zip(batch.kv, rows[key], strict=True):
            np.testing.assert_array_equal(now[row], then)
    assert batch.width == kv_columns(lengths[1] + TEXT_TOKENS)  # the longest is still there: no column copy
    batch.remove([1])  # the longest left: the columns shrink to the remaining one's blocks
    remaining = lengths[2] + TEXT_TOKENS
    assert batch.width == kv_columns(remaining) and batch.cached_positions == kv_columns(remaining)


def test_a_mixed_batch_with_joins_and_leaves_equals_greedy_decoding_alone(runner, system_turn):
    """Prompts of 9 to 150 tokens join at different steps (one prefilled in chunks of 32 while the
    others decode) and leave at their own lengths; each stream equals its greedy decoding alone."""
    plan = {0: (40, 12, 0), 1: (7, 3, 0), 2: (150, 20, 2), 3: (60, 6, 4), 4: (22, 9, 4), 5: (90, 15, 9)}
    batch = DecodeBatch(runner)
    prompts = {key: _prompt(runner, system_turn, n, key) for key, (n, _, _) in plan.items()}
    seqs, jobs = {}, []
    for step in range(60):
        for key, (_, max_new, at) in plan.items():
            if at == step:
                seqs[key] = _sequence(key, max_new)
                jobs.append(batch.start_prefill(seqs[key], runner.embed_prompt(*prompts[key])))
        if jobs:
            jobs = [job for job, done in zip(jobs, batch.advance_prefills(jobs, 32), strict=True) if not done]
        batch.step()
        if step > 9 and not batch.sequences and not jobs:
            break
    assert batch.kv is None and all(s.finished for s in seqs.values())
    for key, seq in seqs.items():
        alone = greedy_decode(runner, *prompts[key], plan[key][1], eos_ids=frozenset())
        assert seq.tokens == alone.tokens, key
        np.testing.assert_allclose(seq.logprobs, alone.logprobs, rtol=0, atol=1e-4)
