"""CI's check of the installed path: `modelparity parity` run in examples/user_project (copied outside
the repository) used that project's settings: its model and formats only, its expected failure
honoured, its reports in its own tree.

    python scripts/check_example_report.py PROJECT_DIR
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path


def main() -> int:
    project = Path(sys.argv[1]).resolve()
    settings = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["modelparity"]
    report = json.loads((project / settings["report_dir"] / "parity.json").read_text())
    checks = report["checks"]
    problems = []
    if not report["run"]["complete"]:
        problems.append("the report is not complete")
    if {c["model"] for c in checks} != {"classifier"}:
        problems.append(f"models {sorted({c['model'] for c in checks})}, expected only the project's")
    if {c["format"] for c in checks} != set(settings["formats"]):
        problems.append(f"formats {sorted({c['format'] for c in checks})}, expected {settings['formats']}")
    for check in checks:
        expected = "xfailed" if check["format"] == "onnx-dynamo-fp16-ort" else "passed"
        if check["status"] != expected:
            problems.append(f"{check['test_id']}: {check['status']}, expected {expected}")
    if not (project / settings["store"]).is_dir():
        problems.append(f"no store in the project ({settings['store']})")
    for problem in problems:
        print(f"example project: {problem}")
    print(f"example project: {len(checks)} checks, {report['summary']}" if not problems else "")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
