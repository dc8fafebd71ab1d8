"""Deadline and retry bookkeeping for one call, shared by the sync and the asyncio client.

Only UNAVAILABLE is retried: gRPC reports both "cannot connect" and the
server's "overloaded, try later" with it, and an ASR request is idempotent.
INVALID_ARGUMENT and every other status are final. Waits grow exponentially
and are jittered ("equal jitter": half the bound plus a random half), which
keeps them growing while spreading out clients that failed together; no wait
ever runs past the call's deadline.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from tritonclient.utils import InferenceServerException

from .errors import DeadlineExceededError, Qwen3ASRError, from_triton, status_name
from .options import RetryPolicy

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({"UNAVAILABLE"})
# An attempt given less time than this cannot complete a round trip; give up instead.
MIN_ATTEMPT_SECONDS = 0.05


class CallBudget:
    """Tracks one call's attempts against its retry policy and deadline.

    Parameters
    ----------
    policy : RetryPolicy
        How many attempts and how long to wait between them.
    timeout : float or None
        Seconds from now until the deadline; None for no deadline.
    what : str
        Short description of the call for messages ("infer qwen3_asr").
    clock, rng : callable
        Injected for tests: a monotonic clock and a uniform [0, 1) generator.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        timeout: float | None,
        what: str,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self.what = what
        self._clock = clock
        self._rng = rng
        self._deadline = None if timeout is None else clock() + timeout
        self.attempts = 0

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None without one)."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._clock())

    def start_attempt(self) -> float | None:
        """Count an attempt and return its client-side timeout (the time left)."""
        self.attempts += 1
        return self.remaining()

    def after_failure(self, exc: InferenceServerException) -> float:
        """Seconds to wait before the next attempt, or raise the client's error for ``exc``.

        Raises
        ------
        Qwen3ASRError
            The translated error when ``exc`` is not retryable, the attempts are used
            up, or the wait would run past the deadline.
        """
        status = status_name(exc)
        if status == "DEADLINE_EXCEEDED":
            raise DeadlineExceededError(
                f"{self.what}: no response within the {self.timeout:g} s deadline"
                if self.timeout is not None
                else f"{self.what}: {exc.message()}",
                status,
            ) from exc
        if status not in RETRYABLE_STATUSES:
            raise from_triton(exc, self.what) from exc
        if self.attempts >= self.policy.max_attempts:
            raise from_triton(exc, f"{self.what}; gave up after {self.attempts} attempts") from exc
        bound = self.policy.backoff_bound(self.attempts)
        delay = bound * (0.5 + 0.5 * self._rng())
        left = self.remaining()
        if left is not None and delay + MIN_ATTEMPT_SECONDS > left:
            raise from_triton(
                exc, f"{self.what}; gave up after {self.attempts} attempts, {self.timeout:g} s deadline"
            ) from exc
        logger.info(
            "%s: %s (%s); retry %d/%d in %.2f s",
            self.what,
            status,
            exc.message(),
            self.attempts,
            self.policy.max_attempts - 1,
            delay,
        )
        return delay

    def expired_error(self) -> Qwen3ASRError:
        """Error for a deadline that passed between attempts."""
        return DeadlineExceededError(f"{self.what}: deadline of {self.timeout:g} s passed", "DEADLINE_EXCEEDED")
