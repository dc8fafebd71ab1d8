"""``qwen3-asr stream FILE``: play a file to the streaming model, show partials as they come, then the final result.

Partials and the final result go to stdout: on a terminal (txt) the partial is
one line rewritten in place; otherwise each partial is a line of its own,
``[  3.0 s] text``, and the final result follows as the transcribe command
prints it. ``--format json`` prints JSON Lines, one object per event, with
``"is_final"`` telling them apart. The summary goes to stderr.

With ``--endpointing`` each utterance is printed once it ends, as a line
``[12.34-15.67] text`` (start and end in seconds from the start of the file),
or in json as an object with ``"utterance"`` (its index), ``"start"``, ``"end"``
and its ``"transcription"``; ``"is_final"`` is true on the stream's last one.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from .errors import Qwen3ASRError
from .formats import render
from .options import ClientOptions, StreamOptions, TranscribeOptions
from .subtitles import display_width
from .sync_client import Qwen3ASRClient
from .types import Partial, StreamStats, Transcription, Utterance, speaker_name

# Erase the terminal line the cursor is on and return to its start (ANSI "erase in line").
CLEAR_LINE = "\r\x1b[K"
ELLIPSIS = "…"


def fit_tail(text: str, columns: int) -> str:
    """``text`` cut to its last ``columns`` screen columns, ``…`` marking the cut (the newest words stay)."""
    if display_width(text) <= columns:
        return text
    kept: list[str] = []
    width = display_width(ELLIPSIS)
    for char in reversed(text):
        width += display_width(char)
        if width > columns:
            break
        kept.append(char)
    return ELLIPSIS + "".join(reversed(kept))


class EventPrinter:
    """Writes stream events to ``out``.

    Parameters
    ----------
    out : text stream
        Usually stdout.
    fmt : {"txt", "json"}
        Output format.
    rewrite : bool
        Rewrite one line for partials (txt on a terminal) instead of one line each.
    source : str
        The input file, recorded in the final JSON object.
    """

    def __init__(self, out: TextIO, fmt: str, rewrite: bool, source: str) -> None:
        self.out = out
        self.fmt = fmt
        self.rewrite = rewrite and fmt == "txt"
        self.source = source
        self._line_open = False

    def partial(self, event: Partial) -> None:
        if self.fmt == "json":
            self._write(json.dumps({"is_final": False, **event.to_dict()}, ensure_ascii=False) + "\n")
            return
        label = f"[{event.audio_seconds:6.1f} s] "
        text = " ".join(event.text.split())
        if not self.rewrite:
            self._write(f"{label}{text}\n")
            return
        columns = shutil.get_terminal_size().columns - 1  # the last column would wrap on some terminals
        self._write(CLEAR_LINE + label + fit_tail(text, max(1, columns - len(label))))
        self._line_open = True

    def utterance(self, event: Utterance) -> None:
        """One line (or JSON object) for an utterance that ended, replacing the partial on the terminal line."""
        self.end_line()
        if self.fmt == "json":
            data = {"is_final": event.last, "utterance": event.index, "file": self.source, **event.to_dict()}
            self._write(json.dumps(data, ensure_ascii=False) + "\n")
            return
        self._write(f"{utterance_label(event)} {' '.join(event.text.split())}\n")

    def final(self, result: Transcription) -> None:
        self.end_line()
        if self.fmt == "json":
            data = {"is_final": True, "file": self.source, **result.to_dict()}
            self._write(json.dumps(data, ensure_ascii=False) + "\n")
        else:
            self._write(render(result, "txt"))

    def end_line(self, keep: bool = False) -> None:
        """Finish a partial left on the terminal line: erase it (before the final) or keep it (on failure)."""
        if self._line_open:
            self._write("\n" if keep else CLEAR_LINE)
            self._line_open = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def utterance_label(event: Utterance) -> str:
    """``[start-end]`` of an utterance, in seconds to the hundredth, then its speaker's name if it has one."""
    times = f"[{event.start:.2f}-{event.end:.2f}]"
    return times if event.speaker is None else f"{times} {speaker_name(event.speaker)}:"


def describe(stats: StreamStats, latencies: list[float], wall_seconds: float) -> str:
    """One-line summary of a stream for stderr."""
    parts = [
        f"{stats.chunks} chunks, {stats.partials} partials",
        f"audio {stats.audio_seconds:.1f} s",
        f"wall {wall_seconds:.1f} s",
    ]
    if stats.utterances:
        parts.insert(2, f"{stats.utterances} utterances")
    if latencies:
        ordered = sorted(latencies)
        parts.append(f"partial latency median {ordered[len(ordered) // 2]:.2f} s, max {ordered[-1]:.2f} s")
    if stats.final_latency is not None:
        parts.append(f"final latency {stats.final_latency:.2f} s")
    return " | ".join(parts)


def run_stream(
    path: Path,
    options: ClientOptions,
    request: TranscribeOptions,
    stream_options: StreamOptions,
    fmt: str,
    quiet: bool,
    prog: str,
    status_timeout: float,
) -> bool:
    """Stream ``path`` and print its events; False when anything failed (reported on stderr).

    Parameters
    ----------
    path : Path
        Audio file, decoded locally.
    options, request, stream_options
        Connection, recognition and pacing options.
    fmt : {"txt", "json"}
        Output format.
    quiet : bool
        No summary on stderr.
    prog : str
        Program name for messages.
    status_timeout : float
        Deadline of the readiness check made before streaming.
    """

    def fail(message: str) -> bool:
        printer.end_line(keep=True)
        print(f"{prog}: FAILED {path}: {message}", file=sys.stderr)
        return False

    printer = EventPrinter(sys.stdout, fmt, sys.stdout.isatty(), str(path))
    if not path.is_file():
        return fail("no such file")
    began = time.perf_counter()
    latencies: list[float] = []
    with Qwen3ASRClient(options) as client:
        try:
            deadline = min(options.timeout or status_timeout, status_timeout)
            health = client.health(timeout=deadline, model=options.stream_model)
        except Qwen3ASRError as exc:
            return fail(f"server {options.url} unreachable: {exc}")
        if not health.ok:
            return fail(f"model {options.stream_model} at {options.url} is not ready")
        stream = client.stream(path, request, stream_options)
        try:
            with stream:
                for event in stream:
                    if isinstance(event, Partial):
                        latencies.append(event.latency)
                        printer.partial(event)
                    elif isinstance(event, Utterance):
                        printer.utterance(event)
                    else:
                        printer.final(event)
        except Qwen3ASRError as exc:
            return fail(str(exc))
        except OSError as exc:
            return fail(f"cannot read: {exc.strerror or exc}")
        finally:
            printer.end_line(keep=True)
    if not quiet:
        summary = describe(stream.stats, latencies, time.perf_counter() - began)
        print(f"{prog}: stream {stream.sequence_id}: {summary}", file=sys.stderr)
    return True
