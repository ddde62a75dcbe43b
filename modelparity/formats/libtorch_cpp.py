"""LibTorch C++: the TorchScript file, or an AOTInductor package (aoti_package.py), run by a small C++
program (libtorch_runner.cpp, beside this module) built with g++ against the torch wheel's own headers
and libraries, no download.

The program is compiled once per store (keyed by its source's sha256, the torch version and library
path, the compiler's version and the command) as an artifact every model shares; each model's
artifact holds a copy of it and of the model's file (params: `kind`, torchscript or aoti, and
`file`). The runner writes the inputs as .npy, runs the program in a child process with a timeout,
and reads its .npy outputs: a crash or a hang fails that check alone. The program also measures its
own latency around the model's forward after warm-up (`native_latency`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.formats.base import TORCH, EnvironmentRequirement, Format, LoadContext
from modelparity.store import ArtifactStore, StoredBuildError, content_key

SOURCE = Path(__file__).with_name("libtorch_runner.cpp")
BINARY = "libtorch_runner"
COMPILE_TIMEOUT = 600
RUN_TIMEOUT = 300


def _compiler_problem() -> str | None:
    return None if shutil.which("g++") else "no C++ compiler: g++ is not on PATH"


COMPILER = EnvironmentRequirement("g++", "apt-get install g++ (Debian/Ubuntu; any g++ >= 10 with C++20)",
                                  _compiler_problem)


def compile_command(torch_dir: Path, out: Path) -> list[str]:
    import torch

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    lib = torch_dir / "lib"
    # torch_cpu and c10 only: libtorch.so would also load the CUDA libraries. --no-as-needed keeps
    # torch_cpu linked although no symbol is named directly: its static initialisers register the ops.
    # An RPATH, not a RUNPATH (--disable-new-dtags): it also finds libtorch.so for the shared object
    # inside an AOTInductor package, which the loader dlopens ("cannot open shared object file").
    return ["g++", "-O2", "-std=c++20", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", str(SOURCE),
            f"-I{torch_dir / 'include'}", f"-I{torch_dir / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
            f"-L{lib}", "-Wl,--no-as-needed", "-ltorch_cpu", "-lc10", "-Wl,--disable-new-dtags",
            f"-Wl,-rpath,{lib}", "-o", str(out)]


def compiled_runner(store_root: Path) -> Path:
    """The program, compiled once into the store (under a lock, so parallel builds share it), keyed by
    its source, torch, the compiler and the command (its flags)."""
    import torch

    torch_dir = Path(torch.__file__).parent
    compiler = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=True)
    parts = {"tool": BINARY, "source": hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
             "torch": torch.__version__, "torch_dir": str(torch_dir),
             "compiler": compiler.stdout.splitlines()[0],
             "command": compile_command(torch_dir, Path(BINARY))}

    def build(out: Path) -> Mapping[str, Any]:
        command = compile_command(torch_dir, out / BINARY)
        result = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
        (out / "compile.log").write_text(" ".join(command) + "\n" + result.stdout + result.stderr)
        if result.returncode != 0:
            raise StoredBuildError(f"g++ failed ({result.returncode}): {result.stderr[-2000:]}",
                                   {"kind": "compile", "summary": result.stderr[-500:], "cache": True})
        return {"command": command}

    return ArtifactStore(store_root).get_or_build(content_key(parts), parts, build).path / BINARY


def build(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The model's artifact: its TorchScript file (or AOTInductor package) and a copy of the
    compiled program."""
    binary = compiled_runner(ArtifactStore.root_of(Path(model)))
    shutil.copy2(binary, Path(out) / BINARY)
    shutil.copy2(Path(source) / params["file"], Path(out) / params["file"])
    return {"file": params["file"], "program": BINARY, "compiled": str(binary)}


def program_error(output: str) -> str:
    """What the program said failed: from its own `libtorch_runner:` line (after whatever torch
    printed before it) up to c10's backtrace ("Exception raised from"); its tail when it died
    without that line (a signal, a loader error)."""
    start = output.find("libtorch_runner: ")
    if start < 0:
        return output[-1500:]
    said = output[start:]
    end = said.find("Exception raised from")
    return (said if end < 0 else said[:end]).strip()[:1500]


class LibTorchCppRunner:
    """Runs the C++ program per call: inputs and outputs as .npy in a scratch folder."""

    def __init__(self, context: LoadContext) -> None:
        import torch

        self._artifact = context.artifact
        self._kind, self._file = context.params["kind"], context.params["file"]
        self._inputs = context.input_names
        self._outputs = context.output_names
        self.facts: dict[str, Any] = {"runtime": f"libtorch {torch.__version__} (C++ program)",
                                      "provider": "CPU", "program": str(context.artifact / BINARY)}

    def _call(self, inputs: Mapping[str, np.ndarray], warmup: int, repeat: int
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="modelparity-libtorch-") as scratch:
            files = []
            for name in self._inputs:
                files.append(str(Path(scratch) / f"{name}.npy"))
                np.save(files[-1], np.ascontiguousarray(inputs[name]))
            program, model = str(self._artifact / BINARY), str(self._artifact / self._file)
            result = subprocess.run([program, self._kind, model, scratch, str(warmup), str(repeat), *files],
                                    capture_output=True, text=True, timeout=RUN_TIMEOUT)
            if result.returncode != 0:
                raise RuntimeError(f"the LibTorch C++ program exited with {result.returncode}: "
                                   f"{program_error(result.stderr or result.stdout)}")
            report = json.loads(result.stdout.strip().splitlines()[-1])
            if report["outputs"] != len(self._outputs):
                raise ValueError(f"the C++ program returned {report['outputs']} outputs but the spec "
                                 f"names {len(self._outputs)}: {self._outputs}")
            outputs = {name: np.load(Path(scratch) / f"output_{i}.npy")
                       for i, name in enumerate(self._outputs)}
        self.facts["threads"] = report["threads"]
        return outputs, report

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._call(inputs, 0, 0)[0]

    def native_latency(self, inputs: Mapping[str, np.ndarray], warmup: int, repeat: int) -> dict[str, Any]:
        """Latency measured by the program itself, in milliseconds: load, first call, and `repeat`
        calls of the model's forward after `warmup` calls."""
        return self._call(inputs, warmup, repeat)[1]


BUILD = "modelparity.formats.libtorch_cpp:build"


def program_params(kind: str, file: str) -> dict[str, str]:
    """A C++ node's params: what it runs, the program's source digest (each model's artifact holds a
    copy of the compiled program, so a changed program must be a new artifact), and the folder of
    the libtorch it is linked against (its RPATH: a machine whose torch lives elsewhere, sharing the
    store, builds its own; found without importing torch)."""
    spec = importlib.util.find_spec("torch")
    torch_dir = list(spec.submodule_search_locations or [""])[0] if spec else ""
    return {"kind": kind, "file": file, "program": hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16],
            "torch_lib": str(Path(torch_dir) / "lib") if torch_dir else ""}


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    if "torchscript" not in graph:
        return []
    return [Format("libtorch-cpp", parent="torchscript", build=BUILD, load=LibTorchCppRunner,
                   params=program_params("torchscript", "model.ts"), requires=(TORCH, COMPILER),
                   times_natively=True,
                   description="the TorchScript file run by a C++ program linked against LibTorch")]
