"""Turning the CLI's FILES|DIRS|GLOBS into audio files, and choosing output file names."""

from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Extensions picked up when a directory is given (explicit files and glob
# matches are taken whatever their name): the containers FFmpeg, and so the
# server, decodes that hold audio.
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".flac",
        ".mp3",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".aac",
        ".mp4",
        ".webm",
        ".mka",
        ".mkv",
        ".mov",
        ".wma",
        ".aif",
        ".aiff",
        ".amr",
        ".3gp",
        ".caf",
        ".ac3",
    }
)
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputProblem:
    """An input argument that yielded no file (reported as a failure, the others still run)."""

    spec: str
    message: str


def _audio_files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def expand_inputs(specs: list[str]) -> tuple[list[Path], list[InputProblem]]:
    """Files for each argument: a file itself, a directory's audio files (recursively), a glob's matches.

    Returns
    -------
    (list of Path, list of InputProblem)
        Files in argument order (each once), and the arguments that gave none.
    """
    files: list[Path] = []
    problems: list[InputProblem] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for spec in specs:
        path = Path(spec)
        if path.is_file():
            add(path)
        elif path.is_dir():
            found = _audio_files_under(path)
            if not found:
                problems.append(InputProblem(spec, "directory holds no audio files"))
            for item in found:
                add(item)
        elif any(c in _GLOB_CHARS for c in spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            found = [m for m in matches if m.is_file()]
            for m in matches:
                if m.is_dir():
                    found.extend(_audio_files_under(m))
            if not found:
                problems.append(InputProblem(spec, "pattern matched no files"))
            for item in found:
                add(item)
        else:
            problems.append(InputProblem(spec, "no such file or directory"))
    return files, problems


def output_paths(files: list[Path], output_dir: Path, extension: str) -> list[Path]:
    """Where each file's result goes: its path relative to the inputs' common folder, new extension.

    Two inputs that would collide (``a.wav`` and ``a.mp3``) keep their own extension
    before the new one (``a.wav.srt``, ``a.mp3.srt``).
    """
    if not files:
        return []
    resolved = [f.resolve() for f in files]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    relative = [p.relative_to(root) for p in resolved]
    plain = [r.with_suffix(extension) for r in relative]
    counts = Counter(plain)
    return [output_dir / (p if counts[p] == 1 else r.with_name(r.name + extension)) for p, r in zip(plain, relative)]
