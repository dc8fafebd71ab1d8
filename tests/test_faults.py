"""Faults and hostile input against a real server: what one client does never harms the others.

Errors quote at most a short excerpt of the input; internal models enforce their own limits when
called directly; a cancelled request stops its decoder work; stream capacity errors are immediate;
a failed START frees its stream.
"""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.triton_requests import build_inputs, transcribe

pytestmark = pytest.mark.server


def _counter(server, name: str) -> float:
    return sum(v for k, v in server.metrics().items() if k.startswith(name + "{") or k == name)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_over_long_value_is_quoted_briefly(triton_server, clips, protocol):
    """A 100,000-character LANGUAGE was echoed whole (gRPC refused the answer's metadata, HTTP sent 100 kB)."""
    from tritonclient.utils import InferenceServerException

    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    with pytest.raises(InferenceServerException) as info:
        transcribe(url, protocol=protocol, audio=clips[0].path.read_bytes(), language="Klingon" * 14286)
    message = str(info.value)
    assert "unknown LANGUAGE 'KlingonKlingon" in message and "(100002 characters)" in message, message[:300]
    assert len(message) < 1000, len(message)
    if protocol == "grpc":
        assert "INVALID_ARG" in str(info.value.status())
    else:
        assert str(info.value.status()) == "400"


def test_the_http_error_body_is_short(triton_server, clips):
    body = {
        "inputs": [
            {"name": "WAVEFORM", "shape": [1600], "datatype": "FP32", "data": [0.0] * 1600},
            {"name": "SAMPLE_RATE", "shape": [1], "datatype": "INT32", "data": [16000]},
            {"name": "LANGUAGE", "shape": [1], "datatype": "BYTES", "data": ["x" * 100_000]},
        ]
    }
    request = urllib.request.Request(
        f"http://{triton_server.http_url}/v2/models/qwen3_asr/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=60)
    assert info.value.code == 400
    assert len(info.value.read()) < 1000


def _decoder_inputs(grpcclient, output_len: int, min_len: int = 0, ids: int = 8) -> list:
    items = []
    for name, array, dtype in (
        ("input_ids", np.full((1, ids), 198, np.int32), "INT32"),
        ("input_lengths", np.array([[ids]], np.int32), "INT32"),
        ("request_output_len", np.array([[output_len]], np.int32), "INT32"),
        ("min_length", np.array([[min_len]], np.int32), "INT32"),
    ):
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        items.append(tensor)
    return items


def _direct_decoder_error(url: str) -> str:
    """Send the decoder a request for 20,000 new tokens over ``url``; the error it gets."""
    import tritonclient.grpc as grpcclient

    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("decoder", _decoder_inputs(grpcclient, 20_000), request_id="direct-1")
        _, error = answers.get(timeout=30)
    finally:
        client.stop_stream()
        client.close()
    assert error is not None
    return str(error)


def test_the_decoder_refuses_a_direct_request_beyond_the_public_cap(triton_server):
    """Called directly, the decoder generated 20,000 tokens; the public cap is 4,096. Clients cannot reach
    it at all (the gRPC guard serves only the public models), and on Triton's own port it refuses."""
    steps = _counter(triton_server, "qwen3_asr_decoder_steps_total")
    assert "unknown model 'decoder': this endpoint serves" in _direct_decoder_error(triton_server.grpc_url)
    error = _direct_decoder_error(triton_server.triton_grpc_url)
    assert "request_output_len must be between 1 and 4096, got 20000" in error
    assert _counter(triton_server, "qwen3_asr_decoder_steps_total") == steps, "nothing was generated"


def _decoder(server) -> dict[str, float]:
    names = ("steps", "step_sequences", "cancelled", "completed")
    return {n: _counter(server, f"qwen3_asr_decoder_{n}_total") for n in names}


def _decoder_requests(client) -> int:
    stats = client.get_inference_statistics("decoder", as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0))


