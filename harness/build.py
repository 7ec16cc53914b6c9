"""Builds the tasks' CUDA extensions: the one helper every ``compile.py`` uses.

It wraps ``torch.utils.cpp_extension.load`` (ninja) and adds what students and
the grader need:

* one build folder per task and extension (``build/<task>/<name>-<key>``), keyed
  by the sources' contents, so tasks never clobber each other, identical
  sources are built once, and ninja rebuilds only what changed;
* the target architecture of the visible GPU, or with none a fixed list
  (``FALLBACK_ARCHS``) so the code still compiles on a machine without a GPU;
* the compiler's whole message on failure (:class:`BuildError`), and a
  non-zero exit from ``python -m taskN.compile``;
* the kit's shared headers (:data:`KIT_INCLUDE_DIR`, ``harness/csrc``: the input
  checks every kernel file includes as ``"kit_checks.cuh"``) on the include path,
  always the kit's own, never a submission's.

Environment knobs: ``ATTN_KIT_BUILD_DIR`` (where builds go), ``ATTN_KIT_CUDA_ARCH``
(e.g. ``"8.0;9.0"``), ``ATTN_KIT_PTXAS_VERBOSE=1`` (print registers and shared
memory per kernel: useful when tuning).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Iterator

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
#: "1" in a grader's worker: its extensions were built before its tests ran (the grader's build
#: stage), and its build folder is read-only to it (harness.spawn's policy), so that no test run
#: can replace a module another task of the submission will load: import them, never build.
PREBUILT_ENV = "ATTN_KIT_PREBUILT"
#: The kit's own headers for the kernel files (``#include "kit_checks.cuh"``). Always the kit's
#: (a submission holds only its editable files), copied into each build folder's ``include/``
#: with the sources, and part of the folder's key: editing a header rebuilds every extension.
KIT_INCLUDE_DIR = REPO_ROOT / "harness" / "csrc"

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


def kit_headers() -> list[Path]:
    """The kit's shared headers (:data:`KIT_INCLUDE_DIR`), in a fixed order."""
    return sorted(p for p in KIT_INCLUDE_DIR.iterdir() if p.is_file()) if KIT_INCLUDE_DIR.is_dir() else []


def _build_dir(name: str, sources: list[Path], archs: str, group: str) -> Path:
    """The build folder of these sources (see :func:`_build_dir_of`), made and marked as used."""
    path = _build_dir_of(name, sources, archs, group)
    path.mkdir(parents=True, exist_ok=True)
    os.utime(path)  # most recently used: kept by the pruning below
    return path


def _build_dir_of(name: str, sources: list[Path], archs: str, group: str) -> Path:
    """A folder keyed by what is built: the sources' and the kit headers' contents,
    architectures, flags, torch.

    Content addressing means identical sources are built once, wherever they
    sit (the grader stages the same kernel into several task folders), and
    different sources never share a folder (a stub and its solution).
    """
    import torch

    digest = hashlib.sha1()
    for part in (archs, torch.__version__, *NVCC_FLAGS, *CXX_FLAGS):
        digest.update(part.encode() + b"\0")
    for src in sources:
        digest.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    for header in kit_headers():  # what the sources #include from the kit
        digest.update(b"include/" + header.name.encode() + b"\0" + header.read_bytes() + b"\0")
    return build_root() / group / f"{name}-{digest.hexdigest()[:12]}"


#: Builds kept per extension and group; older ones (earlier versions of a kernel) are pruned.
KEEP_BUILDS = 4


#: Our own lock in each build folder. Unlike PyTorch's lock file, which a killed build
#: leaves behind (and every later build then waits on forever), an flock is released
#: by the operating system when its process dies.
LOCK_NAME = ".attn-kit.lock"


