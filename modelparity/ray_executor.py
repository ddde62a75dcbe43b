"""--executor ray: each check's work (build, load, run, compare: what check_parity does) as a Ray
task on a cluster, its outcome returned to the pytest process, which reports it as its own.

Why Ray and not pytest-xdist across machines: xdist's remote mode is deprecated (pytest-xdist
#825), and a grid needs what a cluster scheduler has: resources per task (a CUDA or TensorRT format
asks for `num_gpus=1` and runs only where there is a GPU; [tool.modelparity.ray_resources] adds
custom ones, e.g. {"ov-*" = {resources = {intel_cpu = 1}}}), retries of a task whose worker or node
was lost (MAX_RETRIES; a check's own failure is an outcome, never retried), and workers that live
for the session, so each keeps its harness (models, conversion and runtime workers) warm.

Artifacts never travel through Ray's object store: a worker builds or fetches them through the
artifact store (a shared --store URL across machines; on one machine, the folder itself), and a task
returns only its record. All tasks are submitted before the first check runs, so the cluster works
on them in parallel while pytest collects their outcomes in its own order.
"""

from __future__ import annotations

import fnmatch
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelparity.checks.expectations import facts_here
from modelparity.checks.parity import Outcome
from modelparity.checks.tolerance import ToleranceOverride
from modelparity.formats import FormatGraph
from modelparity.harness import Harness
from modelparity.harness_settings import HarnessSettings, open_harness
from modelparity.phases import add as add_phases
from modelparity.spec import SpecError

MAX_RETRIES = 3  # a task whose worker process or node died is run again, up to this many times
_harnesses: dict[str, Harness] = {}  # per Ray worker process: one harness per session's settings


@dataclass(frozen=True)
class CheckTask:
    """One check, as a Ray task gets it: the check function (check_parity, check_batch_consistency)
    and its arguments."""

    check: Callable[..., Outcome]
    reference: str
    format_id: str
    batch: int
    overrides: tuple[ToleranceOverride, ...]
    strict_backends: bool


def run_check_task(settings: HarnessSettings, task: CheckTask) -> Outcome:
    """A Ray task's body, on a worker: the check on this worker's harness for `settings`."""
    import ray

    key = repr(settings)
    if key not in _harnesses:
        _harnesses[key] = open_harness(settings)
    harness = _harnesses[key]
    add_phases(harness.session_phases, harness.clock.take())
    model = harness.model(task.reference)  # a SpecError reaches the pytest process as such
    outcome = task.check(harness, model, task.format_id, task.batch, list(task.overrides),
                         task.strict_backends)
    import torch

    context = ray.get_runtime_context()
    outcome.record["phases"] = harness.clock.take()
    outcome.record["executor"] = {"kind": "ray", "node": context.get_node_id(), "host": socket.gethostname(),
                                  "pid": os.getpid(), "task": context.get_task_id(),
                                  "torch_threads": torch.get_num_threads()}
    outcome.record["machine_facts"] = sorted(facts_here())  # what expected failures are judged by
    return outcome


def task_resources(graph: FormatGraph, format_id: str, configured: Mapping[str, Mapping[str, Any]]
                   ) -> dict[str, Any]:
    """Ray's options for a format's task: one CPU; one GPU for a chain that runs on CUDA or
    TensorRT; then every [tool.modelparity.ray_resources] entry whose glob matches the format id
    (num_cpus, num_gpus, memory, resources = {custom = amount}), later entries winning."""
    options: dict[str, Any] = {"num_cpus": 1}
    if graph.provider(format_id) != "cpu" or any(n.device != "cpu" for n in graph.chain(format_id)):
        options["num_gpus"] = 1
    for pattern, values in configured.items():
        if fnmatch.fnmatchcase(format_id, pattern):
            custom = {**options.get("resources", {}), **values.get("resources", {})}
            options.update(values)
            if custom:
                options["resources"] = custom
    return options


RESOURCE_OPTIONS = ("num_cpus", "num_gpus", "memory", "resources")


