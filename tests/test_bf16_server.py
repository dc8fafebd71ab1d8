"""bf16 and the run-time choice, end to end: repositories built with ``--precision bf16`` and ``fast``.

The bf16 repository is served by a real Triton server: its encoder and decoder run the torch modules
in bf16 (emulated by oneDNN on CPUs without bf16 instructions, slowly but correctly), and the server
gives the tokens the same torch runners give in this process. The fast repository holds both the
int8 graphs and the bf16 weights, and each model picks one from the CPU flags where it loads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from qwen3_asr_triton.artifacts import DECODER_GRAPH, ENCODER_GRAPH, onnx_filename, torch_weights_filename
from qwen3_asr_triton.cpu_precision import BF16, FAST, INT8, choose_fast_precision, read_cpu_flags
from tests.harness import start_server, stop_server
from tests.triton_requests import transcribe

pytestmark = [pytest.mark.server, pytest.mark.slow]

AMX_FLAGS = frozenset(["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"])
AVX2_FLAGS = frozenset(["avx2", "fma"])


def _build(asr_checkpoint: Path, asr_export: Path, root: Path, precision: str) -> tuple[Path, Path]:
    """A tiny cpu repository at ``precision`` (no aligner, no diarizer); returns it and its export folder.

    The session's cached export is linked into the work folder, so the build finds it up to date.
    """
    from qwen3_asr_triton.export.build_options import BuildOptions
    from qwen3_asr_triton.export.cpu_build import build_cpu_repository
    from qwen3_asr_triton.export.layout import ASR_EXPORT_DIRNAME

    opts = BuildOptions(precision=precision, kv_cache_mb=128, max_running_sequences=4, entry_instances=2)
    repo, work = root / "repo", root / "work"
    work.mkdir(parents=True)
    (work / ASR_EXPORT_DIRNAME).symlink_to(asr_export, target_is_directory=True)
    build_cpu_repository(asr_checkpoint, None, repo, work, opts)
    return repo, work / ASR_EXPORT_DIRNAME


@pytest.fixture(scope="module")
def bf16_build(asr_checkpoint: Path, asr_export: Path, tmp_path_factory) -> tuple[Path, Path]:
    return _build(asr_checkpoint, asr_export, tmp_path_factory.mktemp("bf16"), BF16)


@pytest.fixture(scope="module")
def bf16_server(bf16_build, tmp_path_factory):
    server = start_server(bf16_build[0], tmp_path_factory.mktemp("bf16-triton") / "server.log")
    yield server
    stop_server(server)


def test_a_bf16_repository_holds_weights_not_graphs(bf16_build) -> None:
    repo, _ = bf16_build
    for model in (ENCODER_GRAPH, DECODER_GRAPH):
        version = repo / model / "1"
        assert (version / torch_weights_filename(model)).is_file()
        assert not (version / onnx_filename(model)).exists()
        assert 'key: "precision" value: { string_value: "bf16" }' in (repo / model / "config.pbtxt").read_text()


def test_the_server_logs_bf16_and_gives_the_torch_runners_tokens(bf16_build, bf16_server, clips) -> None:
    from qwen3_asr_triton.pipeline import OfflineRecognizer
    from qwen3_asr_triton.torch_runner import TorchDecoderRunner, TorchEncoderRunner

    _, export = bf16_build
    wave = next(c for c in clips if c.name == "en_hello").waveform()
    out = transcribe(
        bf16_server.grpc_url, waveform=wave, rate=16000, language="English", max_new_tokens=12, min_new_tokens=12
    )
    log = bf16_server.log_path.read_text()
    assert "encoder computes in bf16 (configured bf16" in log
    assert "decoder computes in bf16 (configured bf16" in log
    offline = OfflineRecognizer(export)
    offline.stages.encoder = TorchEncoderRunner(export, BF16)
    offline.stages.decoder = TorchDecoderRunner(export, BF16)
    local = offline.transcribe(wave, "English", "", False, 12, 12)
    assert len(local.token_ids) == 12
    assert out["TOKEN_IDS"].tolist() == local.token_ids
    # The export the bf16 weights were written into still serves its fp32 graphs in-process.
    exact = OfflineRecognizer(export).transcribe(wave, "English", "", False, 12, 12)
    assert len(exact.token_ids) == 12


def test_concurrent_bf16_requests_batch_and_match_alone(bf16_server, clips) -> None:
    from concurrent.futures import ThreadPoolExecutor

    waves = [c.waveform() for c in clips[:3]]
    alone = [transcribe(bf16_server.grpc_url, waveform=w, rate=16000, max_new_tokens=8)["TEXT"][0] for w in waves]
    with ThreadPoolExecutor(3) as pool:
        together = list(
            pool.map(lambda w: transcribe(bf16_server.grpc_url, waveform=w, rate=16000, max_new_tokens=8), waves)
        )
    assert [t["TEXT"][0] for t in together] == alone


def test_fast_holds_both_and_picks_from_the_cpu_flags(asr_checkpoint, asr_export, tmp_path, monkeypatch) -> None:
    from qwen3_asr_triton import runners
    from qwen3_asr_triton.model_spec import ModelSpec
    from qwen3_asr_triton.torch_runner import TorchDecoderRunner, TorchEncoderRunner

    repo, _ = _build(asr_checkpoint, asr_export, tmp_path, FAST)
    params = {"precision": FAST, "intra_op_threads": "0", "ort_spin_wait": "false"}
    enc, dec = repo / "encoder" / "1", repo / "decoder" / "1"
    for version, graph in ((enc, ENCODER_GRAPH), (dec, DECODER_GRAPH)):
        ops = {n.op_type for n in onnx.load(str(version / onnx_filename(graph)), load_external_data=False).graph.node}
        assert "MatMulInteger" in ops, "fast places the int8 graph"
        assert (version / torch_weights_filename(graph)).is_file()
    monkeypatch.setattr(runners, "read_cpu_flags", lambda: AMX_FLAGS)
    assert isinstance(runners.encoder_runner(enc, params), TorchEncoderRunner)
    assert isinstance(runners.decoder_runner(dec, params), TorchDecoderRunner)
    monkeypatch.setattr(runners, "read_cpu_flags", lambda: AVX2_FLAGS)
    encoder, decoder = runners.encoder_runner(enc, params), runners.decoder_runner(dec, params)
    assert not isinstance(encoder, TorchEncoderRunner) and not isinstance(decoder, TorchDecoderRunner)
    features = ModelSpec.load(enc).features
    frames = features.chunk_frames
    embeds, lens = encoder(np.zeros((1, features.n_mels, frames), np.float32), np.array([frames]))
    assert embeds.shape[0] == 1 and lens.tolist()[0] > 0
    # This machine's own choice, as the server will log it.
    expected, _ = choose_fast_precision(read_cpu_flags(), True)
    monkeypatch.undo()
    chosen = runners.runtime_precision(params, "decoder")
    assert chosen == expected and chosen in (INT8, BF16)
