"""The `modelparity` command: the suites on the models of the project you run it in, with that
project's settings, and what this machine can run.

    modelparity parity [PYTEST ARGS]     pytest on the packaged suites/parity (likewise dynamic,
                                         batch, latency, precision, opset)
    modelparity formats [--formats GLOBS] [--format-plugin FILE]
    modelparity doctor
    modelparity repro ... / modelparity diverge ...
    modelparity report merge DIR... --out DIR [--allow-partial] [--fail-on-failures]

A suite runs with pytest's rootdir at the current folder and its pyproject.toml as the config file,
so `[tool.modelparity]` there (models, formats, tolerances, expected failures, store, reports,
baselines, noise floors) applies, and relative paths in it resolve against it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

SUITES = ("parity", "dynamic", "batch", "latency", "precision", "opset")
# what each suite's tox environment adds (tox.ini): latency measures only with pytest-benchmark on
SUITE_ARGS = {"latency": ["--benchmark-only"]}


def suites_root() -> Path:
    """Where the suites are: the package modelparity.suites when installed, the repository's
    suites/ folder in a checkout (the same files; see fixtures/__init__.py)."""
    spec = importlib.util.find_spec("modelparity.suites")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parent.parent / "suites"


def suite_command(suite: str, arguments: Sequence[str], project: Path) -> list[str]:
    """pytest's arguments for one suite run in `project`."""
    config = ["-c", str(project / "pyproject.toml")] if (project / "pyproject.toml").is_file() else []
    return [str(suites_root() / suite), "--rootdir", str(project), *config, "-p", "no:cacheprovider",
            *SUITE_ARGS.get(suite, []), *arguments]


def run_suite(suite: str, arguments: Sequence[str]) -> int:
    import pytest

    return int(pytest.main(suite_command(suite, arguments, Path.cwd())))


def formats(arguments: Sequence[str]) -> int:
    """Every format: its chain, whether it runs here and why not, how to install what it lacks."""
    from modelparity.formats import build_graph
    from modelparity.machine import machine_info

    parser = argparse.ArgumentParser(prog="modelparity formats", description=formats.__doc__)
    parser.add_argument("--formats", default="*", help="comma-separated globs of format ids")
    parser.add_argument("--format-plugin", action="append", default=[], metavar="FILE",
                        help="a module with formats(graph, options), as in the suites")
    parser.add_argument("--opsets", default="13,17,23")
    parser.add_argument("--json", action="store_true", help="one JSON object per format")
    options = parser.parse_args(arguments)
    graph = build_graph({"opsets": [int(o) for o in options.opsets.split(",")]}, options.format_plugin)
    machine = machine_info()
    for node in graph.runnable(options.formats.split(",")):
        missing = [problem for r in graph.requirements(node.id) if (problem := r.problem())]
        reasons = [reason for n in graph.chain(node.id) if n.applies and (reason := n.applies(machine))]
        status = "missing: " + "; ".join(missing) if missing else (
            "not here: " + "; ".join(reasons) if reasons else "runs here")
        chain = " -> ".join(n.id for n in graph.chain(node.id))
        if options.json:
            print(json.dumps({"format": node.id, "chain": chain, "precision": node.precision,
                              "device": node.device, "runs_here": not (missing or reasons),
                              "missing": missing, "not_applicable": reasons}))
        else:
            print(f"{node.id:<44} {node.precision:<5} {status}\n    {chain}")
    return 0


def doctor(arguments: Sequence[str]) -> int:
    """Backends and versions, CPU flags and GPUs: what decides which formats run and how."""
    from modelparity import gpu
    from modelparity.machine import machine_info, tool_versions

    argparse.ArgumentParser(prog="modelparity doctor", description=doctor.__doc__).parse_args(arguments)
    machine = machine_info()
    print(f"python {machine['python']} on {machine['platform']}")
    print(f"cpu {machine['cpu_model']} ({machine['cpu_count']} cores); inference flags: "
          f"{' '.join(machine['cpu_flags']) or 'none'}")
    print(f"gpu {gpu.summary()}")
    conflict = gpu.onnxruntime_conflict()
    if conflict:
        print(f"PROBLEM: {conflict}")
    for tool, version in tool_versions().items():
        print(f"  {tool:<24} {version}")
    print(f"suites: {suites_root()}")
    return 1 if conflict else 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    commands = {**{suite: f"pytest on suites/{suite}, in this project (pytest's options follow)"
                   for suite in SUITES},
                "formats": formats.__doc__, "doctor": doctor.__doc__,
                "repro": "re-run one check on saved inputs (python -m modelparity.repro)",
                "diverge": "where an ONNX format's graph starts to differ (python -m modelparity.diverge)",
                "report": "merge sharded runs' reports into one (python -m modelparity.report merge)"}
    if not arguments or arguments[0] in ("-h", "--help") or arguments[0] not in commands:
        print(__doc__.split("\n\n")[0] + "\n\ncommands:")
        for name, help_text in commands.items():
            print(f"  {name:<10} {(help_text or '').splitlines()[0]}")
        return 0 if arguments[:1] in ([], ["-h"], ["--help"]) else 2
    command, rest = arguments[0], arguments[1:]
    if command in SUITES:
        if rest[:1] in (["-h"], ["--help"]):
            print(f"modelparity {command} [PYTEST ARGS]: {commands[command]}; runs\n  pytest "
                  + " ".join(suite_command(command, ["..."], Path.cwd())) + "\npytest's own --help "
                  "lists modelparity's options under 'modelparity'.")
            return 0
        return run_suite(command, rest)
    if command == "formats":
        return formats(rest)
    if command == "doctor":
        return doctor(rest)
    if command == "report":
        from modelparity.report.__main__ import main as report_main

        return report_main(rest, prog="modelparity report")
    from modelparity import diverge, repro

    return (repro.main if command == "repro" else diverge.main)(rest)


if __name__ == "__main__":
    sys.exit(main())
