"""A small pool of asyncio gRPC clients to Triton, used round-robin, and a cached readiness check."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from qwen3_asr_triton.client import AsyncQwen3ASRClient, ClientOptions, Qwen3ASRError

logger = logging.getLogger(__name__)

# How long one readiness answer is reused: load balancers probe every few seconds, often from
# several places; one Triton round trip per second at most keeps probes cheap yet fresh.
HEALTH_CACHE_SECONDS = 1.0
# A readiness check slower than this counts as "not ready" (probes themselves time out at 1-10 s).
HEALTH_TIMEOUT_SECONDS = 2.0

ClientFactory = Callable[[ClientOptions], Any]


class ClientPool:
    """``size`` clients made by ``factory``, handed out in turn.

    Create it inside the running event loop (gRPC's asyncio channels bind to it).

    Parameters
    ----------
    options : ClientOptions
        Options of every client.
    size : int
        Number of clients (channels).
    factory : callable, optional
        Builds one client from the options; default :class:`AsyncQwen3ASRClient`
        (tests pass fakes).
    """

    def __init__(self, options: ClientOptions, size: int, factory: ClientFactory | None = None) -> None:
        make = factory or AsyncQwen3ASRClient
        self.options = options
        self.clients = [make(options) for _ in range(size)]
        self._turn = itertools.cycle(range(size))
        self._health = HealthCache(self)

    def next(self) -> Any:
        """The client whose turn it is."""
        return self.clients[next(self._turn)]

    async def ready(self) -> bool:
        """Whether Triton's entry model is ready (answer cached for :data:`HEALTH_CACHE_SECONDS`)."""
        return await self._health.ready()

    async def close(self) -> None:
        """Close every client."""
        for client in self.clients:
            try:
                await client.close()
            except Exception:  # closing must go on whatever one channel raises
                logger.exception("closing a gRPC client failed")


class HealthCache:
    """Readiness of Triton's entry model, asked at most once per :data:`HEALTH_CACHE_SECONDS`.

    Concurrent probes wait for the one check in flight instead of each asking Triton.
    """

    def __init__(self, pool: ClientPool, clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._clock = clock
        self._lock = asyncio.Lock()
        self._value = False
        self._expires = -1.0

    async def ready(self) -> bool:
        async with self._lock:
            if self._clock() < self._expires:
                return self._value
            self._value = await self._check()
            self._expires = self._clock() + HEALTH_CACHE_SECONDS
            return self._value

    async def _check(self) -> bool:
        try:
            health = await asyncio.wait_for(
                self._pool.next().health(timeout=HEALTH_TIMEOUT_SECONDS), HEALTH_TIMEOUT_SECONDS
            )
        except (Qwen3ASRError, asyncio.TimeoutError) as exc:
            logger.warning("Triton readiness check failed: %s", exc)
            return False
        if not health.ok:
            logger.warning(
                "Triton not ready: live=%s ready=%s model %s ready=%s",
                health.live,
                health.ready,
                health.model,
                health.model_ready,
            )
        return bool(health.ok)
