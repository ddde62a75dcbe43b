"""Expected failures as data, conditioned on the machine they were measured on.

A format's numbers can depend on the CPU (INT8 kernels with VNNI or AMX, OpenVINO's bf16 default on
a CPU with BF16) or on a GPU being present. An entry that holds on one machine and not another is
either conditioned (`when`: facts that must all hold here) or not strict (`strict = false`: a pass
is reported as XPASS, not as a broken build). A fact is a CPU flag as /proc/cpuinfo spells it
(`avx512_vnni`, `amx_int8`, `avx512_bf16`), `gpu` (an NVIDIA GPU visible to nvidia-smi), or the
architecture (`x86_64`, `aarch64`); `!fact` is its absence.
"""

from __future__ import annotations

import fnmatch
import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_FACT = re.compile(r"!?[a-z0-9_]+")
_KEYS = {"match", "reason", "when", "strict"}


class ExpectationError(ValueError):
    """An expected-failure entry is malformed; the message names the file and the fix."""


@dataclass(frozen=True)
class ExpectedFailure:
    """`match`: test id globs (a TOML string or list of strings), any of which selects a check."""

    match: tuple[str, ...]
    reason: str
    when: tuple[str, ...] = ()
    strict: bool = True

    def unmet(self, facts: frozenset[str]) -> list[str]:
        """The conditions of `when` that do not hold on a machine with `facts` (empty: it applies)."""
        return [c for c in self.when if (c.lstrip("!") in facts) == c.startswith("!")]

    def matches(self, test_id: str) -> bool:
        return any(fnmatch.fnmatchcase(test_id, pattern) for pattern in self.match)

    def describe(self) -> str:
        condition = f" when {' and '.join(self.when)}" if self.when else ""
        return f"{', '.join(self.match)}{condition}{'' if self.strict else ' (not strict)'}"


def parse_expected_failures(entries: Iterable[Mapping[str, Any]], source: str) -> list[ExpectedFailure]:
    """Read [[tool.modelparity.expected_failure]] tables; each needs `match` and a written `reason`."""
    parsed = []
    for index, entry in enumerate(entries):
        where = f"{source}, expected_failure entry {index + 1}"
        unknown = set(entry) - _KEYS
        if unknown:
            raise ExpectationError(f"{where}: unknown keys {sorted(unknown)}; use {sorted(_KEYS)}")
        match = entry.get("match", "")
        match = [match] if isinstance(match, str) else list(match)
        if not all(isinstance(m, str) and m.strip() for m in match) or not match \
                or not str(entry.get("reason", "")).strip():
            raise ExpectationError(f"{where}: every expected failure needs 'match' (a test id glob, or "
                                   "a list of them) and a written 'reason'")
        when = entry.get("when", [])
        when = [when] if isinstance(when, str) else list(when)
        bad = [c for c in when if not isinstance(c, str) or not _FACT.fullmatch(c)]
        if bad:
            raise ExpectationError(f"{where} ({entry['match']}): 'when' takes machine facts such as "
                                   f"\"avx512_vnni\", \"!amx_int8\" or \"gpu\"; got {bad}")
        strict = entry.get("strict", True)
        if not isinstance(strict, bool):
            raise ExpectationError(f"{where} ({entry['match']}): 'strict' is true or false, got {strict!r}")
        parsed.append(ExpectedFailure(tuple(match), str(entry["reason"]), tuple(when), strict))
    return parsed


def machine_facts(cpu_flags: Iterable[str], architecture: str, has_gpu: bool) -> frozenset[str]:
    """The facts `when` conditions are read against."""
    return frozenset({*cpu_flags, architecture, *(["gpu"] if has_gpu else [])})


def facts_here() -> frozenset[str]:
    """This machine's facts."""
    from modelparity.gpu import gpu_facts
    from modelparity.machine import cpu_flags

    return machine_facts(cpu_flags(), platform.machine(), bool(gpu_facts()["gpus"]))
