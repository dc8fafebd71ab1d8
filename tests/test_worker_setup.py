"""What every model's worker sets up first (``serving.setup_worker``): numpy's BLAS on one thread.

Run in a fresh interpreter, as a Triton python stub is: the limit applies to the whole process.
"""

from __future__ import annotations

import json
import subprocess
import sys

from qwen3_asr_triton.serving import BLAS_THREADS

PROBE = """
import json, logging, numpy
from threadpoolctl import threadpool_info
before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
from qwen3_asr_triton.serving import setup_worker
setup_worker("INFO")
after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
a = numpy.ones((300, 300))
print(json.dumps({"before": before, "after": after, "sum": float((a @ a).sum())}))
"""


def test_setup_worker_runs_numpys_blas_on_one_thread() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"OPENBLAS_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"},
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["before"] == [2], "the probe should start with two BLAS threads"
    assert out["after"] == [BLAS_THREADS] == [1]
    assert out["sum"] == 300.0**3
    assert "numpy's BLAS (openblas" in done.stderr and "2 -> 1 threads" in done.stderr
