"""The transformers reference (fp32, one request at a time) in a child process."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time

from perf.clips import BenchClip
from perf.load import Reply
from perf.systems.base import REPO, BenchSystem, SystemConfig, SystemUnavailableError
from perf.systems.transformers_worker import ANSWER_PREFIX

logger = logging.getLogger(__name__)

# Loading a 1.7B checkpoint in fp32 from bf16 safetensors takes about a minute on 2 cores.
READY_TIMEOUT_S = 900.0


class TransformersSystem(BenchSystem):
    """``Qwen3ASRForConditionalGeneration.generate`` on one clip at a time (the correctness reference).

    It has no server and no batching across requests: it runs at concurrency 1 only, and in
    fp32 only (it is the fp32 reference both precisions are compared with).
    """

    name = "transformers"

    def __init__(self, config: SystemConfig) -> None:
        super().__init__(config)
        self.proc: subprocess.Popen | None = None
        self.ready_seconds: float | None = None
        self._lock = threading.Lock()
        self._stderr = None

    @property
    def precision_label(self) -> str:
        return "fp32"

    def max_concurrency(self) -> int | None:
        return 1

    def prepare(self) -> None:
        if self.config.precision != "fp32":
            raise SystemUnavailableError("the transformers reference runs in fp32 only (see the fp32 tables)")

    def start(self) -> int:
        log_path = self.config.log_dir / f"transformers-{self.config.size}.log"
        self._stderr = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perf.systems.transformers_worker", "--checkpoint", str(self.config.checkpoint)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=REPO,
            env=env,
            text=True,
            start_new_session=True,
        )
        t0 = time.perf_counter()
        answer = self._read_answer(READY_TIMEOUT_S)
        if answer != "ready":
            self.stop()
            raise SystemUnavailableError(f"transformers worker did not start: {answer!r} (log {log_path})")
        self.ready_seconds = time.perf_counter() - t0
        return self.proc.pid

    def _read_answer(self, timeout: float) -> object:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                return {"error": f"worker exited with {self.proc.poll()}"}
            if line.startswith(ANSWER_PREFIX):
                return json.loads(line[len(ANSWER_PREFIX) :])
        return {"error": "timeout"}

    def transcribe(self, clip: BenchClip, max_new_tokens: int, min_new_tokens: int) -> Reply:
        request = {
            "wav_b64": base64.b64encode(clip.wav).decode(),
            "max_new_tokens": max_new_tokens,
            "min_new_tokens": min_new_tokens,
        }
        with self._lock:
            if self.proc is None or self.proc.stdin is None:
                raise RuntimeError("worker not running")
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            answer = self._read_answer(READY_TIMEOUT_S)
        if not isinstance(answer, dict) or "ids" not in answer:
            raise RuntimeError(f"transformers worker: {answer}")
        ids = tuple(int(t) for t in answer["ids"])
        return Reply(ids, len(ids))

    def stop(self) -> None:
        if self.proc is not None:
            from perf.systems.base import stop_process_group

            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                stop_process_group(self.proc)
            self.proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def describe(self) -> dict[str, object]:
        return {
            "how": "transformers Qwen3ASRForConditionalGeneration.generate, fp32, greedy, one clip at a time "
            "(min_new_tokens = max_new_tokens), WAV bytes decoded like the servers do",
            "ready_seconds": self.ready_seconds,
        }
