"""The litert-torch environment: an overlay virtualenv over the main environment, with litert-torch.

litert-torch 0.10.0 needs xdsl 0.28, which needs typing-extensions < 4.13; the main environment pins
4.16, so the two cannot share site-packages. The overlay's own site-packages come first and a .pth
file adds the base environment's after them (as scripts/overlay_env.py does): torch, torchao and
ai-edge-litert come from the base, and only what `litert_torch_constraints.txt` pins is installed in
the overlay. The base is the environment of the Python running this module.

    python -m modelparity.litert_env            # create (or check) it
    python -m modelparity.litert_env --where    # print its directory

Its directory is $MODELPARITY_LITERT_ENV, else ~/.cache/modelparity/litert-torch-env. The overlay
records the pins it was built from and the base it was built over; one built from other pins, or
over another base, counts as absent.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ENV_VARIABLE = "MODELPARITY_LITERT_ENV"
CONSTRAINTS = Path(__file__).with_name("litert_torch_constraints.txt")
REQUIREMENTS = ("litert-torch",)
MARKER = "modelparity-overlay.txt"
CREATE_COMMAND = "python -m modelparity.litert_env"


def pins_digest() -> str:
    """A hash of the pins: part of every litert-torch artifact's store key."""
    return hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()[:16]


def base_site_packages() -> Path:
    """The site-packages the overlay is layered over: this interpreter's environment's."""
    return Path(sysconfig.get_paths()["purelib"])


def marker_text() -> str:
    """What the marker of an overlay built now, from these pins over this base, holds."""
    base = hashlib.sha256(str(base_site_packages()).encode()).hexdigest()[:16]
    return f"pins {pins_digest()}\nbase {base} {base_site_packages()}\n"


def env_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    default = cache / "modelparity" / "litert-torch-env"
    return Path(os.environ.get(ENV_VARIABLE) or default)


def env_python() -> Path:
    return env_dir() / "bin" / "python"


def absent_reason() -> str | None:
    """Why the overlay cannot be used (None when it can)."""
    marker = env_dir() / MARKER
    if not env_python().exists() or not marker.exists():
        return f"the litert-torch environment is not at {env_dir()}"
    pins, base = (marker.read_text().splitlines() + ["", ""])[:2]
    expected_pins, expected_base = marker_text().splitlines()
    if pins != expected_pins:
        return f"the litert-torch environment at {env_dir()} was built from other pins"
    if base != expected_base:
        return (f"the litert-torch environment at {env_dir()} was built over another environment "
                f"({base.split(' ', 2)[-1]}, not {base_site_packages()})")
    return None


def _overlay_site_packages(directory: Path) -> Path:
    return Path(subprocess.run([str(directory / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())


def create(directory: Path) -> None:
    """Create the overlay (idempotent: one with the current pins over this base is kept)."""
    marker = directory / MARKER
    if marker.exists() and marker.read_text() == marker_text():
        print(f"litert-torch environment ready at {directory}")
        return
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(directory)], check=True)
    (_overlay_site_packages(directory) / "modelparity-base.pth").write_text(
        f"import site; site.addsitedir({str(base_site_packages())!r})\n")
    # The main environment's constraints (PIP_CONSTRAINT under tox) pin typing-extensions 4.16.
    env = {**os.environ, "PIP_CONSTRAINT": str(CONSTRAINTS)}
    subprocess.run([str(directory / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    *REQUIREMENTS], check=True, env=env)
    marker.write_text(marker_text())
    print(f"litert-torch environment created at {directory} over {base_site_packages()}")


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
