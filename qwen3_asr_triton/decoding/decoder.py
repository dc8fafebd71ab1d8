"""Greedy decoding over the exported decoder graph with ONNX Runtime (numpy only).

:class:`DecodeBatch` is the core: a set of running sequences whose KV caches are
kept in one batch of buffers (row ``r`` holds its ``L_r`` cached positions in columns
``[0, L_r)``; the rest is zeros, masked out), so that one graph call advances every
sequence by one token whatever their lengths. Sequences join after their own prefill and
leave as soon as they finish; this is the mechanism behind in-flight batching
(:mod:`.scheduler`) and, with a single sequence, behind :func:`greedy_decode`, so both
run the same code.

KV memory is held in whole blocks of :data:`KV_BLOCK` positions and written in place (see
:class:`KVBuffers`): the graph reads the buffers as they are (masked columns included; it
wants one contiguous ``[rows, kv_heads, columns, head_dim]`` array per layer) and returns only
the new keys and values, which are written at each row's next free columns. Rows are the
leading axis, so a join or a leave resizes the buffers without copying the other rows
(``realloc``); the columns grow by whole blocks when the longest row needs one more, and
shrink when the longest row left; either is one copy, made one layer at a time, so the
peak is the cache plus one layer, never two caches. A prompt being prefilled holds its own
one-row buffers the same way, grown by whole blocks as its chunks are written (the graph's
``[heads, positions]`` layout allows no in-place growth of a contiguous row: a chunk that
needs more blocks moves that row's past once, one layer at a time); a single prompt's
buffers become the batch's as they are when it joins an empty batch, otherwise its row is
copied in once.

The graph calls (:meth:`DecodeBatch.run_prefills`, :meth:`DecodeBatch.decode`) return the
token each sequence chose (a :class:`Choice`) without recording it: the in-flight scheduler's
policy records it (:meth:`.policy.SchedulerPolicy.apply`), :meth:`DecodeBatch.step` and
:meth:`DecodeBatch.advance_prefills` do for direct callers. The prompt-prefix cache belongs to
the caller (the scheduler's policy, or the one :func:`greedy_decode` is given), not to the runner.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..artifacts import DECODER_BODY_FILENAME, DECODER_FILENAME, EMBED_FILENAME
from ..model_spec import ModelSpec
from ..prompt import splice_prompt_embeddings
from ..sessions import OrtOptions, make_session
from .logit_screen import LogitScreen
from .prefix_cache import PrefixCache

logger = logging.getLogger(__name__)

# Prompt tokens per prefill call: bounds the [heads, chunk, past] attention scores of long prompts
# (a 20-minute segment is ~15,600 audio tokens).
DEFAULT_PREFILL_CHUNK = 512
# Cache columns are allocated in blocks of this many positions: the columns grow (one copy of the
# cache, a layer at a time) once per block of steps instead of every step, and attention reads at most
# one block of masked columns in vain (~1 ms a step per 32 columns for 8 sequences of the 0.6B model).
KV_BLOCK = 64


def kv_columns(positions: int) -> int:
    """Cache columns allocated for ``positions`` cached positions plus the one a step writes."""
    return -(-(positions + 1) // KV_BLOCK) * KV_BLOCK


def chunk_tokens(done: int, total: int, limit: int, prefix: tuple[int, ...] | None = None) -> int:
    """Prompt tokens the next prefill chunk runs: at most ``limit``, ending at a pending ``prefix``.

    ``done`` of the prompt's ``total`` positions are cached; a text prefix still to be stored in the
    prefix cache is prefilled on its own, so its keys and values can be kept as they are.
    """
    stop = min(done + limit, total)
    if prefix is not None:
        stop = min(stop, len(prefix))
    return stop - done


class DecoderRunner:
    """The decoder graph plus the host-side token embedding table.

    Parameters
    ----------
    model_dir : path
        Export directory with ``decoder.onnx``, ``embed_tokens.npy`` and ``model_spec.json``.
    options : OrtOptions, optional
        ONNX Runtime threads and optimisation level.
    graph : str
        The graph file (``decoder-int8.onnx`` for the int8 precision).
    screen : bool
        For the fp32 graph of an export that has them, run ``decoder-body.onnx`` and compute the
        logits with the int8 screen (:mod:`.logit_screen`: the same greedy tokens, ~a quarter of the
        output projection's bytes). Off, or without the files, the whole graph computes the logits.
    """

    def __init__(
        self,
        model_dir: str | Path,
        options: OrtOptions | None = None,
        graph: str = DECODER_FILENAME,
        screen: bool = True,
    ) -> None:
        model_dir = Path(model_dir)
        self._load_tables(model_dir)
        self.screen = self._load_screen(model_dir, options) if screen and graph == DECODER_FILENAME else None
        self.session = make_session(model_dir / (DECODER_BODY_FILENAME if self.screen else graph), options)
        self._past_names = [f"past_key_values.{i}.{k}" for i in range(self.num_layers) for k in ("key", "value")]
        graph_inputs = {i.name for i in self.session.get_inputs()}
        missing = {"inputs_embeds", "attention_mask", "position_ids", *self._past_names} - graph_inputs
        if missing:
            raise ValueError(f"decoder graph lacks inputs {sorted(missing)}")

    def _load_screen(self, model_dir: Path, options: OrtOptions | None) -> LogitScreen | None:
        """The export's logit screen, or None (no screen files, or integer products inexact on this CPU)."""
        if not LogitScreen.available(model_dir):
            return None
        screen = LogitScreen(model_dir, self.embed, options)
        if not screen.self_check():
            logger.warning("the int8 logit screen is not exact on this CPU's kernels; computing every logit in fp32")
            return None
        logger.info("decoder logits: int8 screen, fp32 recomputation of the rows that can decide the token")
        return screen

    def _load_tables(self, model_dir: Path) -> None:
        """The spec and the token embedding table of an export directory (any engine's runner needs both)."""
        self.spec = ModelSpec.load(model_dir)
        # Memory-mapped: only the rows actually looked up are paged in.
        self.embed = np.load(model_dir / EMBED_FILENAME, mmap_mode="r")
        t = self.spec.text
        if self.embed.shape != (t.vocab_size, t.hidden_size):
            raise ValueError(f"embedding table shape {self.embed.shape} does not match the spec")
        self.num_layers = t.num_layers
        self.kv_shape = (t.num_kv_heads, t.head_dim)

    def embed_prompt(self, prompt_ids: np.ndarray, prompt_table: np.ndarray | None) -> np.ndarray:
        """``[S]`` ids (audio as ``vocab_size + k``) -> ``[S, H]`` input embeddings."""
        table = prompt_table if prompt_table is not None else np.zeros((0, self.embed.shape[1]), np.float32)
        return splice_prompt_embeddings(prompt_ids, self.embed, table, self.spec.text.vocab_size)

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, *self.kv_shape[:1], 0, self.kv_shape[1]), np.float32)] * (2 * self.num_layers)

    def feeds(
        self, inputs_embeds: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray, past: list[np.ndarray]
    ) -> dict[str, Any]:
        """The graph's input dict for :meth:`run`'s arguments (named as the export names them)."""
        feeds: dict[str, Any] = {
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
        }
        feeds.update(zip(self._past_names, past, strict=False))
        return feeds

    def run(
        self,
        inputs_embeds: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: list[np.ndarray],
        end_tokens: list[frozenset[int]] | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One graph call.

        Parameters
        ----------
        inputs_embeds : ``[B, S, H]`` float32
        attention_mask : ``[B, P + S]`` int64, 1 where a key may be attended
        position_ids : ``[B, S]`` int64 RoPE positions
        past : ``2 * layers`` arrays ``[B, kv_heads, P, head_dim]``
        end_tokens : list of B sets of ids, optional
            Given, the logits are those a greedy choice needs: with the logit screen, fp32 wherever
            they can decide the argmax (each row's end tokens always, which a step may mask), the
            screen's values elsewhere. Omitted, every logit is fp32.

        Returns
        -------
        logits ``[B, vocab]`` of the last position and the ``[B, kv_heads, S, head_dim]`` keys and
        values of the new positions (to be stored by the caller).
        """
        outputs = self.session.run(None, self.feeds(inputs_embeds, attention_mask, position_ids, past))
        if self.screen is None:
            return outputs[0], outputs[1:]
        if end_tokens is None:
            return self.screen.full(outputs[0]), outputs[1:]
        return self.screen.logits(outputs[0], end_tokens), outputs[1:]


class Choice(NamedTuple):
    """The token a graph call chose for one sequence (recorded by :meth:`Sequence.record`)."""

    token: int
    logprob: float


@dataclass(eq=False)
class Sequence:
    """One request being decoded greedily (compared by identity).

    Attributes
    ----------
    key : any
        Caller's handle (request id).
    max_new_tokens : int
        Generation budget; the EOS token counts.
    length : int
        Positions in this sequence's KV cache (while its prompt is prefilled: the prompt
        positions cached so far).
    tokens : list of int
        Generated ids, including a final EOS when generation ended on one.
    logprobs : list of float
        Log-probability of each generated id.
    min_new_tokens : int
        End tokens are not chosen before this many tokens were generated (benchmarks force lengths).
    want_logprobs : bool
        Whether ``logprobs`` are computed; when False they are NaN (a stream's partials need none, and
        the log-softmax over the vocabulary costs about as much as the tiny model's whole step).
    request : any
        The in-flight scheduler's request this sequence decodes (None for a direct caller).
    """

    key: Any
    max_new_tokens: int
    eos_ids: frozenset[int]
    length: int = 0
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    min_new_tokens: int = 0
    want_logprobs: bool = True
    request: Any = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def record(self, choice: Choice) -> None:
        """Append a chosen token; the sequence finishes on an end token or at its budget."""
        self.tokens.append(choice.token)
        self.logprobs.append(choice.logprob)
        if choice.token in self.eos_ids:
            self.finish_reason = "eos"
        elif len(self.tokens) >= self.max_new_tokens:
            self.finish_reason = "length"

    def advance(self, choice: Choice) -> None:
        """Record a decode step: its input (the last token) is now cached, and ``choice`` follows it."""
        self.length += 1
        self.record(choice)


def _log_softmax_at(logits: np.ndarray, index: int) -> float:
    # exp in float32 (a float64 exp over a 151k vocabulary costs ~9x more), summed in float64.
    top = logits.max()
    shifted = np.subtract(logits, top, dtype=np.float32)
    np.exp(shifted, out=shifted)
    return float(logits[index]) - float(top) - float(np.log(shifted.sum(dtype=np.float64)))


def greedy_choice(seq: Sequence, logits: np.ndarray) -> Choice:
    """The greedy token for ``[vocab]`` logits; end tokens are masked until ``seq.min_new_tokens``."""
    if len(seq.tokens) < seq.min_new_tokens and seq.eos_ids:
        logits = logits.copy()
        logits[list(seq.eos_ids)] = -np.inf
    token = int(np.argmax(logits))
    return Choice(token, _log_softmax_at(logits, token) if seq.want_logprobs else math.nan)


class KVBuffers:
    """``2 * layers`` float32 buffers ``[rows, kv_heads, columns, head_dim]``, columns in whole blocks.

    Rows are the leading axis, so adding or dropping the last row resizes each buffer in place
    (``realloc``: the other rows are not copied, and a dropped row's memory goes back). Changing
    the columns moves every row, one layer at a time (the peak is the buffers plus one layer).
    ``copied`` counts the cached positions moved so far (a position of one row in every layer).
    """

    def __init__(self, layers: list[np.ndarray]) -> None:
        self.layers = layers
        self.copied = 0

    @classmethod
    def zeros(cls, runner: DecoderRunner, rows: int, columns: int) -> KVBuffers:
        heads, head_dim = runner.kv_shape
        return cls([np.zeros((rows, heads, columns, head_dim), np.float32) for _ in range(2 * runner.num_layers)])

    @property
    def rows(self) -> int:
        return self.layers[0].shape[0]

    @property
    def columns(self) -> int:
        return self.layers[0].shape[2]

    @property
    def owned(self) -> bool:
        """True when every buffer owns its memory (it may be resized in place)."""
        return all(b.flags.owndata and b.flags.c_contiguous for b in self.layers)

    def set_columns(self, columns: int, keep: int) -> None:
        """Re-allocate with ``columns`` columns keeping the first ``keep`` of every row, a layer at a time."""
        for i, old in enumerate(self.layers):
            new = np.zeros((old.shape[0], old.shape[1], columns, old.shape[3]), np.float32)
            new[:, :, :keep] = old[:, :, :keep]
            self.layers[i] = new  # the old layer is freed before the next one is allocated
        self.copied += self.rows * keep

    def set_rows(self, rows: int) -> None:
        """Add zeroed rows at the end, or drop the last rows, in place."""
        for b in self.layers:
            b.resize((rows, *b.shape[1:]), refcheck=False)

    def write(self, rows: Any, columns: Any, new: list[np.ndarray]) -> None:
        """``buffer[rows, :, columns] = new`` in every layer (``new``: the graph's ``[R, heads, S, dim]`` outputs)."""
        for buffer, fresh in zip(self.layers, new, strict=True):
            buffer[rows, :, columns] = fresh

    def move_row(self, source: int, target: int, length: int) -> None:
        for b in self.layers:
            b[target, :, :length] = b[source, :, :length]
            b[target, :, length:] = 0
        self.copied += length


@dataclass
class Prefill:
    """A prompt being prefilled chunk by chunk (bounded attention memory for long prompts).

    ``past`` holds the ``done`` positions cached so far: ``2 * layers`` arrays ``[1, kv_heads, C, head_dim]``
    with ``C >= done`` (its own buffers, grown by whole blocks, or a prefix cache entry of exactly
    ``done`` columns, never written to).
    """

    sequence: Sequence
    embeds: np.ndarray  # [S, H]
    done: int = 0
    past: list[np.ndarray] | None = None
    prefix: tuple[int, ...] | None = None  # a text prefix to prefill on its own and keep in the prefix cache
    copied: int = 0  # cached positions moved to grow the buffers (once per chunk that needs more blocks)
    own: bool = False  # ``past`` is this job's own list of buffers (not a prefix cache entry's)

    def __post_init__(self) -> None:
        self.embeds = np.ascontiguousarray(self.embeds, dtype=np.float32)

    def next_tokens(self, limit: int) -> int:
        """Prompt tokens its next chunk of at most ``limit`` runs (a pending prefix ends the chunk)."""
        return chunk_tokens(self.done, self.embeds.shape[0], limit, self.prefix)

    def cached_kv(self) -> list[np.ndarray]:
        """The ``done`` cached positions as ``[1, kv_heads, done, head_dim]`` copies (for the prefix cache)."""
        assert self.past is not None
        return [p[:, :, : self.done].copy() for p in self.past]  # never a view: the buffers are resized later

    def store(self, new: list[np.ndarray]) -> None:
        """Write ``[1, kv_heads, n, head_dim]`` new keys and values after the cached positions.

        The buffers grow by whole blocks first when they lack room (room is kept for the position
        the first decode step writes, so a prompt joining an empty batch is not copied again).
        """
        count = new[0].shape[2]
        end = self.done + count
        if self.past is None:
            self.past = [np.zeros((1, n.shape[1], kv_columns(end), n.shape[3]), np.float32) for n in new]
        elif not self.own or self.past[0].shape[2] < end:  # a prefix cache entry is never written to
            if not self.own:  # a prefix cache entry's list stays the cache's
                self.past = list(self.past)
            grown = KVBuffers(self.past)  # this list: each old layer goes as soon as its successor is made
            grown.set_columns(kv_columns(end), self.done)
            self.copied += grown.copied
        self.own = True
        for buffer, fresh in zip(self.past, new, strict=True):
            buffer[:, :, self.done : end] = fresh
        self.done = end


class DecodeBatch:
    """Running sequences sharing one KV cache of block-allocated buffers (see module docstring)."""

    def __init__(self, runner: DecoderRunner, prefix_cache: PrefixCache | None = None) -> None:
        self.runner = runner
        self.prefix_cache = prefix_cache  # looked up by start_prefill, filled by advance_prefills
        self.sequences: list[Sequence] = []  # row order of the buffers
        self.buffers: KVBuffers | None = None  # [B, kv_heads, C, head_dim], C = kv_columns(longest)
        self.copied = 0  # cached positions moved by joins, leaves and growth of batches now gone

    @property
    def kv(self) -> list[np.ndarray] | None:
        """The ``2 * layers`` buffers ``[B, kv_heads, C, head_dim]`` the graph reads (None when empty)."""
        return None if self.buffers is None else self.buffers.layers

    @kv.setter
    def kv(self, layers: list[np.ndarray] | None) -> None:
        self.buffers = None if layers is None else KVBuffers(list(layers))

    @property
    def width(self) -> int:
        """Columns allocated in the shared cache (:func:`kv_columns` of the longest sequence)."""
        return 0 if self.buffers is None else self.buffers.columns

    @property
    def cached_positions(self) -> int:
        """Cache positions held (rows x width, whole blocks): what the KV budget bounds."""
        return len(self.sequences) * self.width

    @property
    def copies(self) -> int:
        """Cached positions moved between buffers so far (joins into a non-empty batch, growth, leaves)."""
        return self.copied + (0 if self.buffers is None else self.buffers.copied)

    def __len__(self) -> int:
        return len(self.sequences)

    def choose(self, seq: Sequence, logits: np.ndarray) -> None:
        """Append the greedy token for ``[vocab]`` logits and mark the sequence finished if it ends."""
        seq.record(greedy_choice(seq, logits))

    def start_prefill(self, seq: Sequence, prompt_embeds: np.ndarray, prompt_ids: np.ndarray | None = None) -> Prefill:
        """A prefill job for ``[S, H]`` prompt embeddings (run it with :meth:`advance_prefill`).

        With the prompt's ``[S]`` ids (prompt-table form) and a prefix cache, its leading text is looked
        up there (:meth:`.prefix_cache.PrefixCache.shareable_prefix`): on a hit the job starts after it,
        otherwise its first chunk stops at the prefix and stores it there.
        """
        job = Prefill(seq, prompt_embeds)
        cache = self.prefix_cache
        if cache is None or prompt_ids is None:
            return job
        prefix = cache.shareable_prefix(prompt_ids, self.runner.spec.text.vocab_size)
        if prefix is not None:
            past = cache.get(prefix)
            if past is None:
                job.prefix = prefix
            else:
                job.past, job.done = past, len(prefix)
        return job

    def advance_prefill(self, job: Prefill, chunk: int) -> bool:
        """Run the next ``chunk`` prompt tokens of ``job``; on the last chunk pick the first token and,
        unless the sequence is already finished, join the running batch. Returns True when done."""
        return self.advance_prefills([job], chunk)[0]

    def advance_prefills(self, jobs: list[Prefill], chunk: int) -> list[bool]:
        """:meth:`advance_prefill` for several jobs in one graph call; True for each job that is done.

        Each job runs its next chunk of at most ``chunk`` tokens (:meth:`run_prefills`); a finished
        prompt records its first token and joins the batch unless that ended it, in ``jobs`` order.
        """
        choices = self.run_prefills(jobs, [job.next_tokens(chunk) for job in jobs])
        for job, choice in zip(jobs, choices, strict=True):
            if job.prefix is not None and job.done == len(job.prefix):
                if self.prefix_cache is not None:
                    self.prefix_cache.put(job.prefix, job.cached_kv())
                job.prefix = None
            if choice is None:
                continue
            job.sequence.length = job.done
            job.sequence.record(choice)
            if not job.sequence.finished:
                self.join(job.sequence, job.past, adopt=True)
            job.past = None
        return [choice is not None for choice in choices]

    def run_prefills(self, jobs: list[Prefill], counts: list[int]) -> list[Choice | None]:
        """One graph call running the next ``counts[r]`` prompt tokens of each job.

        Each job's new keys and values are written after its cached positions (:meth:`Prefill.store`)
        and its ``done`` advances; for a job whose prompt is now complete the first generated token is
        chosen (None for the others). Neither the sequences nor the running batch change: the caller
        records the choices and joins.

        A burst of prompts is prefilled as one batch, so its matrix products have more rows: at
        0.6B dimensions 8 prompts of 71 tokens took 5.4-5.5 s in one call against 6.5-6.9 s in 8
        (the same logits); at 1.7B, whose products of 71 rows already run near the compute ceiling,
        it made no difference. Rows of different lengths are padded on the left (padding masked as
        keys), so every row's last position is its prompt's last token; the graph returns each row's
        new keys and values in its last columns.
        """
        ends = [job.sequence.eos_ids for job in jobs]
        logits, present = self.runner.run(*self._prefill_inputs(jobs, counts), ends)
        width = max(counts)  # the new positions each row returns; a row's own are its last ``count``
        choices: list[Choice | None] = []
        for row, (job, count) in enumerate(zip(jobs, counts, strict=True)):
            job.store([p[row : row + 1, :, width - count :] for p in present])
            complete = job.done == job.embeds.shape[0]
            choices.append(greedy_choice(job.sequence, logits[row]) if complete else None)
        return choices

    def _prefill_inputs(
        self, jobs: list[Prefill], counts: list[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """Graph inputs for the next ``counts[r]`` tokens of each job (see :meth:`DecoderRunner.run`).

        ``[R, W, H]`` embeddings with ``W = max(counts)``, row ``r`` left-padded by ``W - counts[r]``;
        the past is ``[R, kv_heads, P, head_dim]``, row ``r`` holding its own ``done`` positions first:
        a single job's own buffers as they are (``P`` its allocated columns), several jobs' gathered
        (``P`` the longest job's cached positions). Padding (of either) is masked out.
        """
        runner = self.runner
        rows, width = len(jobs), max(counts)
        if rows == 1 and jobs[0].past is not None:  # a long prompt's later chunks: its buffers as they are
            past = jobs[0].past
        else:
            past_len = max(job.done for job in jobs)
            past = runner.empty_past(rows) if past_len == 0 else self._gather_past(jobs, past_len)
        past_len = past[0].shape[2]
        embeds = np.zeros((rows, width, jobs[0].embeds.shape[1]), np.float32)
        mask = np.zeros((rows, past_len + width), np.int64)
        positions = np.zeros((rows, width), np.int64)
        for r, (job, count) in enumerate(zip(jobs, counts, strict=True)):
            pad = width - count
            embeds[r, pad:] = job.embeds[job.done : job.done + count]
            mask[r, : job.done] = 1
            mask[r, past_len + pad :] = 1
            positions[r, pad:] = np.arange(job.done, job.done + count)
        return embeds, mask, positions, past

    def _gather_past(self, jobs: list[Prefill], past_len: int) -> list[np.ndarray]:
        """The cached positions of several jobs in one zero-padded ``[R, kv_heads, past_len, head_dim]`` past."""
        heads, head_dim = self.runner.kv_shape
        past = [np.zeros((len(jobs), heads, past_len, head_dim), np.float32) for _ in range(2 * self.runner.num_layers)]
        for r, job in enumerate(jobs):
            if job.past is not None:
                for buffer, cached in zip(past, job.past, strict=True):
                    buffer[r, :, : job.done] = cached[0, :, : job.done]
        return past

    def prefill(
        self,
        seq: Sequence,
        prompt_embeds: np.ndarray,
        chunk: int = DEFAULT_PREFILL_CHUNK,
        prompt_ids: np.ndarray | None = None,
    ) -> None:
        """Prefill a whole prompt (in chunks), pick its first token and join the batch unless done."""
        job = self.start_prefill(seq, prompt_embeds, prompt_ids)
        while not self.advance_prefill(job, chunk):
            pass

    def join(self, seq: Sequence, cache: list[np.ndarray], adopt: bool = False) -> None:
        """Add a prefilled sequence to the running batch as its last row.

        ``cache``: ``[1, kv_heads, C, head_dim]`` arrays holding its ``seq.length`` cached positions
        (``C >= seq.length``). The batch gains a row in place; the sequence's positions are copied
        into it, unless the batch is empty and ``adopt`` allows the arrays (one-row buffers of the
        caller's that nobody else reads) to become the batch's buffers as they are.
        """
        length = seq.length
        columns = kv_columns(length)
        own = KVBuffers(list(cache))
        if self.buffers is None and adopt and own.owned and own.rows == 1 and own.columns >= columns:
            self.buffers = own
            self.sequences.append(seq)
            return
        if self.buffers is None:
            self.buffers = KVBuffers.zeros(self.runner, 0, columns)
        elif columns > self.buffers.columns:
            self.buffers.set_columns(columns, self.buffers.columns)
        row = len(self.sequences)
        self.buffers.set_rows(row + 1)
        self.buffers.write(row, slice(0, length), [c[0, :, :length] for c in cache])
        self.buffers.copied += length
        self.sequences.append(seq)

    def step(self) -> list[Sequence]:
        """Advance every running sequence by one token; returns (and removes) those that finished."""
        if not self.sequences:
            return []
        for seq, choice in zip(self.sequences, self.decode(), strict=True):
            seq.advance(choice)
        finished = [s for s in self.sequences if s.finished]
        if finished:
            self.remove([i for i, s in enumerate(self.sequences) if s.finished])
        return finished

    def decode(self) -> list[Choice]:
        """One graph call advancing every running sequence by one position; the choices in row order.

        Each row's input is its last token; its new keys and values are written at column ``length``
        (the columns grow by a block first when the longest row has filled its last one).
        The sequences are not changed: the caller records the choices (:meth:`Sequence.advance`).
        """
        if not self.sequences or self.buffers is None:
            return []
        runner, buffers = self.runner, self.buffers
        tokens = np.array([s.tokens[-1] for s in self.sequences], dtype=np.int64)
        lengths = np.array([s.length for s in self.sequences], dtype=np.int64)
        columns = kv_columns(int(lengths.max()))
        if columns > buffers.columns:
            buffers.set_columns(columns, buffers.columns)
        rows = np.arange(len(self.sequences))
        mask = np.ones((len(rows), buffers.columns + 1), np.int64)
        mask[:, :-1] = np.arange(buffers.columns)[None, :] < lengths[:, None]
        embeds = np.asarray(runner.embed[tokens], dtype=np.float32)[:, None, :]
        ends = [seq.eos_ids for seq in self.sequences]
        logits, new = runner.run(embeds, mask, lengths[:, None], buffers.layers, ends)
        buffers.write(rows, lengths, [fresh[:, :, 0, :] for fresh in new])  # [B, kv, C, d] <- [B, kv, d] at L_r
        return [greedy_choice(seq, row) for seq, row in zip(self.sequences, logits, strict=False)]

    def remove(self, rows: list[int]) -> None:
        """Drop rows (finished or cancelled); their memory is given back.

        The last rows move into the holes (each moved row is copied once; the others stay where they
        are) and the buffers lose their last rows in place. When the longest sequence left, the
        columns shrink to what the longest remaining one needs (a copy, one layer at a time).
        The remaining sequences keep their relative order except for the moved ones.
        """
        gone = set(rows)
        keep = len(self.sequences) - len(gone)
        if keep == 0 or self.buffers is None:
            self.copied += 0 if self.buffers is None else self.buffers.copied
            self.sequences, self.buffers = [], None
            return
        holes = sorted(i for i in gone if i < keep)
        movers = [i for i in range(keep, len(self.sequences)) if i not in gone]
        for source, target in zip(movers, holes, strict=True):
            self.buffers.move_row(source, target, self.sequences[source].length)
            self.sequences[target] = self.sequences[source]
        del self.sequences[keep:]
        self.buffers.set_rows(keep)
        columns = kv_columns(max(s.length for s in self.sequences))
        if columns < self.buffers.columns:
            self.buffers.set_columns(columns, columns)


@dataclass(frozen=True)
class GreedyResult:
    tokens: list[int]
    logprobs: list[float]
    finish_reason: str


def greedy_decode(
    runner: DecoderRunner,
    prompt_ids: np.ndarray,
    prompt_table: np.ndarray | None,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    prefix_cache: PrefixCache | None = None,
    eos_ids: frozenset[int] | None = None,
    want_logprobs: bool = True,
) -> GreedyResult:
    """Greedy generation for one prompt in prompt-table form (audio ids ``>= vocab_size``).

    ``prefix_cache`` (the caller's, kept across calls) serves and stores the prompt's text prefix;
    ``eos_ids`` end the sequence (default: the checkpoint's EOS ids; empty: only the budget does).
    Without ``want_logprobs`` the result's log-probabilities are empty.
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    seq = Sequence(
        key=0,
        max_new_tokens=max_new_tokens,
        eos_ids=frozenset(runner.spec.eos_token_ids) if eos_ids is None else eos_ids,
        min_new_tokens=min_new_tokens,
        want_logprobs=want_logprobs,
    )
    batch = DecodeBatch(runner, prefix_cache=prefix_cache)
    batch.prefill(seq, runner.embed_prompt(prompt_ids, prompt_table), prompt_ids=prompt_ids)
    while not seq.finished:
        batch.step()
    return GreedyResult(list(seq.tokens), list(seq.logprobs) if want_logprobs else [], seq.finish_reason or "")
