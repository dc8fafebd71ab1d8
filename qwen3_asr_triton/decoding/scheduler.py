"""In-flight batching for the CPU decoder: the thread that runs the policy's plans.

:class:`InflightScheduler` is the executor. Its background thread loops: hand the submitted
requests to the policy (:class:`~.policy.SchedulerPolicy`, which decides everything and
whose docstring describes the iterations), ask it for a plan, run the plan on the runner and
give the outputs back to the policy's ``apply``. It is the only part with a thread.

Running a plan means, in order: forget the KV of sequences that left (rows of the running
:class:`~.decoder.DecodeBatch`, or the state of a prefill), embed the prompts of admitted
requests and start their prefills (from a cached prefix when the plan brings one), move
prefilled sequences into the running batch, then make the plan's one graph call (a batched
prefill chunk or a decode step) and return the chosen tokens. An engine failure fails what
was in flight, not the model: the batch is reset and the loop goes on.

The scheduler knows nothing about Triton: the decoder model passes callbacks
(``on_token``, ``on_done``, ``is_cancelled``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from .decoder import DecodeBatch, DecoderRunner, Prefill, Sequence
from .policy import GenerationRequest, SchedulerConfig, SchedulerPolicy, SchedulerStats, StepOutputs, StepPlan
from .prefix_cache import PrefixCache

__all__ = ["GenerationRequest", "InflightScheduler", "SchedulerConfig", "SchedulerStats"]

logger = logging.getLogger(__name__)


class InflightScheduler:
    """The background decoding loop (see module docstring)."""

    def __init__(
        self, runner: DecoderRunner, config: SchedulerConfig | None = None, prefix_cache: PrefixCache | None = None
    ) -> None:
        self.runner = runner
        self.policy = SchedulerPolicy.for_model(runner.spec, config, prefix_cache)
        self.batch = DecodeBatch(runner)
        self._prefills: dict[Sequence, Prefill] = {}  # the runner's state of the prompts being prefilled
        self._incoming: deque[GenerationRequest] = deque()
        self._lock = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> SchedulerConfig:
        return self.policy.config

    @property
    def stats(self) -> SchedulerStats:
        return self.policy.stats

    @property
    def active(self) -> int:
        return self.policy.active + len(self._incoming)

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
        with self._lock:
            self.policy.check(request, queued=len(self._incoming))
            self._incoming.append(request)
            self._lock.notify_all()

    # --------------------------------------------------------------------- loop
    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._stop:
                    break
            if not self.step():
                with self._lock:
                    if not (self._stop or self._incoming):
                        self._lock.wait(self.config.idle_wait_s)
        self._fail(RuntimeError("decoder is shutting down"))

    def step(self) -> bool:
        """Plan one step, run it and apply its outputs; False when there was nothing to do.

        The loop calls this; a test may call it from its own thread instead of :meth:`start`.
        """
        self._take_incoming()
        try:
            plan = self.policy.plan()  # polls the requests' is_cancelled
            if plan.empty:
                return False
            try:
                outputs = self._run(plan)
            except Exception as exc:  # an engine failure fails what was in flight, not the model
                logger.exception("decoder step failed; failing %d in-flight requests", self.active)
                self._take_incoming()  # they fail too
                self._reset()
                outputs = StepOutputs(error=exc)
            self.policy.apply(plan, outputs)
        except Exception as exc:  # a request's is_cancelled (or the policy) failed: the same
            logger.exception("decoder step failed; failing %d in-flight requests", self.active)
            self._fail(exc)
        return True

    def _run(self, plan: StepPlan) -> StepOutputs:
        """Run ``plan`` on the runner (see module docstring)."""
        batch = self.batch
        if plan.free:
            gone = set(plan.free)
            for seq in plan.free:
                self._prefills.pop(seq, None)
            rows = [i for i, seq in enumerate(batch.sequences) if seq in gone]
            if rows:
                batch.remove(rows)
        for admission in plan.admit:
            seq = admission.sequence
            embeds = self.runner.embed_prompt(seq.request.prompt_ids, seq.request.prompt_table)
            self._prefills[seq] = Prefill(seq, embeds, done=admission.cached, past=admission.past)
        for seq in plan.join:
            batch.join(seq, self._prefills.pop(seq).past, adopt=True)
        if plan.prefill:
            jobs = [self._prefills[chunk.sequence] for chunk in plan.prefill]
            choices = batch.run_prefills(jobs, [chunk.tokens for chunk in plan.prefill])
            return StepOutputs(
                tokens={job.sequence: choice for job, choice in zip(jobs, choices) if choice is not None},
                prefix_kv={j.sequence: j.cached_kv() for chunk, j in zip(plan.prefill, jobs) if chunk.ends_prefix},
            )
        if plan.decode:
            if len(batch.sequences) != len(plan.decode) or set(batch.sequences) != set(plan.decode):
                raise RuntimeError("the running batch does not match the decode plan")  # rows may be in another order
            return StepOutputs(tokens=dict(zip(batch.sequences, batch.decode(), strict=True)))
        return StepOutputs()

    def _reset(self) -> None:
        """Forget every sequence's KV (after a failure the policy forgets them too)."""
        self.batch = DecodeBatch(self.runner)
        self._prefills.clear()

    def _take_incoming(self) -> None:
        """Hand the submitted requests to the policy."""
        with self._lock:
            self.policy.enqueue(self._incoming)
            self._incoming.clear()

    def _fail(self, exc: Exception) -> None:
        """Fail every request in flight, submitted ones included, with ``exc``."""
        self._take_incoming()
        self._reset()
        self.policy.fail_all(exc)
