"""Resolve "package.module:function" and "path/to/file.py:function" references.

A file is imported under a name derived from its absolute path, so that a child process importing
the same file gets the same module name and can unpickle the classes defined in it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any


class BadReference(ImportError):
    """A reference cannot be resolved; the message names it and the fix."""


def anchored(root: Path, reference: str) -> str:
    """A file reference ("models/x.py:build", "plugin.py") against the folder it is relative to
    (the project it belongs to; the working folder, for a process with another one: a Ray worker),
    so that a run from elsewhere finds it; a module reference as it is."""
    path, colon, rest = reference.partition(":")
    if path.endswith(".py") and not Path(path).is_absolute():
        return f"{root / path}{colon}{rest}"
    return reference


def split_reference(reference: str) -> tuple[str, str]:
    module, sep, attribute = reference.rpartition(":")
    if not sep or not module or not attribute:
        raise BadReference(f"{reference!r} is not a reference: write 'path/to/file.py:FUNCTION' "
                              "or 'package.module:FUNCTION'")
    return module, attribute


def import_module_of(reference: str) -> ModuleType:
    """Import the module part of a reference (a file path or a dotted module name)."""
    module_part, _ = split_reference(reference)
    if module_part.endswith(".py") or "/" in module_part:
        return _import_file(Path(module_part))
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as error:
        raise BadReference(f"cannot import {module_part!r} from {reference!r}: {error}. Is the "
                              "package installed, or did you mean a file path ending in .py?") from error


def import_target(reference: str) -> Callable[..., Any]:
    """The callable a reference names."""
    module = import_module_of(reference)
    _, attribute = split_reference(reference)
    target = getattr(module, attribute, None)
    if not callable(target):
        raise BadReference(f"{reference!r}: {module.__name__} has no callable {attribute!r}")
    return target


def _import_file(path: Path) -> ModuleType:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise BadReference(f"no such file: {path}")
    name = f"modelparity_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BadReference(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise BadReference(f"importing {path} failed: {type(error).__name__}: {error}") from error
    return module