@contextlib.contextmanager
def _build_lock(build_dir: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold the folder's lock; yields False if ``blocking`` is off and another process holds it."""
    with open(build_dir / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prune_old_builds(build_dir: Path) -> None:
    siblings = sorted(
        (p for p in build_dir.parent.glob(build_dir.name.rsplit("-", 1)[0] + "-*") if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in siblings[KEEP_BUILDS:]:
        if old == build_dir:
            continue
        with _build_lock(old, blocking=False) as free:
            if free:  # never delete a folder another process is building in
                shutil.rmtree(old, ignore_errors=True)


def _copy_into(srcs: list[Path], folder: Path) -> list[Path]:
    copies = []
    for src in srcs:
        dst = folder / src.name
        dst.parent.mkdir(exist_ok=True)
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            dst.write_bytes(src.read_bytes())
        copies.append(dst)
    return copies


def _copy_sources(sources: list[Path], build_dir: Path) -> list[Path]:
    """Copy the sources into the build folder (once), so the build never depends on where they came from."""
    return _copy_into(sources, build_dir / "src")


def _copy_kit_headers(build_dir: Path) -> list[Path]:
    """Copy the kit's headers into ``build_dir/include`` (the include path the build gets), for the
    same reason: the compile commands then name no staged kit folder, so a cached build is reused
    from any copy of the kit (the grader stages one per task) instead of being recompiled."""
    return _copy_into(kit_headers(), build_dir / "include")


def load_extension(name: str, *, verbose: bool = False) -> ModuleType:
    """Build (if needed) and import the extension ``name`` from the manifest.

    Its editable sources come from the implementation root (see :mod:`harness.impl`).
    Raises :class:`BuildError` with the compiler's output when the build fails.
    """
    from .spawn import is_judge
    from .tasks import editable_files

    spec = EXTENSIONS[name]
    # The judge never loads submission code: its tests reach the student's kernels through the
    # worker. A provided extension (no editable source: task 6's decode_linear) is the kit's own.
    if is_judge() and any(s in editable_files() for s in spec.sources):
        raise RuntimeError(f"the grader's judge may not load the extension {name}: use load_module() in tests")
    return build_sources(name, [source_path(s) for s in spec.sources], spec.task, verbose=verbose)


_loaded: dict[str, ModuleType] = {}


def extension(name: str) -> ModuleType:
    """:func:`load_extension` once per process: what the task modules call on every kernel use."""
    if name not in _loaded:
        _loaded[name] = load_extension(name)
    return _loaded[name]


def build_sources(name: str, sources: list[Path], group: str, *, verbose: bool = False) -> ModuleType:
    """Build and import an extension from explicit sources into ``build/<group>/``."""
    import torch

    if torch.version.cuda is None:
        raise BuildError(
            name,
            f"this PyTorch ({torch.__version__}) was built without CUDA, so it cannot "
            "compile CUDA extensions. Install a CUDA build of PyTorch (see README, Set-up).",
        )
    archs = target_archs()
    if os.environ.get(PREBUILT_ENV) == "1":
        return _import_prebuilt(name, _build_dir_of(name, sources, archs, group))
    build_dir = _build_dir(name, sources, archs, group)
    with _build_lock(build_dir):
        # Holding our lock, no live build of ours is in this folder: a PyTorch lock
        # file here was left by a build that was killed, and would block forever.
        (build_dir / "lock").unlink(missing_ok=True)
        copies = _copy_sources(sources, build_dir)
        headers = _copy_kit_headers(build_dir)
        _prune_old_builds(build_dir)
        return _load(name, sources, copies, build_dir, archs, verbose, headers)


def _import_prebuilt(name: str, build_dir: Path) -> ModuleType:
    """Import the extension built in ``build_dir`` without writing anything there (no lock, no
    ninja run): what torch.utils.cpp_extension.load does once its build is up to date. The folder is
    named by the sources' contents, so the module in it is the one built from these sources."""
    import importlib.util

    library = build_dir / f"{name}.so"
    if not library.is_file():
        raise BuildError(name, f"{name} was not built from these sources ({library} is not there). This run "
                               f"only loads what was built before it ({PREBUILT_ENV}=1, as in the grader, whose "
                               "build stage runs the task's compile step first): that build failed or skipped "
                               "it, and its log (the report's build section) has the compiler's message.")
    spec = importlib.util.spec_from_file_location(name, library)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise BuildError(name, f"{library} would not import: {exc}") from exc
    return module


def _load(name: str, sources: list[Path], copies: list[Path], build_dir: Path, archs: str,
          verbose: bool, headers: list[Path] | None = None) -> ModuleType:
    from torch.utils import cpp_extension

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
                sources=[str(c) for c in copies],
                extra_cflags=list(CXX_FLAGS),
                extra_cuda_cflags=cuda_flags,
                extra_include_paths=[str(build_dir / "include")],
                build_directory=str(build_dir),
                verbose=verbose,
            )
    except (RuntimeError, OSError, ImportError) as exc:
        log = str(exc)
        extra = captured.getvalue().strip()
        if extra:
            log = extra + "\n" + log
        for copy, src in zip(copies, sources):  # point messages at the file the student edits
            log = log.replace(str(copy), str(src))
        for copy in headers or ():  # and at the kit's header, not its copy
            log = log.replace(str(copy), str(KIT_INCLUDE_DIR / copy.name))
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
    own, bonus = TASKS[task].extensions, TASKS[task].bonus_extensions
    # A bonus extension whose (optional) file is absent is skipped, not built.
    present = [name for name in bonus if all(_source_exists(s) for s in EXTENSIONS[name].sources)]
    together = [*own, *present]
    if len(together) > 1:
        start = time.perf_counter()
        prebuild_in_parallel(together)
        print(f"built {', '.join(together)} side by side in {time.perf_counter() - start:.1f} s "
              "(each is loaded from the build folder below)", flush=True)
    for name in own:
        if not _build_and_report(name, args.verbose):
            status = 1
    # The bonus part: reported like the task's own, but a failure there never fails the compile
    # (the grader builds with this script, and the task must keep its score without its bonus).
    for name in bonus:
        if name not in present:
            missing = ", ".join(s for s in EXTENSIONS[name].sources if not _source_exists(s))
            print(f"skipped: {name} (the optional bonus part): {missing} is not there, so only the "
                  "bonus scores nothing", flush=True)
        elif not _build_and_report(name, args.verbose, bonus=True):
            print(f"(the bonus part only: {', '.join(own)} above is unaffected, and so is {task}'s "
                  "score; the bonus tests will fail with this message)", file=sys.stderr)
    return status


def _source_exists(rel: str) -> bool:
    try:
        source_path(rel)
    except FileNotFoundError:
        return False
    return True


def _build_and_report(name: str, verbose: bool, bonus: bool = False) -> bool:
    """Build (or load from the cache) one extension, say so, and write its import shim."""
    sources = ", ".join(str(source_path(s)) for s in EXTENSIONS[name].sources)
    archs = ", ".join(f"sm_{a.replace('.', '')}" for a in target_archs().split(";"))
    part = " (bonus)" if bonus else ""
    print(f"building {name}{part} from {sources} for {archs} ...", flush=True)
    start = time.perf_counter()
    try:
        load_extension(name, verbose=verbose)
    except BuildError as err:
        print(err.log, file=sys.stderr)
        print(f"FAILED: {name}{part} did not build (the compiler's message is above).", file=sys.stderr)
        return False
    print(f"ok: {name}{part} built and imported in {time.perf_counter() - start:.1f} s", flush=True)
    write_import_shim(name)
    return True


#: Lines of a failed parallel build's output kept in the log (the compiler's errors come last).
PREBUILD_FAILURE_LINES = 40


def prebuild_in_parallel(names) -> list[str]:
    """Build several extensions at once, one process each (nvcc compiles one file on one core);
    the caller then loads each from the cache and reports, in order, any that failed to build.
    Returns the names that failed here."""
    import subprocess

    # Each child says where it built and how long it took (a warm cache should cost seconds:
    # a slow child means its build folder, i.e. its sources, flags or architectures, differ).
    code = ("import sys, time; t = time.perf_counter(); from harness.build import load_extension, target_archs; "
            "m = load_extension(sys.argv[1]); "
            "print(f'  {sys.argv[1]}: {time.perf_counter() - t:.1f} s for {target_archs()} in {m.__file__}')")
    # The children build for this process's architectures: a contained child may not see the GPU
    # (on the H200, the grader's staged builds' children fell back to 8.0;9.0 and spent 100 s on a
    # build the parent, which saw sm_90, then did not use).
    env = {**os.environ, ARCH_ENV: target_archs()}
    procs = [subprocess.Popen([sys.executable, "-c", code, name], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env) for name in names]
    failed = []
    for name, proc in zip(names, procs):
        out, _ = proc.communicate()
        lines = out.strip().splitlines()
        if proc.returncode == 0:
            print(lines[-1] if lines else f"  {name}: built", flush=True)  # the child's one line
            continue
        failed.append(name)
        # The child's own output (the compiler's message is at its end): a caller that loads the
        # extension again reports it too, but the grader's reference prebuild has only this log.
        tail = "\n".join(f"    {line}" for line in lines[-PREBUILD_FAILURE_LINES:])
        print(f"  {name}: the parallel build failed (exit code {proc.returncode}); its last lines:\n{tail}",
              flush=True)
    return failed


#: What ``<repo>/<extension>.py`` holds after ``python -m taskN.compile``: ``import <extension>``
#: from the repository root (as the original assignment's wrappers do) gives the built module.
IMPORT_SHIM = '''"""`import {name}` from the repository root: the extension python -m {task}.compile built
(written by that command; the build itself lives in the content-addressed build folder)."""
import sys

from harness.build import load_extension

sys.modules[__name__] = load_extension("{name}")
'''


def write_import_shim(name: str, root: Path = REPO_ROOT) -> Path | None:
    """Write ``root/<name>.py`` (see :data:`IMPORT_SHIM`); None where the folder is read-only
    (the grader's contained builds), which only costs the convenience."""
    path = root / f"{name}.py"
    text = IMPORT_SHIM.format(name=name, task=EXTENSIONS[name].task)
    try:
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    except OSError:
        return None
    return path
