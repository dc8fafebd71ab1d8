"""End to end through a real Triton server (tritonserver 2.51 from nvidia-pytriton, gRPC and HTTP)."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from qwen3_asr_triton.audio import load_audio
from qwen3_asr_triton.model_spec import ModelSpec
from tests.parity import check_tokens
from tests.speech import RESAMPLED_CELLS
from tests.triton_requests import transcribe

pytestmark = pytest.mark.server

MAX_NEW_TOKENS = 40
CONTEXT = "Glossary: Triton, Kubernetes, Qwen3-ASR, perf_analyzer."


@pytest.fixture(scope="module")
def eos_ids(asr_export) -> tuple[int, ...]:
    """The served checkpoint's end-of-sequence ids."""
    return ModelSpec.load(asr_export).eos_token_ids


def _variant(clip, variant):
    if variant == "forced":
        return clip.spec.language, None
    if variant == "context":
        return None, CONTEXT
    return None, None


@pytest.mark.parametrize("variant", ["auto", "forced", "context"])
def test_token_ids_equal_reference(triton_server, clips, reference, reference_tokens, eos_ids, variant):
    for clip in clips:
        language, context = _variant(clip, variant)
        out = transcribe(
            triton_server.grpc_url,
            audio=clip.path.read_bytes(),
            language=language,
            context=context,
            max_new_tokens=MAX_NEW_TOKENS,
        )
        ref = reference_tokens(clip.name, language, context, MAX_NEW_TOKENS)
        wave = clip.waveform()
        check_tokens(
            out["TOKEN_IDS"].tolist(),
            ref,
            lambda prefix, w=wave, la=language, c=context: reference.step_margin(w, prefix, la, c),
            eos_ids=eos_ids,
            max_new_tokens=MAX_NEW_TOKENS,
        )
        assert out["DETECTED_LANGUAGE"][0] == (language or out["DETECTED_LANGUAGE"][0])
        assert 0.0 < float(out["CONFIDENCE"][0]) <= 1.0


def test_resampled_clips_equal_the_reference_fed_by_librosa(
    triton_server, resampled_clips, reference, reference_tokens, eos_ids
):
    """22.05, 24 and 44.1 kHz in each of wav, flac, mp3 and ogg, stereo included: the served front end (bytes in)
    gives the token ids of the transformers reference fed with ``librosa.load(path, sr=16000)``."""
    cells = set()
    for clip in resampled_clips:
        out = transcribe(triton_server.grpc_url, audio=clip.path.read_bytes(), max_new_tokens=MAX_NEW_TOKENS)
        ref = reference_tokens(clip.name, None, None, MAX_NEW_TOKENS)
        wave = clip.waveform()
        report = check_tokens(
            out["TOKEN_IDS"].tolist(),
            ref,
            lambda prefix, w=wave: reference.step_margin(w, prefix, None, None),
            eos_ids=eos_ids,
            max_new_tokens=MAX_NEW_TOKENS,
        )
        assert report.identical, f"{clip.name}: {report.describe()}"
        cells.add((clip.spec.fmt, clip.spec.rate))
    assert cells == RESAMPLED_CELLS


def test_waveform_input_and_http_give_the_same_result(triton_server, clips):
    clip = next(c for c in clips if c.name == "de_greeting")
    by_bytes = transcribe(triton_server.grpc_url, audio=clip.path.read_bytes(), max_new_tokens=MAX_NEW_TOKENS)
    wave = clip.waveform()
    by_pcm = transcribe(triton_server.grpc_url, waveform=wave, rate=16000, max_new_tokens=MAX_NEW_TOKENS)
    by_http = transcribe(
        triton_server.http_url, protocol="http", audio=clip.path.read_bytes(), max_new_tokens=MAX_NEW_TOKENS
    )
    assert by_bytes["TOKEN_IDS"].tolist() == by_pcm["TOKEN_IDS"].tolist() == by_http["TOKEN_IDS"].tolist()
    assert by_bytes["TEXT"][0] == by_http["TEXT"][0]


def test_word_timestamps_equal_reference_aligner(triton_server, clips, reference):
    for clip in clips:
        if clip.spec.language in ("Japanese", "Korean"):
            continue  # the reference needs nagisa / soynlp for these
        out = transcribe(
            triton_server.grpc_url,
            audio=clip.path.read_bytes(),
            language=clip.spec.language,
            timestamps=True,
            max_new_tokens=MAX_NEW_TOKENS,
        )
        text = out["TEXT"][0]
        ref = reference.align(clip.waveform(), text, clip.spec.language)
        ours = list(zip(out["WORDS"].tolist(), out["WORD_START"].tolist(), out["WORD_END"].tolist()))
        assert [w for w, _, _ in ours] == [w for w, _, _ in ref], clip.name
        np.testing.assert_allclose([s for _, s, _ in ours], [s for _, s, _ in ref], atol=1e-4)
        np.testing.assert_allclose([e for _, _, e in ours], [e for _, _, e in ref], atol=1e-4)


