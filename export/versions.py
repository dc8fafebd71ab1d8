"""The pinned GPU stack (``docker/versions.env``), read the same way by every tool.

``docker/versions.env`` is the one place where the NGC tritonserver image, the
TensorRT-LLM / TensorRT versions it carries and the helper tools are pinned.
Shell scripts ``source`` it; Python reads it with :func:`read_versions`, which
accepts only ``KEY=VALUE`` lines (no quoting, no expansion) so both readers
always agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .layout import REPO_ROOT

VERSIONS_FILE = REPO_ROOT / "docker" / "versions.env"
_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=([^\s\"'$`\\]+)$")


@dataclass(frozen=True)
class Versions:
    """Pinned versions of the GPU target (see ``docker/versions.env``)."""

    triton_trtllm_image: str
    triton_release: str
    trtllm_version: str
    tensorrt_version: str
    cuda_version: str
    min_driver_version: str
    polygraphy_version: str
    cpu_base_image: str
    virtualenv_version: str

    def __post_init__(self) -> None:
        if not self.triton_trtllm_image.endswith(f":{self.triton_release}-trtllm-python-py3"):
            raise ValueError(
                f"TRITON_TRTLLM_IMAGE {self.triton_trtllm_image!r} is not the "
                f"{self.triton_release} trtllm-python-py3 tag"
            )


def parse_env_file(text: str, source: str = "versions.env") -> dict[str, str]:
    """``KEY=VALUE`` pairs of a shell-sourceable file; comments and blank lines are skipped."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"{source}:{number}: expected KEY=VALUE without quotes or spaces, got {raw!r}")
        key, value = match.groups()
        if key in values:
            raise ValueError(f"{source}:{number}: {key} is set twice")
        values[key] = value
    return values


def read_versions(path: Path = VERSIONS_FILE) -> Versions:
    """The pinned versions; raises ValueError when a key is missing or unknown."""
    values = parse_env_file(path.read_text(), str(path))
    names = set(Versions.__dataclass_fields__)
    given = {k.lower(): v for k, v in values.items()}
    missing, unknown = sorted(names - set(given)), sorted(set(given) - names)
    if missing or unknown:
        raise ValueError(f"{path}: missing {[m.upper() for m in missing]}, unknown {[u.upper() for u in unknown]}")
    return Versions(**given)
