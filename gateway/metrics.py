"""Prometheus metrics of the gateway, in a registry of its own (never the process-global one).

``qwen3_asr_gateway_requests_total{route, status}``, ``qwen3_asr_gateway_request_seconds{route}``
and ``qwen3_asr_gateway_requests_in_flight``. Routes are the route templates
(``/v1/models/{model_id}``), never raw paths, so a scan of random URLs cannot
grow the label set; anything that matched no route counts as ``other``.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Latency buckets in seconds: health and model listings take milliseconds, a transcription from a
# fraction of a second (short clips on a GPU) to minutes (long files on the CPU target).
LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Label of requests that matched no route.
OTHER_ROUTE = "other"
# Status recorded when the client went away before a response started (nginx's convention).
CLIENT_CLOSED_STATUS = 499


class GatewayMetrics:
    """The gateway's collectors and their registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "qwen3_asr_gateway_requests",
            "HTTP requests answered, by route and status",
            ("route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "qwen3_asr_gateway_request_seconds",
            "Seconds from a request's arrival to the end of its response, by route",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "qwen3_asr_gateway_requests_in_flight",
            "Transcription requests being served now",
            registry=self.registry,
        )

        self.realtime_sessions = Gauge(
            "qwen3_asr_gateway_realtime_sessions",
            "Realtime WebSocket sessions open now",
            registry=self.registry,
        )
        self.realtime_streams = Gauge(
            "qwen3_asr_gateway_realtime_streams",
            "Streams to Triton that realtime sessions hold open now",
            registry=self.registry,
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware that counts every HTTP request by route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = CLIENT_CLOSED_STATUS

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        except Exception:
            status = 500
            raise
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or OTHER_ROUTE
            self.metrics.observe(label, status, time.perf_counter() - began)
