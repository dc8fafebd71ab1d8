"""Check the container before building engines: pinned versions, the build tools and a visible GPU.

Runs with the container's Python (standard library plus what the NGC
tritonserver trtllm image ships); the expected versions come from
``docker/versions.env`` through the build plan's command line.

Usage::

    python3 export/trt/preflight.py --tensorrt 10.11.0.33 --tensorrt-llm 1.0.0 --polygraphy 0.53.6
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys


def installed_version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # an absent or broken package both mean "not usable"
        return None


def problems(expected: dict[str, str], found: dict[str, str | None], tools: dict[str, bool], gpus: int) -> list[str]:
    """Human-readable reasons the container cannot build the engines (empty when it can)."""
    out = []
    for module, want in expected.items():
        have = found.get(module)
        if have is None:
            out.append(f"python module {module} is missing (expected {want})")
        elif not (have == want or have.startswith(want + ".") or have.startswith(want + "+")):
            out.append(f"{module} {have} found, {want} pinned in docker/versions.env")
    out += [f"{tool} not found on PATH" for tool, ok in tools.items() if not ok]
    if gpus < 1:
        out.append("no CUDA device is visible (run the container with --gpus or an nvidia.com/gpu limit)")
    return out


def visible_gpus() -> int:
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # no torch or no driver: no usable GPU
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the engine-build container.")
    parser.add_argument("--tensorrt", required=True)
    parser.add_argument("--tensorrt-llm", required=True)
    parser.add_argument("--polygraphy", required=True)
    args = parser.parse_args(argv)
    expected = {"tensorrt": args.tensorrt, "tensorrt_llm": args.tensorrt_llm, "polygraphy": args.polygraphy}
    found = {m: installed_version(m) for m in expected}
    tools = {"trtllm-build": shutil.which("trtllm-build") is not None}
    issues = problems(expected, found, tools, visible_gpus())
    for issue in issues:
        print(f"preflight: {issue}", file=sys.stderr)
    if not issues:
        print(f"preflight: ok ({', '.join(f'{m} {v}' for m, v in found.items())})")
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
