"""The format graph: every format module contributes nodes, in an order where parents come first.

A new format is one module with `formats(graph, options) -> list[Format]`, added to FORMAT_MODULES
(or given to pytest with --format-plugin, which takes the same function from any module or file).
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modelparity.execution import PROVIDER_DEVICES
from modelparity.formats.base import EnvironmentRequirement, Format, Requirement
from modelparity.references import import_module_of

FORMAT_MODULES = (
    "modelparity.formats.torchscript",
    "modelparity.formats.torch_cuda",
    "modelparity.formats.libtorch_cpp",
    "modelparity.formats.onnx_export",
    "modelparity.formats.onnx_fp16",
    "modelparity.formats.onnx_int8",
    "modelparity.formats.ort_transformers",
    "modelparity.formats.openvino",
    "modelparity.formats.openvino_int8",
    "modelparity.formats.onnx2tf",
    "modelparity.formats.tflite",
    "modelparity.formats.onnx_tf",
    "modelparity.formats.onnxruntime",
    "modelparity.formats.http",
)


PROVIDER_KINDS = {provider: device.lower() for provider, device in PROVIDER_DEVICES.items()}
PROVIDERS = tuple(PROVIDER_KINDS.values())  # cpu, cuda, tensorrt: what --providers names


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
        """Formats with a runner whose id matches any glob in `patterns` (and, when `providers` is
        set, that run on one of them)."""
        return [node for node in self.nodes.values() if node.load is not None
                and any(fnmatch.fnmatchcase(node.id, p) for p in patterns)
                and (self.providers is None or self.provider(node.id) in self.providers)]

    def provider(self, format_id: str) -> str:
        """What a format runs on, as --providers names it: cpu, cuda or tensorrt (ONNX Runtime's
        first provider where the chain sets one, else the chain's device)."""
        for node in reversed(self.chain(format_id)):
            first = next(iter(node.params.get("providers", ())), None)
            if first is not None:
                return PROVIDER_KINDS.get(first, first)
        return next((n.device for n in self.chain(format_id) if n.device != "cpu"), "cpu")


def build_graph(options: Mapping[str, Any], plugins: Sequence[str] = ()) -> FormatGraph:
    """The built-in formats, then each plugin's, for the resolved `options` (e.g. opsets)."""
    graph = FormatGraph(recipe={"options": dict(options), "plugins": list(plugins)})
    modules = [importlib.import_module(name) for name in FORMAT_MODULES]
    modules += [import_module_of(f"{plugin}:formats") for plugin in plugins]
    for module in modules:
        if not hasattr(module, "formats"):
            raise FormatGraphError(f"{module.__name__} has no formats(graph, options) function")
        graph.add(module.formats(graph.nodes, options))
    return graph
