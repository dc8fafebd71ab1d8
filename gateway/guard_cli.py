"""``qwen3-asr serve-grpc``: run the gRPC guard in front of Triton's own gRPC endpoint."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from qwen3_asr_triton.client.cli import positive_int

from .grpc_guard import (
    DEFAULT_HOST,
    DEFAULT_MAX_CONCURRENT_RPCS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    DEFAULT_UPSTREAM_CHANNELS,
    PUBLIC_MODELS,
    GuardOptions,
    message_limit,
    serve,
)
from .options import LOG_LEVELS

COMMAND = "serve-grpc"
HELP = "serve Triton's gRPC API to clients, every message checked before it reaches Triton"


def _model_names(text: str) -> frozenset[str]:
    names = frozenset(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected model names separated by commas, got {text[:100]!r}")
    return names


def build_parser(prog: str) -> argparse.ArgumentParser:
    """Arguments of ``qwen3-asr serve-grpc``; one flag per :class:`GuardOptions` field."""
    parser = argparse.ArgumentParser(
        prog=f"{prog} {COMMAND}",
        description="Listen for Triton's gRPC API (inference.GRPCInferenceService and grpc.health.v1), check "
        "every inference message (declared shapes against the data carried, sizes, names) and forward the "
        "original bytes to Triton's own gRPC endpoint, which should listen on loopback only. Model control, "
        "shared-memory registration and trace/log settings are refused.",
    )
    parser.add_argument("--triton-url", required=True, metavar="HOST:PORT", help="Triton's own gRPC endpoint")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)")
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument(
        "--max-message-bytes",
        type=positive_int,
        help="largest message a client may send; keep it at or above the repository's max_audio_bytes "
        f"(default: {DEFAULT_MAX_MESSAGE_BYTES}, or from --model-repository)",
    )
    limit.add_argument(
        "--model-repository",
        type=Path,
        metavar="DIR",
        help="take --max-message-bytes from the served repository: its largest max_audio_bytes plus 1 MiB",
    )
    parser.add_argument(
        "--max-concurrent-rpcs",
        type=positive_int,
        default=DEFAULT_MAX_CONCURRENT_RPCS,
        help="calls and streams in flight; one more is refused at once (default: %(default)s)",
    )
    parser.add_argument(
        "--upstream-channels",
        type=positive_int,
        default=DEFAULT_UPSTREAM_CHANNELS,
        help="gRPC connections to Triton (default: %(default)s)",
    )
    parser.add_argument(
        "--public-models",
        type=_model_names,
        default=PUBLIC_MODELS,
        metavar="NAME[,NAME...]",
        help="models clients may run inference on; requests for any other get NOT_FOUND "
        f"(default: {','.join(sorted(PUBLIC_MODELS))})",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="(default: %(default)s)")
    return parser


async def _run(options: GuardOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(options, stop)


def main(argv: list[str], prog: str) -> int:
    """Parse, validate, serve until SIGTERM / SIGINT; returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        max_message_bytes = args.max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES
        if args.model_repository is not None:
            max_message_bytes = message_limit(args.model_repository)
        options = GuardOptions(
            triton_url=args.triton_url,
            host=args.host,
            port=args.port,
            max_message_bytes=max_message_bytes,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            upstream_channels=args.upstream_channels,
            public_models=args.public_models,
        )
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(), format=f"{prog} {COMMAND}: %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        asyncio.run(_run(options))
    except RuntimeError as exc:  # gRPC could not bind the address
        logging.getLogger(__name__).error("%s", exc)
        return 1
    return 0
