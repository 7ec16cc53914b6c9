"""Stage 2: build the task's CUDA extension(s) with the kit's own compile scripts."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from harness.build import ARCH_ENV
from harness.tasks import EXTENSIONS, TASKS

from harness.spawn import CONTAIN_ENV, WORKER_BUILD_ENV, WORKER_PREBUILT_ENV
from harness.spawn import worker_env as spawn_worker_env

from .proc import ProcResult, run_process
from .stage import Stage


@dataclass
class BuildResult:
    ok: bool
    reason: str
    proc: ProcResult


def worker_env(stage: Stage, env: dict[str, str]) -> dict[str, str]:
    """The environment of the submission's contained processes (no seed, no grader paths); once the
    build stage is done (``WORKER_PREBUILT_ENV`` in ``env``), one that cannot write the build folder."""
    assert stage.worker is not None and stage.submission is not None
    build = Path(env.get(WORKER_BUILD_ENV) or stage.worker / "build")
    out = spawn_worker_env(stage.worker, stage.submission, stage.folder, build, env.get(CONTAIN_ENV, "auto"),
                           prebuilt=env.get(WORKER_PREBUILT_ENV) == "1")
    if env.get(ARCH_ENV):  # the run's architectures (grader.pipeline.child_env): its judge's workers load
        out[ARCH_ENV] = env[ARCH_ENV]  # what this build made, and a read-only worker can build nothing
    return out


def compile_modules(stage: Stage) -> list[str]:
    """The pristine compile scripts that build what the task imports.

    A task with its own ``compile.py`` uses it; one without (task 7 runs the kernels
    of tasks 4 and 5) uses the one script that builds all it imports (task 5's builds
    both, side by side), else the compile scripts of every task that owns one of them.
    """
    return [f"{t}.compile" for t in compile_owners(stage.task, (stage.folder / stage.task / "compile.py").exists())]


def compile_owners(task: str, has_own_script: bool) -> list[str]:
    """The tasks whose compile scripts build what ``task`` imports (see :func:`compile_modules`):
    one script where one covers everything, so nothing builds twice or one after another (task
    7 built task 4's kernel and its bonus, then task 5's, 160 s on the H200; task 5's alone: 78 s)."""
    if has_own_script:
        return [task]
    needed = set(TASKS[task].extensions)
    owners = sorted({EXTENSIONS[e].task for e in needed}, key=lambda t: TASKS[t].number)
    covering = [t for t in owners if needed <= set(TASKS[t].extensions)]
    return covering[:1] or owners


def build_task(stage: Stage, *, env: dict[str, str], timeout_s: float, logs: Path) -> BuildResult | None:
    """Run the task's compile script(s); None if nothing to build.

    A submission's build runs contained, exactly like its worker (a ``.cu`` file
    can run code at compile time through the host compiler), writing only into
    the build folder ``env`` names for the worker (``WORKER_BUILD_ENV``): the
    worker's scratch for a student, the shared cache for the kit's own solutions.
    """
    if not TASKS[stage.task].extensions:
        return None
    cwd, cmd_env, launcher = stage.folder, env, []
    if stage.worker is not None:  # a submission: contained; the release's own stubs run as they are
        # From the kit, which the build cannot write (see harness.spawn: sys.path starts there).
        cwd, cmd_env, launcher = stage.folder, worker_env(stage, env), ["-m", "harness.contained"]
    proc = None
    for module in compile_modules(stage):
        proc = run_process(
            [sys.executable, *launcher, "-m", module],
            cwd=cwd, env=cmd_env, timeout_s=timeout_s,
            log_path=logs / f"{stage.task}-build-{module.split('.')[0]}.log",
        )
        if proc.timed_out:
            return BuildResult(False, f"the build took longer than {timeout_s:.0f} s and was stopped", proc)
        if proc.returncode != 0:
            return BuildResult(False, "the CUDA code did not compile (the compiler's message is in the report)", proc)
    assert proc is not None
    return BuildResult(True, f"built in {proc.seconds:.0f} s", proc)
