"""The ``qwen3-asr`` console script: ``serve-openai`` starts the gateway, ``serve-grpc`` the gRPC guard,
every other command is the client CLI.

The client CLI (:func:`qwen3_asr_triton.client.cli.main`) is called unchanged
with the same arguments, so the gateway depends on the client and never the reverse.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from qwen3_asr_triton.client.cli import URL_ENV, positive_int, positive_seconds
from qwen3_asr_triton.client.cli import build_parser as build_client_parser
from qwen3_asr_triton.client.cli import main as client_main

from . import guard_cli
from .options import (
    API_KEY_ENV,
    DEFAULT_GRPC_CHANNELS,
    DEFAULT_HOST,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_PORT,
    DEFAULT_SERVED_MODEL_NAME,
    DEFAULT_TIMEOUT_SECONDS,
    GRACEFUL_SHUTDOWN_SECONDS,
    LOG_LEVELS,
    GatewayOptions,
)

PROG = "qwen3-asr"
SERVE_COMMAND = "serve-openai"
SERVE_HELP = "serve OpenAI's audio transcription API over HTTP, in front of Triton (gRPC)"
EXIT_OK, EXIT_USAGE = 0, 2
# Connections and tasks uvicorn accepts before answering a plain 503 itself: the gateway's own
# limit (OpenAI-shaped 503s) covers transcriptions; room beyond it is for idle keep-alive
# connections and cheap requests (health probes, metrics scrapes, models, refusals).
CONNECTIONS_PER_SLOT = 4
MIN_CONNECTIONS = 64
# Largest request line plus headers uvicorn's h11 parser buffers (its default, made explicit):
# an API request's headers take well under 2 KiB.
MAX_HEADER_BYTES = 16 * 1024
# Seconds an idle keep-alive connection is kept (uvicorn's default; clients reconnect cheaply).
KEEP_ALIVE_SECONDS = 5


def build_serve_parser() -> argparse.ArgumentParser:
    """Arguments of ``qwen3-asr serve-openai``."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} {SERVE_COMMAND}",
        description="Serve OpenAI's audio transcription API (POST /v1/audio/transcriptions, GET /v1/models, "
        "GET /health, GET /metrics) over HTTP, calling Triton's qwen3_asr over gRPC. "
        "Point OpenAI's SDKs at http://HOST:PORT/v1.",
    )
    url = os.environ.get(URL_ENV)
    parser.add_argument(
        "--triton-url",
        default=url,
        required=url is None,
        metavar="HOST:PORT",
        help=f"Triton's gRPC endpoint (default: ${URL_ENV})",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' on /v1 routes (default: ${API_KEY_ENV}; prefer the variable, "
        "since command lines are visible to every user)",
    )
    parser.add_argument(
        "--served-model-name",
        default=DEFAULT_SERVED_MODEL_NAME,
        help="the model id clients pass as 'model' (default: %(default)s)",
    )
    parser.add_argument(
        "--max-file-bytes",
        type=positive_int,
        default=DEFAULT_MAX_FILE_BYTES,
        help="largest audio upload in bytes (default: %(default)s, OpenAI's 25 MiB)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=DEFAULT_MAX_CONCURRENCY,
        help="transcriptions in flight; one more is refused with 503 at once (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="deadline of one transcription in seconds; 504 past it (default: %(default)g)",
    )
    parser.add_argument(
        "--grpc-channels",
        type=positive_int,
        default=DEFAULT_GRPC_CHANNELS,
        help="gRPC channels to Triton, used round-robin (default: %(default)s)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="(default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="same as --log-level debug")
    return parser


def serve(argv: list[str]) -> int:
    """``qwen3-asr serve-openai``: parse, validate, run uvicorn until SIGINT/SIGTERM."""
    parser = build_serve_parser()
    args = parser.parse_args(argv)
    try:
        options = GatewayOptions(
            triton_url=args.triton_url,
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            served_model_name=args.served_model_name,
            max_file_bytes=args.max_file_bytes,
            max_concurrency=args.max_concurrency,
            timeout=args.timeout,
            grpc_channels=args.grpc_channels,
        )
    except ValueError as exc:
        parser.error(str(exc))
    level = "debug" if args.verbose else args.log_level
    logging.basicConfig(
        level=level.upper(), format=f"{PROG} {SERVE_COMMAND}: %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )

    import uvicorn

    from .app import create_app
    from .realtime import MAX_FRAME_BYTES, WS_PING_SECONDS

    if options.api_key is None and options.host not in ("127.0.0.1", "::1", "localhost"):
        logging.getLogger(__name__).warning(
            "listening on %s without an API key: anyone who can reach it may use it", options.host
        )
    uvicorn.run(
        create_app(options),
        host=options.host,
        port=options.port,
        log_level=level,
        http="h11",
        # WebSockets only for /v1/realtime: frames bounded, pings find clients that vanished silently.
        ws=_websocket_protocol(),
        ws_max_size=MAX_FRAME_BYTES,
        ws_ping_interval=WS_PING_SECONDS,
        ws_ping_timeout=WS_PING_SECONDS,
        ws_per_message_deflate=False,
        lifespan="on",
        limit_concurrency=max(MIN_CONNECTIONS, CONNECTIONS_PER_SLOT * options.max_concurrency),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )
    return EXIT_OK


def _websocket_protocol() -> str:
    """uvicorn's sans-I/O websockets protocol; "none" (no /v1/realtime) where the package is missing."""
    try:
        import websockets  # noqa: F401
    except ImportError:
        logging.getLogger(__name__).warning("the websockets package is missing: /v1/realtime is disabled")
        return "none"
    return "websockets-sansio"


def _command_index(argv: list[str]) -> int | None:
    """Index of the first argument that is not an option (the command), None when there is none."""
    for index, arg in enumerate(argv):
        if not arg.startswith("-"):
            return index
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qwen3-asr`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    index = _command_index(args)
    if index is not None and args[index] == SERVE_COMMAND:
        # Options before the command (``qwen3-asr -v serve-openai``) are the gateway's too.
        return serve(args[:index] + args[index + 1 :])
    if index is not None and args[index] == guard_cli.COMMAND:
        return guard_cli.main(args[:index] + args[index + 1 :], PROG)
    if index is None and any(arg in ("-h", "--help") for arg in args):
        help_text = build_client_parser().format_help()
        print(help_text.rstrip("\n"))
        print("\nalso:")
        for command, text in ((SERVE_COMMAND, SERVE_HELP), (guard_cli.COMMAND, guard_cli.HELP)):
            print(f"  {command:<13}{text} ('{PROG} {command} --help')")
        return EXIT_OK
    return client_main(args)


if __name__ == "__main__":
    sys.exit(main())
