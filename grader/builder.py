"""Stage 2: build the task's CUDA extension(s) with the kit's own compile script."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from harness.tasks import TASKS

from .proc import ProcResult, run_process
from .stage import Stage


@dataclass
class BuildResult:
    ok: bool
    reason: str
    proc: ProcResult


def build_task(stage: Stage, *, env: dict[str, str], timeout_s: float, logs: Path) -> BuildResult | None:
    """Run the pristine ``python -m taskN.compile`` in the staged folder; None if nothing to build."""
    if not TASKS[stage.task].extensions:
        return None
    proc = run_process(
        [sys.executable, "-m", f"{stage.task}.compile"],
        cwd=stage.folder, env=env, timeout_s=timeout_s, log_path=logs / f"{stage.task}-build.log",
    )
    if proc.timed_out:
        return BuildResult(False, f"the build took longer than {timeout_s:.0f} s and was stopped", proc)
    if proc.returncode != 0:
        return BuildResult(False, "the CUDA code did not compile (the compiler's message is in the report)", proc)
    return BuildResult(True, f"built in {proc.seconds:.0f} s", proc)
