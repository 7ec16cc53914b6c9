"""Builds the tasks' CUDA extensions: the one helper every ``compile.py`` uses.

It wraps ``torch.utils.cpp_extension.load`` (ninja) and adds what students and
the grader need:

* one build folder per task and extension (``build/<task>/<name>-<key>``), so
  tasks never clobber each other and ninja rebuilds only what changed;
* the target architecture of the visible GPU, or with none a fixed list
  (``FALLBACK_ARCHS``) so the code still compiles on a machine without a GPU;
* the compiler's whole message on failure (:class:`BuildError`), and a
  non-zero exit from ``python -m taskN.compile``.

Environment knobs: ``ATTN_KIT_BUILD_DIR`` (where builds go), ``ATTN_KIT_CUDA_ARCH``
(e.g. ``"8.0;9.0"``), ``ATTN_KIT_PTXAS_VERBOSE=1`` (print registers and shared
memory per kernel: useful when tuning).
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import ModuleType

from .impl import source_path
from .tasks import EXTENSIONS, REPO_ROOT, TASKS

#: Architectures compiled for when no GPU is visible (A100 and H100/H200).
FALLBACK_ARCHS = "8.0;9.0"
#: Flags every kernel is built with: optimised, with line info for profilers.
NVCC_FLAGS = ("-O3", "-lineinfo")
CXX_FLAGS = ("-O3",)  # the C++ standard is left to PyTorch (2.14 needs C++20)
BUILD_DIR_ENV = "ATTN_KIT_BUILD_DIR"
ARCH_ENV = "ATTN_KIT_CUDA_ARCH"
PTXAS_VERBOSE_ENV = "ATTN_KIT_PTXAS_VERBOSE"

# The nvcc on some machines' PATH is a wrapper script; PyTorch then guesses the
# toolkit's root wrongly and cannot link cudart. Point it at the real toolkit.
if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ:
    for candidate in ("/usr/local/cuda",):
        if Path(candidate, "bin", "nvcc").exists():
            os.environ["CUDA_HOME"] = candidate
            break


class BuildError(RuntimeError):
    """An extension failed to build; ``log`` holds the compiler's full output."""

    def __init__(self, name: str, log: str):
        self.name = name
        self.log = log
        super().__init__(f"building the CUDA extension '{name}' failed:\n{log}")


def target_archs() -> str:
    """``TORCH_CUDA_ARCH_LIST`` for this build: override, visible GPU, or the fallback list."""
    if os.environ.get(ARCH_ENV):
        return os.environ[ARCH_ENV]
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f"{major}.{minor}"
    return FALLBACK_ARCHS


def build_root() -> Path:
    return Path(os.environ.get(BUILD_DIR_ENV, REPO_ROOT / "build")).resolve()


def _build_dir(name: str, sources: list[Path], archs: str, group: str) -> Path:
    # The key separates builds of different source trees (the kit, solutions/, a
    # staged submission) and architectures, so each keeps its own ninja cache.
    key = hashlib.sha1(("|".join(map(str, sources)) + "|" + archs).encode()).hexdigest()[:10]
    path = build_root() / group / f"{name}-{key}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_extension(name: str, *, verbose: bool = False) -> ModuleType:
    """Build (if needed) and import the extension ``name`` from the manifest.

    Its editable sources come from the implementation root (see :mod:`harness.impl`).
    Raises :class:`BuildError` with the compiler's output when the build fails.
    """
    spec = EXTENSIONS[name]
    return build_sources(name, [source_path(s) for s in spec.sources], spec.task, verbose=verbose)


def build_sources(name: str, sources: list[Path], group: str, *, verbose: bool = False) -> ModuleType:
    """Build and import an extension from explicit sources into ``build/<group>/``."""
    import torch

    if torch.version.cuda is None:
        raise BuildError(
            name,
            f"this PyTorch ({torch.__version__}) was built without CUDA, so it cannot "
            "compile CUDA extensions. Install a CUDA build of PyTorch (see README, Set-up).",
        )
    from torch.utils import cpp_extension

    archs = target_archs()
    build_dir = _build_dir(name, sources, archs, group)
    cuda_flags = list(NVCC_FLAGS)
    if os.environ.get(PTXAS_VERBOSE_ENV) == "1":
        cuda_flags.append("-Xptxas=-v")
    previous = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    captured = io.StringIO()
    try:
        # torch prints its own progress; keep it unless asked, but always keep errors.
        with redirect_stdout(captured if not verbose else sys.stdout), redirect_stderr(
            captured if not verbose else sys.stderr
        ):
            return cpp_extension.load(
                name=name,
                sources=[str(s) for s in sources],
                extra_cflags=list(CXX_FLAGS),
                extra_cuda_cflags=cuda_flags,
                build_directory=str(build_dir),
                verbose=verbose,
            )
    except (RuntimeError, OSError, ImportError) as exc:
        log = str(exc)
        extra = captured.getvalue().strip()
        if extra:
            log = extra + "\n" + log
        raise BuildError(name, log) from exc
    finally:
        if previous is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = previous


def compile_main(task: str, argv: list[str] | None = None) -> int:
    """Entry point of ``python -m taskN.compile``: build every extension the task imports."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=f"python -m {task}.compile",
        description=f"Build the CUDA extension(s) of {task} ({TASKS[task].title}).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show every compiler command")
    args = parser.parse_args(argv)
    status = 0
    for name in TASKS[task].extensions:
        sources = ", ".join(str(source_path(s)) for s in EXTENSIONS[name].sources)
        archs = ", ".join(f"sm_{a.replace('.', '')}" for a in target_archs().split(";"))
        print(f"building {name} from {sources} for {archs} ...", flush=True)
        start = time.perf_counter()
        try:
            load_extension(name, verbose=args.verbose)
        except BuildError as err:
            print(err.log, file=sys.stderr)
            print(f"FAILED: {name} did not build (the compiler's message is above).", file=sys.stderr)
            status = 1
            continue
        print(f"ok: {name} built and imported in {time.perf_counter() - start:.1f} s", flush=True)
    return status
