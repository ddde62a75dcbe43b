"""The format graph: every format module contributes nodes, each added once its parent is there.

A new format is one module in this package with `formats(graph, options) -> list[Format]` (or given
to pytest with --format-plugin, which takes the same function from any module or file): modules are
discovered, not listed, and asked again until the graph stops growing, so a module whose parents come
from another module (or that attaches to every node of a kind, as ONNX Runtime does to every ONNX
artifact) needs no place in any order. A module returns the nodes it can make from the graph it is
given; it may also raise KeyError for a parent that is not there yet.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modelparity.formats.base import EnvironmentRequirement, Format, Requirement
from modelparity.references import import_module_of

# The modules whose roots head the graph (and the report's rows): torch itself, on the CPU and on CUDA;
# the others follow in name order.
FIRST_MODULES = ("modelparity.formats.torchscript", "modelparity.formats.torch_cuda")



class FormatGraphError(ValueError):
    """Two nodes share an id, or a node names a parent that does not exist."""


class FormatGraph:
    """Nodes by id, with their chains; `recipe` is what build_graph made it from, so that a child
    process (the memory probe) can make the same graph."""

    def __init__(self, nodes: Iterable[Format] = (), recipe: Mapping[str, Any] | None = None) -> None:
        self.nodes: dict[str, Format] = {}
        self.recipe = dict(recipe or {})
        self.providers: frozenset[str] | None = None  # --providers: run only formats on these
        self.add(nodes)

    def add(self, nodes: Iterable[Format]) -> None:
        for node in nodes:
            if node.id in self.nodes:
                raise FormatGraphError(f"format id {node.id!r} is declared twice")
            if node.parent is not None and node.parent not in self.nodes:
                raise FormatGraphError(f"format {node.id!r} names parent {node.parent!r}, which is "
                                       "not (yet) in the graph")
            self.nodes[node.id] = node

    def chain(self, format_id: str) -> list[Format]:
        """The nodes from the root to `format_id`."""
        chain = []
        node: Format | None = self.nodes[format_id]
        while node is not None:
            chain.append(node)
            node = self.nodes[node.parent] if node.parent else None
        return chain[::-1]

    def requirements(self, format_id: str) -> list[Requirement | EnvironmentRequirement]:
        seen: dict[str, Requirement | EnvironmentRequirement] = {}
        for node in self.chain(format_id):
            for requirement in node.requires:
                seen.setdefault(requirement.module, requirement)
        return list(seen.values())

    def runnable(self, patterns: Sequence[str] = ("*",)) -> list[Format]:
        """Formats with a runner whose id matches any glob in `patterns` and none of its `!GLOB`
        exclusions (only exclusions: every other format), and, when `providers` is set, that run on
        one of them."""
        include = [p for p in patterns if not p.startswith("!")] or ["*"]
        exclude = [p[1:] for p in patterns if p.startswith("!")]
        return [node for node in self.nodes.values() if node.load is not None
                and any(fnmatch.fnmatchcase(node.id, p) for p in include)
                and not any(fnmatch.fnmatchcase(node.id, p) for p in exclude)
                and (self.providers is None or self.provider(node.id) in self.providers)]

    def provider(self, format_id: str) -> str:
        """What a format runs on, as --providers names it (cpu, cuda, tensorrt): the nearest node
        of its chain that declares `runs_on`, else the chain's device."""
        for node in reversed(self.chain(format_id)):
            if node.runs_on is not None:
                return node.runs_on
        return next((n.device for n in self.chain(format_id) if n.device != "cpu"), "cpu")

    def provider_kinds(self) -> list[str]:
        """Every kind --providers can name in this graph."""
        return sorted({self.provider(node.id) for node in self.nodes.values() if node.load is not None})


def format_modules() -> list[Any]:
    """Every module of this package that defines `formats` (helpers such as base and layout do not)."""
    names = sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))
    modules = [importlib.import_module(f"{__name__}.{name}") for name in names]
    modules = [m for m in modules if hasattr(m, "formats")]
    return sorted(modules, key=lambda m: (FIRST_MODULES + (m.__name__,)).index(m.__name__))


def build_graph(options: Mapping[str, Any], plugins: Sequence[str] = ()) -> FormatGraph:
    """The discovered formats and each plugin's, for the resolved `options` (e.g. opsets): every
    module is asked until a round adds nothing; a node's id may come from one module only."""
    modules = format_modules() + [import_module_of(f"{plugin}:formats") for plugin in plugins]
    for module in modules:
        if not hasattr(module, "formats"):
            raise FormatGraphError(f"{module.__name__} has no formats(graph, options) function")
    graph = FormatGraph(recipe={"options": dict(options), "plugins": list(plugins)})
    origin: dict[str, str] = {}
    waiting: dict[str, str] = {}
    grew = True
    while grew:
        grew, waiting = False, {}
        for module in modules:
            try:
                nodes = module.formats(graph.nodes, options)
            except KeyError as missing:
                waiting[module.__name__] = str(missing)
                continue
            except Exception as error:  # a plugin's bug, said as such, never pytest's INTERNALERROR
                where = getattr(module, "__file__", None) or module.__name__
                raise FormatGraphError(
                    f"{where}: formats(graph, options) raised {type(error).__name__}: {error}\n"
                    f"{''.join(traceback.format_exception(error)[-3:])}fix the plugin, or leave it "
                    "out of --format-plugin / [tool.modelparity] format_plugins") from error
            for node in nodes:
                if origin.get(node.id) == module.__name__:
                    continue
                if node.id in origin:
                    raise FormatGraphError(
                        f"format id {node.id!r} is declared by both {origin[node.id]} and "
                        f"{module.__name__}: rename one (ONNX Runtime attaches a runner named 'ort' "
                        "to every format that produces ONNX; a plugin need not declare it)")
                if node.parent is not None and node.parent not in graph.nodes:
                    continue  # its parent may come from a module asked later in this round
                graph.add([node])
                origin[node.id] = module.__name__
                grew = True
    if waiting:
        raise FormatGraphError("; ".join(f"{name} needs format {key}, which no module declares"
                                         for name, key in waiting.items()))
    return graph
