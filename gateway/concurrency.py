"""The gateway's own limit on requests in flight: past it, a request is refused at once (503), never queued.

Queueing in the gateway would only hide overload from the clients and hold
their uploads in memory; Triton queues and batches what it was given.
"""

from __future__ import annotations

from prometheus_client import Gauge

from .errors import SERVER_ERROR, ApiError

# Seconds a refused client is asked to wait (OpenAI's SDKs honour Retry-After); one second is
# about the time a short transcription takes, so a slot is likely free again by then.
RETRY_AFTER_SECONDS = 1


class Slot:
    """One request's place under the limit; :meth:`release` is idempotent."""

    def __init__(self, limit: ConcurrencyLimit) -> None:
        self._limit = limit
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limit._release()


class ConcurrencyLimit:
    """At most ``limit`` slots held at once (a counter: the event loop runs one handler at a time).

    Parameters
    ----------
    limit : int
        Slots.
    gauge : prometheus_client.Gauge, optional
        Set to the slots held.
    """

    def __init__(self, limit: int, gauge: Gauge | None = None) -> None:
        self.limit = limit
        self.active = 0
        self._gauge = gauge

    def acquire(self) -> Slot:
        """A slot, or 503 ``server_busy`` when all are held."""
        if self.active >= self.limit:
            raise ApiError(
                503,
                f"the server is busy ({self.limit} requests in flight); retry shortly",
                SERVER_ERROR,
                code="server_busy",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.active += 1
        if self._gauge is not None:
            self._gauge.inc()
        return Slot(self)

    def _release(self) -> None:
        self.active -= 1
        if self._gauge is not None:
            self._gauge.dec()