def task_options_problem(values: Any) -> str | None:
    """What is wrong with one [tool.modelparity.ray_resources] entry, or None."""
    if not isinstance(values, dict):
        return "must be a table such as {num_gpus = 1, resources = {intel_cpu = 1}}"
    unknown = sorted(set(values) - set(RESOURCE_OPTIONS))
    if unknown:
        return f"has {', '.join(unknown)}; the keys are {', '.join(RESOURCE_OPTIONS)}"
    custom = values.get("resources", {})
    if not isinstance(custom, dict) or {"CPU", "GPU", "memory"} & set(custom):
        return "resources must be a table of custom resources (CPU and GPU are num_cpus, num_gpus)"
    return None


def missing_resources(options: Mapping[str, Any], nodes: list[Mapping[str, float]]) -> list[str]:
    """What a task asks for that no single node of the cluster has (Ray would keep it pending
    forever): [] when some node has all of it, else what the closest node lacks."""
    wanted = {"CPU": options.get("num_cpus", 0), "GPU": options.get("num_gpus", 0),
              "memory": options.get("memory", 0), **dict(options.get("resources", {}))}
    lacking = [sorted(f"{name} {amount:g}" for name, amount in wanted.items()
                      if amount and node.get(name, 0) < amount) for node in nodes or [{}]]
    return min(lacking, key=len)


class RayDispatch:
    """The session's connection to a cluster: `submit` a check's task, `outcome` waits for it."""

    def __init__(self, address: str, settings: HarnessSettings) -> None:
        import ray

        self.address = address
        self.settings = settings
        # the harness's own settings, and the shared store's credentials (fsspec reads them there)
        env = {name: value for name, value in os.environ.items()
               if name.startswith(("MODELPARITY_", "AWS_")) or name == "PYTHONHASHSEED"}
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env},
                 configure_logging=False)
        self.nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        self.hosts = sorted({str(node.get("NodeManagerHostname")) for node in ray.nodes()
                             if node.get("Alive")})
        self._remote = ray.remote(run_check_task)
        self._pending: dict[str, Any] = {}
        self._refused: dict[str, str] = {}

    def submit(self, nodeid: str, task: CheckTask, options: Mapping[str, Any]) -> None:
        missing = missing_resources(options, self.nodes)
        if missing:
            self._refused[nodeid] = (f"no node of the Ray cluster at {self.address} has "
                                     f"{', '.join(missing)}, which {task.format_id} needs (a cluster "
                                     "that scales up: start such a node before the run)")
            return
        self._pending[nodeid] = self._remote.options(
            max_retries=MAX_RETRIES, retry_exceptions=False, **options).remote(self.settings, task)

    def has(self, nodeid: str) -> bool:
        return nodeid in self._pending or nodeid in self._refused

    def outcome(self, nodeid: str, record: Mapping[str, Any]) -> Outcome:
        """The check's outcome from the cluster. A check the cluster cannot place is skipped as not
        applicable (failed with --require-gpu); a task lost more than MAX_RETRIES times fails, with
        Ray's reason. `record`: what is known of the check here, for those two."""
        import ray
        from ray.exceptions import RayTaskError

        if nodeid in self._refused:
            message = self._refused.pop(nodeid)
            if self.settings.require_gpu and "GPU" in message:
                return Outcome("failed", f"--require-gpu: {message}", record=dict(record))
            return Outcome("skipped", message, skip_kind="not-applicable", record=dict(record))
        reference = self._pending[nodeid]  # kept until answered: close() cancels it if interrupted
        try:
            outcome = ray.get(reference)
        except RayTaskError as error:  # the check raised; a bad spec is said without Ray's wrapping
            del self._pending[nodeid]
            if isinstance(error.cause, SpecError):
                raise error.cause from None
            raise
        except ray.exceptions.RayError as error:  # worker or node lost MAX_RETRIES + 1 times
            del self._pending[nodeid]
            return Outcome("failed", f"the Ray task of this check was lost {MAX_RETRIES + 1} times "
                           f"({type(error).__name__}: {str(error)[:2000]})", record=dict(record))
        del self._pending[nodeid]
        return outcome

    def close(self) -> None:
        """Cancel what no check will ask for (pytest stopped early), and disconnect."""
        import ray

        for reference in self._pending.values():
            ray.cancel(reference, force=True)
        self._pending.clear()
        ray.shutdown()
