"""Custom Triton metrics of one python-backend model instance.

:class:`ModelMetrics` owns the ``pb_utils.MetricFamily`` objects of a model
and their labelled metrics, and releases them in :meth:`ModelMetrics.close`,
which the model's ``finalize()`` calls.

Why the explicit release: Triton 2.51's python backend stub segfaults on
shutdown when a metric family is still alive while the stub tears itself down
(the family's destructor reaches into the already destroyed stub; fixed upstream
in python_backend PR #429, after 2.51). Dropping every family from
``finalize()``, while the stub is still whole, avoids the crash. Updates after
``close()`` (from a thread that is still winding down) are ignored.

Like :mod:`.serving`, this module never imports ``triton_python_backend_utils``:
the caller passes its ``pb_utils`` module in.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType

logger = logging.getLogger("qwen3_asr_triton.metrics")


class ModelMetrics:
    """Counters and gauges with the same labels, exported through Triton's metrics endpoint.

    Parameters
    ----------
    pb_utils : module
        ``triton_python_backend_utils`` (or a fake with the same ``MetricFamily`` API).
    labels : dict[str, str]
        Labels of every metric, e.g. ``{"model": "decoder"}``.
    counters, gauges : dict[str, tuple[str, str]]
        ``key -> (metric family name, description)``; keys are what
        :meth:`increment` and :meth:`set` take.
    """

    def __init__(
        self,
        pb_utils: ModuleType,
        labels: dict[str, str],
        counters: dict[str, tuple[str, str]],
        gauges: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        gauges = gauges or {}
        shared = counters.keys() & gauges.keys()
        if shared:
            raise ValueError(f"metric keys used twice: {sorted(shared)}")
        kinds = [(counters, pb_utils.MetricFamily.COUNTER), (gauges, pb_utils.MetricFamily.GAUGE)]
        self._lock = threading.Lock()
        self._families = {
            key: pb_utils.MetricFamily(name=name, description=description, kind=kind)
            for table, kind in kinds
            for key, (name, description) in table.items()
        }
        self._metrics = {key: family.Metric(labels=labels) for key, family in self._families.items()}

    def increment(self, key: str, value: float = 1) -> None:
        """Add ``value`` (> 0; zero is skipped) to counter ``key``."""
        if value:
            with self._lock:
                metric = self._metrics.get(key)
                if metric is not None:
                    metric.increment(value)

    def set(self, key: str, value: float) -> None:
        """Set gauge ``key`` to ``value``."""
        with self._lock:
            metric = self._metrics.get(key)
            if metric is not None:
                metric.set(value)

    @property
    def closed(self) -> bool:
        return not self._families

    def close(self) -> None:
        """Release every metric, then every family; call from ``finalize()``."""
        with self._lock:
            self._metrics.clear()
            self._families.clear()
        logger.debug("custom metrics released")
