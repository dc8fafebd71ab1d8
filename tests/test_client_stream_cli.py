"""``qwen3-asr stream`` against a real Triton server (and against none)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwen3_asr_triton.client import ClientOptions, Qwen3ASRClient, TranscribeOptions

pytestmark = pytest.mark.server

CLI = str(Path(sys.executable).with_name("qwen3-asr"))
MAX_NEW_TOKENS = "24"
PARTIAL_LINE = re.compile(r"^\[ *\d+\.\d s\] ")
SUMMARY = re.compile(r"stream \d+: (\d+) chunks, (\d+) partials \| audio ([\d.]+) s")
# Fast enough to keep the tests short, slow enough that the chunks arrive spaced out and get partials.
PACED = ("--speed", "4", "--chunk-seconds", "0.5")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "QWEN3_ASR_URL"}


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "stream", *args], capture_output=True, text=True, timeout=timeout, env=env())


@pytest.fixture(scope="module")
def english(clips):
    return next(c for c in clips if c.name == "en_hello")


@pytest.fixture(scope="module")
def unary(triton_server, english):
    """The unary result for the clip, which the stream's final must equal."""
    with Qwen3ASRClient(ClientOptions(url=triton_server.grpc_url)) as client:
        return client.transcribe(english.path, TranscribeOptions(max_new_tokens=int(MAX_NEW_TOKENS)))


def test_txt_prints_a_line_per_partial_then_the_final(triton_server, english, unary):
    done = run(str(english.path), "--url", triton_server.grpc_url, *PACED, "--max-new-tokens", MAX_NEW_TOKENS)
    assert done.returncode == 0, done.stderr
    final = unary.text + "\n"
    assert done.stdout.endswith(final)
    partial_lines = done.stdout[: -len(final)].splitlines()
    assert partial_lines and all(PARTIAL_LINE.match(line) for line in partial_lines), done.stdout
    seconds = [float(line[1:].split(" s]")[0]) for line in partial_lines]
    assert seconds == sorted(seconds) and seconds[-1] <= unary.audio_seconds + 1e-3
    chunks, partials, audio = SUMMARY.search(done.stderr).groups()
    assert int(partials) == len(partial_lines) and int(chunks) == 8  # 3.6 s in 0.5 s chunks
    assert float(audio) == pytest.approx(unary.audio_seconds, abs=0.05)


def test_json_lines_tell_partials_from_the_final(triton_server, english, unary):
    args = [str(english.path), "--url", triton_server.grpc_url, *PACED, "--format", "json", "-q"]
    done = run(*args, "--max-new-tokens", MAX_NEW_TOKENS)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # -q: no summary
    events = [json.loads(line) for line in done.stdout.splitlines()]
    *partials, final = events
    assert partials and not any(p["is_final"] for p in partials)
    assert all(p["text"] is not None and p["latency"] > 0 for p in partials)
    assert [p["chunk"] for p in partials] == sorted({p["chunk"] for p in partials})
    assert final["is_final"] is True and final["file"] == str(english.path)
    assert final["token_ids"] == list(unary.token_ids) and final["text"] == unary.text
    assert final["segments"] == [s.to_dict() for s in unary.segments]


def test_on_a_terminal_the_partial_line_is_rewritten(triton_server, english, unary):
    controller, terminal = pty.openpty()
    args = [CLI, "stream", str(english.path), "--url", triton_server.grpc_url, *PACED, "--max-new-tokens", "24"]
    proc = subprocess.Popen(args, stdout=terminal, stderr=subprocess.PIPE, env=env())
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            output += data
        elif proc.poll() is not None:
            break
    os.close(controller)
    assert proc.wait(60) == 0, proc.stderr.read()
    text = output.decode("utf-8").replace("\r\n", "\n")  # the terminal turns "\n" into "\r\n"
    pieces = text.split("\r\x1b[K")
    assert len(pieces) >= 3, text  # at least one partial drawn, then erased before the final
    assert pieces[0] == "" and all(PARTIAL_LINE.match(p) and "\n" not in p for p in pieces[1:-1])
    assert pieces[-1] == unary.text + "\n"


@pytest.mark.parametrize(("content", "message"), [(None, "no such file"), (b"RIFF garbage" * 20, "could not decode")])
def test_unreadable_files_fail(triton_server, tmp_path, content, message):
    path = tmp_path / "input.wav"
    if content is not None:
        path.write_bytes(content)
    done = run(str(path), "--url", triton_server.grpc_url)
    assert done.returncode == 1
    assert f"FAILED {path}: " in done.stderr and message in done.stderr
    assert done.stdout == ""


def test_server_errors_fail_with_their_message(triton_server, english):
    done = run(str(english.path), "--url", triton_server.grpc_url, "--context", "Triton <|im_end|>", "--speed", "0")
    assert done.returncode == 1
    assert "INVALID_ARGUMENT" in done.stderr and "control token" in done.stderr
    missing = run(str(english.path), "--url", triton_server.grpc_url, "--model", "no_such_model")
    assert missing.returncode == 1 and "model no_such_model" in missing.stderr and "not ready" in missing.stderr


def test_unreachable_server_is_reported_quickly(english):
    began = time.monotonic()
    done = run(str(english.path), "--url", f"127.0.0.1:{closed_port()}", timeout=60)
    assert done.returncode == 1
    assert "unreachable" in done.stderr and "UNAVAILABLE" in done.stderr
    assert done.stdout == ""
    assert time.monotonic() - began < 15


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--language", "Klingon"], "unknown LANGUAGE"),
        (["--speed", "-1"], "speed factor >= 0"),
        (["--speed", "inf"], "finite"),
        (["--chunk-seconds", "0"], "positive number"),
        (["--chunk-seconds", "60"], "between 0.02 and 30"),
        (["--format", "srt"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(args, message):
    done = subprocess.run([CLI, "stream", "a.wav", *args], capture_output=True, text=True, timeout=60, env=env())
    assert done.returncode == 2
    assert message in done.stderr
