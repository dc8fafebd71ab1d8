"""The in-flight batching policy of the CPU decoder: what to run next, and what its results mean.

:class:`SchedulerPolicy` holds the batch state: requests waiting for admission, prompts
being prefilled and the running sequences (each :class:`~.decoder.Sequence` carries its
request). It runs nothing. :meth:`~SchedulerPolicy.plan` says what the next step is, as a
frozen :class:`StepPlan` with at most one graph call; the executor
(:class:`~.scheduler.InflightScheduler`, the only part with a thread) runs it on the graph
and hands what the runner produced (a :class:`StepOutputs`: the token each sequence chose,
or an error) to :meth:`~SchedulerPolicy.apply`, which updates the state: it emits tokens to
the requests' callbacks, finishes requests at an end token or their length, frees their KV
(the next plan's ``free`` tells the runner) and records stats. ``plan`` changes nothing;
``apply`` is the only mutator.

The steps form iterations, as the loop ran them before the policy was split from it:

1. drop cancelled requests (``is_cancelled`` is polled here, between steps); admit waiting
   requests in order while the running batch has room (``max_running_sequences``) and the KV budget
   allows it, checked against the batch's worst-case future size; a request whose prompt
   references missing prompt-table rows is refused. This is a plan of its own (no graph
   call), so the dropped and refused requests are answered before the next graph call;
2. prefill up to ``prefill_chunk`` prompt tokens: several short prompts in one batched
   graph call, or one chunk of a long one (chunked prefill: the running sequences never
   stall for more than one chunk's worth of prompt tokens); one plan per graph call;
3. advance every running sequence by one token in one graph call (a decode step).

Prefilling every admitted prompt that fits the budget before the next step puts new
sequences into the running batch together, so a burst of requests decodes in fewer, larger
steps (a step costs about the same at batch 1 and 8 on a CPU: it is bound by reading the
weights). Sequences join right after their prefill and leave the moment they finish, so
short requests never wait for long ones (in-flight, not static, batching). A request that
could never fit the KV budget is refused at submission (:meth:`~SchedulerPolicy.check`);
one that fits later waits in a bounded queue.

The prompt-prefix cache (:class:`~.prefix_cache.PrefixCache`) lives here, with the batch
state, not in the runner. Planning needs it: a hit starts a prefill after the prefix and a
miss ends its first chunk there, so a plan's chunk lengths depend on it (a plan peeks;
``apply`` counts the hit or miss and stores the prefix's keys and values the runner
returns). Its entries are KV memory like the batch's, and its lifetime is the scheduler's:
it outlives the runner's batch being reset after an engine failure, and it goes with the
scheduler. The runner stays a stateless graph; a direct caller of
:func:`~.decoder.greedy_decode` passes its own cache.

The policy knows nothing about Triton (requests carry callbacks: ``on_token``, ``on_done``,
``is_cancelled``), imports neither ONNX Runtime nor threading, never sleeps and reads no
clock (there are no deadlines: a cancelled request is found by polling).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CapacityError, InputError, RequestCancelledError
from ..model_spec import ModelSpec
from ..prompt import check_prompt_table
from .decoder import Choice, Sequence, chunk_tokens, kv_columns
from .prefix_cache import PrefixCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    """Limits of the in-flight batcher.

    Attributes
    ----------
    max_running_sequences : int
        Sequences decoded together (running batch size).
    max_kv_tokens : int
        KV-cache budget in token positions held by the running batch: rows x the longest
        sequence's columns, in whole blocks (:data:`~.decoder.KV_BLOCK`), as the runner allocates
        them; memory = positions x ``TextSpec.kv_bytes_per_token``.
    max_queue : int
        Requests allowed to wait for admission; more are refused (UNAVAILABLE).
    prefill_chunk : int
        Prompt tokens prefilled per loop iteration, between two decode steps (one prompt's
        chunk, or several short prompts).
    idle_wait_s : float
        How long the loop sleeps when there is nothing to do.
    """

    max_running_sequences: int = 16
    max_kv_tokens: int = 65536
    max_queue: int = 512
    prefill_chunk: int = 512
    idle_wait_s: float = 0.05

    def __post_init__(self) -> None:
        if self.max_running_sequences < 1 or self.max_kv_tokens < 1 or self.max_queue < 1 or self.prefill_chunk < 1:
            raise ValueError("SchedulerConfig values must be positive")

    @classmethod
    def from_memory(cls, kv_cache_mb: float, kv_bytes_per_token: int, **kwargs: Any) -> SchedulerConfig:
        """Budget from megabytes of KV cache."""
        return cls(max_kv_tokens=max(1, int(kv_cache_mb * 1024 * 1024 // kv_bytes_per_token)), **kwargs)


@dataclass(eq=False)
class GenerationRequest:
    """One prompt to decode, with its callbacks (compared by identity).

    Attributes
    ----------
    prompt_ids : np.ndarray
        ``[S]`` ids in prompt-table form (audio rows as ``vocab_size + k``).
    prompt_table : np.ndarray
        ``[N, H]`` audio embeddings.
    on_token : callable, optional
        ``on_token(request, token, logprob)`` after every generated token (streaming).
    on_done : callable
        ``on_done(request, sequence, error)`` exactly once.
    is_cancelled : callable, optional
        Polled every iteration; True drops the request (``on_done`` gets a cancellation error).
    eos_ids : frozenset of int, optional
        Ids that end this sequence (default: the checkpoint's EOS ids).
    submitted_at : float
        ``time.monotonic()`` when the request was made (the caller's clock; the policy reads none).
    """

    key: Any
    prompt_ids: np.ndarray
    prompt_table: np.ndarray
    max_new_tokens: int
    on_done: Callable[[GenerationRequest, Sequence | None, Exception | None], None]
    on_token: Callable[[GenerationRequest, int, float], None] | None = None
    is_cancelled: Callable[[], bool] | None = None
    eos_ids: frozenset[int] | None = None
    min_new_tokens: int = 0
    want_logprobs: bool = True
    submitted_at: float = field(default_factory=time.monotonic)

    @property
    def worst_case_tokens(self) -> int:
        return int(self.prompt_ids.size) + int(self.max_new_tokens)


@dataclass
class SchedulerStats:
    """Counters exported as metrics by the decoder model."""

    steps: int = 0
    step_sequences: int = 0
    max_running: int = 0
    inflight_joins: int = 0  # sequences that joined while others were mid-generation
    inflight_leaves: int = 0  # sequences that left while others kept generating
    prefill_chunks: int = 0  # prefill graph calls
    prefill_rows: int = 0  # prompt chunks they ran (several prompts share a call)
    completed: int = 0
    rejected: int = 0
    cancelled: int = 0  # requests dropped because their client cancelled (or a stop request named them)


@dataclass(frozen=True)
class Drop:
    """A request that leaves before it finishes: ``error`` is what its ``on_done`` gets, and says why.

    A :class:`~..errors.RequestCancelledError` when it was cancelled, an :class:`~..errors.InputError`
    when it is refused at admission (its prompt references prompt-table rows it lacks).
    """

    request: GenerationRequest
    error: Exception
    sequence: Sequence | None = None  # when it was prefilling or running: its KV is freed

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, RequestCancelledError)


@dataclass(frozen=True)
class Admission:
    """A waiting request whose prefill starts: the runner embeds its prompt.

    ``prefix`` is the prompt's shareable text prefix (the prefix cache's key). With ``past``, its
    cached keys and values, the prefill starts after it (a hit); without, the first chunk stops
    at it and the runner returns its keys and values for the cache (a miss).
    """

    sequence: Sequence  # new, with its request attached
    prefix: tuple[int, ...] | None = None
    past: list[np.ndarray] | None = None

    @property
    def cached(self) -> int:
        """Prompt positions the prefix cache supplies."""
        return len(self.prefix) if self.past is not None and self.prefix is not None else 0


@dataclass(frozen=True)
class PrefillChunk:
    """The next ``tokens`` prompt tokens of a sequence being prefilled (one row of a prefill call)."""

    sequence: Sequence
    tokens: int
    ends_prefix: bool = False  # it completes a missed prefix: the runner returns the keys and values so far


@dataclass(frozen=True)
class StepPlan:
    """What the runner does next, in this order; at most one of ``prefill`` and ``decode`` is set."""

    free: tuple[Sequence, ...] = ()  # sequences that left (finished, cancelled): their KV rows or prefill state go
    drop: tuple[Drop, ...] = ()  # requests answered with an error (cancelled, refused): nothing to run
    admit: tuple[Admission, ...] = ()  # prefills to start, in order
    join: tuple[Sequence, ...] = ()  # prefilled sequences that enter the running batch, in order
    prefill: tuple[PrefillChunk, ...] = ()  # one prefill graph call, rows in order
    decode: tuple[Sequence, ...] = ()  # one decode step over the running batch, in row order

    @property
    def empty(self) -> bool:
        return not (self.free or self.drop or self.admit or self.join or self.prefill or self.decode)

    @property
    def prefill_tokens(self) -> int:
        """Prompt positions the prefill call holds, padding included (rows x longest chunk)."""
        return len(self.prefill) * max((chunk.tokens for chunk in self.prefill), default=0)


@dataclass(frozen=True)
class StepOutputs:
    """What the runner produced for a plan."""

    tokens: Mapping[Sequence, Choice] = field(default_factory=dict)  # a decode row, or a prompt just completed
    prefix_kv: Mapping[Sequence, list[np.ndarray]] = field(default_factory=dict)  # for chunks that end a prefix
    error: Exception | None = None  # the step failed: every request in flight fails with it


@dataclass(eq=False)
class _Prefill:
    """A prompt being prefilled as the policy sees it (its progress is ``sequence.length``)."""

    sequence: Sequence
    prefix: tuple[int, ...] | None = None  # a missed text prefix the next chunk stops at, for the cache

    @property
    def prompt_tokens(self) -> int:
        return int(self.sequence.request.prompt_ids.size)

    def next_tokens(self, limit: int) -> int:
        return chunk_tokens(self.sequence.length, self.prompt_tokens, limit, self.prefix)


class SchedulerPolicy:
    """Plans the decoder's steps and applies their outputs (see module docstring).

    Parameters
    ----------
    config : SchedulerConfig, optional
    eos_ids : iterable of int
        End tokens of requests that name none.
    vocab_size : int
        Ids from here on index the prompt table.
    max_positions : int
        The model's positions (prompt + output).
    prefix_cache : PrefixCache, optional
        A new one by default.
    """

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        *,
        eos_ids: Iterable[int],
        vocab_size: int,
        max_positions: int,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.config = config or SchedulerConfig()
        self.stats = SchedulerStats()
        self.prefix_cache = PrefixCache() if prefix_cache is None else prefix_cache
        self._eos = frozenset(eos_ids)
        self._vocab_size = vocab_size
        self._max_positions = max_positions
        self._waiting: deque[GenerationRequest] = deque()
        self._prefills: deque[_Prefill] = deque()
        self._running: list[Sequence] = []  # in join order (the runner may hold their rows in another)
        self._free: list[Sequence] = []  # left since the last plan: the next plan frees them
        self._join: list[Sequence] = []  # prefilled since the last plan: the next plan joins them
        self._budget: int | None = None  # prompt tokens this iteration may still prefill; None between iterations

    @classmethod
    def for_model(
        cls, spec: ModelSpec, config: SchedulerConfig | None = None, prefix_cache: PrefixCache | None = None
    ) -> SchedulerPolicy:
        """The policy for a checkpoint's decoder (its EOS ids, vocabulary and positions)."""
        return cls(
            config,
            eos_ids=spec.eos_token_ids,
            vocab_size=spec.text.vocab_size,
            max_positions=spec.text.max_position_embeddings,
            prefix_cache=prefix_cache,
        )

    # ------------------------------------------------------------------- state
    @property
    def waiting(self) -> tuple[GenerationRequest, ...]:
        return tuple(self._waiting)

    @property
    def active(self) -> int:
        """Requests not yet answered (waiting, prefilling or running)."""
        return len(self._waiting) + len(self._prefills) + len(self._running)

    # -------------------------------------------------------------- submission
    def check(self, request: GenerationRequest, queued: int = 0) -> None:
        """Refuse a request that can never be served, or one the queue has no room for.

        Raises :class:`InputError` or :class:`CapacityError` (counted in ``stats.rejected``);
        ``queued`` counts requests submitted but not yet handed to :meth:`enqueue`.
        """
        if request.max_new_tokens < 1:
            raise InputError(f"request_output_len must be >= 1, got {request.max_new_tokens}")
        if request.prompt_ids.size < 1:
            raise InputError("empty prompt")
        need = request.worst_case_tokens
        if need > self._max_positions:
            raise InputError(
                f"prompt ({request.prompt_ids.size}) + output ({request.max_new_tokens}) tokens"
                f" exceed the model's {self._max_positions} positions"
            )
        if need > self.config.max_kv_tokens:
            self.stats.rejected += 1
            raise CapacityError(
                f"request needs {need} KV-cache positions (prompt {request.prompt_ids.size} + up to"
                f" {request.max_new_tokens} new tokens) but the decoder's budget is {self.config.max_kv_tokens};"
                " shorten the audio or MAX_NEW_TOKENS, or raise --kv-cache-mb"
            )
        if queued + len(self._waiting) >= self.config.max_queue:
            self.stats.rejected += 1
            raise CapacityError(f"decoder queue is full ({self.config.max_queue} waiting requests)")

    def enqueue(self, requests: Iterable[GenerationRequest]) -> None:
        """Checked requests join the end of the waiting queue."""
        self._waiting.extend(requests)

    # -------------------------------------------------------------------- plan
    def plan(self) -> StepPlan:
        """The next step (see module docstring); an empty plan when there is nothing to do."""
        free, join = tuple(self._free), tuple(self._join)
        if self._iteration_over():
            drops, admissions = self._admissions()
            if drops or admissions:
                freed = tuple(d.sequence for d in drops if d.sequence is not None)
                return StepPlan(free=free + freed, drop=tuple(drops), admit=tuple(admissions), join=join)
            budget = self.config.prefill_chunk
        else:
            budget = self._budget or 0
        if self._prefills and budget > 0:
            return StepPlan(free=free, join=join, prefill=self._prefill_round(budget))
        if self._running:
            return StepPlan(free=free, join=join, decode=tuple(self._running))
        return StepPlan(free=free, join=join)

    def _iteration_over(self) -> bool:
        """True between iterations: the next plan drops and admits (a decode step ends an iteration)."""
        if self._budget is None:
            return True
        return not ((self._prefills and self._budget > 0) or self._running)

    def _admissions(self) -> tuple[list[Drop], list[Admission]]:
        """Cancelled requests (waiting, prefilling, running), then the waiting ones to admit or refuse."""
        drops = [Drop(req, RequestCancelledError("request cancelled")) for req in self._waiting if _cancelled(req)]
        for seq in [p.sequence for p in self._prefills] + self._running:
            if _cancelled(seq.request):
                drops.append(Drop(seq.request, RequestCancelledError("request cancelled"), seq))
        gone = {d.sequence for d in drops}
        dropped = {d.request for d in drops}
        running = [s for s in self._running if s not in gone]
        holding = [p.sequence.request for p in self._prefills if p.sequence not in gone]  # prefilling or admitted
        admissions: list[Admission] = []
        for req in self._waiting:
            if req in dropped:
                continue
            if len(running) + len(holding) >= self.config.max_running_sequences:
                break
            if (running or holding) and _projected_kv(running, [*holding, req]) > self.config.max_kv_tokens:
                break  # wait until running sequences leave
            try:
                table_rows = 0 if req.prompt_table is None else req.prompt_table.shape[0]
                check_prompt_table(req.prompt_ids, table_rows, self._vocab_size)
            except InputError as exc:
                drops.append(Drop(req, exc))
                continue
            admissions.append(self._admission(req))
            holding.append(req)
        return drops, admissions

    def _admission(self, req: GenerationRequest) -> Admission:
        seq = Sequence(
            key=req.key,
            max_new_tokens=req.max_new_tokens,
            eos_ids=self._eos if req.eos_ids is None else req.eos_ids,
            min_new_tokens=req.min_new_tokens,
            want_logprobs=req.want_logprobs,
            request=req,
        )
        prefix = self.prefix_cache.shareable_prefix(req.prompt_ids, self._vocab_size)
        return Admission(seq, prefix, None if prefix is None else self.prefix_cache.peek(prefix))

    def _prefill_round(self, budget: int) -> tuple[PrefillChunk, ...]:
        """Chunks for one prefill graph call: the oldest prefills that fit ``budget``.

        The oldest prefill runs its next chunk (at most ``budget`` tokens); the next ones join the
        call while ``rows x longest chunk`` stays within ``budget``, so a batched call never holds
        more prompt positions (nor larger attention scores) than one chunk of a single prompt.
        """
        picked: list[PrefillChunk] = []
        width = 0
        for prefill in self._prefills:
            count = prefill.next_tokens(budget)
            if picked and (len(picked) + 1) * max(width, count) > budget:
                break
            seq = prefill.sequence
            ends_prefix = prefill.prefix is not None and seq.length + count == len(prefill.prefix)
            picked.append(PrefillChunk(seq, count, ends_prefix))
            width = max(width, count)
        return tuple(picked)

    # ------------------------------------------------------------------- apply
    def apply(self, plan: StepPlan, outputs: StepOutputs) -> None:
        """Update the state with what the runner produced for ``plan`` (the latest plan)."""
        if self._iteration_over():
            self._budget = self.config.prefill_chunk  # the plan began an iteration
        freed, joined = set(plan.free), set(plan.join)
        self._free = [s for s in self._free if s not in freed]
        self._join = [s for s in self._join if s not in joined]
        for drop in plan.drop:
            self._drop(drop)
        for admission in plan.admit:
            self._admit(admission)
        self._count_call(plan)
        if outputs.error is not None:
            self.fail_all(outputs.error)
        elif plan.prefill:
            self._apply_prefill(plan, outputs)
        elif plan.decode:
            self._apply_decode(plan, outputs)

    def fail_all(self, error: Exception) -> None:
        """Answer every request in flight with ``error`` and forget them (the runner resets its batch)."""
        pending = list(self._waiting) + [p.sequence.request for p in self._prefills]
        pending += [s.request for s in self._running]
        self._waiting.clear()
        self._prefills.clear()
        self._running.clear()
        self._free.clear()
        self._join.clear()
        self._budget = None
        for req in pending:
            _notify(req.on_done, req, None, error)

    def _drop(self, drop: Drop) -> None:
        seq = drop.sequence
        if seq is None:
            self._waiting.remove(drop.request)
        elif seq in self._running:
            self._running.remove(seq)
        else:
            self._prefills = deque(p for p in self._prefills if p.sequence is not seq)
        if drop.cancelled:
            self.stats.cancelled += 1
        _notify(drop.request.on_done, drop.request, None, drop.error)

    def _admit(self, admission: Admission) -> None:
        seq = admission.sequence
        self._waiting.remove(seq.request)
        if admission.prefix is not None:
            self.prefix_cache.get(admission.prefix)  # counts the hit or miss and refreshes the entry
        seq.length = admission.cached
        self._prefills.append(_Prefill(seq, admission.prefix if admission.past is None else None))

    def _count_call(self, plan: StepPlan) -> None:
        """Stats of the plan's graph call (counted even when it failed)."""
        stats = self.stats
        if plan.prefill:
            stats.prefill_chunks += 1
            stats.prefill_rows += len(plan.prefill)
        if plan.decode:
            stats.steps += 1
            stats.step_sequences += len(plan.decode)
            stats.max_running = max(stats.max_running, len(plan.decode))

    def _apply_prefill(self, plan: StepPlan, outputs: StepOutputs) -> None:
        was_running = bool(self._running)
        self._budget = (self._budget or 0) - plan.prefill_tokens
        prefills = {p.sequence: p for p in self._prefills}
        done: list[_Prefill] = []
        for chunk in plan.prefill:
            prefill = prefills[chunk.sequence]
            chunk.sequence.length += chunk.tokens
            if chunk.ends_prefix and prefill.prefix is not None:
                self.prefix_cache.put(prefill.prefix, outputs.prefix_kv[chunk.sequence])
                prefill.prefix = None
            if chunk.sequence.length >= prefill.prompt_tokens:
                done.append(prefill)
        self._prefills = deque(p for p in self._prefills if p not in done)
        for prefill in done:
            seq = prefill.sequence
            seq.record(outputs.tokens[seq])
            _emit(seq)
            if seq.finished:
                self._free.append(seq)
                self._finish(seq)
            else:
                self._running.append(seq)
                self._join.append(seq)
                if was_running:
                    self.stats.inflight_joins += 1

    def _apply_decode(self, plan: StepPlan, outputs: StepOutputs) -> None:
        for seq in plan.decode:
            seq.advance(outputs.tokens[seq])
        finished = [s for s in plan.decode if s.finished]
        self._running = [s for s in self._running if not s.finished]
        self._free.extend(finished)
        for seq in self._running:
            _emit(seq)
        for seq in finished:
            _emit(seq)
            if self._running:
                self.stats.inflight_leaves += 1
            self._finish(seq)
        self._budget = None  # a decode step ends the iteration

    def _finish(self, seq: Sequence) -> None:
        self.stats.completed += 1
        _notify(seq.request.on_done, seq.request, seq, None)


def _cancelled(req: GenerationRequest) -> bool:
    return req.is_cancelled is not None and req.is_cancelled()


def _projected_kv(running: list[Sequence], requests: list[GenerationRequest]) -> int:
    """KV positions the runner would hold if every sequence ran to its budget (``requests``: not running yet).

    The running batch holds one row per sequence of the longest one's columns, in whole blocks
    (:func:`~.decoder.kv_columns`); a prompt being prefilled holds at most that row's blocks of its own.
    """
    remaining = [s.length + (s.max_new_tokens - len(s.tokens)) for s in running]
    remaining += [req.worst_case_tokens for req in requests]
    return len(remaining) * kv_columns(max(remaining, default=0))


def _notify(callback: Callable[..., None], *args: Any) -> None:
    """Run a caller's callback; its failure is logged and never reaches the other requests."""
    try:
        callback(*args)
    except Exception:
        logger.exception("request callback failed")


def _emit(seq: Sequence) -> None:
    req = seq.request
    if req.on_token is not None:
        _notify(req.on_token, req, seq.tokens[-1], seq.logprobs[-1] if seq.logprobs else 0.0)
