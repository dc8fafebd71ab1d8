"""The gRPC guard in front of a real Triton server (serve_cpu.sh's deployment): clients' gRPC port.

The bad-input corpus (tests/test_bad_input_corpus.py) sends its gRPC kinds through the guard too; this
file covers what only the guard does: an over-size message refused from its length with bounded
memory, a refused stream message answered on a stream that goes on, the control RPCs refused, and
health checking passed through.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from qwen3_asr_triton.supervision import children
from tests.triton_requests import transcribe

pytestmark = pytest.mark.server

INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
# The over-size request an outside probe sent: 300 MB of AUDIO, over the repository's 256 MiB limit.
OVERSIZE_BYTES = 300_000_000
# The goals for refusing it: within 1 s, with under 50 MB more resident afterwards.
REFUSE_SECONDS = 1.0
RETAINED_BYTES = 50 * 1024 * 1024
# After the refusal, time for freed memory to show in /proc before "retained" is read.
SETTLE_SECONDS = 2.0


def _resident_bytes(root_pid: int) -> int:
    """Resident set of every process under ``root_pid`` (serve_cpu.sh: guard, gateway, Triton, its workers)."""
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children(pid))
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
    return total


def _audio_request(audio: bytes, request_id: str, model: str = "qwen3_asr") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="AUDIO", datatype="BYTES", shape=[1])
    request.inputs.add(name="MAX_NEW_TOKENS", datatype="INT32", shape=[1])
    request.raw_input_contents.extend([len(audio).to_bytes(4, "little") + audio, np.int32(4).tobytes()])
    request.outputs.add(name="TOKEN_IDS")
    return request


def test_an_oversize_message_is_refused_within_a_second_and_leaves_no_memory_behind(triton_server, clips):
    oversize = _audio_request(b"\0" * OVERSIZE_BYTES, "big").SerializeToString()  # built before timing
    before = _resident_bytes(triton_server.process.pid)
    elapsed = []
    with grpc.insecure_channel(triton_server.grpc_url, options=[("grpc.max_send_message_length", -1)]) as channel:
        call = channel.unary_unary(INFER)
        for _ in range(3):  # the best of three: the goal is the server's, not this machine's scheduling
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                call(oversize, timeout=60)
            elapsed.append(time.monotonic() - started)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in info.value.details()
    del oversize
    time.sleep(SETTLE_SECONDS)
    retained = _resident_bytes(triton_server.process.pid) - before
    print(f"300 MB AUDIO refused in {min(elapsed):.2f} s (runs {elapsed}); retained {retained / 2**20:.1f} MiB")
    assert min(elapsed) < REFUSE_SECONDS, elapsed
    assert retained < RETAINED_BYTES, f"{retained / 2**20:.1f} MiB retained"
    out = transcribe(triton_server.grpc_url, audio=clips[0].path.read_bytes(), max_new_tokens=4)
    assert out["TOKEN_IDS"].size >= 1


def test_a_refused_stream_message_is_answered_and_the_stream_goes_on(triton_server, clips):
    """On Triton itself this message kills the worker that receives it (a 2**62-sample tensor with no data)."""
    audio = clips[0].path.read_bytes()
    expected = transcribe(triton_server.triton_grpc_url, audio=audio, max_new_tokens=4)["TOKEN_IDS"].tolist()
    workers = sorted(children(int(_tritonserver_pid(triton_server))))
    bad = pb.ModelInferRequest(model_name="qwen3_asr", id="bad")
    bad.inputs.add(name="WAVEFORM", datatype="FP32", shape=[1, 2**62])
    bad.inputs.add(name="SAMPLE_RATE", datatype="INT32", shape=[1])
    bad.raw_input_contents.extend([b"", np.int32(16000).tobytes()])
    requests = [_audio_request(audio, "before"), bad, _audio_request(audio, "after")]
    with grpc.insecure_channel(triton_server.grpc_url) as channel:
        stream = channel.stream_stream(
            STREAM_INFER, pb.ModelInferRequest.SerializeToString, pb.ModelStreamInferResponse.FromString
        )
        responses = {r.infer_response.id: r for r in stream(iter(requests), timeout=120)}
    assert sorted(responses) == ["after", "bad", "before"]
    assert "declares 4611686018427387904 elements" in responses["bad"].error_message
    for request_id in ("before", "after"):
        response = responses[request_id]
        assert response.error_message == "", response.error_message
        tokens = np.frombuffer(response.infer_response.raw_output_contents[0], np.int32).tolist()
        assert tokens == expected, request_id
    assert sorted(children(int(_tritonserver_pid(triton_server)))) == workers, "a python worker died"


def _active_streams(server) -> float:
    return sum(v for k, v in server.metrics().items() if k.startswith("qwen3_asr_streaming_active_streams"))


def test_a_stream_client_that_vanishes_has_its_state_freed_at_once(triton_server, clips):
    """Killed mid-stream (no END, no half-close): the guard ends the stream, well before the idle timeout."""
    wave = clips[-1].waveform()[:16000]
    start = pb.ModelInferRequest(model_name="qwen3_asr_streaming", id="vanish-0")
    start.parameters["sequence_id"].int64_param = 5001
    start.parameters["sequence_start"].bool_param = True
    start.inputs.add(name="WAVEFORM", datatype="FP32", shape=[1, wave.size])
    start.inputs.add(name="SAMPLE_RATE", datatype="INT32", shape=[1, 1])
    start.raw_input_contents.extend([wave.astype(np.float32).tobytes(), np.int32(16000).tobytes()])
    expired_before = sum(
        v for k, v in triton_server.metrics().items() if k.startswith("qwen3_asr_streaming_expired_total")
    )
    gone = threading.Event()

    def requests():  # START, then nothing: the stream never ends nor half-closes
        yield start
        gone.wait(60)

    with grpc.insecure_channel(triton_server.grpc_url) as channel:
        call = channel.stream_stream(
            STREAM_INFER, pb.ModelInferRequest.SerializeToString, pb.ModelStreamInferResponse.FromString
        )(requests(), timeout=120)
        first = next(call)  # the partial: the stream's state exists
        assert first.error_message == "", first.error_message
        assert _active_streams(triton_server) >= 1
        call.cancel()
        vanished = time.monotonic()
        gone.set()
    # The tests' repository drops an idle stream after 3 s; the guard's END frees it sooner.
    while _active_streams(triton_server) and time.monotonic() < vanished + 2.5:
        time.sleep(0.05)
    assert _active_streams(triton_server) == 0
    expired = sum(v for k, v in triton_server.metrics().items() if k.startswith("qwen3_asr_streaming_expired_total"))
    assert expired == expired_before  # ended, not expired


def _tritonserver_pid(server) -> int:
    return next(pid for pid, argv in children(server.process.pid).items() if argv[0].endswith("tritonserver"))


def test_control_rpcs_are_refused_and_health_checks_pass_through(triton_server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    for name, call in (
        ("RepositoryModelLoad", lambda: client.load_model("qwen3_asr")),
        ("RepositoryModelUnload", lambda: client.unload_model("qwen3_asr")),
        ("SystemSharedMemoryRegister", lambda: client.register_system_shared_memory("r", "/qwen3_asr_x", 64)),
        ("SystemSharedMemoryUnregister", lambda: client.unregister_system_shared_memory()),
        ("LogSettings", lambda: client.update_log_settings({"log_verbose_level": 1})),
        ("TraceSetting", lambda: client.update_trace_settings(settings={"trace_file": "/tmp/x"})),
    ):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == "StatusCode.PERMISSION_DENIED", (name, info.value)
        assert f"{name} is not available through this endpoint" in info.value.message()
    assert client.is_server_ready() and client.is_model_ready("qwen3_asr")
    assert client.get_model_metadata("qwen3_asr").name == "qwen3_asr"
    client.close()
    # grpc.health.v1.Health/Check with an empty request: SERVING (1) is field 1, varint 1.
    with grpc.insecure_channel(triton_server.grpc_url) as channel:
        assert channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10) == b"\x08\x01"
