"""The build helper reports a compile error in full and exits non-zero."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from harness import build
from harness.tasks import REPO_ROOT

needs_cuda_toolkit = pytest.mark.skipif(
    torch.version.cuda is None or shutil.which("nvcc") is None,
    reason="needs nvcc and a CUDA build of PyTorch to compile extensions",
)

#: Seconds a failing build may take here before the test calls it a hang.
STALE_LOCK_LIMIT_S = 600
#: One architecture keeps the test quick.
ONE_ARCH = "9.0"

BROKEN_KERNEL = r"""
#include <torch/extension.h>
__global__ void broken(float* out) {
    out[threadIdx.x] = undeclared_variable;   // the error the test expects to see
}
torch::Tensor run(torch::Tensor x) { return x; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("run", &run); }
"""


@needs_cuda_toolkit
def test_compile_error_is_surfaced_and_fails_the_command(tmp_path, monkeypatch):
    """`python -m task2.compile` on a broken kernel prints the compiler's error and exits non-zero.

    Runs the command in a child process, as a student does. (Built in this process, the
    broken extension would also leave its name in PyTorch's per-process extension
    registry, and every later build of the real task-2 kernel here would rebuild it.)
    """
    (tmp_path / "task2").mkdir()
    src = tmp_path / "task2" / "attention_kernel.cu"
    src.write_text(BROKEN_KERNEL)
    monkeypatch.setenv("ATTN_KIT_IMPL", str(tmp_path))
    monkeypatch.setenv("ATTN_KIT_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("ATTN_KIT_CUDA_ARCH", ONE_ARCH)
    # A lock file left by a killed build must not make this build wait forever.
    stale = build._build_dir("custom_self_attention", [src], ONE_ARCH, "task2") / "lock"
    stale.write_text("")
    try:
        done = subprocess.run([sys.executable, "-m", "task2.compile"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=STALE_LOCK_LIMIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the build hung for {STALE_LOCK_LIMIT_S} s: a stale lock file blocked it")
    assert done.returncode != 0, done.stdout
    assert "undeclared_variable" in done.stderr and "FAILED" in done.stderr, done.stderr[-3000:]


def test_missing_source_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTN_KIT_IMPL", str(tmp_path))
    from harness.impl import MissingSubmissionFile, source_path

    with pytest.raises(MissingSubmissionFile, match="task4/attention_kernel.cu is missing"):
        source_path("task4/attention_kernel.cu")


def test_fallback_architectures_without_gpu(monkeypatch):
    monkeypatch.delenv("ATTN_KIT_CUDA_ARCH", raising=False)
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        assert build.target_archs() == f"{major}.{minor}"
    else:
        assert {"8.0", "9.0"} <= set(build.target_archs().split(";"))


def test_the_import_shim_gives_the_built_extension(tmp_path, monkeypatch):
    """After `python -m task4.compile`, `import custom_flash_attention` from the repository root is the
    built module, as the original assignment's wrappers import it (here with a stand-in build)."""
    import importlib
    import sys
    import types

    from harness import build

    path = build.write_import_shim("custom_flash_attention", root=tmp_path)
    assert path == tmp_path / "custom_flash_attention.py"
    built = types.ModuleType("custom_flash_attention")
    monkeypatch.setattr(build, "load_extension", lambda name: built if name == "custom_flash_attention" else None)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "custom_flash_attention", raising=False)
    assert importlib.import_module("custom_flash_attention") is built
    monkeypatch.delitem(sys.modules, "custom_flash_attention", raising=False)
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anyway; a read-only folder (a contained build) costs only the shim
        assert build.write_import_shim("custom_flash_attention", root=tmp_path / "ro") is None


def test_each_task_builds_what_it_imports_with_one_compile_script():
    """The grader runs one compile script per task where one builds everything the task imports:
    task 7 (task 4's and task 5's kernels) uses task 5's, which builds both side by side, instead
    of task 4's (with its bonus) and then task 5's, one after the other."""
    from grader.builder import compile_owners
    from harness.tasks import TASKS

    assert compile_owners("task7", has_own_script=False) == ["task5"]
    for name, task in TASKS.items():
        if not task.extensions:
            continue
        owners = compile_owners(name, has_own_script=(REPO_ROOT / name / "compile.py").exists())
        built = {e for t in owners for e in TASKS[t].extensions}
        assert set(task.extensions) <= built, (name, owners)
        assert len(owners) == 1, (name, owners)


def _listing(folder) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def _an_extension_module() -> tuple[str, str]:
    """(name, path) of a compiled module of this Python: it stands in for a built extension, which
    would cost a minute of compiling here (the GPU node's gradings load real ones this way)."""
    import importlib

    for name in ("_csv", "_bisect", "_heapq", "_json", "_struct"):
        path = getattr(importlib.import_module(name), "__file__", None) or ""
        if path.endswith(".so"):
            return name, path
    pytest.skip("this Python has no compiled standard module to stand in for an extension")


def test_a_prebuilt_run_imports_the_build_and_writes_nothing(tmp_path, monkeypatch):
    """In a grader's worker (ATTN_KIT_PREBUILT=1: its build folder is read-only to it, so no task's
    tests can plant a module that another task of the submission loads) an extension built before
    is imported without a lock, a ninja run or any write; one not built says so and what to do."""
    name, library = _an_extension_module()
    src = tmp_path / "ext.cpp"
    src.write_text("// the sources name the build folder; the module in it stands in for their build\n")
    monkeypatch.setenv("ATTN_KIT_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("ATTN_KIT_CUDA_ARCH", ONE_ARCH)
    folder = build._build_dir(name, [src], ONE_ARCH, "probe")  # what the build stage made
    shutil.copy(library, folder / f"{name}.so")
    before = _listing(tmp_path / "build")
    monkeypatch.setenv(build.PREBUILT_ENV, "1")
    module = build.build_sources(name, [src], "probe")
    assert module.__file__ == str(folder / f"{name}.so")
    assert _listing(tmp_path / "build") == before  # not a lock file, not a ninja log, not a timestamp
    src.write_text("// other sources: another folder, never built\n")
    with pytest.raises(build.BuildError, match="is not there") as err:
        build.build_sources(name, [src], "probe")
    assert "compiler's message" in str(err.value.log)
    assert _listing(tmp_path / "build") == before


def test_a_failed_parallel_build_says_why_in_its_own_log(capsys):
    """The grader's reference prebuild keeps only what prebuild_in_parallel prints: a child that
    fails must leave its own last lines there (here: an extension the manifest does not have)."""
    assert build.prebuild_in_parallel(["no_such_extension"]) == ["no_such_extension"]
    out = capsys.readouterr().out
    assert "no_such_extension: the parallel build failed (exit code 1); its last lines:" in out, out
    assert "KeyError" in out, out
