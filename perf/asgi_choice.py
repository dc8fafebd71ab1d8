"""Starlette or FastAPI for the OpenAI-compatible gateway: the same two routes in each, measured in one run.

    python perf/asgi_choice.py            # 6 rounds, c1 and c8, results in perf/results/asgi-choice (~1-2 min)
    python perf/asgi_choice.py --quick    # 2 short rounds, results in a temporary folder (< 1 min)

Two minimal apps do the gateway's per-request work minus Triton:

- ``starlette``: plain Starlette as ``gateway/`` does it: a ``Route``, the multipart body parsed
  as it streams in (python-multipart's ``MultipartParser``) and refused as soon as it passes the
  byte limit (Content-Length checked before reading, every chunk counted), the 4 form fields
  checked by hand, a ``JSONResponse``;
- ``fastapi``: idiomatic FastAPI: ``UploadFile`` / ``File()`` and ``Form()`` parameters (Annotated),
  pydantic response models, the size checked on the parsed ``UploadFile``.

Routes: ``POST /v1/audio/transcriptions`` (a ~1 MB WAV and 4 form fields in, a small JSON out) and
``GET /health`` (JSON). Each app runs under uvicorn in its own subprocess on 127.0.0.1 with the
gateway's uvicorn settings (``gateway/cli.py``: h11, one worker, no websockets...); this process is
the client (httpx, one keep-alive pool per app), a closed loop at concurrency 1 and 8. The apps take
turns round by round (ABBA) so that the shared machine's load drifts over both alike.

Recorded: latency median and p90 per route and level, requests/s, the server's CPU time per request,
its RSS after start-up and after the run (and its peak), the import time of each app (framework
import plus building the app, in a fresh interpreter, alternating), the installed size of the
distributions FastAPI adds to the gateway's, and the over-limit probe: a chunked (then a
Content-Length) 8 MB upload against a 2 MB limit, with the bytes the app had read from the body
when it answered (counted by an ASGI wrapper around both apps, in separate probe servers).
"""

import argparse
import asyncio
import importlib.metadata
import json
import logging
import math
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

logger = logging.getLogger("asgi_choice")

APPS = ("starlette", "fastapi")
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
HEALTH_PATH = "/health"
ROUTES = ("upload", "health")
# The gateway's default --max-file-bytes (gateway/options.py) and its allowance for the form's
# fields, part headers and boundaries (gateway/upload.py FORM_OVERHEAD_BYTES).
DEFAULT_MAX_FILE_BYTES = 25 * 1024 * 1024
FORM_OVERHEAD_BYTES = 256 * 1024
MAX_FIELD_BYTES = 64 * 1024
# The upload: 16 kHz mono 16-bit PCM, 31.25 s = 1,000,000 bytes of samples (+ 44 of header). It stays
# under Starlette's 1 MiB spool threshold, so FastAPI's UploadFile keeps it in memory as the gateway does.
SAMPLE_RATE = 16000
WAV_SAMPLES = 500_000
# The four form fields OpenAI's SDK sends for a plain transcription.
FIELDS = {"model": "qwen3-asr", "language": "en", "response_format": "json", "temperature": "0"}
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
# Over-limit probe: an 8 MB file part against a 2 MB limit, sent in 64 KiB pieces.
PROBE_LIMIT_BYTES = 2 * 1024 * 1024
PROBE_FILE_BYTES = 8 * 1024 * 1024
PROBE_PIECE_BYTES = 64 * 1024
PROBE_HEADER = "x-body-bytes-read"
# uvicorn as gateway/cli.py runs it (64 = its MIN_CONNECTIONS, 16 KiB its MAX_HEADER_BYTES).
UVICORN_SETTINGS: dict[str, Any] = {
    "http": "h11",
    "ws": "none",
    "lifespan": "on",
    "limit_concurrency": 64,
    "h11_max_incomplete_event_size": 16 * 1024,
    "timeout_keep_alive": 5,
    "server_header": False,
    "log_level": "warning",
}
LEVELS = (1, 8)
# Requests per (app, route, level) and round; the health route is cheaper, it gets twice as many.
FULL = {"rounds": 6, "upload": 100, "health": 200, "warmup": 20, "import_repeats": 7}
QUICK = {"rounds": 2, "upload": 20, "health": 40, "warmup": 5, "import_repeats": 3}
DEFAULT_OUTPUT = REPO / "perf" / "results" / "asgi-choice"
QUICK_OUTPUT = Path(tempfile.gettempdir()) / "asgi-choice-quick"
# What the gateway installs (pyproject.toml, extra "gateway"); FastAPI's extra cost is its closure minus this one's.
GATEWAY_DISTRIBUTIONS = ("starlette", "uvicorn", "python-multipart", "prometheus-client")
REQUEST_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0
MS = 1000.0
MIB = 1024 * 1024
PCT_TAIL = 90


