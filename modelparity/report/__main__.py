"""python -m modelparity.report merge DIR... --out DIR [--allow-partial] [--fail-on-failures]

Merges the reports of a sharded run (one --report-dir per `pytest suites/parity --shard K/N`) into
one parity.json/.html (and batch.json/.html where the shards wrote one) in --out.
Exit status: 0 merged; 1 merged, but with --fail-on-failures a merged report has failed or errored
checks or is partial; 2 nothing merged (the message names the file and the fix).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from modelparity.report.merge import MergeError, merge


def main(argv: Sequence[str] | None = None, prog: str = "python -m modelparity.report") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    merging = commands.add_parser("merge", help="merge sharded runs' reports into one",
                                  description=__doc__.split("\n\n")[1])
    merging.add_argument("directories", nargs="+", type=Path, metavar="DIR",
                         help="a shard's report directory (its --report-dir)")
    merging.add_argument("--out", required=True, type=Path, metavar="DIR",
                         help="where the merged reports go (not one of the shards' directories)")
    merging.add_argument("--allow-partial", action="store_true",
                         help="merge a shard whose run did not finish (died, or still running: its "
                              "journal's records), or a sharded run with shards missing; the merged "
                              "report then says it is not complete and names them")
    merging.add_argument("--fail-on-failures", action="store_true",
                         help="exit 1 when a merged report has failed or error checks or is partial "
                              "(a CI gate over all shards)")
    options = parser.parse_args(argv)
    try:
        written = merge(options.directories, options.out, options.allow_partial)
    except MergeError as error:
        print(f"{prog} merge: {error}", file=sys.stderr)
        return 2
    failing = []
    for name, facts in written.items():
        counts = ", ".join(f"{status} {n}" for status, n in facts["summary"].items() if n) or "no checks"
        state = "" if facts["complete"] else "; PARTIAL (a shard did not finish, or is missing)"
        print(f"{name}: {facts['checks']} checks from {facts['shards']} shards ({counts}){state} -> "
              f"{facts['json']}, {facts['html']}")
        if facts["summary"]["failed"] + facts["summary"]["error"] or not facts["complete"]:
            failing.append(name)
    if options.fail_on_failures and failing:
        print(f"{prog} merge: failed or error checks, or a partial shard, in {', '.join(failing)} "
              "(--fail-on-failures)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
