"""In-flight batching for the CPU decoder.

One background thread owns a :class:`~.decoder.DecodeBatch` and loops:

1. take newly submitted requests and drop cancelled ones;
2. admit waiting requests while the running batch has room (``max_batch``) and the
   KV budget allows it, checked against the batch's worst-case future size;
3. prefill up to ``prefill_chunk`` prompt tokens: several short prompts in one
   batched graph call, or one chunk of a long one (chunked prefill: the running
   sequences never stall for more than one chunk's worth of prompt tokens);
4. advance every running sequence by one token in one graph call.

Prefilling every admitted prompt that fits the budget before the next step puts
new sequences into the running batch together, so a burst of requests decodes in
fewer, larger steps (a step costs about the same at batch 1 and 8 on a CPU: it is
bound by reading the weights).

Sequences join right after their prefill and leave the moment they finish, so
short requests never wait for long ones (in-flight, not static, batching).
A request that could never fit the KV budget is refused at submission with a
clear error; one that fits later waits in a bounded queue.

The scheduler knows nothing about Triton: the decoder model passes callbacks
(``on_token``, ``on_done``, ``is_cancelled``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CapacityError, InputError, RequestCancelledError
from .decoder import DecodeBatch, DecoderRunner, Prefill, Sequence, kv_columns

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    """Limits of the in-flight batcher.

    Attributes
    ----------
    max_batch : int
        Sequences decoded together (running batch size).
    max_kv_tokens : int
        KV-cache budget in token positions summed over the padded batch
        (rows x longest sequence); memory = positions x ``TextSpec.kv_bytes_per_token``.
    max_queue : int
        Requests allowed to wait for admission; more are refused (UNAVAILABLE).
    prefill_chunk : int
        Prompt tokens prefilled per loop iteration, between two decode steps (one prompt's
        chunk, or several short prompts).
    idle_wait_s : float
        How long the loop sleeps when there is nothing to do.
    """

    max_batch: int = 16
    max_kv_tokens: int = 65536
    max_queue: int = 512
    prefill_chunk: int = 512
    idle_wait_s: float = 0.05

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_kv_tokens < 1 or self.max_queue < 1 or self.prefill_chunk < 1:
            raise ValueError("SchedulerConfig values must be positive")

    @classmethod
    def from_memory(cls, kv_cache_mb: float, kv_bytes_per_token: int, **kwargs: Any) -> SchedulerConfig:
        """Budget from megabytes of KV cache."""
        return cls(max_kv_tokens=max(1, int(kv_cache_mb * 1024 * 1024 // kv_bytes_per_token)), **kwargs)


@dataclass
class GenerationRequest:
    """One prompt to decode, with its callbacks.

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
        Polled every step; True drops the request (``on_done`` gets a cancellation error).
    eos_ids : frozenset of int, optional
        Ids that end this sequence (default: the checkpoint's EOS ids).
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


class InflightScheduler:
    """The background decoding loop (see module docstring)."""

    def __init__(self, runner: DecoderRunner, config: SchedulerConfig | None = None) -> None:
        self.runner = runner
        self.config = config or SchedulerConfig()
        self.batch = DecodeBatch(runner)
        self.stats = SchedulerStats()
        self._eos = frozenset(runner.spec.eos_token_ids)
        self._incoming: deque[GenerationRequest] = deque()
        self._waiting: deque[GenerationRequest] = deque()
        self._prefills: deque[tuple[GenerationRequest, Prefill]] = deque()
        self._running: dict[int, GenerationRequest] = {}  # id(sequence) -> request
        self._lock = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="decoder-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request; raises :class:`InputError` / :class:`CapacityError` when it can never be served."""
        if request.max_new_tokens < 1:
            raise InputError(f"request_output_len must be >= 1, got {request.max_new_tokens}")
        if request.prompt_ids.size < 1:
            raise InputError("empty prompt")
        limit = self.runner.spec.text.max_position_embeddings
        need = request.worst_case_tokens
        if need > limit:
            raise InputError(
                f"prompt ({request.prompt_ids.size}) + output ({request.max_new_tokens}) tokens"
                f" exceed the model's {limit} positions"
            )
        if need > self.config.max_kv_tokens:
            self.stats.rejected += 1
            raise CapacityError(
                f"request needs {need} KV-cache positions (prompt {request.prompt_ids.size} + up to"
                f" {request.max_new_tokens} new tokens) but the decoder's budget is {self.config.max_kv_tokens};"
                " shorten the audio or MAX_NEW_TOKENS, or raise --kv-cache-mb"
            )
        with self._lock:
            if len(self._incoming) + len(self._waiting) >= self.config.max_queue:
                self.stats.rejected += 1
                raise CapacityError(f"decoder queue is full ({self.config.max_queue} waiting requests)")
            self._incoming.append(request)
            self._lock.notify_all()

    @property
    def active(self) -> int:
        return len(self._running) + len(self._prefills) + len(self._waiting) + len(self._incoming)

    # --------------------------------------------------------------------- loop
    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not (self._incoming or self._waiting or self._prefills or self._running):
                    self._lock.wait(self.config.idle_wait_s)
                if self._stop:
                    break
                self._waiting.extend(self._incoming)
                self._incoming.clear()
            try:
                self._iteration()
            except Exception as exc:  # an engine failure fails what was in flight, not the model
                logger.exception("decoder step failed; failing %d in-flight requests", self.active)
                self._fail_all(exc)
        self._fail_all(RuntimeError("decoder is shutting down"))

    def _iteration(self) -> None:
        self._drop_cancelled()
        self._admit()
        budget = self.config.prefill_chunk
        while self._prefills and budget > 0:
            budget -= self._prefill_round(budget)
        if len(self.batch):
            self._decode_step()

    def _projected_kv(self, extra: GenerationRequest | None = None) -> int:
        """Worst-case padded KV positions if every sequence ran to its budget."""
        remaining = [s.length + (s.max_new_tokens - len(s.tokens)) for s in self.batch.sequences]
        remaining += [req.worst_case_tokens for req, _ in self._prefills]
        if extra is not None:
            remaining.append(extra.worst_case_tokens)
        return len(remaining) * kv_columns(max(remaining, default=0))

    def _admit(self) -> None:
        while self._waiting and len(self.batch) + len(self._prefills) < self.config.max_batch:
            req = self._waiting[0]
            if (len(self.batch) or self._prefills) and self._projected_kv(req) > self.config.max_kv_tokens:
                break  # wait until running sequences leave
            self._waiting.popleft()
            seq = Sequence(
                key=req.key,
                max_new_tokens=req.max_new_tokens,
                eos_ids=self._eos if req.eos_ids is None else req.eos_ids,
                min_new_tokens=req.min_new_tokens,
            )
            try:
                embeds = self.runner.embed_prompt(req.prompt_ids, req.prompt_table)
            except InputError as exc:
                self._notify(req.on_done, req, None, exc)
                continue
            self._prefills.append((req, self.batch.start_prefill(seq, embeds, req.prompt_ids)))

    def _prefill_round(self, budget: int) -> int:
        """One prefill graph call for the oldest prefills that fit ``budget``; returns its padded tokens.

        The oldest prefill runs its next chunk (at most ``budget`` tokens); the next ones join the
        call while ``rows x longest chunk`` stays within ``budget``, so a batched call never holds
        more prompt positions (nor larger attention scores) than one chunk of a single prompt.
        """
        picked: list[tuple[GenerationRequest, Prefill]] = []
        width = 0
        for req, job in self._prefills:
            count = job.next_tokens(budget)
            if picked and (len(picked) + 1) * max(width, count) > budget:
                break
            picked.append((req, job))
            width = max(width, count)
        was_running = len(self.batch) > 0
        self.stats.prefill_chunks += 1
        self.stats.prefill_rows += len(picked)
        done = self.batch.advance_prefills([job for _, job in picked], budget)
        for _ in picked:  # the picked jobs lead the queue; the unfinished ones go back in order
            self._prefills.popleft()
        self._prefills.extendleft(reversed([item for item, finished in zip(picked, done, strict=True) if not finished]))
        for (req, job), finished in zip(picked, done, strict=True):
            if not finished:
                continue
            seq = job.sequence
            self._emit(req, seq)
            if seq.finished:
                self._finish(req, seq)
            else:
                self._running[id(seq)] = req
                if was_running:
                    self.stats.inflight_joins += 1
        return len(picked) * width

    def _decode_step(self) -> None:
        running = len(self.batch)
        self.stats.steps += 1
        self.stats.step_sequences += running
        self.stats.max_running = max(self.stats.max_running, running)
        finished = self.batch.step()
        for seq in self.batch.sequences:
            self._emit(self._running[id(seq)], seq)
        for seq in finished:
            req = self._running.pop(id(seq))
            self._emit(req, seq)
            if len(self.batch):
                self.stats.inflight_leaves += 1
            self._finish(req, seq)

    @staticmethod
    def _notify(callback: Callable[..., None], *args: Any) -> None:
        """Run a caller's callback; its failure is logged and never reaches the other requests."""
        try:
            callback(*args)
        except Exception:
            logger.exception("request callback failed")

    def _emit(self, req: GenerationRequest, seq: Sequence) -> None:
        if req.on_token is not None:
            self._notify(req.on_token, req, seq.tokens[-1], seq.logprobs[-1] if seq.logprobs else 0.0)

    def _finish(self, req: GenerationRequest, seq: Sequence) -> None:
        self.stats.completed += 1
        self._notify(req.on_done, req, seq, None)

    def _drop_cancelled(self) -> None:
        def cancelled(req: GenerationRequest) -> bool:
            return req.is_cancelled is not None and req.is_cancelled()

        def drop(req: GenerationRequest) -> None:
            self.stats.cancelled += 1
            self._notify(req.on_done, req, None, RequestCancelledError("request cancelled"))

        for queue in (self._waiting,):
            for req in [r for r in queue if cancelled(r)]:
                queue.remove(req)
                drop(req)
        for item in [p for p in self._prefills if cancelled(p[0])]:
            self._prefills.remove(item)
            drop(item[0])
        rows = [i for i, s in enumerate(self.batch.sequences) if cancelled(self._running[id(s)])]
        if rows:
            seqs = [self.batch.sequences[i] for i in rows]
            self.batch.remove(rows)
            for seq in seqs:
                drop(self._running.pop(id(seq)))

    def _fail_all(self, exc: Exception) -> None:
        with self._lock:
            pending = list(self._incoming) + list(self._waiting)
            self._incoming.clear()
            self._waiting.clear()
        pending += [req for req, _ in self._prefills]
        self._prefills.clear()
        pending += list(self._running.values())
        self._running.clear()
        self.batch = DecodeBatch(self.runner)
        for req in pending:
            self._notify(req.on_done, req, None, exc)
