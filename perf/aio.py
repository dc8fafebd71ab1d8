"""An asyncio event loop in a thread of its own, for driving asyncio clients from :func:`perf.load.run_load`.

``run_load`` sends from C blocking worker threads; an asyncio client (the project's
``AsyncQwen3ASRClient``, an ``httpx.AsyncClient``) lives on one event loop, as it
would in a gateway or an application. Each worker hands its coroutine to the loop
and waits for the answer, so C requests are in flight on one loop and one set of
connections.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds ``close`` waits for the loop's thread to end (it only stops a loop with nothing left to run).
JOIN_TIMEOUT_S = 10.0


class LoopThread:
    """A running event loop in a daemon thread; :meth:`run` executes a coroutine on it and blocks.

    Parameters
    ----------
    name : str
        Name of the thread (shows in stack dumps).
    """

    def __init__(self, name: str = "bench-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (its exception is raised here).

        Parameters
        ----------
        coro : coroutine
            What to run.
        timeout : float, optional
            Seconds to wait; on expiry the coroutine is cancelled and a ``TimeoutError`` raised.
        """
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except FutureTimeoutError:  # the builtin TimeoutError from Python 3.11 on
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop and its thread (idempotent); close the clients that live on it first."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            logger.warning("the event loop thread did not stop within %.0f s", JOIN_TIMEOUT_S)
            return
        self.loop.close()
