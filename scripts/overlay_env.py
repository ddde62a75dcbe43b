"""Create a small virtualenv that sees the main environment's packages but has other versions of a few
of them installed on top: how `tox -e opset-ort-previous` runs the harness with an older
onnxruntime without a second 8 GB environment.

The overlay's own site-packages come first on sys.path; the main environment's site-packages (and its
.pth files, e.g. the editable modelparity) are added after it by a .pth file, so pip sees the main
environment's packages too and installs only what the requirements need beyond them (onnxruntime
1.20.1: coloredlogs and humanfriendly).

    python scripts/overlay_env.py OVERLAY_DIR MAIN_ENV_DIR REQUIREMENT [REQUIREMENT ...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

MARKER = "modelparity-overlay.txt"


def site_packages(env: Path) -> Path:
    return Path(subprocess.run([str(env / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())


def main() -> None:
    overlay, base, requirements = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    wanted = "\n".join([str(base), *requirements]) + "\n"
    if (overlay / MARKER).is_file() and (overlay / MARKER).read_text() == wanted:
        print(f"overlay up to date: {overlay}")
        return
    venv.create(overlay, with_pip=True, clear=True)
    (site_packages(overlay) / "modelparity-base.pth").write_text(
        f"import site; site.addsitedir({str(site_packages(base))!r})\n")
    # The project's constraints pin the current versions; this environment exists to differ from them.
    environment = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}
    subprocess.run([str(overlay / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    *requirements], check=True, env=environment)
    (overlay / MARKER).write_text(wanted)
    print(f"overlay built: {overlay} ({', '.join(requirements)} over {base})")


if __name__ == "__main__":
    main()