# ----------------------------------------------------------------------------- shared request logic
def error_body(message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error shape, as gateway/errors.py answers it."""
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def too_large_body(max_file_bytes: int) -> dict:
    return error_body(f"the audio file is larger than the limit of {max_file_bytes} bytes", "file", "file_too_large")


def answer(size: int, model: str, language: str | None, response_format: str, temperature: float) -> dict:
    """The small JSON both apps return for an accepted upload."""
    return {"text": "", "model": model, "language": language, "bytes": size, "temperature": temperature}


# ----------------------------------------------------------------------------- the Starlette app
class _TooLargeError(Exception):
    pass


class _FormError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class _Collector:
    """python-multipart callbacks: the file and the fields, bounded (gateway/upload.py's, condensed)."""

    def __init__(self, max_file_bytes: int, parse_options_header: Callable) -> None:
        self.max_file_bytes = max_file_bytes
        self.parse_options_header = parse_options_header
        self.file: bytes | None = None
        self.fields: dict[str, str] = {}
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition: bytes | None = None
        self._name: str | None = None
        self._is_file = False
        self._size = 0
        self._data = bytearray()

    def on_part_begin(self) -> None:
        self._disposition, self._name, self._is_file, self._size, self._data = None, None, False, 0, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, params = self.parse_options_header(self._disposition)
        name = params.get(b"name")
        if name is None:
            raise _FormError("every part of the form needs a Content-Disposition name")
        self._name = name.decode("utf-8")
        self._is_file = self._name == "file"

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._is_file and self._size > self.max_file_bytes:
            raise _TooLargeError
        if not self._is_file and self._size > MAX_FIELD_BYTES:
            raise _FormError(f"field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes", self._name)
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._name is None:
            return
        if self._is_file:
            self.file = bytes(self._data)
        else:
            self.fields[self._name] = self._data.decode("utf-8")
        self._name, self._data = None, bytearray()

    def on_end(self) -> None:
        self.ended = True

    def callbacks(self) -> dict:
        names = ("part_begin", "part_data", "part_end", "header_field", "header_value", "header_end")
        callbacks = {f"on_{name}": getattr(self, f"on_{name}") for name in names}
        callbacks["on_headers_finished"] = self.on_headers_finished
        callbacks["on_end"] = self.on_end
        return callbacks


def _checked_fields(fields: dict[str, str]) -> tuple[str, str | None, str, float]:
    """The 4 fields, validated by hand as gateway/params.py does (raises _FormError)."""
    model = fields.get("model")
    if not model:
        raise _FormError("you must provide a model parameter", "model")
    response_format = fields.get("response_format", "json")
    if response_format not in RESPONSE_FORMATS:
        raise _FormError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", "response_format")
    try:
        temperature = float(fields.get("temperature", "0"))
    except ValueError:
        raise _FormError("temperature must be a number", "temperature") from None
    if not 0.0 <= temperature <= 1.0:
        raise _FormError("temperature must be between 0 and 1", "temperature")
    return model, fields.get("language") or None, response_format, temperature


def starlette_app(max_file_bytes: int = DEFAULT_MAX_FILE_BYTES):
    """The gateway's way: a Route reading ``request.stream()`` through a bounded streaming parser."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    limit = max_file_bytes + FORM_OVERHEAD_BYTES

    async def transcribe(request: Request) -> Response:
        content_type, params = parse_options_header(request.headers.get("content-type"))
        boundary = params.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            return JSONResponse(error_body("the request body must be multipart/form-data"), status_code=400)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return JSONResponse(too_large_body(max_file_bytes), status_code=400)  # refused unread
        collector = _Collector(max_file_bytes, parse_options_header)
        parser = MultipartParser(boundary, collector.callbacks())
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise _TooLargeError
                parser.write(chunk)
            parser.finalize()
            if not collector.ended or collector.file is None:
                raise _FormError("you must provide a complete form with a file", "file")
            model, language, response_format, temperature = _checked_fields(collector.fields)
        except _TooLargeError:
            return JSONResponse(too_large_body(max_file_bytes), status_code=400)
        except _FormError as exc:
            return JSONResponse(error_body(str(exc), exc.param), status_code=400)
        except FormParserError:
            return JSONResponse(error_body("the multipart/form-data body is malformed"), status_code=400)
        return JSONResponse(answer(len(collector.file), model, language, response_format, temperature))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route(TRANSCRIPTIONS_PATH, transcribe, methods=["POST"]),
        Route(HEALTH_PATH, health, methods=["GET"]),
    ]
    return Starlette(routes=routes)


# ----------------------------------------------------------------------------- the FastAPI app
def fastapi_app(max_file_bytes: int = DEFAULT_MAX_FILE_BYTES):
    """The idiomatic FastAPI way: UploadFile / Form parameters, pydantic response models.

    (Annotated parameters, FastAPI's recommended spelling of ``file: UploadFile = File(...)``.)
    """
    from typing import Annotated, Literal

    from fastapi import FastAPI, File, Form, UploadFile
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel

    class Transcription(BaseModel):
        text: str
        model: str
        language: str | None
        bytes: int
        temperature: float

    class Health(BaseModel):
        status: str

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post(TRANSCRIPTIONS_PATH, response_model=Transcription)
    async def transcribe(
        file: Annotated[UploadFile, File()],
        model: Annotated[str, Form(min_length=1)],
        language: Annotated[str | None, Form()] = None,
        response_format: Annotated[Literal["json", "text", "srt", "vtt", "verbose_json"], Form()] = "json",
        temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    ) -> Any:
        if file.size is not None and file.size > max_file_bytes:  # the whole form is parsed by now
            return JSONResponse(too_large_body(max_file_bytes), status_code=400)
        data = await file.read()
        return Transcription(**answer(len(data), model, language, response_format, temperature))

    @app.get(HEALTH_PATH, response_model=Health)
    async def health() -> Health:
        return Health(status="ok")

    return app


FACTORIES = {"starlette": starlette_app, "fastapi": fastapi_app}


class BodyByteCounter:
    """ASGI wrapper (probe servers only): the body bytes the app had read when it answered, as a header."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        read = 0

        async def counting_receive() -> dict:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
            return message

        async def tagging_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (PROBE_HEADER.encode(), str(read).encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, counting_receive, tagging_send)


def serve(kind: str, port: int, max_file_bytes: int, probe: bool) -> None:
    """Run one app under uvicorn in this process (the server subprocess)."""
    import uvicorn

    app = FACTORIES[kind](max_file_bytes)
    uvicorn.run(BodyByteCounter(app) if probe else app, host="127.0.0.1", port=port, **UVICORN_SETTINGS)


# ----------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One app's uvicorn subprocess."""

    def __init__(self, kind: str, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, probe: bool = False) -> None:
        self.kind = kind
        self.port = free_port()
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", str(self.port)]
        command += ["--max-file-bytes", str(max_file_bytes)] + (["--probe"] if probe else [])
        self.proc = subprocess.Popen(command, cwd=REPO)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> float:
        """Seconds from spawn until /health answered."""
        start = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.kind} server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return time.perf_counter() - start
            except OSError:
                if time.perf_counter() - start > START_TIMEOUT_S:
                    raise RuntimeError(f"the {self.kind} server did not start") from None
                time.sleep(0.05)

    def memory(self) -> dict[str, float | None]:
        """Resident set now and its peak (VmRSS / VmHWM), MiB."""
        out: dict[str, float | None] = {"rss_mib": None, "peak_rss_mib": None}
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out["rss_mib"] = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    out["peak_rss_mib"] = int(line.split()[1]) / 1024
        except (OSError, ValueError):
            pass
        return out

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----------------------------------------------------------------------------- client
def make_wav() -> bytes:
    """A 16 kHz mono 16-bit WAV of WAV_SAMPLES samples (a quiet 440 Hz tone)."""
    import io

    frames = bytearray()
    for i in range(WAV_SAMPLES):
        frames += int(3000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)).to_bytes(2, "little", signed=True)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(bytes(frames))
    return buffer.getvalue()


async def run_level(client: Any, route: str, wav: bytes, concurrency: int, requests: int) -> dict:
    """``requests`` requests on one route, ``concurrency`` in flight (closed loop); latencies and wall time."""
    latencies: list[float] = []
    errors: list[str] = []
    remaining = iter(range(requests))

    async def one() -> None:
        t0 = time.perf_counter()
        if route == "upload":
            response = await client.post(
                TRANSCRIPTIONS_PATH, data=FIELDS, files={"file": ("clip.wav", wav, "audio/wav")}
            )
            ok = response.status_code == 200 and response.json().get("bytes") == len(wav)
        else:
            response = await client.get(HEALTH_PATH)
            ok = response.status_code == 200 and response.json() == {"status": "ok"}
        elapsed = round(time.perf_counter() - t0, 6)
        if ok:
            latencies.append(elapsed)
        else:
            errors.append(f"HTTP {response.status_code}: {response.text[:200]}")

    async def worker() -> None:
        for _ in remaining:
            try:
                await one()
            except Exception as exc:  # a failed request is a result
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"wall_s": time.perf_counter() - start, "latencies_s": latencies, "errors": errors}