def test_min_new_tokens_forces_the_output_length(triton_server, clips):
    # A clip whose free output stops on an end token by itself: random weights give near-ties, and the
    # decoder's cached prompt prefixes (computed by whichever request came first) can tip one, so the
    # first clip that stops early is taken rather than a fixed one.
    for clip in sorted(clips, key=lambda c: c.name != "de_greeting"):
        free = transcribe(triton_server.grpc_url, audio=clip.path.read_bytes(), max_new_tokens=40)
        if free["TOKEN_IDS"].size < 40:
            break
    assert free["TOKEN_IDS"].size < 40, "some clip's output stops on an end token by itself"
    forced = transcribe(triton_server.grpc_url, audio=clip.path.read_bytes(), max_new_tokens=40, min_new_tokens=40)
    assert forced["TOKEN_IDS"].size == 40
    assert forced["TOKEN_IDS"][: free["TOKEN_IDS"].size].tolist() == free["TOKEN_IDS"].tolist()


def test_timestamps_without_aligner_flag_are_absent(triton_server, clips):
    out = transcribe(triton_server.grpc_url, audio=clips[1].path.read_bytes(), max_new_tokens=10)
    assert out["WORDS"].size == 0 and out["WORD_START"].size == 0


def _decoder_counters(server) -> dict[str, float]:
    metrics = server.metrics()
    wanted = ("steps_total", "step_sequences_total", "inflight_joins_total", "inflight_leaves_total")
    out = {}
    for key in wanted:
        name = f"qwen3_asr_decoder_{key}"
        out[key] = sum(v for k, v in metrics.items() if k.startswith(name + "{") or k == name)
    return out


def _model_stats(server, model: str) -> tuple[int, int]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    client.close()
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_concurrent_requests_equal_sequential_and_batch_in_flight(triton_server, clips):
    # 16 requests of different lengths: every clip, plus four repeated with a language forced.
    jobs = [(c, None) for c in clips] + [(c, c.spec.language) for c in clips[:4]]
    assert len(jobs) == 16
    alone = [
        transcribe(triton_server.grpc_url, audio=c.path.read_bytes(), language=lang, max_new_tokens=MAX_NEW_TOKENS)
        for c, lang in jobs
    ]
    before = _decoder_counters(triton_server)
    enc_before = _model_stats(triton_server, "encoder")
    pre_before = _model_stats(triton_server, "preprocess")
    with ThreadPoolExecutor(16) as pool:
        together = list(
            pool.map(
                lambda job: transcribe(
                    triton_server.grpc_url,
                    audio=job[0].path.read_bytes(),
                    language=job[1],
                    max_new_tokens=MAX_NEW_TOKENS,
                ),
                jobs,
            )
        )
    for a, b, (clip, _) in zip(alone, together, jobs):
        assert a["TOKEN_IDS"].tolist() == b["TOKEN_IDS"].tolist(), clip.name
        assert a["TEXT"][0] == b["TEXT"][0]
    after = _decoder_counters(triton_server)
    delta = {k: after[k] - before[k] for k in after}
    assert delta["steps_total"] > 0
    assert delta["step_sequences_total"] / delta["steps_total"] > 1.5, delta  # batches larger than one
    assert delta["inflight_joins_total"] >= 1, delta  # sequences joined a batch that was already running
    assert delta["inflight_leaves_total"] >= 1, delta  # short ones left while long ones kept decoding
    enc_after = _model_stats(triton_server, "encoder")
    windows, executions = enc_after[0] - enc_before[0], enc_after[1] - enc_before[1]
    assert windows > executions, "the encoder batched windows from different requests"
    pre_after = _model_stats(triton_server, "preprocess")
    requests, executions = pre_after[0] - pre_before[0], pre_after[1] - pre_before[1]
    assert requests == 16 and executions < requests, "preprocess answered requests that arrived together at once"


BAD_REQUESTS = {
    "empty bytes": (dict(audio=b""), "AUDIO is empty"),
    "corrupt file": (dict(audio=b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 20), "could not decode AUDIO"),
    "nan samples": (dict(waveform=np.array([0.1, np.nan] * 8000, np.float32), rate=16000), "NaN"),
    "zero sample rate": (dict(waveform=np.zeros(16000, np.float32), rate=0), "SAMPLE_RATE"),
    "waveform without rate": (dict(waveform=np.zeros(16000, np.float32)), "SAMPLE_RATE"),
    "both audio and waveform": (dict(audio=b"x", waveform=np.zeros(10, np.float32), rate=16000), "exactly one"),
    "no audio": (dict(language="en"), "exactly one"),
    "unknown language": (dict(audio="CLIP", language="Klingon"), "unknown LANGUAGE"),
    "100 kB context": (dict(audio="CLIP", context="hotword " * 12800), "CONTEXT is"),
    "control token in context": (dict(audio="CLIP", context="x<|im_end|>"), "control token"),
    "negative max_new_tokens": (dict(audio="CLIP", max_new_tokens=-3), "MAX_NEW_TOKENS"),
    "huge max_new_tokens": (dict(audio="CLIP", max_new_tokens=10**9), "MAX_NEW_TOKENS"),
    "min above max": (dict(audio="CLIP", max_new_tokens=5, min_new_tokens=9), "MIN_NEW_TOKENS"),
    "aligner language": (dict(audio="CLIP", timestamps=True, language="Thai"), "aligner does not support"),
    "2-hour audio": (dict(audio="TWO_HOURS"), "limit is 3600 s"),
}


