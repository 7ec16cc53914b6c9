"""Which implementation the task tests check.

A task test never imports a student-editable file directly; it asks this module.
By default the files come from the kit itself (``task1/attention.py`` ...). With
``ATTN_KIT_IMPL=DIR`` the student-editable files come from ``DIR`` instead, while
everything provided (tests, helpers, compile scripts) stays the kit's own. That
is how the project's own tests run the task tests against ``solutions/`` without
copying anything, and how a staff member checks one submission by hand.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from .tasks import REPO_ROOT, editable_files

#: Environment variable naming the folder the student-editable files come from.
IMPL_ENV = "ATTN_KIT_IMPL"


class MissingSubmissionFile(FileNotFoundError):
    """A student-editable file is not where the implementation root says."""


def impl_root() -> Path:
    value = os.environ.get(IMPL_ENV)
    return Path(value).resolve() if value else REPO_ROOT


def describe_impl_root() -> str:
    root = impl_root()
    if root == REPO_ROOT:
        return f"{REPO_ROOT} (the files in the task folders)"
    if root == (REPO_ROOT / "solutions").resolve():
        return f"{root} (the reference solutions)"
    return str(root)


def source_path(relpath: str) -> Path:
    """Absolute path of a kit file, taking editable files from the implementation root."""
    relpath = relpath.replace(os.sep, "/")
    base = impl_root() if relpath in editable_files() else REPO_ROOT
    path = base / relpath
    if not path.exists():
        raise MissingSubmissionFile(
            f"{relpath} is missing from {base}. "
            + (
                "It is a file you write: restore it from the handout if you deleted it."
                if base == impl_root()
                else "The kit itself is incomplete: re-download it."
            )
        )
    return path


def load_module(dotted: str) -> ModuleType:
    """Import ``taskN.name``, taking the file from the implementation root when it is editable.

    In the grader's judge process (``harness.remote.is_judge()``) every task module
    is imported in the worker instead, and what comes back is a handle to it: the
    judge never runs a line of submission code.
    """
    from . import remote

    if remote.is_judge() and dotted.split(".")[0].startswith("task"):
        return remote.client().import_module(dotted)  # type: ignore[return-value]
    relpath = dotted.replace(".", "/") + ".py"
    if impl_root() == REPO_ROOT or relpath not in editable_files():
        return importlib.import_module(dotted)
    if dotted in sys.modules and getattr(sys.modules[dotted], "__file__", None) == str(
        source_path(relpath)
    ):
        return sys.modules[dotted]
    package = dotted.rpartition(".")[0]
    if package:
        importlib.import_module(package)  # relative imports resolve against the kit's package
    spec = importlib.util.spec_from_file_location(dotted, source_path(relpath))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[dotted] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[dotted]
        raise
    return module
