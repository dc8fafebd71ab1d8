"""The ``qwen3-asr`` console script against a real Triton server (and against none)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import srt
import webvtt

from qwen3_asr_triton.alignment import is_kept_char
from qwen3_asr_triton.client import ClientOptions, Qwen3ASRClient, TranscribeOptions
from qwen3_asr_triton.client.subtitles import MAX_CUE_SECONDS, MAX_LINE_WIDTH, MAX_LINES, display_width

pytestmark = pytest.mark.server

CLI = str(Path(sys.executable).with_name("qwen3-asr"))
REPO = Path(__file__).resolve().parents[1]
MAX_NEW_TOKENS = "24"
SUMMARY_RE = re.compile(r"(\d+) files?: (\d+) ok, (\d+) failed \| audio ([\d.]+) s \| wall ([\d.]+) s \| RTF")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "QWEN3_ASR_URL"}
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def summary(stderr: str) -> tuple[int, int, int, float]:
    match = SUMMARY_RE.search(stderr)
    assert match, stderr
    files, ok, failed, audio, _ = match.groups()
    return int(files), int(ok), int(failed), float(audio)


def kept(text: str) -> str:
    return "".join(c for c in text if is_kept_char(c))


def check_cues(starts_ends: list[tuple[float, float]], texts: list[str]) -> None:
    assert starts_ends, "no cues"
    previous = 0.0
    for (start, end), text in zip(starts_ends, texts):
        assert previous <= start < end and end - start <= MAX_CUE_SECONDS + 1e-6
        lines = text.split("\n")
        assert 1 <= len(lines) <= MAX_LINES and all(display_width(line) <= MAX_LINE_WIDTH for line in lines)
        previous = end


def parse_srt(text: str) -> tuple[list[tuple[float, float]], list[str]]:
    subs = list(srt.parse(text))
    return [(s.start.total_seconds(), s.end.total_seconds()) for s in subs], [s.content for s in subs]


def parse_vtt(text: str) -> tuple[list[tuple[float, float]], list[str]]:
    captions = webvtt.from_buffer(io.StringIO(text)).captions
    seconds = [
        tuple(
            sum(float(part) * 60**i for i, part in enumerate(reversed(stamp.split(":")))) for stamp in (c.start, c.end)
        )
        for c in captions
    ]
    unescaped = [c.text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") for c in captions]
    return seconds, unescaped


@pytest.fixture(scope="module")
def english(clips):
    return next(c for c in clips if c.name == "en_hello")


@pytest.fixture(scope="module")
def reference(triton_server, english):
    """The library's result for the English clip, to compare the CLI's output with."""
    with Qwen3ASRClient(ClientOptions(url=triton_server.grpc_url)) as client:
        options = TranscribeOptions(language="English", timestamps=True, max_new_tokens=int(MAX_NEW_TOKENS))
        return client.transcribe(english.path, options)


@pytest.mark.parametrize("fmt", ["txt", "json", "srt", "vtt"])
def test_every_format_on_stdout(triton_server, english, reference, fmt):
    args = ["transcribe", str(english.path), "--url", triton_server.grpc_url, "--format", fmt, "--language", "en"]
    done = run(*args, "--timestamps", "--max-new-tokens", MAX_NEW_TOKENS)
    assert done.returncode == 0, done.stderr
    assert summary(done.stderr)[:3] == (1, 1, 0)
    if fmt == "txt":
        assert done.stdout == reference.text + "\n"
    elif fmt == "json":
        data = json.loads(done.stdout)
        assert data["file"] == str(english.path)
        expected = reference.to_dict()
        assert {k: v for k, v in data.items() if k not in ("file", "request_id")} == {
            k: v for k, v in expected.items() if k != "request_id"
        }
    else:
        times, texts = (parse_srt if fmt == "srt" else parse_vtt)(done.stdout)
        check_cues(times, texts)
        assert kept("".join(texts)) == "".join(w.text for w in reference.words)
        assert times[0][0] == pytest.approx(reference.words[0].start, abs=1e-3)


def test_the_demo_command_prints_json_on_stdout(triton_server):
    sample = REPO / "tests" / "data" / "sample_en.wav"
    assert sample.is_file(), "tests/data/sample_en.wav is part of the repository"
    done = run("transcribe", str(sample), "--url", triton_server.grpc_url, "--timestamps", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # stdout holds the JSON and nothing else
    assert data["text"] and data["words"] and data["segments"] and data["audio_seconds"] > 0
    assert all(set(w) == {"text", "start", "end"} for w in data["words"])
    files, ok, failed, audio = summary(done.stderr)
    assert (files, ok, failed) == (1, 1, 0) and audio == pytest.approx(data["audio_seconds"], abs=0.05)


def test_many_files_to_an_output_dir_as_subtitles(triton_server, clips, tmp_path):
    inputs = tmp_path / "in"
    (inputs / "nested").mkdir(parents=True)
    chosen = [c for c in clips if c.spec.language not in ("Japanese", "Korean")]
    for i, clip in enumerate(chosen):
        shutil.copy(clip.path, (inputs / "nested" if i % 2 else inputs) / clip.path.name)
    total_audio = sum(c.waveform().size / 16000 for c in chosen)
    for fmt, parse in (("srt", parse_srt), ("vtt", parse_vtt)):
        out = tmp_path / f"out-{fmt}"
        done = run(
            "transcribe",
            str(inputs),
            "--url",
            triton_server.grpc_url,
            "--language",
            "English",
            "--timestamps",
            "--format",
            fmt,
            "--output-dir",
            str(out),
            "--concurrency",
            "3",
            "--max-new-tokens",
            MAX_NEW_TOKENS,
            "--progress",
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""
        files, ok, failed, audio = summary(done.stderr)
        assert (files, ok, failed) == (len(chosen), len(chosen), 0)
        assert audio == pytest.approx(total_audio, abs=0.1)
        written = sorted(p.relative_to(out).as_posix() for p in out.rglob(f"*.{fmt}"))
        expected = sorted(
            p.relative_to(inputs).with_suffix(f".{fmt}").as_posix() for p in inputs.rglob("*") if p.is_file()
        )
        assert written == expected
        for path in out.rglob(f"*.{fmt}"):
            times, texts = parse(path.read_text(encoding="utf-8"))
            check_cues(times, texts)


def test_json_lines_keep_input_order_under_concurrency(triton_server, clips):
    paths = [str(c.path) for c in sorted(clips, key=lambda c: -c.waveform().size)][:6]  # longest first
    done = run(
        "transcribe",
        *paths,
        "--url",
        triton_server.grpc_url,
        "--format",
        "json",
        "--concurrency",
        "6",
        "--max-new-tokens",
        MAX_NEW_TOKENS,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [json.loads(line)["file"] for line in lines] == paths
    done = run("transcribe", *paths[-2:], "--url", triton_server.grpc_url, "--max-new-tokens", MAX_NEW_TOKENS)
    assert done.returncode == 0, done.stderr
    headers = re.findall(r"^==> (.+) <==$", done.stdout, flags=re.MULTILINE)
    assert headers == paths[-2:]
    assert done.stdout.startswith(f"==> {paths[-2]} <==\n")


def test_a_bad_file_among_good_ones(triton_server, clips, tmp_path):
    good = [clips[0].path, clips[3].path]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 20)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.flac"
    out = tmp_path / "out"
    args = [str(good[0]), str(corrupt), str(missing), str(empty), str(good[1])]
    done = run("transcribe", *args, "--url", triton_server.grpc_url, "--output-dir", str(out), "--max-new-tokens", "8")
    assert done.returncode == 1
    assert summary(done.stderr)[:3] == (5, 2, 3)
    failed = dict(re.findall(r"FAILED (\S+): (.*)", done.stderr))
    assert set(failed) == {str(corrupt), str(missing), str(empty)}
    assert "INVALID_ARGUMENT" in failed[str(corrupt)] and "could not decode AUDIO" in failed[str(corrupt)]
    assert "AUDIO is empty" in failed[str(empty)]
    assert "no such file" in failed[str(missing)]
    assert sorted(p.name for p in out.rglob("*.txt")) == sorted(p.with_suffix(".txt").name for p in good)


def test_context_from_a_file_reaches_the_server(triton_server, clips, tmp_path):
    context = tmp_path / "glossary.txt"
    context.write_text("Triton <|im_end|>", encoding="utf-8")
    done = run("transcribe", str(clips[0].path), "--url", triton_server.grpc_url, "--context", f"@{context}")
    assert done.returncode == 1
    assert "control token" in done.stderr


def test_unreachable_server_is_reported_quickly():
    began = time.monotonic()
    done = run("transcribe", str(REPO / "pyproject.toml"), "--url", f"127.0.0.1:{closed_port()}", timeout=60)
    elapsed = time.monotonic() - began
    assert done.returncode == 1
    assert "unreachable" in done.stderr and "UNAVAILABLE" in done.stderr
    assert done.stdout == ""
    assert summary(done.stderr)[:3] == (1, 0, 1)
    assert elapsed < 15


def test_health_and_models(triton_server):
    done = run("health", "--url", triton_server.grpc_url)
    assert done.returncode == 0, done.stderr
    assert "model qwen3_asr ready: yes" in done.stdout and "2.51.0" in done.stdout
    data = json.loads(run("health", "--url", triton_server.grpc_url, "--json").stdout)
    assert data["ok"] is True and data["model_ready"] is True
    done = run("models", "--url", triton_server.grpc_url, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert {"name": "qwen3_asr", "version": "1", "state": "READY", "reason": ""} in data["models"]
    assert [t["name"] for t in data["metadata"]["inputs"]][:3] == ["AUDIO", "WAVEFORM", "SAMPLE_RATE"]
    text = run("models", "--url", triton_server.grpc_url).stdout
    assert re.search(r"qwen3_asr\s+version 1\s+READY", text) and "RETURN_TIMESTAMPS" in text
    missing = run("health", "--url", triton_server.grpc_url, "--model", "no_such_model")
    assert missing.returncode == 1 and "ready: NO" in missing.stdout
    began = time.monotonic()
    down = run("health", "--url", f"127.0.0.1:{closed_port()}", "--json")
    assert down.returncode == 1 and json.loads(down.stdout)["ok"] is False
    assert time.monotonic() - began < 15


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--language", "Klingon"], "unknown LANGUAGE"),
        (["--url", "http://127.0.0.1:8001"], "without a scheme"),
        (["--concurrency", "0"], "positive integer"),
        (["--concurrency", "257"], "at most 256 requests in flight"),
        (["--timeout", "-1"], "positive number"),
        (["--header", "no-colon"], "name: value"),
        (["--header", "x-a: line\x01break"], "printable ASCII"),
        (["--tls-ca", "/nonexistent/ca.pem"], "does not exist"),
        (["--format", "docx"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(args, message):
    done = run("transcribe", "a.wav", *args, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
