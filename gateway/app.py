"""The Starlette application: OpenAI's audio transcription API in front of Triton's ``qwen3_asr``.

Routes
------
``POST /v1/audio/transcriptions``  multipart upload -> json | text | srt | vtt | verbose_json, or SSE
``POST /v1/audio/translations``    always 400: the model only transcribes
``GET  /v1/models``, ``GET /v1/models/{id}``  the one served model
``GET  /health``                   200 when Triton's entry model is ready, else 503 (no key needed)
``GET  /metrics``                  Prometheus text (no key needed)
``WS   /v1/realtime?intent=transcription``  OpenAI's Realtime transcription events (see :mod:`.realtime`)
``GET  /``, ``/static/{name}``     the live-caption and upload page (no key needed to load it)

Every error is answered in OpenAI's shape (see :mod:`.errors`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwen3_asr_triton.client import Qwen3ASRError

from .auth import check_api_key
from .calls import ClientGoneError, OptionalModel, aligner_state, diarizer_state, transcribe
from .concurrency import ConcurrencyLimit, Slot
from .errors import INVALID_REQUEST, SERVER_ERROR, ApiError, error_body, from_client_error, invalid
from .metrics import CLIENT_CLOSED_STATUS, GatewayMetrics, MetricsMiddleware
from .options import GatewayOptions
from .page import PAGE_ROUTES
from .params import diarizing_model, parse_transcription_params
from .pool import ClientFactory, ClientPool
from .realtime import realtime_endpoint
from .responses import MEDIA_TYPES, render
from .streaming import start_stream
from .upload import FILE_FIELD, read_form

logger = logging.getLogger(__name__)

# Who "owns" the model in /v1/models (OpenAI lists "openai", "system" or an organisation).
OWNED_BY = "qwen3-asr-triton"


@dataclass
class GatewayState:
    """What the routes share: options, metrics, the concurrency limit and (once started) the client pool."""

    options: GatewayOptions
    metrics: GatewayMetrics
    limit: ConcurrencyLimit
    created: int = field(default_factory=lambda: int(time.time()))
    aligner: OptionalModel = field(default_factory=aligner_state)
    diarizer: OptionalModel = field(default_factory=diarizer_state)
    pool: ClientPool | None = None

    def clients(self) -> ClientPool:
        if self.pool is None:  # only before start-up or after shutdown
            raise ApiError(503, "the gateway is not started", SERVER_ERROR, code="service_unavailable")
        return self.pool


def _state(request: Request) -> GatewayState:
    return request.app.state.gateway


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


# ----------------------------------------------------------------------------- routes
async def create_transcription(request: Request) -> Response:
    """``POST /v1/audio/transcriptions``."""
    state = _state(request)
    options = state.options
    check_api_key(request.headers, options.api_key)
    slot: Slot | None = state.limit.acquire()
    try:
        # The upload counts against --timeout too: a slow drip must not hold a slot forever.
        form = await read_form(request.headers, request.stream(), options.max_file_bytes, total_timeout=options.timeout)
        if form.file is None:
            raise invalid("you must provide a file", param=FILE_FIELD, code="missing_required_parameter")
        params = parse_transcription_params(form.fields, options.served_model_name)
        client = state.clients().next()
        logger.debug(
            "transcription of %s (%d bytes) as %s%s",
            form.filename,
            len(form.file),
            params.response_format,
            " (stream)" if params.stream else "",
        )
        try:
            if params.stream:
                response = await start_stream(
                    client,
                    form.file,
                    params.options,
                    options.triton_url,
                    request.receive,
                    slot.release,
                )
                slot = None  # the response releases it when the stream ends
                return response
            result = await transcribe(client, form.file, params, state.aligner, request.receive)
        except Qwen3ASRError as exc:
            raise from_client_error(exc, options.triton_url) from None
        body = render(result, params.response_format, params.segments, params.words)
        return Response(
            body, media_type=MEDIA_TYPES[params.response_format], headers={"x-request-id": result.request_id}
        )
    except (ClientDisconnect, ClientGoneError):
        logger.info("client disconnected before its transcription was answered")
        return Response(status_code=CLIENT_CLOSED_STATUS)
    finally:
        if slot is not None:
            slot.release()


async def create_translation(request: Request) -> Response:
    """``POST /v1/audio/translations``: refused, the model only transcribes (the body is not read)."""
    check_api_key(request.headers, _state(request).options.api_key)
    raise ApiError(
        400,
        "translation is not supported: Qwen3-ASR transcribes in the spoken language only; use /v1/audio/transcriptions",
        code="unsupported",
    )


def _model_card(state: GatewayState, model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": state.created, "owned_by": OWNED_BY}


async def _model_ids(state: GatewayState) -> list[str]:
    """The served model, and its diarizing name when the deployment has a diarizer."""
    served = state.options.served_model_name
    try:
        diarizer = await state.diarizer.available(state.clients().next())
    except Qwen3ASRError as exc:
        raise from_client_error(exc, state.options.triton_url) from None
    return [served, diarizing_model(served)] if diarizer else [served]


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: OpenAI's list with the served model (and its diarizing name)."""
    state = _state(request)
    check_api_key(request.headers, state.options.api_key)
    return JSONResponse({"object": "list", "data": [_model_card(state, m) for m in await _model_ids(state)]})


