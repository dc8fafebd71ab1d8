"""``qwen3-asr``: transcribe files, stream one in real time, check server health and list models, over gRPC.

Results go to stdout (or to ``--output-dir``); progress, failures and the
summary go to stderr. Exit status: 0 when every file succeeded (or the server
is healthy), 1 when anything failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .async_client import AsyncQwen3ASRClient
from .batch import BatchSummary, FileOutcome, transcribe_files
from .errors import Qwen3ASRError
from .formats import EXTENSIONS, FORMATS, render
from .inputs import expand_inputs, output_paths
from .options import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MODEL,
    DEFAULT_STREAM_MODEL,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_URL,
    ClientOptions,
    EndpointingOptions,
    RetryPolicy,
    StreamOptions,
    TlsOptions,
    TranscribeOptions,
)
from .stream_command import run_stream
from .sync_client import Qwen3ASRClient
from .types import Transcription

PROG = "qwen3-asr"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# 128 + SIGINT, as shells report a process stopped by Ctrl-C.
EXIT_INTERRUPTED = 130
# Environment variable that sets the default --url.
URL_ENV = "QWEN3_ASR_URL"
# Health and metadata calls are cheap: a server that does not answer within
# 10 s is as good as down, whatever the transcription deadline is.
STATUS_TIMEOUT_SECONDS = 10.0
# Requests in flight by default: enough to keep a few entry-model instances busy
# without queueing most of a large batch on the server.
DEFAULT_CONCURRENCY = 4
# Upper bound for --concurrency: each request in flight holds one file in memory.
MAX_CONCURRENCY = 256
# Stream deadline: each chunk's answer (and the final after the last chunk) must come
# within this. A partial takes well under a second on an idle server and the final of a
# 5-minute stream (the server's longest by default) well under a minute even on CPU.
STREAM_TIMEOUT_SECONDS = 120.0
# Output formats of the stream command: events as lines of text, or JSON Lines.
STREAM_FORMATS = ("txt", "json")


# ----------------------------------------------------------------------------- arguments
def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'name: value', got {text!r}")
    return name.strip(), value.strip()


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def concurrency(text: str) -> int:
    """``--concurrency``: a positive integer up to :data:`MAX_CONCURRENCY`."""
    value = positive_int(text)
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"at most {MAX_CONCURRENCY} requests in flight, got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a speed factor, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a speed factor >= 0 (0 = as fast as possible), got {text!r}")
    return value


def _add_connection_arguments(
    parser: argparse.ArgumentParser,
    timeout: float,
    model: str = DEFAULT_MODEL,
    timeout_help: str = "deadline per call in seconds, retries included",
) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"gRPC endpoint host:port (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    group.add_argument("--model", default=model, help="entry model name (default: %(default)s)")
    group.add_argument(
        "--timeout", type=positive_seconds, default=timeout, help=f"{timeout_help} (default: %(default)g)"
    )
    group.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS - 1,
        help="retries on UNAVAILABLE, with exponential backoff (default: %(default)s)",
    )
    group.add_argument("--tls", action="store_true", help="use TLS (implied by the --tls-* files)")
    group.add_argument("--tls-ca", type=Path, help="PEM file of the CAs to trust (default: system roots)")
    group.add_argument("--tls-cert", type=Path, help="client certificate chain (PEM) for mutual TLS")
    group.add_argument("--tls-key", type=Path, help="client private key (PEM) for mutual TLS")
    group.add_argument(
        "--header",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="gRPC metadata sent with every call, e.g. 'authorization: Bearer TOKEN' (repeatable)",
    )


def _add_recognition_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--language", help="force a language by name or code (English, en); default: detect")
    parser.add_argument("--context", help="hotwords / domain text, or @FILE to read it from a file")
    parser.add_argument("--timestamps", action="store_true", help="request word timestamps (needs the aligner)")
    parser.add_argument("--max-new-tokens", type=positive_int, help="cap on generated tokens per segment")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Client of the Qwen3-ASR Triton deployment (gRPC).")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr (-vv: debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tr = commands.add_parser("transcribe", help="transcribe audio files", description="Transcribe audio files.")
    tr.add_argument("inputs", nargs="+", metavar="FILE|DIR|GLOB", help="audio files, directories or quoted globs")
    _add_recognition_arguments(tr)
    speakers = tr.add_argument_group("speakers", "who spoke when (needs the server's diarizer)")
    speakers.add_argument(
        "--diarize",
        action="store_true",
        help="label speakers: 'Speaker N:' lines in txt, labelled cues in srt/vtt, 'speaker' fields in json",
    )
    speakers.add_argument("--num-speakers", type=positive_int, metavar="N", help="the number of speakers, if known")
    speakers.add_argument("--min-speakers", type=positive_int, metavar="N", help="at least N speakers")
    speakers.add_argument("--max-speakers", type=positive_int, metavar="N", help="at most N speakers")
    tr.add_argument("--format", choices=FORMATS, default="txt", help="output format (default: %(default)s)")
    tr.add_argument(
        "--output-dir",
        type=Path,
        help="write one file per input here (mirroring the input folders) instead of printing to stdout",
    )
    tr.add_argument(
        "--concurrency",
        type=concurrency,
        default=DEFAULT_CONCURRENCY,
        help=f"requests in flight, at most {MAX_CONCURRENCY} (default: %(default)s)",
    )
    tr.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal and there are several files)",
    )
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    _add_connection_arguments(tr, DEFAULT_TIMEOUT_SECONDS)

    st = commands.add_parser(
        "stream",
        help="stream one file in real time, printing partial results",
        description="Play an audio file to the streaming model in real time (or faster) and print the partial "
        "hypotheses as they arrive, then the final result (which equals 'transcribe' of the same audio).",
    )
    st.add_argument("input", type=Path, metavar="FILE", help="audio file (decoded locally)")
    st.add_argument(
        "--chunk-seconds",
        type=positive_seconds,
        default=DEFAULT_CHUNK_SECONDS,
        help="audio per request; each may get a partial (default: %(default)g)",
    )
    st.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        help="playback speed relative to real time; 0 = as fast as possible (default: %(default)g)",
    )
    _add_recognition_arguments(st)
    vad = st.add_argument_group(
        "endpointing", "cut the stream into utterances at pauses (the server's VAD); the knobs default to the server's"
    )
    vad.add_argument(
        "--endpointing",
        action="store_true",
        help="print each utterance as '[start-end] text' once it ends ('[start-end] Speaker N: text' with --diarize)",
    )
    vad.add_argument("--vad-threshold", type=float, metavar="P", help="speech probability threshold, 0 < P < 1")
    vad.add_argument("--vad-min-silence-ms", type=int, metavar="MS", help="silence that ends an utterance, in ms")
    vad.add_argument("--vad-speech-pad-ms", type=int, metavar="MS", help="audio kept around the speech, in ms")
    vad.add_argument(
        "--diarize",
        action="store_true",
        help="label each utterance with its speaker, consistent across the stream (needs the server's diarizer)",
    )
    vad.add_argument("--max-speakers", type=positive_int, metavar="N", help="with --diarize: at most N speakers")
    st.add_argument("--format", choices=STREAM_FORMATS, default="txt", help="output format (default: %(default)s)")
    st.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    _add_connection_arguments(
        st,
        STREAM_TIMEOUT_SECONDS,
        DEFAULT_STREAM_MODEL,
        "deadline for each chunk's answer in seconds (with --endpointing: for the final, after the last chunk)",
    )

    health = commands.add_parser("health", help="server and model readiness", description="Check readiness.")
    health.add_argument("--json", action="store_true", help="print JSON")
    _add_connection_arguments(health, STATUS_TIMEOUT_SECONDS)

    models = commands.add_parser("models", help="models on the server and the entry model's metadata")
    models.add_argument("--json", action="store_true", help="print JSON")
    _add_connection_arguments(models, STATUS_TIMEOUT_SECONDS)
    return parser


def client_options(args: argparse.Namespace) -> ClientOptions:
    """Validated :class:`ClientOptions` from the parsed arguments (ValueError when invalid)."""
    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {args.retries}")
    tls = None
    if args.tls or args.tls_ca or args.tls_cert or args.tls_key:
        tls = TlsOptions(root_certificates=args.tls_ca, private_key=args.tls_key, certificate_chain=args.tls_cert)
    model = {"stream_model": args.model} if args.command == "stream" else {"model": args.model}
    return ClientOptions(
        url=args.url,
        **model,
        timeout=args.timeout,
        retry=RetryPolicy(max_attempts=args.retries + 1),
        tls=tls,
        headers=tuple(args.header),
    )


# The transcribe command's speaker options, named as TranscribeOptions names them (stream has none).
SPEAKER_KNOBS = ("num_speakers", "min_speakers", "max_speakers")


def transcribe_options(args: argparse.Namespace) -> TranscribeOptions:
    """Validated :class:`TranscribeOptions`; ``--context @FILE`` reads the file (ValueError when unreadable)."""
    context = args.context
    if context and context.startswith("@"):
        try:
            context = Path(context[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read --context file {context[1:]!r}: {exc.strerror}") from exc
    return TranscribeOptions(
        language=args.language,
        context=context,
        timestamps=args.timestamps,
        max_new_tokens=args.max_new_tokens,
        diarize=getattr(args, "diarize", False),
        **{name: getattr(args, name, None) for name in SPEAKER_KNOBS},
    )


VAD_KNOBS = ("vad_threshold", "vad_min_silence_ms", "vad_speech_pad_ms")


def stream_options(args: argparse.Namespace) -> StreamOptions:
    """Validated :class:`StreamOptions` of the stream command (ValueError when invalid)."""
    knobs = {name: getattr(args, name) for name in VAD_KNOBS if getattr(args, name) is not None}
    if knobs and not args.endpointing:
        flags = ", ".join("--" + name.replace("_", "-") for name in knobs)
        raise ValueError(f"{flags} only apply with --endpointing")
    if args.diarize and not args.endpointing:
        raise ValueError("--diarize labels the utterances of a stream: it needs --endpointing")
    endpointing = EndpointingOptions(**knobs) if args.endpointing else None
    return StreamOptions(chunk_seconds=args.chunk_seconds, speed=args.speed, endpointing=endpointing)


# ----------------------------------------------------------------------------- output
class _OrderedStdout:
    """Prints results in input order as soon as every earlier file is done."""

    def __init__(self, headers: bool) -> None:
        self._pending: dict[int, str | None] = {}
        self._next = 0
        self._headers = headers

    def put(self, index: int, text: str | None, label: str = "") -> None:
        if self._headers and text is not None:
            text = f"==> {label} <==\n{text}"
        self._pending[index] = text
        while self._next in self._pending:
            chunk = self._pending.pop(self._next)
            if chunk is not None:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            self._next += 1


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


# ----------------------------------------------------------------------------- commands
async def _server_is_ready(client: AsyncQwen3ASRClient, options: ClientOptions) -> bool:
    """One check before a batch, so a dead server gives one clear message instead of one per file."""
    try:
        health = await client.health(timeout=min(options.timeout or STATUS_TIMEOUT_SECONDS, STATUS_TIMEOUT_SECONDS))
    except Qwen3ASRError as exc:
        _stderr(f"{PROG}: server {options.url} unreachable: {exc}")
        return False
    if not health.ok:
        state = f"live={health.live}, ready={health.ready}, model ready={health.model_ready}"
        _stderr(f"{PROG}: model {options.model} at {options.url} is not ready ({state})")
    return health.ok


async def _transcribe(args: argparse.Namespace, options: ClientOptions, request: TranscribeOptions) -> int:
    began = time.perf_counter()
    files, problems = expand_inputs(args.inputs)
    for problem in problems:
        _stderr(f"{PROG}: FAILED {problem.spec}: {problem.message}")
    if not files:
        _stderr(f"{PROG}: no input files")
        return EXIT_FAILED if problems else EXIT_USAGE

    client = AsyncQwen3ASRClient(options)
    try:
        if not await _server_is_ready(client, options):
            if not args.quiet:
                count = len(files) + len(problems)
                summary = BatchSummary(count, count, 0.0, time.perf_counter() - began)
                _stderr(f"{PROG}: {summary.describe()}")
            return EXIT_FAILED

        targets = output_paths(files, args.output_dir, EXTENSIONS[args.format]) if args.output_dir else None
        stdout = _OrderedStdout(headers=len(files) > 1 and args.format != "json")
        # JSON on stdout is JSON Lines (one object per file); in files it is indented.
        indent = 2 if targets else None

        def handle(index: int, path: Path, result: Transcription) -> None:
            text = render(result, args.format, source=str(path), indent=indent)
            if targets is not None:
                _write_atomic(targets[index], text)
            else:
                stdout.put(index, text, str(path))

        show = args.progress if args.progress is not None else (sys.stderr.isatty() and len(files) > 1)
        bar = tqdm(total=len(files), unit="file", file=sys.stderr, disable=args.quiet or not show, leave=False)

        def on_done(outcome: FileOutcome) -> None:
            if not outcome.ok:
                _stderr(f"{PROG}: FAILED {outcome.path}: {outcome.error}")
                if targets is None:
                    stdout.put(outcome.index, None)
            bar.update(1)

        with logging_redirect_tqdm(), bar:
            outcomes = await transcribe_files(client, files, request, args.concurrency, handle, on_done)
    finally:
        await client.close()

    summary = BatchSummary.of(outcomes, time.perf_counter() - began, extra_failures=len(problems))
    if not args.quiet:
        _stderr(f"{PROG}: {summary.describe()}")
    return EXIT_OK if summary.failed == 0 else EXIT_FAILED


def _health(args: argparse.Namespace, options: ClientOptions) -> int:
    with Qwen3ASRClient(options) as client:
        try:
            health = client.health()
        except Qwen3ASRError as exc:
            if args.json:
                print(json.dumps({"ok": False, "url": options.url, "error": str(exc)}))
            else:
                print(f"server {options.url}: unreachable ({exc})")
            return EXIT_FAILED
    if args.json:
        print(json.dumps({"url": options.url, **health.to_dict()}))
    else:
        yes = {True: "yes", False: "NO"}
        print(f"server {options.url} (Triton {health.server_version or '?'})")
        print(f"  live:  {yes[health.live]}")
        print(f"  ready: {yes[health.ready]}")
        print(f"  model {health.model} ready: {yes[health.model_ready]}")
    return EXIT_OK if health.ok else EXIT_FAILED


def _models(args: argparse.Namespace, options: ClientOptions) -> int:
    with Qwen3ASRClient(options) as client:
        try:
            states = client.models()
            metadata = client.model_metadata()
        except Qwen3ASRError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    if args.json:
        print(json.dumps({"models": [s.to_dict() for s in states], "metadata": metadata.to_dict()}, indent=2))
        return EXIT_OK
    print(f"models at {options.url}:")
    for state in states:
        reason = f" ({state.reason})" if state.reason else ""
        print(f"  {state.name:<20} version {state.version or '-':<4} {state.state}{reason}")
    print(f"\n{metadata.name} (versions {', '.join(metadata.versions)}, platform {metadata.platform})")
    for title, specs in (("inputs", metadata.inputs), ("outputs", metadata.outputs)):
        print(f"  {title}:")
        for spec in specs:
            print(f"    {spec.name:<18} {spec.datatype:<6} {list(spec.shape)}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qwen3-asr`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format=f"{PROG}: %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Transcripts are Unicode whatever the terminal's locale: stdout is always UTF-8.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    try:
        options = client_options(args)
        request = transcribe_options(args) if args.command in ("transcribe", "stream") else None
        pacing = stream_options(args) if args.command == "stream" else None
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if args.command == "transcribe":
            return asyncio.run(_transcribe(args, options, request))
        if args.command == "stream":
            ok = run_stream(args.input, options, request, pacing, args.format, args.quiet, PROG, STATUS_TIMEOUT_SECONDS)
            return EXIT_OK if ok else EXIT_FAILED
        if args.command == "health":
            return _health(args, options)
        return _models(args, options)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (``| head``): stop quietly, without a traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