def _wait_until_quiet(server, limit: float = 5.0) -> float:
    """Seconds until the decoder stops stepping (two reads 0.3 s apart agree)."""
    started = time.monotonic()
    steps = _decoder(server)["steps"]
    while True:
        time.sleep(0.3)
        now = _decoder(server)["steps"]
        if now == steps:
            return time.monotonic() - started
        assert time.monotonic() - started < limit, "the decoder kept generating for requests nobody waits for"
        steps = now


def test_cancelled_requests_stop_their_decoder_work(triton_server, clips):
    """Four 4,000-token generations, cancelled by their client mid-decode, are dropped at the next step."""
    import tritonclient.grpc as grpcclient

    data = clips[0].path.read_bytes()
    before = _decoder(triton_server)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    taken = _decoder_requests(client)
    answers: queue.Queue = queue.Queue()
    inputs = build_inputs(grpcclient, audio=data, max_new_tokens=4000, min_new_tokens=4000)
    calls = [client.async_infer("qwen3_asr", inputs, callback=lambda r, e: answers.put(e)) for _ in range(4)]
    # Cancel once all four are in the decoder (Triton's statistics count a decoupled request when the model
    # takes it; the decoder's own counters are published only as requests finish).
    started = time.monotonic()
    while _decoder_requests(client) - taken < 4:
        assert time.monotonic() - started < 60, ("the requests never reached the decoder", list(answers.queue)[:2])
        time.sleep(0.1)
    time.sleep(0.5)
    for call in calls:
        call.cancel()
    cancelled_at = time.monotonic()
    quiet = _wait_until_quiet(triton_server)
    after = _decoder(triton_server)
    assert after["cancelled"] - before["cancelled"] == 4
    assert after["completed"] == before["completed"], "no cancelled generation ran to its end"
    client.close()
    print(f"4 cancelled generations: the decoder was idle {time.monotonic() - cancelled_at:.2f} s after the cancel")
    assert quiet < 5


