"""Runs one child process with a time limit that kills its whole process group.

A submission's code runs only in such children: a crash, an illegal memory
access, an out-of-memory kill or a hang ends that child and nothing else, and
when a child ends, every process below it ends too (see harness.proctree).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.containment import remove_worker_cgroups, sweep_stale_cgroups
from harness.proctree import kill_tree, reap_orphans, release_owned, start_owned

#: How much of a child's output the reports keep (the log file keeps all of it).
OUTPUT_TAIL_CHARS = 20_000
#: After SIGTERM, how long a child gets before SIGKILL.
KILL_GRACE_S = 5


@dataclass
class ProcResult:
    returncode: int | None
    timed_out: bool
    seconds: float
    output_tail: str
    log_path: str

    @property
    def died_of_signal(self) -> str | None:
        if self.returncode is not None and self.returncode < 0:
            try:
                return signal.Signals(-self.returncode).name
            except ValueError:
                return f"signal {-self.returncode}"
        return None


def _end_tree(proc: subprocess.Popen) -> None:
    """Nothing the child started may outlive it: its descendants and our orphans go too."""
    if proc.poll() is None:  # once reaped, its pid may belong to someone else: leave it
        kill_tree(proc.pid)
    reap_orphans()
    remove_worker_cgroups(proc.pid)  # a contained child (harness.contained) made its own
    sweep_stale_cgroups()  # and the workers of a judge that was killed made theirs


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(KILL_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def run_process(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float, log_path: Path) -> ProcResult:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        # Owned: another task's stage, ending in another thread, leaves this process alone.
        proc = start_owned(lambda: subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        ))
        timed_out = False
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            _end_tree(proc)
            release_owned(proc.pid)
    text = log_path.read_bytes().decode(errors="replace")
    return ProcResult(
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        seconds=time.perf_counter() - start,
        output_tail=text[-OUTPUT_TAIL_CHARS:],
        log_path=str(log_path),
    )
