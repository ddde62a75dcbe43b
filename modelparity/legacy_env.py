"""The onnx-tf environment: a separate virtualenv with the last stack onnx-tf 1.10.0 works on.

onnx-tf predates onnx 1.16 (which removed `onnx.mapping`) and Keras 3, and needs tensorflow-addons,
so it cannot live in the main environment. This module creates that environment from the pins in
`onnx_tf_constraints.txt` and tells where it is:

    python -m modelparity.legacy_env            # create (or check) it
    python -m modelparity.legacy_env --where    # print its directory

Its directory is $MODELPARITY_ONNX_TF_ENV, else ~/.cache/modelparity/onnx-tf-env. The environment
records the pins it was built from; one built from other pins counts as absent.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

ENV_VARIABLE = "MODELPARITY_ONNX_TF_ENV"
CONSTRAINTS = Path(__file__).with_name("onnx_tf_constraints.txt")
REQUIREMENTS = ("onnx-tf", "tensorflow", "tensorflow-addons", "tensorflow-probability", "onnx",
                "numpy")
MARKER = "modelparity-pins.sha256"
CREATE_COMMAND = "python -m modelparity.legacy_env"
PYTHON_VERSION = (3, 11)


def pins_digest() -> str:
    """A hash of the pins: part of every onnx-tf artifact's store key."""
    return hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()[:16]


def env_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modelparity" / "onnx-tf-env"
    return Path(os.environ.get(ENV_VARIABLE) or default)


def env_python() -> Path:
    return env_dir() / "bin" / "python"


def absent_reason() -> str | None:
    """Why the environment cannot be used (None when it can)."""
    marker = env_dir() / MARKER
    if not env_python().exists() or not marker.exists():
        return f"the onnx-tf environment is not at {env_dir()}"
    if marker.read_text().strip() != pins_digest():
        return f"the onnx-tf environment at {env_dir()} was built from other pins"
    return None


def create(directory: Path) -> None:
    """Create the environment (idempotent: an environment with the current pins is kept)."""
    if sys.version_info[:2] != PYTHON_VERSION:
        raise SystemExit(f"the onnx-tf environment needs Python {PYTHON_VERSION[0]}.{PYTHON_VERSION[1]} "
                         f"(tensorflow 2.15 has no wheels for {sys.version.split()[0]}); run this "
                         "command with a Python 3.11 interpreter")
    marker = directory / MARKER
    if marker.exists() and marker.read_text().strip() == pins_digest():
        print(f"onnx-tf environment ready at {directory}")
        return
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(directory)], check=True)
    # The main environment's constraints (PIP_CONSTRAINT under tox) pin the opposite versions.
    env = {**os.environ, "PIP_CONSTRAINT": str(CONSTRAINTS)}
    subprocess.run([str(directory / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile",
                    *REQUIREMENTS], check=True, env=env)
    marker.write_text(pins_digest() + "\n")
    print(f"onnx-tf environment created at {directory}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--where", action="store_true", help="print the environment's directory")
    arguments = parser.parse_args()
    if arguments.where:
        print(env_dir())
    else:
        create(env_dir())


if __name__ == "__main__":
    main()