async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{model_id}``: a served model, 404 ``model_not_found`` for any other id."""
    state = _state(request)
    check_api_key(request.headers, state.options.api_key)
    model_id = request.path_params["model_id"]
    if model_id not in await _model_ids(state):
        shown = model_id if len(model_id) <= 100 else model_id[:97] + "..."
        raise ApiError(404, f"The model '{shown}' does not exist", param="model", code="model_not_found")
    return JSONResponse(_model_card(state, model_id))


async def health(request: Request) -> Response:
    """``GET /health``: 200 when Triton's entry model is ready, 503 otherwise (cached about a second)."""
    pool = _state(request).pool
    ready = pool is not None and await pool.ready()
    return JSONResponse({"status": "ok" if ready else "unavailable"}, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text exposition of the gateway's own registry."""
    body, content_type = _state(request).metrics.render()
    return Response(body, headers={"Content-Type": content_type})


# ----------------------------------------------------------------------------- error handlers
async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path[:200]})"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path[:200]}"
    else:
        message = str(exc.detail)
    return JSONResponse(
        error_body(message, INVALID_REQUEST if exc.status_code < 500 else SERVER_ERROR),
        status_code=exc.status_code,
        headers=exc.headers,
    )


class CatchAllMiddleware:
    """Turns a bug into a 500 with a generic message; the traceback goes to the log, never to the client.

    It stands inside Starlette's own error middleware so the exception stops here
    (logged once), and bad input can never take the gateway down.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                return  # a streamed response already began: the client sees it cut short
            response = JSONResponse(
                error_body("the gateway failed to handle the request", SERVER_ERROR, None, "internal_error"),
                status_code=500,
            )
            await response(scope, receive, send)


# ----------------------------------------------------------------------------- application
def create_app(options: GatewayOptions, client_factory: ClientFactory | None = None) -> Starlette:
    """The gateway's ASGI application.

    Parameters
    ----------
    options : GatewayOptions
        Validated options.
    client_factory : callable, optional
        Builds one gRPC client from :class:`ClientOptions` (default: ``AsyncQwen3ASRClient``);
        tests pass fakes.
    """
    gateway_metrics = GatewayMetrics()
    state = GatewayState(options, gateway_metrics, ConcurrencyLimit(options.max_concurrency, gateway_metrics.in_flight))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The clients are made here, inside the server's event loop, which gRPC's asyncio channels bind to.
        state.pool = ClientPool(options.client_options(), options.grpc_channels, client_factory)
        logger.info(
            "serving '%s' from Triton at %s (%d gRPC channels, %d requests in flight at most)",
            options.served_model_name,
            options.triton_url,
            options.grpc_channels,
            options.max_concurrency,
        )
        try:
            yield
        finally:
            pool, state.pool = state.pool, None
            await pool.close()

    routes = [
        Route("/v1/audio/transcriptions", create_transcription, methods=["POST"]),
        Route("/v1/audio/translations", create_translation, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        # Model ids may hold "/" (e.g. "Qwen/Qwen3-ASR-1.7B"), hence the path converter.
        Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        # OpenAI's Realtime transcription over a WebSocket (see .realtime), and the live-caption page.
        WebSocketRoute("/v1/realtime", realtime_endpoint),
        *PAGE_ROUTES,
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(CatchAllMiddleware), Middleware(MetricsMiddleware, metrics=gateway_metrics)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.gateway = state
    return app
