"""Our Triton CPU deployment: ``build_engines.sh`` then ``scripts/serve_cpu.sh``, driven over gRPC."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from perf.clips import BenchClip
from perf.load import Reply
from perf.systems.base import BENCH_CACHE, REPO, BenchSystem, SystemConfig, SystemUnavailableError

logger = logging.getLogger(__name__)

ENTRY_MODEL = "qwen3_asr"
# The fast mode's value of the build's precision knob: int8 or bf16, chosen from the CPU flags where the
# models load (qwen3_asr_triton/cpu_precision.py; the report's machine.fast_precision says which).
DEFAULT_FAST_PRECISION = "fast"
# Builds defaults that bound concurrency (README "Building"): raised to the benchmark's highest level.
CONCURRENCY_KNOBS = ("entry-instances", "max-running-sequences")
BUILD_TIMEOUT_S = 3600.0
GRPC_TIMEOUT_S = 600.0


def build_knobs() -> set[str]:
    """The ``--flags`` the cpu repository build accepts (parsed from its ``--help``)."""
    out = subprocess.run(
        [sys.executable, "-m", "qwen3_asr_triton.export.build_repository", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return {word.rstrip(",") for word in out.split() if word.startswith("--")}


class TritonSystem(BenchSystem):
    """Builds a cpu model repository for the checkpoint and precision, serves it, sends unary requests."""

    name = "triton"

    def __init__(self, config: SystemConfig) -> None:
        super().__init__(config)
        self.server = None
        self.repository: Path | None = None
        self.build_args: list[str] = []
        self.build_seconds: float | None = None
        self.ready_seconds: float | None = None
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()

    @property
    def precision_label(self) -> str:
        if self.config.precision == "fast":
            return self.config.options.get("fast-precision", DEFAULT_FAST_PRECISION)
        return "fp32"

    # ------------------------------------------------------------------ build
    def _work_dir(self, ckpt: Path) -> Path:
        """A work dir whose ``onnx-asr`` links to the tests' cached export of ``ckpt``.

        The export (minutes at 0.6B/1.7B dims) is made once per checkpoint and shared by both
        precisions: the build adds the int8 copies next to the fp32 graphs under their own names.
        """
        sys.path.insert(0, str(REPO))
        from tests.harness import cached_export

        export = cached_export(ckpt)
        work = BENCH_CACHE / "work" / ckpt.name
        link = work / "onnx-asr"
        work.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and link.resolve() != export.resolve():
            link.unlink()  # points at an export of older code (pruned or stale)
        if not link.is_symlink():
            if link.exists():
                raise SystemUnavailableError(f"{link} exists and is not a link to the cached export")
            link.symlink_to(export, target_is_directory=True)
        return work

    def prepare(self) -> None:
        knobs = build_knobs()
        args: list[str] = []
        if "--precision" in knobs:
            args += ["--precision", self.precision_label]
        elif self.config.precision != "fp32":
            raise SystemUnavailableError(
                f"the repository build has no --precision knob yet: fast mode ({self.precision_label}) not built"
            )
        level = str(max(self.config.max_concurrency, 16))
        extra = {k: v for k, v in self.config.options.items() if k != "fast-precision"}
        for knob in CONCURRENCY_KNOBS:
            extra.setdefault(knob, level)
        for knob, value in sorted(extra.items()):
            if f"--{knob}" not in knobs:
                raise SystemUnavailableError(f"the repository build has no --{knob} knob")
            args += [f"--{knob}", value]
        ckpt = self.config.checkpoint
        self.repository = BENCH_CACHE / "repos" / f"{ckpt.name}-{self.precision_label}"
        work = self._work_dir(ckpt)
        cmd = [
            str(REPO / "build_engines.sh"),
            "--model",
            str(ckpt),
            "--target",
            "cpu",
            "--output",
            str(self.repository),
            "--work-dir",
            str(work),
            *args,
        ]
        self.build_args = cmd[1:]
        log_path = self.config.log_dir / f"triton-{self.config.size}-{self.precision_label}-build.log"
        logger.info("building %s (log %s)", self.repository, log_path)
        t0 = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S, check=False)
        self.build_seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise SystemUnavailableError(f"build_engines.sh failed ({proc.returncode}):\n{tail}")

    # ------------------------------------------------------------------ serve
    def start(self) -> int:
        if self.repository is None:
            raise RuntimeError("prepare() first")
        sys.path.insert(0, str(REPO))
        from tests.harness import start_server

        log_path = self.config.log_dir / f"triton-{self.config.size}-{self.precision_label}-server.log"
        t0 = time.perf_counter()
        try:
            self.server = start_server(self.repository, log_path)
        except RuntimeError as exc:
            raise SystemUnavailableError(str(exc)[-3000:]) from exc
        self.ready_seconds = time.perf_counter() - t0
        return self.server.process.pid

    def _client(self):
        import tritonclient.grpc as grpcclient

        client = getattr(self._local, "client", None)
        if client is None:
            client = grpcclient.InferenceServerClient(self.server.grpc_url)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def transcribe(self, clip: BenchClip, max_new_tokens: int, min_new_tokens: int) -> Reply:
        import tritonclient.grpc as grpcclient

        inputs = []
        for name, array, dtype in (
            ("AUDIO", np.array([clip.wav], dtype=np.object_), "BYTES"),
            ("MAX_NEW_TOKENS", np.array([max_new_tokens], np.int32), "INT32"),
            ("MIN_NEW_TOKENS", np.array([min_new_tokens], np.int32), "INT32"),
        ):
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = self._client().infer(
            ENTRY_MODEL,
            inputs,
            outputs=[grpcclient.InferRequestedOutput("TOKEN_IDS")],
            client_timeout=GRPC_TIMEOUT_S,
        )
        ids = tuple(int(t) for t in result.as_numpy("TOKEN_IDS").reshape(-1))
        return Reply(ids, len(ids))

    def server_statistics(self) -> dict[str, dict[str, int]] | None:
        from perf.triton_stats import snapshot

        return snapshot(self.server.grpc_url) if self.server is not None else None

    def stop(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()
        self._local = threading.local()
        if self.server is not None:
            from tests.harness import stop_server

            code = stop_server(self.server)
            logger.info("triton stopped (exit %s)", code)
            self.server = None

    def describe(self) -> dict[str, object]:
        return {
            "build": " ".join(["build_engines.sh", *self.build_args]).replace(str(REPO) + os.sep, ""),
            "build_seconds": self.build_seconds,
            "ready_seconds": self.ready_seconds,
            "input": "AUDIO (16 kHz PCM16 WAV bytes) over gRPC, MAX_NEW_TOKENS = MIN_NEW_TOKENS",
        }