def test_a_request_past_its_deadline_stops_its_decoder_work(triton_server, clips):
    """A client deadline (gRPC DEADLINE_EXCEEDED) cancels the request on the server too."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    data = clips[0].path.read_bytes()
    before = _decoder(triton_server)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    inputs = build_inputs(grpcclient, audio=data, max_new_tokens=4000, min_new_tokens=4000)
    with pytest.raises(InferenceServerException) as info:
        client.infer("qwen3_asr", inputs, client_timeout=3.0)
    client.close()
    assert "DEADLINE_EXCEEDED" in str(info.value.status())
    _wait_until_quiet(triton_server)
    after = _decoder(triton_server)
    assert after["cancelled"] - before["cancelled"] == 1
    assert after["completed"] == before["completed"]
    good = transcribe(triton_server.grpc_url, audio=data, max_new_tokens=8)
    assert good["TOKEN_IDS"].size >= 1


def test_sixteen_requests_whose_client_gave_up_after_0_2_s_stop_on_the_server(triton_server, clips):
    """16 unary requests for 4,000 tokens each with a 0.2 s client deadline (an outside probe saw all 16
    run to completion after their clients had gone): none runs to its end, those already in the decoder
    are dropped there, and the decoder is idle within a few of its steps of the last deadline."""
    import tritonclient.grpc as grpcclient

    data = clips[0].path.read_bytes()
    before = _decoder(triton_server)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    errors: queue.Queue = queue.Queue()
    inputs = build_inputs(grpcclient, audio=data, max_new_tokens=4000, min_new_tokens=4000)
    sent = time.monotonic()
    for _ in range(16):
        client.async_infer("qwen3_asr", inputs, callback=lambda result, error: errors.put(error), client_timeout=0.2)
    answered = [errors.get(timeout=30) for _ in range(16)]
    last_deadline = time.monotonic()
    assert all(e is not None and "DEADLINE_EXCEEDED" in str(e.status()) for e in answered), answered[:2]
    quiet = _wait_until_quiet(triton_server)
    after = _decoder(triton_server)
    client.close()
    assert after["completed"] == before["completed"], "a generation ran to its end for a client that had gone"
    dropped = after["cancelled"] - before["cancelled"]
    steps = after["steps"] - before["steps"]
    print(
        f"16 x 0.2 s deadlines: last error {last_deadline - sent:.2f} s after sending; decoder idle "
        f"{quiet:.2f} s later (polled every 0.3 s); {dropped:.0f} dropped in the decoder, the rest before it; "
        f"{steps:.0f} decoder steps in all"
    )
    assert dropped <= 16
    # 16 x 4,000 tokens would be 4,000 steps at least; cancelled work stops after a handful.
    assert steps < 400, steps
    good = transcribe(triton_server.grpc_url, audio=data, max_new_tokens=8)
    assert good["TOKEN_IDS"].size >= 1


class _Streams:
    """Many sequences on one gRPC stream, answers collected by correlation id."""

    def __init__(self, url: str) -> None:
        import tritonclient.grpc as grpcclient

        self.grpc = grpcclient
        self.answers: queue.Queue = queue.Queue()
        self.client = grpcclient.InferenceServerClient(url)
        self.client.start_stream(callback=lambda result, error: self.answers.put((time.monotonic(), result, error)))

    def send(self, sequence_id: int, samples: np.ndarray, start: bool = False, end: bool = False) -> None:
        wave = self.grpc.InferInput("WAVEFORM", [1, samples.size], "FP32")
        wave.set_data_from_numpy(np.ascontiguousarray(samples, np.float32)[None])
        rate = self.grpc.InferInput("SAMPLE_RATE", [1, 1], "INT32")
        rate.set_data_from_numpy(np.array([[16000]], np.int32))
        self.client.async_stream_infer(
            "qwen3_asr_streaming", [wave, rate], sequence_id=sequence_id, sequence_start=start, sequence_end=end
        )

    def collect(self, count: int, timeout: float = 60) -> list:
        return [self.answers.get(timeout=timeout) for _ in range(count)]

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def test_a_stream_over_the_limit_is_refused_at_once(triton_server, model_repository):
    """The test repository admits 64 streams: the 65th START gets UNAVAILABLE immediately, not a silent queue."""
    config = (model_repository / "qwen3_asr_streaming" / "config.pbtxt").read_text()
    assert 'key: "max_streams" value: { string_value: "64" }' in config
    streams = _Streams(triton_server.grpc_url)
    # STARTs without audio: their partials cost nothing, so all 64 are open well within the
    # repository's 3 s idle timeout (an expired stream would free its slot).
    silence = np.zeros(0, np.float32)
    try:
        for i in range(64):
            streams.send(5000 + i, silence, start=True)
        opened = streams.collect(64)
        assert all(error is None for _, _, error in opened), [str(e) for _, _, e in opened if e][:3]
        sent = time.monotonic()
        streams.send(5064, silence, start=True)
        answered, _, error = streams.collect(1)[0]
        # (tritonclient's stream callback carries the message only; the model sends it as UNAVAILABLE)
        assert error is not None and "too many concurrent streams (64)" in str(error), error
        print(f"stream 65 of 64 refused after {answered - sent:.3f} s")
        assert answered - sent < 0.1, f"refused after {answered - sent:.3f} s"
        for i in range(64):
            streams.send(5000 + i, silence, end=True)
        streams.collect(64)
    finally:
        streams.close()
    deadline = time.monotonic() + 10
    while _counter(triton_server, "qwen3_asr_streaming_active_streams") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _counter(triton_server, "qwen3_asr_streaming_active_streams") == 0


def test_a_failed_start_frees_its_stream(triton_server):
    """A START whose chunk is refused leaves no state behind: the same id can start again at once."""
    streams = _Streams(triton_server.grpc_url)
    before = _counter(triton_server, "qwen3_asr_streaming_active_streams")
    try:
        streams.send(7001, np.array([0.1, np.nan] * 800, np.float32), start=True)
        _, _, error = streams.collect(1)[0]
        assert error is not None and "NaN" in str(error)
        assert _counter(triton_server, "qwen3_asr_streaming_active_streams") == before
        streams.send(7001, np.zeros(8000, np.float32), start=True, end=True)
        _, result, error = streams.collect(1)[0]
        assert error is None, str(error)  # not "stream 7001 was started twice"
        assert bool(result.as_numpy("IS_FINAL").reshape(-1)[0])
    finally:
        streams.close()
