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
import threading
from typing import Callable, TypeVar

_P = TypeVar("_P")

_PR_SET_CHILD_SUBREAPER = 36


_subreaper = False

#: Children this process started and waits for itself (a build, a judge, a worker), by pid, with
#: the lock that makes starting one and reaping orphans exclusive. The grader runs several tasks'
#: stages at once, in threads: reap_orphans, called when one of them ends, must spare the others'
#: processes, and must never reap a child another thread's Popen waits for (its exit status would
#: be lost: Popen then reports 0 for a process that crashed).
_owned: set[int] = set()
_lock = threading.RLock()


def start_owned(start: Callable[[], _P]) -> _P:
    """Run ``start()`` (it returns a ``subprocess.Popen``) and own the child it starts, until
    :func:`release_owned`: :func:`reap_orphans` spares it and everything below it."""
    with _lock:  # a child started while orphans are being killed would be killed with them
        proc = start()
        _owned.add(proc.pid)
    return proc


def release_owned(pid: int) -> None:
    """``pid`` was waited for: from now on it is not ours to spare."""
    with _lock:
        _owned.discard(pid)


def kill_owned() -> None:
    """SIGKILL every owned child and its tree (the grader was interrupted: nothing may outlive it)."""
    with _lock:
        roots = list(_owned)
    for root in roots:
        kill_tree(root)


def set_subreaper() -> bool:
    """Orphans of the workers' trees become our children, so none can outlive a check."""
    global _subreaper
    try:
        _subreaper = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        _subreaper = False
    return _subreaper


def _children_by_parent() -> dict[int, list[int]]:
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
    return children


def descendants(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), deepest last."""
    children = _children_by_parent() if children is None else children
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

    Only a subreaper does this: any other process's descendants are its own business. The
    children this process owns (:func:`start_owned`), and their trees, are spared: they are
    another stage's, still running.
    """
    if not _subreaper:
        return
    with _lock:
        children = _children_by_parent()
        spared = set(_owned)
        for root in _owned:
            spared.update(descendants(root, children))
        for p in descendants(os.getpid(), children):
            if p in spared:
                continue
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        # Reap the orphans handed to us, one by one: never os.waitpid(-1), which would take an
        # owned child's exit status from the Popen that waits for it.
        for p in children.get(os.getpid(), []):
            if p in _owned:
                continue
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass