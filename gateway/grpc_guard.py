"""The public gRPC endpoint: Triton's own gRPC API, every message checked before Triton sees it.

Triton 2.51's gRPC front end can be made to kill a python worker by one message whose declared
tensor size overflows its arithmetic, and it copies a message of any size before a model can refuse
it. The guard listens where clients connect, speaks the same ``inference.GRPCInferenceService`` (and
``grpc.health.v1.Health/Check``), and forwards the client's original bytes to Triton on loopback:

- a message larger than ``max_message_bytes`` is refused by gRPC from its length prefix, before
  its body is buffered (``RESOURCE_EXHAUSTED``);
- every ``ModelInfer`` request and every ``ModelStreamInfer`` message passes
  :func:`~qwen3_asr_triton.gateway.infer_check.check_infer_request`; a refused unary call ends
  ``INVALID_ARGUMENT``, a refused stream message gets an error response on the stream, which goes on;
- inference reaches only the public models (:data:`PUBLIC_MODELS`: the entry models and the
  diarizer); the pipeline's internal stages (``preprocess``, ``encoder``, ``decoder``,
  ``postprocess``, the aligner's) are called by the entry models on Triton's own port, and a client
  asking for one gets ``NOT_FOUND``, as for a model the server does not have (on a stream, an error
  response);
- model load/unload, shared-memory registration and the trace / log settings RPCs are refused
  (``PERMISSION_DENIED``); unknown methods are ``UNIMPLEMENTED``;
- more than ``max_concurrent_rpcs`` calls at once are refused at once (``RESOURCE_EXHAUSTED``);
- deadlines, metadata and cancellation travel with the call; Triton's answers come back unchanged,
  except that error details are cut to a bounded length, and Triton's errors of a restart (a dead
  worker, the shutdown, models not loaded yet) are ``UNAVAILABLE`` rather than ``INTERNAL`` or
  ``NOT_FOUND``, so clients retry them;
- a client that vanishes from a stream (its call cancelled or its connection lost before it
  half-closed) leaves no state behind: the guard sends Triton an END for every sequence it started
  there and did not end (:mod:`.open_sequences`), so the streaming model frees them at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb

from qwen3_asr_triton.client.options import parse_url
from qwen3_asr_triton.errors import bounded_message, restarting

from .infer_check import (
    RejectedRequestError,
    UnknownModelError,
    check_infer_request,
    check_public_model,
    parse_infer_request,
)
from .open_sequences import OpenSequences
from .options import GRACEFUL_SHUTDOWN_SECONDS, MAX_GRPC_CHANNELS, check_int

logger = logging.getLogger(__name__)

SERVICE = "/inference.GRPCInferenceService/"
INFER = SERVICE + "ModelInfer"
STREAM_INFER = SERVICE + "ModelStreamInfer"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# Read-only RPCs passed through as they are (health, metadata, configuration, statistics).
FORWARDED = frozenset(
    [HEALTH_CHECK]
    + [
        SERVICE + name
        for name in (
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelConfig",
            "ModelStatistics",
            "RepositoryIndex",
            "SystemSharedMemoryStatus",
            "CudaSharedMemoryStatus",
        )
    ]
)
# RPCs that change the server: loading models, mapping shared memory, writing trace or log files.
# Nothing a remote client needs; trusted tools on the server's machine reach Triton on loopback.
REFUSED = frozenset(
    SERVICE + name
    for name in (
        "RepositoryModelLoad",
        "RepositoryModelUnload",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister",
        "TraceSetting",
        "LogSettings",
    )
)
# The models clients may run inference on: the three entry models (unary, token deltas, live streams)
# and the diarizer, which checks its own audio. The others are stages the entry models call on Triton's
# own port; each checks its inputs too, but none is meant for clients (the decoder takes prompt
# embeddings, postprocess any token ids, the aligner features).
PUBLIC_MODELS = frozenset({"qwen3_asr", "qwen3_asr_deltas", "qwen3_asr_streaming", "diarizer"})
# Loopback by default, as every local script binds; containers pass 0.0.0.0 explicitly.
DEFAULT_HOST = "127.0.0.1"
# Triton's customary gRPC port: clients keep their URL, the guard takes Triton's place.
DEFAULT_PORT = 8001
# The default largest audio a request may carry (the repository's max_audio_bytes, 256 MiB) plus
# 1 MiB for the other inputs and the message's own framing. Keep it at or above the repository's limit.
MESSAGE_OVERHEAD_BYTES = 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024 + MESSAGE_OVERHEAD_BYTES
# The model parameter that bounds a request's audio (every entry model of the repository has it).
AUDIO_LIMIT_PARAMETER = "max_audio_bytes"
# Hard ceiling: gRPC lengths are 32-bit, and each message in flight is held whole in memory.
MAX_MESSAGE_BYTES_LIMIT = 2**31 - 1
# Calls in flight (unary requests plus open streams); one more is refused at once. Well above the
# server's own stream limit (256) plus a busy queue of unary requests.
DEFAULT_MAX_CONCURRENT_RPCS = 4096
# Upper bound for --max-concurrent-rpcs: each call in flight may hold a message of up to
# max_message_bytes, so beyond this memory runs out first.
MAX_CONCURRENT_RPCS_LIMIT = 1_000_000
# Connections to Triton, used round-robin: HTTP/2 multiplexes every call over one, a second keeps
# a large upload from delaying small calls behind it (the gateway makes the same choice).
DEFAULT_UPSTREAM_CHANNELS = 2
# More connections than the gateway's limit only adds connections for Triton to serve.
MAX_UPSTREAM_CHANNELS = MAX_GRPC_CHANNELS
# Responses of one stream buffered while its client reads slowly; past it the relay waits, and so
# does Triton's side of the stream (HTTP/2 flow control).
STREAM_BUFFER = 64
# Trailing metadata accepted from Triton (gRPC's default is 8 KiB): an error text longer than that
# would otherwise turn into an opaque RESOURCE_EXHAUSTED.
UPSTREAM_METADATA_BYTES = 64 * 1024
# First and longest wait (ms) between attempts to reconnect to Triton. gRPC's defaults (1 s, growing
# to 120 s) would leave a channel refusing calls for up to two minutes after a Triton restart that took
# longer than a few attempts; a loopback connection attempt costs next to nothing.
RECONNECT_BACKOFF_MS = (100, 1000)
# Metadata gRPC itself sets on each hop: never copied from the client's call to Triton's.
HOP_METADATA = ("user-agent", "content-type", "te", "host", "grpc-")
# Longest wait for Triton to answer the ENDs of a vanished client's sequences (each END makes the
# streaming model finish the open utterance, one decode, before it frees the state).
END_TIMEOUT_SECONDS = 60.0
# Said instead of the channel's own text (which names Triton's internal address) when Triton is down.
UNREACHABLE = "the inference server is not reachable (starting or restarting); retry shortly"
# Triton's INTERNAL or NOT_FOUND errors of a server being restarted (a dead python worker, the shutdown,
# models not loaded yet: qwen3_asr_triton.errors.restarting) are passed on as UNAVAILABLE, which clients
# retry, with this text.
RESTARTING = "the inference server is restarting (a worker died) or still loading its models; retry shortly"


@dataclass(frozen=True)
class GuardOptions:
    """Where the guard listens, where Triton is, and the guard's limits.

    Attributes
    ----------
    triton_url : str
        ``host:port`` of Triton's own gRPC endpoint (loopback).
    host, port : str, int
        Address the guard listens on.
    max_message_bytes : int
        Largest message a client may send, in bytes.
    max_concurrent_rpcs : int
        Calls in flight before one more is refused with ``RESOURCE_EXHAUSTED``.
    upstream_channels : int
        gRPC channels to Triton.
    public_models : frozenset of str
        Models clients may run inference on; a request for any other is refused.
    """

    triton_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    upstream_channels: int = DEFAULT_UPSTREAM_CHANNELS
    public_models: frozenset[str] = PUBLIC_MODELS

    def __post_init__(self) -> None:
        parse_url(self.triton_url)
        check_int("port", self.port, 1, 65535)
        check_int("max_message_bytes", self.max_message_bytes, 1, MAX_MESSAGE_BYTES_LIMIT)
        check_int("max_concurrent_rpcs", self.max_concurrent_rpcs, 1, MAX_CONCURRENT_RPCS_LIMIT)
        check_int("upstream_channels", self.upstream_channels, 1, MAX_UPSTREAM_CHANNELS)
        if not self.host:
            raise ValueError("host must not be empty")
        if not self.public_models or not all(self.public_models):
            raise ValueError("public_models must name at least one model, and no empty name")


def message_limit(repository: Path) -> int:
    """The largest message the models of ``repository`` can accept: its largest ``max_audio_bytes`` plus room.

    A repository where no model sets the parameter (no audio model) gets :data:`DEFAULT_MAX_MESSAGE_BYTES`.
    """
    limits = []
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        if AUDIO_LIMIT_PARAMETER in config.parameters:
            limits.append(int(config.parameters[AUDIO_LIMIT_PARAMETER].string_value))
    if not limits:
        return DEFAULT_MAX_MESSAGE_BYTES
    return min(max(limits) + MESSAGE_OVERHEAD_BYTES, MAX_MESSAGE_BYTES_LIMIT)


def _forwarded_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(
        (key, value)
        for key, value in (context.invocation_metadata() or ())
        if not key.startswith(":") and not key.startswith(HOP_METADATA)
    )


def _stream_error(message: str, request: pb.ModelInferRequest | None) -> bytes:
    """A ``ModelStreamInferResponse`` carrying an error, as Triton sends one for a failed stream request."""
    response = pb.ModelStreamInferResponse(error_message=message)
    if request is not None:
        response.infer_response.model_name = request.model_name
        response.infer_response.model_version = request.model_version
        response.infer_response.id = request.id
    return response.SerializeToString()


class _UpstreamError(Exception):
    """Triton's side of a stream ended with an error status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Guard(grpc.GenericRpcHandler):
    """Routes each method of Triton's gRPC API: checked and forwarded, forwarded, or refused."""

    def __init__(self, options: GuardOptions) -> None:
        self._options = options
        self._channels = [
            grpc.aio.insecure_channel(
                options.triton_url,
                options=[
                    ("grpc.max_send_message_length", -1),
                    ("grpc.max_receive_message_length", -1),
                    # One TCP connection per channel (channels with equal arguments would share one).
                    ("grpc.use_local_subchannel_pool", 1),
                    # Room for Triton's longest error texts (they are cut before they reach a client).
                    ("grpc.max_metadata_size", UPSTREAM_METADATA_BYTES),
                    # Reconnect soon after Triton restarts (gRPC's own backoff grows to 120 s).
                    ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                    ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                    ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
                ],
            )
            for _ in range(options.upstream_channels)
        ]
        self._next = itertools.cycle(self._channels)
        self._cleanups: set[asyncio.Task] = set()  # ENDs of vanished clients' sequences, under way

    async def close(self) -> None:
        for task in list(self._cleanups):
            task.cancel()
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        for channel in self._channels:
            await channel.close()

    def _channel(self) -> grpc.aio.Channel:
        """The next connected channel in turn; the next one at all when none is (Triton down or starting).

        After Triton restarts, a channel still waiting out its reconnect backoff would fail calls that a
        connected one can carry.
        """
        for _ in range(len(self._channels)):
            channel = next(self._next)
            if channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
                return channel
        return next(self._next)

    # ---- routing ---------------------------------------------------------------------------------
    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method == INFER:
            return grpc.unary_unary_rpc_method_handler(self._infer)
        if method == STREAM_INFER:
            return grpc.stream_stream_rpc_method_handler(self._stream_infer)
        if method in FORWARDED:
            return grpc.unary_unary_rpc_method_handler(self._forwarder(method))
        if method in REFUSED:
            return grpc.unary_unary_rpc_method_handler(self._refuser(method))
        return None

    def _refuser(self, method: str):
        name = method.rsplit("/", 1)[-1]

        async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{name} is not available through this endpoint")

        return refuse

    def _forwarder(self, method: str):
        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._unary(method, request, context)

        return forward

    # ---- unary -----------------------------------------------------------------------------------
    async def _unary(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        call = self._channel().unary_unary(method)(
            request, metadata=_forwarded_metadata(context), timeout=context.time_remaining()
        )
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            await context.abort(*self._upstream_status(exc.code(), exc.details()))
        except asyncio.CancelledError:
            call.cancel()  # the client left: Triton's request is cancelled too
            raise

    def _check(self, request: pb.ModelInferRequest) -> None:
        check_infer_request(request)  # first: it bounds the model name that check_public_model quotes
        check_public_model(request, self._options.public_models)

    async def _infer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            self._check(parse_infer_request(request))
        except UnknownModelError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except RejectedRequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return await self._unary(INFER, request, context)

    def _upstream_status(self, code: grpc.StatusCode, details: str | None) -> tuple[grpc.StatusCode, str]:
        text = details or ""
        if code == grpc.StatusCode.UNAVAILABLE and ":" + self._options.triton_url.rsplit(":", 1)[-1] in text:
            text = UNREACHABLE  # the channel's own failure: it names Triton's internal address
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.NOT_FOUND) and restarting(text):
            code, text = grpc.StatusCode.UNAVAILABLE, RESTARTING
        return code, bounded_message(text)

    # ---- streams ---------------------------------------------------------------------------------
    async def _stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        call = self._channel().stream_stream(STREAM_INFER)(
            metadata=_forwarded_metadata(context), timeout=context.time_remaining()
        )
        out: asyncio.Queue[bytes | _UpstreamError | None] = asyncio.Queue(STREAM_BUFFER)
        sequences = OpenSequences()
        completed = False  # Triton ended the stream after the client half-closed it: a normal end

        async def pump() -> None:
            # Client -> Triton, each message checked; a refused one is answered on the stream.
            async for raw in requests:
                try:
                    parsed = parse_infer_request(raw)
                except RejectedRequestError as exc:
                    await out.put(_stream_error(str(exc), None))
                    continue
                try:
                    self._check(parsed)
                except RejectedRequestError as exc:
                    await out.put(_stream_error(str(exc), parsed))
                    continue
                await call.write(raw)
                sequences.note(parsed)
            await call.done_writing()

        async def relay() -> None:
            # Triton -> client, until Triton ends the stream.
            try:
                async for response in call:
                    await out.put(response)
            except grpc.aio.AioRpcError as exc:
                await out.put(_UpstreamError(exc.code(), exc.details() or ""))
                return
            await out.put(None)

        pumping = asyncio.ensure_future(pump())
        relaying = asyncio.ensure_future(relay())
        try:
            while True:
                item = await out.get()
                if item is None:
                    break
                if isinstance(item, _UpstreamError):
                    await context.abort(*self._upstream_status(item.code, item.details))
                yield item
            await pumping  # a client error while reading surfaces here
            completed = True
        finally:
            for task in (pumping, relaying):
                task.cancel()
            call.cancel()  # no-op once finished; otherwise the client left, and Triton's stream ends too
            if len(sequences) and not completed:  # the client vanished mid-stream (or Triton's stream broke)
                task = asyncio.ensure_future(self._end_sequences(sequences))
                self._cleanups.add(task)
                task.add_done_callback(self._cleanups.discard)

    async def _end_sequences(self, sequences: OpenSequences) -> None:
        """Send Triton an END for each sequence a vanished client left open (on a stream of the guard's own)."""
        ends = sequences.ends()
        call = self._channel().stream_stream(STREAM_INFER)(timeout=END_TIMEOUT_SECONDS)
        try:
            for request in ends:
                await call.write(request.SerializeToString())
            await call.done_writing()
            async for _ in call:  # the answers (the open utterances' finals) have no one to go to
                pass
        except grpc.aio.AioRpcError as exc:
            logger.warning("ending %d stream(s) a client left open failed: %s", len(ends), exc.code().name)
        else:
            logger.info("a client vanished with %d stream(s) open: ended them", len(ends))


async def serve(options: GuardOptions, stop: asyncio.Event, grace: float = GRACEFUL_SHUTDOWN_SECONDS) -> None:
    """Listen on ``options.host:options.port`` until ``stop`` is set.

    Calls in flight then get ``grace`` seconds to finish (new ones are refused); Triton's channels
    are closed last.
    """
    guard = Guard(options)
    server = grpc.aio.server(
        handlers=[guard],
        maximum_concurrent_rpcs=options.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.max_send_message_length", -1),
            # Refuse to share the port with another process (gRPC allows it by default on Linux).
            ("grpc.so_reuseport", 0),
        ],
    )
    address = f"[{options.host}]:{options.port}" if ":" in options.host else f"{options.host}:{options.port}"
    server.add_insecure_port(address)
    await server.start()
    logger.info("checking gRPC calls on %s for Triton at %s", address, options.triton_url)
    try:
        await stop.wait()
    finally:
        await server.stop(grace=grace)
        await guard.close()