def percentile(values: list[float], pct: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def run_load(servers: dict[str, Server], wav: bytes, plan: dict) -> dict:
    """Every round: each app (order alternating) at each level on each route. Raw results per app/route/level."""
    import httpx

    clients = {
        kind: httpx.AsyncClient(
            base_url=server.url,
            timeout=REQUEST_TIMEOUT_S,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        for kind, server in servers.items()
    }
    raw: dict[str, dict] = {
        kind: {route: {str(c): {"rounds": []} for c in LEVELS} for route in ROUTES} for kind in servers
    }
    try:
        for kind in servers:  # warm-up: connections opened, code paths run once
            for route in ROUTES:
                await run_level(clients[kind], route, wav, max(LEVELS), plan["warmup"])
        for round_index in range(plan["rounds"]):
            order = list(servers) if round_index % 2 == 0 else list(servers)[::-1]
            for kind in order:
                for concurrency in LEVELS:
                    for route in ROUTES:
                        cpu0 = servers[kind].cpu_s()
                        level = await run_level(clients[kind], route, wav, concurrency, plan[route])
                        level["server_cpu_s"] = servers[kind].cpu_s() - cpu0
                        raw[kind][route][str(concurrency)]["rounds"].append(level)
                        logger.info(
                            "round %d %s %s c%d: p50 %.2f ms, %.0f req/s",
                            round_index + 1,
                            kind,
                            route,
                            concurrency,
                            MS * (percentile(level["latencies_s"], 50) or math.nan),
                            len(level["latencies_s"]) / level["wall_s"],
                        )
    finally:
        for client in clients.values():
            await client.aclose()
    return raw


def summarize(raw: dict) -> dict:
    """Median / p90 / mean latency, requests/s, server CPU per request, per app/route/level."""
    out: dict[str, dict] = {}
    for kind, routes in raw.items():
        for route, levels in routes.items():
            for level, data in levels.items():
                rounds = data["rounds"]
                latencies = [x for r in rounds for x in r["latencies_s"]]
                wall = sum(r["wall_s"] for r in rounds)
                cpu = sum(r["server_cpu_s"] for r in rounds)
                out.setdefault(kind, {}).setdefault(route, {})[level] = {
                    "requests": len(latencies),
                    "errors": sum(len(r["errors"]) for r in rounds),
                    "first_error": next((r["errors"][0] for r in rounds if r["errors"]), None),
                    "p50_ms": MS * percentile(latencies, 50) if latencies else None,
                    f"p{PCT_TAIL}_ms": MS * percentile(latencies, PCT_TAIL) if latencies else None,
                    "mean_ms": MS * statistics.fmean(latencies) if latencies else None,
                    "requests_per_s": len(latencies) / wall if wall else None,
                    "server_cpu_ms_per_request": MS * cpu / len(latencies) if latencies else None,
                    "p50_ms_per_round": [MS * (percentile(r["latencies_s"], 50) or math.nan) for r in rounds],
                    "requests_per_s_per_round": [len(r["latencies_s"]) / r["wall_s"] for r in rounds],
                }
    return out


# ----------------------------------------------------------------------------- over-limit probe
def _multipart_head(boundary: str) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in FIELDS.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    )
    return "".join(parts).encode()


def probe_upload(port: int, chunked: bool, file_bytes: int = PROBE_FILE_BYTES) -> dict:
    """Send a ``file_bytes`` upload (chunked or with Content-Length) until the server answers; what happened.

    The client stops sending as soon as the answer is readable. ``body_bytes_read_by_app`` is the
    server-side count (the probe wrapper's header); ``client_bytes_sent`` includes what sat in the
    kernel's socket buffers.
    """
    boundary = "asgichoiceprobe"
    head, tail = _multipart_head(boundary), f"\r\n--{boundary}--\r\n".encode()
    piece = b"\0" * PROBE_PIECE_BYTES
    pieces = [head] + [piece] * (file_bytes // PROBE_PIECE_BYTES) + [tail]
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {sum(map(len, pieces))}"
    request = (
        f"POST {TRANSCRIPTIONS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n\r\n"
    ).encode()
    frames = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces] + [b"0\r\n\r\n"] if chunked else pieces
    sock = socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_S)
    start = time.perf_counter()
    sent = 0
    stopped = "sent everything"
    try:
        sock.sendall(request)
        sock.setblocking(False)
        for frame in frames:
            view = memoryview(frame)
            while view:
                readable, writable, _ = select.select([sock], [sock], [], REQUEST_TIMEOUT_S)
                if readable:
                    stopped = "the answer came"
                    break
                if writable:
                    try:
                        n = sock.send(view)
                    except (BrokenPipeError, ConnectionResetError):
                        stopped = "the server closed the connection"
                        break
                    view = view[n:]
                    sent += n
            if stopped != "sent everything":
                break
        sock.setblocking(True)
        sock.settimeout(REQUEST_TIMEOUT_S)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        elapsed = time.perf_counter() - start
        header_text, _, body = data.partition(b"\r\n\r\n")
        lines = header_text.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    finally:
        sock.close()
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else None
    read = headers.get(PROBE_HEADER)
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    return {
        "framing": "chunked" if chunked else "content-length",
        "file_bytes": file_bytes,
        "body_bytes": sum(map(len, pieces)),
        "status": status,
        "error_code": code,
        "body_bytes_read_by_app": int(read) if read is not None else None,
        "client_bytes_sent": sent,
        "client_stopped_because": stopped,
        "answer_after_ms": MS * elapsed,
    }


