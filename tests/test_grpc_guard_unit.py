"""The gRPC guard without Triton: its message checks, and its forwarding over real gRPC to a stand-in upstream.

The stand-in speaks Triton's service with raw protobuf messages and records what reaches it, so each
test can say what the guard passed on and what it kept back. tests/test_grpc_guard_server.py drives
the guard in front of a real Triton server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from qwen3_asr_triton.gateway.grpc_guard import (
    DEFAULT_MAX_MESSAGE_BYTES,
    INFER,
    PUBLIC_MODELS,
    RESTARTING,
    STREAM_INFER,
    UNREACHABLE,
    GuardOptions,
    message_limit,
    serve,
)
from qwen3_asr_triton.gateway.infer_check import (
    MAX_BYTES_ELEMENTS,
    MAX_NAME_CHARS,
    RejectedRequestError,
    check_infer_request,
    parse_infer_request,
)
from tests.harness import free_ports

# ---- the checks ------------------------------------------------------------------------------------


def _raw_bytes(*items: bytes) -> bytes:
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def _request(*tensors, raw: list[bytes] | None = None, outputs=()) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="qwen3_asr", id="r1")
    for name, datatype, shape, contents in tensors:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        for field, values in (contents or {}).items():
            getattr(tensor.contents, field).extend(values)
    for name in outputs:
        request.outputs.add(name=name)
    if raw is not None:
        request.raw_input_contents.extend(raw)
    return request


VALID = {
    "raw FP32 waveform": _request(
        ("WAVEFORM", "FP32", [1, 3], None),
        ("SAMPLE_RATE", "INT32", [1], None),
        raw=[np.zeros(3, np.float32).tobytes(), np.array([16000], np.int32).tobytes()],
    ),
    "raw BYTES audio": _request(("AUDIO", "BYTES", [1], None), raw=[_raw_bytes(b"RIFF....")]),
    "raw BYTES, two elements, one empty": _request(("LANGUAGE", "BYTES", [2], None), raw=[_raw_bytes(b"", b"en")]),
    "typed contents": _request(
        ("AUDIO", "BYTES", [1], {"bytes_contents": [b"x"]}),
        ("MAX_NEW_TOKENS", "INT32", [1], {"int_contents": [4]}),
        ("RETURN_TIMESTAMPS", "BOOL", [1], {"bool_contents": [True]}),
    ),
    "zero-sized tensor": _request(("WAVEFORM", "FP32", [1, 0], {})),
    "FP16 as raw bytes": _request(("X", "FP16", [2], None), raw=[b"\0" * 4]),
}

REJECTED = {
    # Triton 2.51 overflows 2**62 x 4 bytes to 0 and hands the tensor to a python worker, which dies.
    "2^62 samples, no data": (
        _request(("WAVEFORM", "FP32", [1, 2**62], None), ("SAMPLE_RATE", "INT32", [1], {"int_contents": [1]})),
        "declares 4611686018427387904 elements",
    ),
    "2^62 samples, raw contents": (
        _request(("WAVEFORM", "FP32", [2**31, 2**31], None), raw=[b""]),
        "declares 4611686018427387904 elements",
    ),
    "negative dimension": (_request(("WAVEFORM", "FP32", [-1], {"fp32_contents": [0.0]})), "must not be negative"),
    "raw size short by one element": (
        _request(("WAVEFORM", "FP32", [1, 4], None), raw=[b"\0" * 12]),
        "needs 16 bytes of raw contents, got 12",
    ),
    "raw contents for some inputs only": (
        _request(("A", "FP32", [1], None), ("B", "FP32", [1], None), raw=[b"\0" * 4]),
        "1 raw input contents for 2 inputs",
    ),
    "raw and typed contents": (
        _request(("A", "FP32", [1], {"fp32_contents": [1.0]}), raw=[b"\0" * 4]),
        "both raw and typed contents",
    ),
    "typed count short": (
        _request(("MAX_NEW_TOKENS", "INT32", [2], {"int_contents": [4]})),
        "declares 2 elements but carries 1 in int_contents",
    ),
    "FP16 without raw contents": (_request(("X", "FP16", [2], {})), "raw contents (the only way to send it)"),
    "unknown datatype": (_request(("X", "FP33", [1], None), raw=[b"\0" * 4]), "unknown datatype"),
    "BYTES length past the end": (
        _request(("AUDIO", "BYTES", [1], None), raw=[(1000).to_bytes(4, "little") + b"abc"]),
        "element 0 declares 1000 bytes past the end",
    ),
    "BYTES prefix cut short": (
        _request(("AUDIO", "BYTES", [2], None), raw=[_raw_bytes(b"a") + b"\1\0"]),
        "raw contents end before element 1 of 2",
    ),
    "BYTES trailing data": (
        _request(("AUDIO", "BYTES", [1], None), raw=[_raw_bytes(b"a") + b"zz"]),
        "2 bytes after its 1 elements",
    ),
    "too many BYTES elements": (
        _request(
            ("LANGUAGE", "BYTES", [MAX_BYTES_ELEMENTS + 1], None), raw=[_raw_bytes(*[b""] * (MAX_BYTES_ELEMENTS + 1))]
        ),
        f"at most {MAX_BYTES_ELEMENTS} BYTES elements",
    ),
    "input in shared memory": (
        _request(("AUDIO", "BYTES", [1], {"bytes_contents": [b"x"]})),
        "shared memory is not available",
    ),
    "output to shared memory": (
        _request(("AUDIO", "BYTES", [1], {"bytes_contents": [b"x"]}), outputs=["TEXT"]),
        "shared memory is not available",
    ),
    "huge input name": (
        _request(("A" * 100_000, "FP32", [1], {"fp32_contents": [0.0]})),
        f"longer than {MAX_NAME_CHARS} characters",
    ),
}
REJECTED["input in shared memory"][0].inputs[0].parameters["shared_memory_region"].string_param = "r"
REJECTED["output to shared memory"][0].outputs[0].parameters["shared_memory_region"].string_param = "r"


@pytest.mark.parametrize("case", sorted(VALID))
def test_well_formed_requests_pass(case):
    request = VALID[case]
    check_infer_request(parse_infer_request(request.SerializeToString()))


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_malformed_requests_are_refused_with_a_short_message(case):
    request, expected = REJECTED[case]
    with pytest.raises(RejectedRequestError) as info:
        check_infer_request(parse_infer_request(request.SerializeToString()))
    assert expected in str(info.value)
    assert len(str(info.value)) < 400, "the message must not echo the input"


def test_undecodable_bytes_are_refused():
    with pytest.raises(RejectedRequestError, match="malformed ModelInferRequest"):
        parse_infer_request(b"\xff\xff\xff\xff")


def test_message_limit_follows_the_repository(tmp_path):
    for model, limit in (("qwen3_asr", 1000), ("preprocess", 5000), ("decoder", None)):
        (tmp_path / model).mkdir()
        params = f'parameters {{ key: "max_audio_bytes" value: {{ string_value: "{limit}" }} }}' if limit else ""
        (tmp_path / model / "config.pbtxt").write_text(f'name: "{model}"\nbackend: "python"\n{params}\n')
    assert message_limit(tmp_path) == 5000 + 1024 * 1024
    assert message_limit(tmp_path / "decoder") == DEFAULT_MAX_MESSAGE_BYTES


@pytest.mark.parametrize(
    "field, value",
    [
        ("port", 0),
        ("max_message_bytes", 2**31),
        ("max_concurrent_rpcs", 0),
        ("upstream_channels", True),
        ("public_models", frozenset()),
        ("public_models", frozenset({"qwen3_asr", ""})),
    ],
)
def test_options_are_validated_once(field, value):
    with pytest.raises(ValueError, match=field):
        GuardOptions(triton_url="127.0.0.1:1", **{field: value})


# ---- forwarding, over real gRPC -------------------------------------------------------------------


class Upstream(grpc.GenericRpcHandler):
    """A stand-in for Triton: answers ModelInfer / ModelStreamInfer / ServerLive and records what arrives."""

    def __init__(self) -> None:
        self.requests: list[pb.ModelInferRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.cancelled = asyncio.Event()

    def service(self, details):
        if details.method == INFER:
            return grpc.unary_unary_rpc_method_handler(self._infer)
        if details.method == STREAM_INFER:
            return grpc.stream_stream_rpc_method_handler(self._stream)
        if details.method.endswith("/ServerLive"):
            return grpc.unary_unary_rpc_method_handler(
                self._live, pb.ServerLiveRequest.FromString, pb.ServerLiveResponse.SerializeToString
            )
        return None

    async def _live(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def _infer(self, raw: bytes, context) -> bytes:
        request = pb.ModelInferRequest.FromString(raw)
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        if request.model_name == "slow":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if request.model_name == "failing":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "x" * 10_000)
        if request.model_name == "loading":  # Triton's answer while a restarted server loads its models
            await context.abort(
                grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'loading' has no available versions"
            )
        if request.model_name == "dead":  # Triton's answer for a python model whose stub died
            await context.abort(grpc.StatusCode.INTERNAL, "Stub process 'dead_0_0' is not healthy.")
        if request.model_name == "unknown":
            await context.abort(grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'unknown' is not found")
        return pb.ModelInferResponse(model_name=request.model_name, id=request.id).SerializeToString()

    async def _stream(self, requests, context):
        async for raw in requests:
            request = pb.ModelInferRequest.FromString(raw)
            self.requests.append(request)
            yield pb.ModelStreamInferResponse(infer_response=pb.ModelInferResponse(id=request.id)).SerializeToString()


@contextlib.asynccontextmanager
async def _guard(upstream_alive: bool = True, **limits):
    guard_port, upstream_port = free_ports(2)
    upstream = Upstream()
    server = grpc.aio.server(handlers=[upstream])
    if upstream_alive:  # otherwise nothing listens there: connections are refused
        server.add_insecure_port(f"127.0.0.1:{upstream_port}")
        await server.start()
    stop = asyncio.Event()
    # The stand-in's test models are public here, beside the real ones.
    limits.setdefault("public_models", PUBLIC_MODELS | {"slow", "failing", "loading", "dead", "unknown"})
    options = GuardOptions(triton_url=f"127.0.0.1:{upstream_port}", port=guard_port, **limits)
    serving = asyncio.ensure_future(serve(options, stop, grace=1))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{guard_port}", options=[("grpc.max_send_message_length", -1)])
    await asyncio.wait_for(channel.channel_ready(), 10)
    try:
        yield channel, upstream
    finally:
        await channel.close()
        stop.set()
        await serving
        await server.stop(None)


def _infer_call(channel):
    return channel.unary_unary(INFER, pb.ModelInferRequest.SerializeToString, pb.ModelInferResponse.FromString)


def _good(model: str = "qwen3_asr", request_id: str = "1") -> pb.ModelInferRequest:
    request = _request(("MAX_NEW_TOKENS", "INT32", [1], {"int_contents": [4]}))
    request.model_name, request.id = model, request_id
    return request


def test_guard_forwards_good_calls_and_keeps_bad_ones_back():
    async def scenario():
        async with _guard() as (channel, upstream):
            response = await _infer_call(channel)(_good(), metadata=(("x-trace", "t1"),), timeout=10)
            assert (response.model_name, response.id) == ("qwen3_asr", "1")
            assert upstream.metadata[-1]["x-trace"] == "t1"
            bad = _request(("WAVEFORM", "FP32", [1, 2**62], None))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _infer_call(channel)(bad, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "4611686018427387904 elements" in info.value.details()
            assert len(upstream.requests) == 1, "the bad request reached the upstream"
            live = channel.unary_unary(
                "/inference.GRPCInferenceService/ServerLive",
                pb.ServerLiveRequest.SerializeToString,
                pb.ServerLiveResponse.FromString,
            )
            assert (await live(pb.ServerLiveRequest(), timeout=10)).live
            for method, code in (
                ("RepositoryModelLoad", grpc.StatusCode.PERMISSION_DENIED),
                ("SystemSharedMemoryRegister", grpc.StatusCode.PERMISSION_DENIED),
                ("TraceSetting", grpc.StatusCode.PERMISSION_DENIED),
                ("NoSuchMethod", grpc.StatusCode.UNIMPLEMENTED),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await channel.unary_unary(f"/inference.GRPCInferenceService/{method}")(b"", timeout=10)
                assert info.value.code() == code, method
            # Upstream errors come back with their code, their text cut short.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _infer_call(channel)(_good("failing"), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert 0 < len(info.value.details()) <= 600
            # A model Triton has not loaded yet, or whose worker died (restarting), is UNAVAILABLE, which
            # clients retry; one it does not know stays NOT_FOUND.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _infer_call(channel)(_good("loading"), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert info.value.details() == RESTARTING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _infer_call(channel)(_good("dead"), timeout=10)
            assert (info.value.code(), info.value.details()) == (grpc.StatusCode.UNAVAILABLE, RESTARTING)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _infer_call(channel)(_good("unknown"), timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND

    asyncio.run(scenario())


def test_internal_models_are_not_reachable_through_the_guard():
    """Inference on the pipeline's internal stages is refused as for an unknown model (NOT_FOUND; on a stream,
    an error response) before the upstream sees it: the decoder, for one, takes any prompt embeddings."""

    async def scenario():
        async with _guard() as (channel, upstream):
            for model in ("decoder", "preprocess", "encoder", "postprocess", "aligner", "no_such_model", ""):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await _infer_call(channel)(_good(model), timeout=10)
                assert info.value.code() == grpc.StatusCode.NOT_FOUND, model
                assert info.value.details().startswith(f"unknown model {model!r}: this endpoint serves "), model
                assert len(info.value.details()) < 300
            call = channel.stream_stream(
                STREAM_INFER, pb.ModelInferRequest.SerializeToString, pb.ModelStreamInferResponse.FromString
            )(timeout=10)
            for request in (_good("decoder", "1"), _good("qwen3_asr_streaming", "2")):
                await call.write(request)
            await call.done_writing()
            by_id = {response.infer_response.id: response async for response in call}
            assert by_id["1"].error_message.startswith("unknown model 'decoder': this endpoint serves")
            assert by_id["2"].error_message == ""
            assert [(r.model_name, r.id) for r in upstream.requests] == [("qwen3_asr_streaming", "2")]
            for model in sorted(PUBLIC_MODELS):
                assert (await _infer_call(channel)(_good(model), timeout=10)).model_name == model

    asyncio.run(scenario())


def test_an_oversize_message_is_refused_from_its_length_before_the_upstream_sees_it():
    async def scenario():
        async with _guard(max_message_bytes=1024 * 1024) as (channel, upstream):
            big = _request(("AUDIO", "BYTES", [1], None), raw=[_raw_bytes(b"x" * (2 * 1024 * 1024))])
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _infer_call(channel)(big, timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert upstream.requests == []
            assert (await _infer_call(channel)(_good(), timeout=10)).id == "1"

    asyncio.run(scenario())


def test_a_refused_stream_message_is_answered_on_the_stream_which_goes_on():
    async def scenario():
        async with _guard() as (channel, upstream):
            call = channel.stream_stream(
                STREAM_INFER, pb.ModelInferRequest.SerializeToString, pb.ModelStreamInferResponse.FromString
            )(timeout=10)
            bad = _request(("WAVEFORM", "FP32", [2**62], None))
            bad.id = "2"
            for request in (_good(request_id="1"), bad, _good(request_id="3")):
                await call.write(request)
            await call.done_writing()
            responses = [response async for response in call]
            assert await call.code() == grpc.StatusCode.OK
            by_id = {response.infer_response.id: response for response in responses}
            assert sorted(by_id) == ["1", "2", "3"]
            assert "4611686018427387904 elements" in by_id["2"].error_message
            assert by_id["1"].error_message == by_id["3"].error_message == ""
            assert [request.id for request in upstream.requests] == ["1", "3"]

    asyncio.run(scenario())


def test_a_client_that_leaves_cancels_the_upstream_call():
    async def scenario():
        async with _guard() as (channel, upstream):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _infer_call(channel)(_good("slow"), timeout=0.3)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(upstream.cancelled.wait(), 2)

    asyncio.run(scenario())


def test_calls_past_the_concurrency_limit_are_refused_at_once():
    async def scenario():
        async with _guard(max_concurrent_rpcs=2) as (channel, upstream):
            slow = [asyncio.ensure_future(_infer_call(channel)(_good("slow"), timeout=5)) for _ in range(2)]
            while len(upstream.requests) < 2:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _infer_call(channel)(_good(), timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() - started < 0.1
            for call in slow:
                call.cancel()
            await asyncio.gather(*slow, return_exceptions=True)

    asyncio.run(scenario())


def test_a_missing_upstream_is_unavailable_without_naming_its_address():
    async def scenario():
        async with _guard(upstream_alive=False) as (channel, _upstream):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _infer_call(channel)(_good(), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert info.value.details() == UNREACHABLE

    asyncio.run(scenario())


def test_the_guard_refuses_a_taken_port():
    import subprocess
    import sys

    (port,) = free_ports(1)
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "qwen3_asr_triton.gateway.cli",
                "serve-grpc",
                "--triton-url",
                "127.0.0.1:1",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[1],
        )
    assert result.returncode == 1, result.stderr


def test_calls_succeed_at_once_when_triton_comes_back():
    """After a restart, a channel still waiting out its reconnect backoff must not fail calls another can carry."""

    async def scenario():
        guard_port, upstream_port = free_ports(2)
        address = f"127.0.0.1:{upstream_port}"

        async def start_upstream():
            server = grpc.aio.server(handlers=[Upstream()])
            server.add_insecure_port(address)
            await server.start()
            return server

        upstream = await start_upstream()
        stop = asyncio.Event()
        options = GuardOptions(triton_url=address, port=guard_port, upstream_channels=8)
        serving = asyncio.ensure_future(serve(options, stop, grace=1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{guard_port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
            for _ in range(16):  # every upstream channel connected
                await _infer_call(channel)(_good(), timeout=10)
            await upstream.stop(None)
            for _ in range(16):  # every upstream channel has seen Triton gone
                with pytest.raises(grpc.aio.AioRpcError):
                    await _infer_call(channel)(_good(), timeout=10)
            upstream = await start_upstream()
            deadline = time.monotonic() + 10
            while True:
                try:
                    await _infer_call(channel)(_good(), timeout=10)
                    break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() < deadline, "the guard never reconnected"
                    await asyncio.sleep(0.01)
            for _ in range(20):
                assert (await _infer_call(channel)(_good(), timeout=10)).id == "1"
        stop.set()
        await serving
        await upstream.stop(None)

    asyncio.run(scenario())


# ---- streams a client leaves open -------------------------------------------------------------------


def _chunk(sequence_id: int, request_id: str, start: bool = False, end: bool = False) -> pb.ModelInferRequest:
    request = _good("qwen3_asr_streaming", request_id)
    request.parameters["sequence_id"].int64_param = sequence_id
    request.parameters["sequence_start"].bool_param = start
    request.parameters["sequence_end"].bool_param = end
    return request


def test_open_sequences_are_those_started_and_not_ended():
    from qwen3_asr_triton.gateway.open_sequences import END_INPUT, END_REQUEST_ID, OpenSequences

    sequences = OpenSequences()
    sequences.note(_good())  # not a sequence
    sequences.note(_chunk(7, "a", start=True))
    sequences.note(_chunk(8, "b", start=True))
    sequences.note(_chunk(7, "c"))
    sequences.note(_chunk(8, "d", end=True))
    assert len(sequences) == 1
    (end,) = sequences.ends()
    assert (end.model_name, end.id) == ("qwen3_asr_streaming", END_REQUEST_ID)
    assert end.parameters["sequence_id"].int64_param == 7
    assert end.parameters["sequence_end"].bool_param and "sequence_start" not in end.parameters
    assert [(i.name, i.datatype, list(i.shape)) for i in end.inputs] == [(END_INPUT, "FP32", [1, 0])]
    assert list(end.raw_input_contents) == [b""]
    check_infer_request(end)  # the guard's own message passes the guard's checks


async def _stream_then(channel, requests, leave: str) -> None:
    call = channel.stream_stream(
        STREAM_INFER, pb.ModelInferRequest.SerializeToString, pb.ModelStreamInferResponse.FromString
    )(timeout=10)
    for request in requests:
        await call.write(request)
    for _ in requests:
        await call.read()  # every message reached the upstream
    if leave == "vanish":
        call.cancel()  # as a killed client: no END, no half-close
    else:
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("leave", "sent", "ended"),
    [
        ("vanish", [(5, True, False), (5, False, False), (6, True, False)], [5, 6]),
        ("vanish", [(5, True, False), (5, False, True)], []),  # its stream was ended: nothing to end
        ("half-close", [(5, True, False)], []),  # a clean close is the client's choice: no END for it
    ],
)
def test_a_client_that_vanishes_has_its_open_streams_ended(leave, sent, ended):
    from qwen3_asr_triton.gateway.open_sequences import END_REQUEST_ID

    async def scenario():
        async with _guard() as (channel, upstream):
            chunks = [_chunk(seq, f"r{i}", start, end) for i, (seq, start, end) in enumerate(sent)]
            await _stream_then(channel, chunks, leave)
            deadline = time.monotonic() + 5
            while len(upstream.requests) < len(sent) + len(ended) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # and nothing more arrives
            extra = upstream.requests[len(sent) :]
            assert [r.id for r in extra] == [END_REQUEST_ID] * len(ended)
            assert [r.parameters["sequence_id"].int64_param for r in extra] == ended
            assert all(r.parameters["sequence_end"].bool_param for r in extra)

    asyncio.run(scenario())
