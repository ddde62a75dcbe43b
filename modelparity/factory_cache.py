"""The spec a model factory returned, kept in the store so that a later session need not call the
factory again (training digits_cnn, recalibrating resnet18's batch norms: seconds each session).

Only for a spec that allows it (`ModelSpec.factory_reusable`): its factory's result must depend on
nothing but code and installed packages (no file it reads, no clock, no unseeded randomness), since
those are all that is checked. The entry is found by the factory's reference, its module's source
and the installed packages' versions; it lists the source files of every class of the module (as the
model's identity hashes them) with their digests, and is used only while each still has that digest.
Anything else (an entry that does not unpickle, a file changed or gone) calls the factory. A spec
holding a callable that pickle cannot name (a lambda, a nested function) is not kept.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path
from typing import Any

from modelparity.machine import tool_versions
from modelparity.references import import_module_of
from modelparity.spec import ModelSpec
from modelparity.store import ArtifactStore, StoredBuildError, content_key

SPEC_FILE = "spec.pkl"


def _digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _parts(reference: str) -> dict[str, Any]:
    factory_file = import_module_of(reference).__file__
    return {"kind": "factory-spec", "reference": reference,
            "factory": _digest(factory_file) if factory_file else None,
            "packages": tool_versions(), "python": sys.version.split()[0]}


def _sources(reference: str, spec: ModelSpec) -> dict[str, str | None]:
    """The files the spec came from: each class's module, and every module loaded from the
    factory's folder (its helpers: resnet18's batch-norm recalibration lives beside it)."""
    files = {getattr(sys.modules.get(type(m).__module__), "__file__", None) for m in spec.module.modules()}
    factory_file = import_module_of(reference).__file__
    if factory_file:
        folder = Path(factory_file).resolve().parent
        files |= {module.__file__ for module in list(sys.modules.values())
                  if getattr(module, "__file__", None) and Path(module.__file__).resolve().parent == folder}
    return {path: _digest(path) for path in sorted(f for f in files if f)}


def cached_spec(store: ArtifactStore, reference: str) -> ModelSpec | None:
    """The spec kept for `reference`, when its code has not changed since; None otherwise."""
    parts = _parts(reference)
    entry = store.lookup(content_key(parts))
    if entry is None:
        return None
    if any(_digest(path) != digest for path, digest in entry.manifest["info"]["sources"].items()):
        return None
    try:
        spec = pickle.loads((entry.path / SPEC_FILE).read_bytes())
    except Exception:  # a class renamed or moved since: the factory makes it anew
        return None
    return spec if isinstance(spec, ModelSpec) else None


def keep_spec(store: ArtifactStore, reference: str, spec: ModelSpec) -> None:
    """Keep a factory_reusable spec for later sessions (nothing when pickle cannot hold it)."""
    if not spec.factory_reusable:
        return
    try:
        blob = pickle.dumps(spec)
    except Exception:  # a lambda or a local function in the spec: called again each session
        return
    parts = _parts(reference)

    def write(out: Path) -> dict[str, Any]:
        (out / SPEC_FILE).write_bytes(blob)
        return {"sources": _sources(reference, spec)}
    try:
        store.get_or_build(content_key(parts), parts, write)
    except StoredBuildError:  # another process holds the key's lock too long: nothing is lost
        pass
