"""Copy the python backend stub of the nvidia-pytriton Triton build next to its backend (CPU image build).

scripts/serve_cpu.sh does the same at start-up when the stub is missing; the CPU
server image runs read-only and unprivileged, so the copy happens at build time.
Run with the project environment's Python: ``.venv/bin/python docker/install_cpu_stub.py``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main() -> int:
    import pytriton

    home = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    source = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not source.is_file():
        print(f"install_cpu_stub: no stub for Python {version} in {home}", file=sys.stderr)
        return 1
    target = home / "backends" / "python" / "triton_python_backend_stub"
    shutil.copy2(source, target)
    target.chmod(0o755)
    print(f"install_cpu_stub: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
