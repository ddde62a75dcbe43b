"""Create (or reuse) the one virtualenv both tox environments run in.

tox 4 rebuilds a virtualenv whenever another environment name uses its directory, and this one is
about 8 GB (torch's CUDA build), so `tox -e tests` and `tox -e parity` share it through this script
instead: it installs modelparity with every extra under constraints.txt, and does nothing when the
environment was already built from the same pyproject.toml and constraints.txt.

    python scripts/make_env.py ENV_DIR [EXTRA]

EXTRA is `all` (default: ONNX Runtime for the CPU) or `all-gpu` (onnxruntime-gpu and TensorRT, for
an NVIDIA GPU machine: tox -e gpu); the two never share an environment.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ("pyproject.toml", "constraints.txt")
MARKER = "modelparity-env.sha256"


def digest() -> str:
    content = hashlib.sha256()
    for name in INPUTS:
        content.update((ROOT / name).read_bytes())
    return content.hexdigest()


def main() -> None:
    env = Path(sys.argv[1])
    extra = sys.argv[2] if len(sys.argv) > 2 else "all"
    marker = env / MARKER
    if marker.exists() and marker.read_text().strip() == digest() + extra:
        print(f"environment up to date: {env}")
        return
    venv.create(env, with_pip=True, clear=True)
    # --no-compile: byte-compiling 8 GB of packages up front costs minutes; imports compile lazily.
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile",
                    "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[{extra}]"], check=True)
    marker.write_text(digest() + extra + "\n")
    print(f"environment built: {env}")


if __name__ == "__main__":
    main()