def probe_invalid_field(url: str, wav: bytes) -> dict:
    """A temperature out of range: the status and the error's shape each app answers with."""
    import httpx

    fields = {**FIELDS, "temperature": "5"}
    response = httpx.post(
        url + TRANSCRIPTIONS_PATH, data=fields, files={"file": ("clip.wav", wav, "audio/wav")}, timeout=30
    )
    return {"status": response.status_code, "body": response.text[:300]}


def run_probes(wav: bytes) -> dict:
    """Over-limit uploads (chunked, then Content-Length) and one invalid field, against probe servers."""
    out: dict[str, dict] = {}
    for kind in APPS:
        server = Server(kind, max_file_bytes=PROBE_LIMIT_BYTES, probe=True)
        try:
            server.wait_ready()
            out[kind] = {
                "over_limit": [probe_upload(server.port, chunked=True), probe_upload(server.port, chunked=False)],
                "invalid_field": probe_invalid_field(server.url, wav),
            }
        finally:
            server.stop()
        logger.info("probe %s: %s", kind, out[kind])
    return out


# ----------------------------------------------------------------------------- imports and install size
IMPORT_SNIPPET = (
    "import sys, time; import perf.asgi_choice as m; n = len(sys.modules); t = time.perf_counter(); "
    "m.{kind}_app(); print(time.perf_counter() - t, len(sys.modules) - n)"
)


