"""Client building blocks without a server: option validation, retry budget, wire tensors, input expansion."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from qwen3_asr_triton.client.batch import BatchSummary, FileOutcome
from qwen3_asr_triton.client.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    MalformedResponseError,
    Qwen3ASRError,
    ServerUnavailableError,
)
from qwen3_asr_triton.client.inputs import expand_inputs, output_paths
from qwen3_asr_triton.client.options import ClientOptions, RetryPolicy, TlsOptions, TranscribeOptions, parse_url
from qwen3_asr_triton.client.retry import CallBudget
from qwen3_asr_triton.client.types import Segment, Transcription
from qwen3_asr_triton.client.wire import audio_inputs, option_inputs, parse_result, waveform_to_float32


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "url",
    ["", "localhost", "http://127.0.0.1:8001", "grpc://h:1", "127.0.0.1:0", "127.0.0.1:70000", "h:x", "a b:1", ":80"],
)
def test_bad_urls_are_rejected(url):
    with pytest.raises(ValueError, match="url"):
        ClientOptions(url=url)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("127.0.0.1:8001", "127.0.0.1", 8001),
        ("triton.svc.cluster.local:443", "triton.svc.cluster.local", 443),
        ("[::1]:9", "[::1]", 9),
    ],
)
def test_good_urls_parse(url, host, port):
    assert parse_url(url) == (host, port)
    assert ClientOptions(url=url).url == url


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(timeout=0),
        dict(timeout=-1.0),
        dict(timeout=math.nan),
        dict(timeout=math.inf),
        dict(timeout="10"),
        dict(model="bad model"),
        dict(model_version="latest"),
        dict(retry="3"),
        dict(headers={"bad key": "x"}),
        dict(headers={"authorization": "Bearer x\r\nx-injected: 1"}),
        dict(headers={"x-token": "naïve"}),
        dict(headers={"grpc-timeout": "1S"}),
        dict(headers={"content-type": "text/plain"}),
        dict(headers={"x-data-bin": "AAA="}),
        dict(headers=(("X-A", "1"), ("x-a", "2"))),
        dict(headers=(("only-key",),)),
    ],
)
def test_bad_client_options_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        ClientOptions(**kwargs)


def test_headers_are_normalised_and_sorted():
    options = ClientOptions(headers={"Authorization": " Bearer abc ", "x-tenant": "blue"})
    assert options.headers == (("authorization", "Bearer abc"), ("x-tenant", "blue"))
    assert options.header_dict == {"authorization": "Bearer abc", "x-tenant": "blue"}
    hash(options)  # frozen and hashable: the mapping was turned into pairs


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_attempts=0),
        dict(max_attempts=True),
        dict(max_attempts=2.5),
        dict(initial_backoff=0),
        dict(initial_backoff=2.0, max_backoff=1.0),
        dict(multiplier=0.5),
        dict(multiplier=math.nan),
    ],
)
def test_bad_retry_policies_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_tls_files_must_exist_and_key_needs_chain(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    assert TlsOptions(root_certificates=str(pem)).root_certificates == pem
    with pytest.raises(ValueError, match="does not exist"):
        TlsOptions(root_certificates=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="together"):
        TlsOptions(private_key=pem)
    with pytest.raises(ValueError, match="together"):
        TlsOptions(certificate_chain=pem)


def test_transcribe_options_normalise_and_validate():
    assert TranscribeOptions(language="en").language == "English"
    assert TranscribeOptions(language="GERMAN").language == "German"
    assert TranscribeOptions(language="auto").language is None
    assert TranscribeOptions(context="").context is None
    for bad in (
        dict(language="Klingon"),
        dict(language=3),
        dict(context=b"x"),
        dict(timestamps="yes"),
        dict(max_new_tokens=0),
        dict(max_new_tokens=True),
        dict(max_new_tokens=1.5),
    ):
        with pytest.raises(ValueError):
            TranscribeOptions(**bad)


# ----------------------------------------------------------------------------- retry budget
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _error(status: str, message: str = "boom") -> InferenceServerException:
    return InferenceServerException(msg=message, status=f"StatusCode.{status}")


def test_unavailable_is_retried_with_growing_jittered_backoff():
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.5, max_backoff=3.0, multiplier=2.0)
    for rnd, expected in ((0.0, [0.25, 0.5, 1.0, 1.5]), (0.999999, [0.5, 1.0, 2.0, 3.0])):
        budget = CallBudget(policy, timeout=None, what="infer", clock=clock, rng=lambda r=rnd: r)
        delays = []
        for _ in range(4):
            budget.start_attempt()
            delays.append(budget.after_failure(_error("UNAVAILABLE")))
        np.testing.assert_allclose(delays, expected, rtol=1e-5)
        budget.start_attempt()
        with pytest.raises(ServerUnavailableError, match="gave up after 5 attempts"):
            budget.after_failure(_error("UNAVAILABLE"))


@pytest.mark.parametrize(
    ("status", "error"),
    [
        ("INVALID_ARGUMENT", InvalidRequestError),
        ("INTERNAL", Qwen3ASRError),
        ("NOT_FOUND", Qwen3ASRError),
        ("DEADLINE_EXCEEDED", DeadlineExceededError),
    ],
)
def test_other_statuses_are_never_retried(status, error):
    budget = CallBudget(RetryPolicy(max_attempts=10), timeout=30.0, what="infer", clock=FakeClock())
    budget.start_attempt()
    with pytest.raises(error) as info:
        budget.after_failure(_error(status, "could not decode AUDIO"))
    assert info.value.status == status
    assert not isinstance(info.value, ServerUnavailableError)


def test_a_server_being_restarted_is_retried_and_an_unknown_model_is_not():
    """A dead worker's INTERNAL "... is not healthy", and after a restart NOT_FOUND "... has no available
    versions" until the models are loaded: both pass, so they are retried as UNAVAILABLE; "... is not found"
    (no such model) is final."""
    budget = CallBudget(RetryPolicy(max_attempts=10), timeout=30.0, what="infer", clock=FakeClock())
    budget.start_attempt()
    loading = _error("NOT_FOUND", "Request for unknown model: 'qwen3_asr' has no available versions")
    assert budget.after_failure(loading) > 0
    budget.start_attempt()
    assert budget.after_failure(_error("INTERNAL", "Stub process 'qwen3_asr_0_1' is not healthy.")) > 0
    budget.start_attempt()
    with pytest.raises(Qwen3ASRError) as info:
        budget.after_failure(_error("NOT_FOUND", "Request for unknown model: 'qwen3_asr_x' is not found"))
    assert info.value.status == "NOT_FOUND"


def test_backoff_never_runs_past_the_deadline():
    clock = FakeClock()
    budget = CallBudget(
        RetryPolicy(max_attempts=100, initial_backoff=1.0, max_backoff=1.0), 2.5, "infer", clock, lambda: 0.999
    )
    waited = 0.0
    with pytest.raises(ServerUnavailableError, match=r"2\.5 s deadline"):
        while True:
            assert budget.start_attempt() == pytest.approx(2.5 - waited)
            delay = budget.after_failure(_error("UNAVAILABLE"))
            clock.now += delay
            waited += delay
    assert waited <= 2.5
    assert budget.attempts == 3


# ----------------------------------------------------------------------------- wire
def test_waveforms_become_mono_float32_in_range():
    stereo16 = np.array([[32767, -32768], [16384, 16384]], dtype=np.int16)
    np.testing.assert_allclose(waveform_to_float32(stereo16), [(32767 - 32768) / 2 / 32768, 0.5], atol=1e-6)
    mono = waveform_to_float32(np.linspace(-1, 1, 5))
    assert mono.dtype == np.float32 and mono.shape == (5,)
    with pytest.raises(ValueError, match="samples"):
        waveform_to_float32(np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        waveform_to_float32(np.zeros((2, 2, 2), dtype=np.float32))


def test_audio_inputs_choose_the_right_tensors(tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF....")
    for source in (path, str(path), b"RIFF....", bytearray(b"RIFF....")):
        tensors = audio_inputs(source)
        assert [t.name() for t in tensors] == ["AUDIO"]
        assert tensors[0].datatype() == "BYTES"
    tensors = audio_inputs(np.zeros(16000, np.float32), sample_rate=16000)
    assert [(t.name(), t.datatype(), t.shape()) for t in tensors] == [
        ("WAVEFORM", "FP32", [16000]),
        ("SAMPLE_RATE", "INT32", [1]),
    ]
    with pytest.raises(ValueError, match="sample_rate"):
        audio_inputs(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="sample_rate"):
        audio_inputs(b"x", sample_rate=16000)
    with pytest.raises(ValueError, match="audio must be"):
        audio_inputs(123)
    with pytest.raises(OSError):
        audio_inputs(tmp_path / "missing.wav")


def test_option_inputs_send_only_what_was_asked():
    assert option_inputs(TranscribeOptions()) == []
    tensors = option_inputs(TranscribeOptions(language="fr", context="Paris", timestamps=True, max_new_tokens=7))
    assert [(t.name(), t.datatype()) for t in tensors] == [
        ("LANGUAGE", "BYTES"),
        ("CONTEXT", "BYTES"),
        ("RETURN_TIMESTAMPS", "BOOL"),
        ("MAX_NEW_TOKENS", "INT32"),
    ]


class FakeResult:
    def __init__(self, **arrays: np.ndarray) -> None:
        self.arrays = arrays

    def as_numpy(self, name: str):
        return self.arrays.get(name)


def _strings(*values: str) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype=np.object_)


def test_parse_result_builds_typed_values_and_checks_lengths():
    arrays = dict(
        TEXT=_strings("hello world"),
        DETECTED_LANGUAGE=_strings("English"),
        TOKEN_IDS=np.array([1, 2], np.int32),
        CONFIDENCE=np.array([0.5], np.float32),
        WORDS=_strings("hello", "world"),
        WORD_START=np.array([0.1, 0.5], np.float32),
        WORD_END=np.array([0.4, 0.9], np.float32),
        SEGMENT_TEXT=_strings("hello world"),
        SEGMENT_START=np.array([0.0], np.float32),
        SEGMENT_END=np.array([1.25], np.float32),
    )
    result = parse_result(FakeResult(**arrays), "rid")
    assert result.text == "hello world" and result.language == "English"
    assert [(w.text, w.start, w.end) for w in result.words] == [("hello", 0.1, 0.4), ("world", 0.5, 0.9)]
    assert result.audio_seconds == 1.25 and result.token_ids == (1, 2) and result.request_id == "rid"
    assert parse_result(FakeResult(**{**arrays, "DETECTED_LANGUAGE": _strings("")})).language is None
    with pytest.raises(MalformedResponseError, match="WORDS"):
        parse_result(FakeResult(**{**arrays, "WORD_END": np.array([0.4], np.float32)}))
    with pytest.raises(MalformedResponseError, match="SEGMENT_TEXT"):
        parse_result(FakeResult(**{**arrays, "SEGMENT_START": np.array([], np.float32)}))
    with pytest.raises(MalformedResponseError, match="TEXT"):
        parse_result(FakeResult(**{k: v for k, v in arrays.items() if k != "TEXT"}))


# ----------------------------------------------------------------------------- inputs and summary
def test_expand_inputs_handles_files_dirs_globs_and_problems(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.wav", "d/sub/b.FLAC", "d/notes.txt", "c.mp3", "x.bin"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    files, problems = expand_inputs(
        [
            str(tmp_path / "d"),
            str(tmp_path / "*.mp3"),
            str(tmp_path / "d" / "a.wav"),  # a duplicate: kept once
            str(tmp_path / "x.bin"),  # an explicit file is taken whatever its extension
            str(tmp_path / "missing.wav"),
            str(tmp_path / "*.ogg"),
            str(tmp_path / "empty"),
        ]
    )
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["d/a.wav", "d/sub/b.FLAC", "c.mp3", "x.bin"]
    assert [(Path(p.spec).name, p.message) for p in problems] == [
        ("missing.wav", "no such file or directory"),
        ("*.ogg", "pattern matched no files"),
        ("empty", "directory holds no audio files"),
    ]


def test_output_paths_mirror_folders_and_avoid_collisions(tmp_path):
    files = [tmp_path / "in" / "a.wav", tmp_path / "in" / "a.mp3", tmp_path / "in" / "x" / "b.wav"]
    out = output_paths(files, tmp_path / "out", ".srt")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in out] == ["a.wav.srt", "a.mp3.srt", "x/b.srt"]
    assert len(set(out)) == len(out)


def test_summary_counts_and_real_time_factor():
    ok = Transcription("a", "English", 0.5, segments=(Segment("a", 0.0, 30.0),))
    outcomes = [
        FileOutcome(0, Path("a.wav"), ok),
        FileOutcome(1, Path("b.wav"), ok),
        FileOutcome(2, Path("c.wav"), None, "INVALID_ARGUMENT: bad"),
    ]
    summary = BatchSummary.of(outcomes, wall_seconds=6.0, extra_failures=1)
    assert (summary.files, summary.succeeded, summary.failed) == (4, 2, 2)
    assert summary.audio_seconds == 60.0 and summary.real_time_factor == pytest.approx(0.1)
    assert "4 files: 2 ok, 2 failed" in summary.describe() and "RTF 0.100" in summary.describe()
    assert BatchSummary.of([], 1.0).real_time_factor is None
