"""Build steps as plain commands: printable (``--dry-run``), re-runnable, skipped when up to date.

A :class:`Step` is one command with the files it reads and writes. The gpu
build is a list of them (:mod:`.gpu_plan`). :func:`run_steps` runs each in its
environment, checks that it produced its outputs and records a stamp; a step
whose outputs exist and whose command and inputs are unchanged since its last
successful run is skipped, so an interrupted build resumes where it stopped.

Two environments exist: ``venv`` (the project environment: ONNX export,
ONNX Runtime, config filling) and ``container`` (the NGC image's own Python
and tools: TensorRT, TensorRT-LLM), which gets the environment without the
project venv on ``PATH`` and without ``PYTHONPATH``/``VIRTUAL_ENV``, so the
container's packages (e.g. its transformers) are never shadowed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

ENVIRONMENTS = ("venv", "container")
_STRIPPED = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")


@dataclass(frozen=True)
class Step:
    """One command of a build.

    Attributes
    ----------
    name : str
        Unique name (also the stamp file name and the ``--stage`` selector).
    argv : tuple of str
        The command.
    environment : str
        ``venv`` or ``container`` (see module docstring).
    inputs, outputs : tuple of Path
        Files or folders the command reads / must produce.
    env : tuple of (str, str)
        Extra environment variables.
    """

    name: str
    argv: tuple[str, ...]
    environment: str
    description: str
    inputs: tuple[Path, ...] = ()
    outputs: tuple[Path, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.environment not in ENVIRONMENTS:
            raise ValueError(f"step {self.name}: environment must be one of {ENVIRONMENTS}")
        if not self.argv:
            raise ValueError(f"step {self.name}: empty command")

    def render(self) -> str:
        """The command as one shell line (``env K=V ... argv``)."""
        prefix = ["env", *(f"{k}={v}" for k, v in self.env)] if self.env else []
        return shlex.join([*prefix, *self.argv])


def fingerprint(paths: Sequence[Path]) -> list[list[object]]:
    """Names, sizes and mtimes of files (folders: every file below them); missing paths included."""
    out: list[list[object]] = []
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                st = f.stat()
                out.append([str(f), st.st_size, st.st_mtime_ns])
            else:
                out.append([str(f), None, None])
    return out


def stamp_of(step: Step) -> str:
    payload = {"argv": step.argv, "env": step.env, "inputs": fingerprint(step.inputs)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def up_to_date(step: Step, stamp_dir: Path) -> bool:
    """Outputs present and command + inputs unchanged since the last successful run."""
    if not step.outputs or not all(p.exists() for p in step.outputs):
        return False
    stamp = stamp_dir / f"{step.name}.stamp"
    return stamp.is_file() and stamp.read_text().strip() == stamp_of(step)


def environment_for(step: Step, base: Mapping[str, str], venv_bin: Path | None) -> dict[str, str]:
    """The process environment of ``step`` (see module docstring)."""
    env = dict(base)
    if step.environment == "container":
        for key in _STRIPPED:
            env.pop(key, None)
        if venv_bin is not None:
            keep = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != venv_bin]
            env["PATH"] = os.pathsep.join(keep)
    env.update(dict(step.env))
    return env


Runner = Callable[..., object]


def run_steps(
    steps: Sequence[Step],
    stamp_dir: Path,
    only: Sequence[str] = (),
    force: bool = False,
    venv_bin: Path | None = None,
    runner: Runner = subprocess.run,
) -> list[str]:
    """Run ``steps`` in order (only those named in ``only`` when given); returns the names that ran.

    Raises
    ------
    ValueError
        For an unknown name in ``only``.
    RuntimeError
        When a step fails or does not produce its outputs.
    """
    names = [s.name for s in steps]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are: {', '.join(names)}")
    stamp_dir.mkdir(parents=True, exist_ok=True)
    ran = []
    for step in steps:
        if only and step.name not in only:
            continue
        if not force and up_to_date(step, stamp_dir):
            logger.info("[%s] up to date, skipped", step.name)
            continue
        logger.info("[%s] %s\n  $ %s", step.name, step.description, step.render())
        (stamp_dir / f"{step.name}.stamp").unlink(missing_ok=True)
        try:
            runner(list(step.argv), env=environment_for(step, os.environ, venv_bin), check=True)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"step {step.name} failed with exit code {exc.returncode}") from exc
        except FileNotFoundError as exc:
            raise RuntimeError(f"step {step.name}: {step.argv[0]} not found ({step.environment} environment)") from exc
        missing = [str(p) for p in step.outputs if not p.exists()]
        if missing:
            raise RuntimeError(f"step {step.name} finished but did not produce {missing}")
        (stamp_dir / f"{step.name}.stamp").write_text(stamp_of(step) + "\n")
        ran.append(step.name)
    return ran