def measure_imports(repeats: int) -> dict:
    """Framework import + app construction in a fresh interpreter (this module's own import excluded)."""
    times: dict[str, list[float]] = {kind: [] for kind in APPS}
    modules: dict[str, int] = {}
    for i in range(repeats):
        for kind in APPS if i % 2 == 0 else APPS[::-1]:
            output = subprocess.run(
                [sys.executable, "-c", IMPORT_SNIPPET.format(kind=kind)],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            times[kind].append(float(output[0]))
            modules[kind] = int(output[1])
    return {
        kind: {
            "median_ms": MS * statistics.median(times[kind]),
            "min_ms": MS * min(times[kind]),
            "runs_ms": [MS * t for t in times[kind]],
            "modules_loaded": modules[kind],
        }
        for kind in APPS
    }


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: tuple[str, ...]) -> set[str]:
    """Installed distributions ``names`` need (extras left out), themselves included."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    stack = [_canonical(n) for n in names]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(_canonical(req.name))
    return seen


def dist_size(name: str) -> int:
    """Bytes of a distribution's installed files (its RECORD, compiled bytecode included where listed)."""
    total = 0
    for file in importlib.metadata.distribution(name).files or []:
        path = Path(file.locate())
        if path.is_file():
            total += path.stat().st_size
    return total


def install_cost() -> dict:
    gateway = closure(GATEWAY_DISTRIBUTIONS)
    added = sorted(closure(("fastapi",)) - gateway)
    sizes = {name: {"version": importlib.metadata.version(name), "bytes": dist_size(name)} for name in added}
    return {
        "gateway_distributions": sorted(gateway),
        "gateway_bytes": sum(dist_size(name) for name in gateway),
        "fastapi_adds": sizes,
        "fastapi_adds_bytes": sum(s["bytes"] for s in sizes.values()),
    }


# ----------------------------------------------------------------------------- report
def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}x"


