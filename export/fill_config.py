"""Fill Triton ``config.pbtxt`` templates and validate the result.

One template syntax: ``${NAME}`` with NAME in upper case (``[A-Z][A-Z0-9_]*``).
Filling is strict: a placeholder without a value, a value no template uses, a
malformed ``$`` construct, or a value that would break out of its quoted
string all raise :class:`TemplateError`. Every filled config is parsed with
tritonclient's ``model_config_pb2.ModelConfig``, so a typo in a field name or
an enum fails here (and in CI), not when Triton loads the repository.

Templates live in ``model_repository/<model>/`` as ``config.pbtxt.in`` (shared by
both targets) or ``config.<target>.pbtxt.in`` (target-specific).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_ANY_DOLLAR = re.compile(r"\$")
TEMPLATE_SUFFIX = ".pbtxt.in"


class TemplateError(ValueError):
    """A template or its values are inconsistent."""


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def _format(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if any(c in value for c in '"\\\n') or "${" in value:
            raise TemplateError(f"value of {name} contains a quote, backslash, newline or '${{': {value!r}")
        return value
    raise TemplateError(f"value of {name} has unsupported type {type(value).__name__}")


def fill_text(text: str, values: Mapping[str, object], source: str = "template") -> str:
    """Substitute every ``${NAME}`` in ``text``; refuses missing values and stray ``$``."""
    stripped = PLACEHOLDER.sub("", text)
    if _ANY_DOLLAR.search(stripped):
        line = stripped[: stripped.index("$")].count("\n") + 1
        raise TemplateError(f"{source}:{line}: malformed placeholder (use ${{UPPER_CASE}})")
    missing = sorted(placeholders(text) - set(values))
    if missing:
        raise TemplateError(f"{source}: no value for {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda m: _format(m.group(1), values[m.group(1)]), text)


def parse_model_config(text: str, source: str = "config"):
    """Parse config.pbtxt text into ``model_config_pb2.ModelConfig`` (raises TemplateError)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise TemplateError(f"{source}: not a valid Triton model config: {exc}") from exc
    return config


def template_for(model_dir: Path, target: str) -> Path | None:
    """The template a model uses for ``target``: ``config.<target>.pbtxt.in``, else ``config.pbtxt.in``."""
    specific = model_dir / f"config.{target}{TEMPLATE_SUFFIX}"
    if specific.is_file():
        return specific
    shared = model_dir / f"config{TEMPLATE_SUFFIX}"
    if shared.is_file():
        return shared
    return None


def fill_templates(templates: Mapping[str, Path], values: Mapping[str, object]) -> dict[str, str]:
    """Fill a set of templates (model name -> template path) with one value set.

    Returns model name -> filled text, each already validated against the model
    config proto and checked to carry its model's name.
    """
    used: set[str] = set()
    filled: dict[str, str] = {}
    for model, path in templates.items():
        text = path.read_text()
        used |= placeholders(text)
        out = fill_text(text, values, str(path))
        config = parse_model_config(out, str(path))
        if config.name != model:
            raise TemplateError(f"{path}: name is {config.name!r}, expected {model!r}")
        filled[model] = out
    unknown = sorted(set(values) - used)
    if unknown:
        raise TemplateError(f"values not used by any template: {', '.join(unknown)}")
    return filled
