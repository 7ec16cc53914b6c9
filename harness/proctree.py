"""Processes as a tree: so that nothing a submission starts outlives its check.

A process that is the *child subreaper* of its tree inherits every orphan below
it (a daemon that double-forked, a process whose parent exited), so walking its
descendants in /proc finds every process a submission started, and
:func:`kill_tree` ends them all, not only one process group.
"""
from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_CHILD_SUBREAPER = 36


_subreaper = False


def set_subreaper() -> bool:
    """Orphans of the workers' trees become our children, so none can outlive a check."""
    global _subreaper
    try:
        _subreaper = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        _subreaper = False
    return _subreaper


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, and reap what is ours."""
    for _ in range(3):  # a fork bomb keeps forking while we kill: repeat
        victims = [pid, *descendants(pid)]
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not descendants(pid):
            break
    reap_orphans()


def reap_orphans() -> None:
    """Kill and reap every child we inherited as subreaper (processes a worker left behind).

    Only a subreaper does this: any other process's descendants are its own business.
    """
    if not _subreaper:
        return
    for p in descendants(os.getpid()):
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