def write_report(results: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    summary, imports, cost, probes, memory = (results[k] for k in ("summary", "imports", "install", "probe", "memory"))
    s, f = summary["starlette"], summary["fastapi"]
    machine = results["machine"]
    flags = ", ".join(name for name, present in machine["flags"].items() if present) or "none of interest"
    plan = results["settings"]
    lines = [
        "# Starlette or FastAPI for the gateway: measured",
        "",
        f"Run {results['started']} ({results['duration_s']:.0f} s in all): `{results['command']}`. "
        f"Machine: {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs, flags: {flags}; "
        f"load average {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'] or [])} at start, "
        f"{', '.join(f'{x:.2f}' for x in results['load_average_at_end'])} at the end. "
        "**Measured while the machine was shared** with a CI run in another folder (load averages above): the "
        "absolute numbers are noisy; the two apps alternated round by round so the noise hit both, and only "
        "the ratios within this run are meant to be compared. Server CPU time per request is the least "
        "load-sensitive number here.",
        "",
        "## What was measured",
        "",
        f"- `starlette`: plain Starlette {results['versions']['starlette']} as `gateway/` does it: a `Route`, the "
        "multipart body parsed as it streams in with python-multipart's `MultipartParser`, Content-Length checked "
        "before reading, every chunk counted against the limit, fields checked by hand, `JSONResponse`.",
        f"- `fastapi`: FastAPI {results['versions']['fastapi']} the idiomatic way: `file: Annotated[UploadFile, "
        "File()]`, `Form()` fields (a `Literal` response_format, `ge`/`le` on temperature), pydantic "
        "`response_model`s, the size limit checked on the parsed `UploadFile`.",
        f"- Both: `POST {TRANSCRIPTIONS_PATH}` with a {results['wav_bytes']:,}-byte WAV and 4 form fields "
        f"({', '.join(FIELDS)}) returning a small JSON, and `GET {HEALTH_PATH}`; uvicorn "
        f"{results['versions']['uvicorn']} with the gateway's settings (`{json.dumps(UVICORN_SETTINGS)}`), "
        "one worker, one subprocess per app on 127.0.0.1.",
        f"- Client: this script's process, httpx {results['versions']['httpx']} (`AsyncClient`, keep-alive), a "
        f"closed loop at concurrency 1 and 8; per round, per app and level, {plan['upload']} uploads and "
        f"{plan['health']} health checks, {plan['rounds']} rounds, the apps alternating which goes first (ABBA), "
        f"after a warm-up of {plan['warmup']} requests per route. Latency is client-side, sending to parsed JSON.",
        "",
        "## Results",
        "",
        "| app | route | concurrency | p50 ms | p90 ms | requests / s | server CPU ms / request | requests (errors) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in APPS:
        for route in ROUTES:
            for level in map(str, LEVELS):
                r = summary[kind][route][level]
                lines.append(
                    f"| {kind} | {route} | {level} | {fmt(r['p50_ms'])} | {fmt(r[f'p{PCT_TAIL}_ms'])} | "
                    f"{fmt(r['requests_per_s'], 0)} | {fmt(r['server_cpu_ms_per_request'])} | "
                    f"{r['requests']} ({r['errors']}) |"
                )
    lines += [
        "",
        "FastAPI / Starlette, same route and level:",
        "",
        "| route | concurrency | p50 | p90 | requests / s | server CPU / request |",
        "|---|---|---|---|---|---|",
    ]
    for route in ROUTES:
        for level in map(str, LEVELS):
            a, b = f[route][level], s[route][level]
            lines.append(
                f"| {route} | {level} | {ratio(a['p50_ms'], b['p50_ms'])} | "
                f"{ratio(a[f'p{PCT_TAIL}_ms'], b[f'p{PCT_TAIL}_ms'])} | "
                f"{ratio(a['requests_per_s'], b['requests_per_s'])} | "
                f"{ratio(a['server_cpu_ms_per_request'], b['server_cpu_ms_per_request'])} |"
            )
    lines += [
        "",
        "Round by round (p50 ms; the spread is the shared machine's noise):",
        "",
        "| app | route | concurrency | p50 ms per round | requests / s per round |",
        "|---|---|---|---|---|",
    ]
    for kind in APPS:
        for route in ROUTES:
            for level in map(str, LEVELS):
                r = summary[kind][route][level]
                lines.append(
                    f"| {kind} | {route} | {level} | {', '.join(fmt(x) for x in r['p50_ms_per_round'])} | "
                    f"{', '.join(fmt(x, 0) for x in r['requests_per_s_per_round'])} |"
                )
    lines += [
        "",
        "| app | RSS after start-up | RSS after the run | peak RSS | import + build (median of "
        f"{plan['import_repeats']}) | modules loaded | start-up to listening |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in APPS:
        m, i = memory[kind], imports[kind]
        lines.append(
            f"| {kind} | {fmt(m['idle']['rss_mib'], 1)} MiB | {fmt(m['after']['rss_mib'], 1)} MiB | "
            f"{fmt(m['after']['peak_rss_mib'], 1)} MiB | {fmt(i['median_ms'], 0)} ms | {i['modules_loaded']} | "
            f"{fmt(MS * m['ready_s'], 0)} ms |"
        )
    added = ", ".join(f"{name} {v['version']} ({v['bytes'] / MIB:.2f} MiB)" for name, v in cost["fastapi_adds"].items())
    lines += [
        "",
        "Import + build: in a fresh interpreter, the framework's import plus building the app (uvicorn, common to "
        "both, not included). RSS: the uvicorn server process (VmRSS / VmHWM).",
        "",
        "**Installed size FastAPI adds** to the gateway's own distributions "
        f"({', '.join(cost['gateway_distributions'])}: "
        f"{cost['gateway_bytes'] / MIB:.2f} MiB): {cost['fastapi_adds_bytes'] / MIB:.2f} MiB in "
        f"{len(cost['fastapi_adds'])} distributions: {added} (files listed in each RECORD).",
        "",
        f"## Over-limit upload: {PROBE_FILE_BYTES // MIB} MiB against a {PROBE_LIMIT_BYTES // MIB} MiB limit",
        "",
        "Body bytes the app had read from uvicorn when it answered (counted by an ASGI wrapper around each app, in "
        "separate probe servers); the client stops sending as soon as the answer is readable (its count includes "
        "what sat in socket buffers).",
        "",
        "| app | framing | status | error code | body bytes read by the app | of the body's | client bytes sent | "
        "answer after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in APPS:
        for p in probes[kind]["over_limit"]:
            read = p["body_bytes_read_by_app"]
            lines.append(
                f"| {kind} | {p['framing']} | {p['status']} | {p['error_code']} | "
                f"{'–' if read is None else f'{read:,}'} | {p['body_bytes']:,} | {p['client_bytes_sent']:,} | "
                f"{fmt(p['answer_after_ms'], 0)} ms |"
            )
    lines += [
        "",
        "A form field out of range (`temperature=5`), what each app answers (OpenAI answers 400 with "
        '`{"error": {...}}`):',
        "",
        "| app | status | body |",
        "|---|---|---|",
    ]
    for kind in APPS:
        p = probes[kind]["invalid_field"]
        body = p["body"].replace("|", "\\|")
        lines.append(f"| {kind} | {p['status']} | `{body}` |")
    lines += ["", "## Conclusion", "", *conclusion(results), ""]
    (output / "README.md").write_text("\n".join(lines))


def conclusion(results: dict) -> list[str]:
    """The verdict, built from this run's numbers."""
    s, f = results["summary"]["starlette"], results["summary"]["fastapi"]
    imports, cost, probes = results["imports"], results["install"], results["probe"]
    chunked = {kind: next(p for p in probes[kind]["over_limit"] if p["framing"] == "chunked") for kind in APPS}
    declared = {kind: next(p for p in probes[kind]["over_limit"] if p["framing"] == "content-length") for kind in APPS}
    up1, up8 = (f["upload"][c]["p50_ms"] / s["upload"][c]["p50_ms"] for c in ("1", "8"))
    rps8 = f["upload"]["8"]["requests_per_s"] / s["upload"]["8"]["requests_per_s"]
    cpu = f["upload"]["1"]["server_cpu_ms_per_request"] / s["upload"]["1"]["server_cpu_ms_per_request"]
    hp = f["health"]["1"]["p50_ms"] / s["health"]["1"]["p50_ms"]
    hcpu = f["health"]["1"]["server_cpu_ms_per_request"] / s["health"]["1"]["server_cpu_ms_per_request"]
    overlap = all(
        max(min(f["upload"][c]["p50_ms_per_round"]), min(s["upload"][c]["p50_ms_per_round"]))
        <= min(max(f["upload"][c]["p50_ms_per_round"]), max(s["upload"][c]["p50_ms_per_round"]))
        for c in ("1", "8")
    )
    spread = (
        "the two apps' per-round medians overlap: the latency difference is within this machine's noise"
        if overlap
        else "the two apps' per-round medians do not overlap"
    )
    mem = results["memory"]
    fc, sc = chunked["fastapi"], chunked["starlette"]
    return [
        f"Starlette stays. On cost, FastAPI's idiomatic upload route took {up1:.2f}x the Starlette route's median "
        f"latency at concurrency 1 and {up8:.2f}x at 8, carried {rps8:.2f}x its requests/s at 8 and used "
        f"{cpu:.2f}x its server CPU per upload ({spread}); /health took {hp:.2f}x at concurrency 1 and "
        f"{hcpu:.2f}x the server CPU. Both parse the upload with python-multipart, which dominates an upload's "
        f"cost. FastAPI imports in {imports['fastapi']['median_ms']:.0f} ms against "
        f"{imports['starlette']['median_ms']:.0f} ms ({imports['fastapi']['modules_loaded']} modules against "
        f"{imports['starlette']['modules_loaded']}), its server sat at {mem['fastapi']['after']['rss_mib']:.0f} MiB "
        f"RSS against {mem['starlette']['after']['rss_mib']:.0f} MiB after the run, and it installs "
        f"{cost['fastapi_adds_bytes'] / MIB:.1f} MiB more (pydantic-core alone "
        f"{cost['fastapi_adds'].get('pydantic-core', {}).get('bytes', 0) / MIB:.1f} MiB). Per request these costs "
        "are small next to a transcription's (hundreds of ms on Triton, see perf/results/gateway) and were "
        "measured on a shared machine: they do not decide the choice by themselves.",
        "",
        f"The deciding difference is behaviour: with `UploadFile` FastAPI parses the whole form before the "
        f"handler runs, so a chunked {fc['body_bytes'] / MIB:.1f} MiB upload against a "
        f"{PROBE_LIMIT_BYTES // MIB} MiB limit was answered only after the app had read "
        f"{(fc['body_bytes_read_by_app'] or 0) / MIB:.2f} MiB of it (spooled to a temporary file past 1 MiB), and "
        f"a declared Content-Length of the same size was read too "
        f"({(declared['fastapi']['body_bytes_read_by_app'] or 0) / MIB:.2f} MiB); the gateway's streaming reader "
        f"refused the chunked one after {(sc['body_bytes_read_by_app'] or 0) / MIB:.2f} MiB (limit + form "
        f"allowance) and the declared one after {declared['starlette']['body_bytes_read_by_app'] or 0} bytes. "
        "Getting the gateway's bound in FastAPI means dropping `UploadFile`/`Form` for `request.stream()` and the "
        "same reader, i.e. writing the Starlette route inside FastAPI, which then adds only its dependencies, its "
        "OpenAPI machinery and its validation errors (HTTP "
        f'{probes["fastapi"]["invalid_field"]["status"]} with `{{"detail": [...]}}` here, to be re-mapped to '
        "OpenAI's 400 shape). FastAPI stays a `perf` extra for this benchmark, not a gateway dependency.",
    ]


# ----------------------------------------------------------------------------- main
def versions() -> dict[str, str | None]:
    out = {}
    for name in ("starlette", "fastapi", "pydantic", "pydantic-core", "uvicorn", "python-multipart", "httpx", "h11"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 short rounds, results in a temporary folder")
    parser.add_argument("--output-dir", type=Path, help="where results.json and README.md go")
    parser.add_argument("--serve", choices=APPS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES, help=argparse.SUPPRESS)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.max_file_bytes, args.probe)
        return None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from perf.machine import describe_machine

    plan = QUICK if args.quick else FULL
    output = args.output_dir or (QUICK_OUTPUT if args.quick else DEFAULT_OUTPUT)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    machine = describe_machine()
    wav = make_wav()
    imports = measure_imports(plan["import_repeats"])
    logger.info("imports: %s", {k: round(v["median_ms"]) for k, v in imports.items()})
    servers = {kind: Server(kind) for kind in APPS}
    memory: dict[str, dict] = {}
    try:
        for kind, server in servers.items():
            memory[kind] = {"ready_s": server.wait_ready()}
        time.sleep(0.5)
        for kind, server in servers.items():
            memory[kind]["idle"] = server.memory()
        raw = asyncio.run(run_load(servers, wav, plan))
        for kind, server in servers.items():
            memory[kind]["after"] = server.memory()
    finally:
        for server in servers.values():
            server.stop()
    probes = run_probes(wav)
    results = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": time.perf_counter() - t0,
        "command": "python perf/asgi_choice.py" + (" --quick" if args.quick else ""),
        "machine": machine,
        "load_average_at_end": os.getloadavg(),
        "versions": versions(),
        "settings": plan,
        "uvicorn": UVICORN_SETTINGS,
        "wav_bytes": len(wav),
        "fields": FIELDS,
        "summary": summarize(raw),
        "memory": memory,
        "imports": imports,
        "install": install_cost(),
        "probe": probes,
        "raw": raw,
    }
    write_report(results, output)
    logger.info("results in %s", output)
    return results


if __name__ == "__main__":
    main()