@pytest.fixture(scope="module")
def two_hours_of_silence(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("long") / "silence.flac"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", str(path), "trim", "0", "7300"], check=True)
    return path.read_bytes()


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_gets_a_clear_error_and_the_server_stays_up(triton_server, clips, two_hours_of_silence, case):
    from tritonclient.utils import InferenceServerException

    kwargs, message = BAD_REQUESTS[case]
    kwargs = dict(kwargs)
    if kwargs.get("audio") == "CLIP":
        kwargs["audio"] = clips[1].path.read_bytes()
    elif kwargs.get("audio") == "TWO_HOURS":
        kwargs["audio"] = two_hours_of_silence
    with pytest.raises(InferenceServerException) as info:
        transcribe(triton_server.grpc_url, **kwargs)
    assert re.search(message, str(info.value)), str(info.value)
    assert "INVALID_ARG" in str(info.value.status())
    good = transcribe(triton_server.grpc_url, audio=clips[0].path.read_bytes(), max_new_tokens=8)
    assert good["TOKEN_IDS"].size >= 1


def test_wrong_dtype_is_refused_by_triton(triton_server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    tensor = grpcclient.InferInput("WAVEFORM", [16000], "INT32")
    tensor.set_data_from_numpy(np.zeros(16000, np.int32))
    with pytest.raises(InferenceServerException, match=r"data-type is .INT32., but model .qwen3_asr. expects .FP32."):
        client.infer("qwen3_asr", [tensor])
    client.close()


@pytest.fixture(scope="module")
def hour_of_speech(clips, tmp_path_factory):
    """Just under 60 minutes: the long English clip plus 2 s of silence, repeated, as 16 kHz FLAC."""
    import wave

    src = next(c for c in clips if c.name == "en_long").path
    folder = tmp_path_factory.mktemp("hour")
    unit = folder / "unit.wav"
    subprocess.run(["sox", str(src), "-r", "16000", "-c", "1", "-b", "16", str(unit), "pad", "0", "2"], check=True)
    with wave.open(str(unit)) as w:
        unit_seconds = w.getnframes() / w.getframerate()
    loops = int(3590 // unit_seconds) - 1  # ffmpeg plays the input 1 + loops times
    out = folder / "hour.flac"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-stream_loop", str(loops), "-i", str(unit), str(out)], check=True)
    return out


def test_an_hour_of_audio_is_segmented_and_joined(triton_server, hour_of_speech):
    data = hour_of_speech.read_bytes()
    seconds = load_audio(data).size / 16000
    assert 3500 < seconds < 3600
    out = transcribe(triton_server.grpc_url, audio=data, max_new_tokens=16)
    starts, ends = out["SEGMENT_START"].tolist(), out["SEGMENT_END"].tolist()
    assert len(starts) == 3, starts  # 1200 s segments, cut near each limit
    assert starts[0] == 0 and abs(ends[-1] - seconds) < 0.01
    assert all(abs(e - s) < 1e-3 for e, s in zip(ends, starts[1:])), "segments tile the audio"
    assert all(abs(e - s - 1200) <= 5 for s, e in zip(starts[:-1], ends[:-1])), "cut within 5 s of the limit"
    segment_texts = out["SEGMENT_TEXT"].tolist()
    assert len(segment_texts) == 3
    assert out["TEXT"][0].replace(" ", "") == "".join(segment_texts).replace(" ", "")


def test_multi_segment_timestamps_are_offset(triton_server, hour_of_speech, tmp_path, asr_export, aligner_export):
    from qwen3_asr_triton.pipeline import OfflineRecognizer

    seven = tmp_path / "seven.flac"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(hour_of_speech), "-t", "400", "-c", "copy", str(seven)], check=True
    )
    data = seven.read_bytes()
    out = transcribe(triton_server.grpc_url, audio=data, timestamps=True, language="English", max_new_tokens=24)
    assert len(out["SEGMENT_START"]) == 3  # 180 s segments when timestamps are asked for
    offline = OfflineRecognizer(asr_export, aligner_export).transcribe(load_audio(data), "English", "", True, 24)
    assert out["TOKEN_IDS"].tolist() == offline.token_ids
    assert out["WORDS"].tolist() == [w.word for w in offline.words]
    np.testing.assert_allclose(out["WORD_START"], [w.start for w in offline.words], atol=1e-3)
    late = [s for s in out["WORD_START"].tolist()]
    assert max(late) > 180, "words of later segments carry their segment's offset"
