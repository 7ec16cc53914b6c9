"""Starting a worker process, with nothing but the standard library.

The judge's ``conftest.py`` calls :func:`start_early` before pytest imports
torch, so the worker's start (a Python and a torch import of its own) overlaps
the judge's instead of following it; :mod:`harness.remote` then adopts it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .proctree import start_owned

ROLE_ENV = "ATTN_KIT_ROLE"
JUDGE = "judge"
#: The worker's scratch folder (the only one it may write); its ``submission/`` holds the files.
WORKER_DIR_ENV = "ATTN_KIT_WORKER_DIR"
#: The build folder of the worker's extensions (default: inside its scratch).
WORKER_BUILD_ENV = "ATTN_KIT_WORKER_BUILD_DIR"
#: "1" (the grader, once a task's build stage has built its extensions): the worker's build folder
#: is read-only to it, and it imports the built extensions (harness.build.PREBUILT_ENV).
WORKER_PREBUILT_ENV = "ATTN_KIT_WORKER_PREBUILT"
#: ``auto`` (Landlock where the kernel has it) or ``none``.
CONTAIN_ENV = "ATTN_KIT_CONTAIN"
#: The worker's memory bound in bytes (default: a share of the machine, harness.containment).
MEMORY_ENV = "ATTN_KIT_WORKER_MEMORY_BYTES"
#: "1": a root worker bounds its processes by a user id of its own even where a pids cgroup could.
OWN_UID_ENV = "ATTN_KIT_WORKER_OWN_UID"
_KIT = Path(__file__).resolve().parent.parent


def is_judge() -> bool:
    return os.environ.get(ROLE_ENV) == JUDGE


def judge_settings() -> tuple[Path, Path, Path, Path, str]:
    """(scratch, submission files, kit, build folder, containment mode) from the judge's environment."""
    scratch = Path(os.environ[WORKER_DIR_ENV])
    build = os.environ.get(WORKER_BUILD_ENV)
    return (scratch, scratch / "submission", _KIT, Path(build) if build else scratch / "build",
            os.environ.get(CONTAIN_ENV, "auto"))


#: Where the grader names the kit's reference solution, and a scratch folder for its worker,
#: when a task's timed tests should time the reference beside the submission (harness.yardstick).
YARDSTICK_IMPL_ENV = "ATTN_KIT_YARDSTICK_IMPL"
YARDSTICK_DIR_ENV = "ATTN_KIT_YARDSTICK_DIR"


def prebuilt_wanted() -> bool:
    """Whether the grader built the submission's extensions before this judge's run (its worker
    then only imports them, from a build folder it cannot write)."""
    return os.environ.get(WORKER_PREBUILT_ENV) == "1"


def yardstick_settings() -> tuple[Path, Path, Path, Path | None, str] | None:
    """(scratch, reference solution, kit, build folder, containment mode) of the judge's second
    worker, the yardstick's, from the judge's environment; None where the grader asked for none.
    Its builds are the node's shared cache (``ATTN_KIT_BUILD_DIR``), so a class run builds each
    reference extension once."""
    impl, scratch = os.environ.get(YARDSTICK_IMPL_ENV), os.environ.get(YARDSTICK_DIR_ENV)
    if not (is_judge() and impl and scratch):
        return None
    build = os.environ.get("ATTN_KIT_BUILD_DIR")
    return Path(scratch), Path(impl), _KIT, Path(build) if build else None, os.environ.get(CONTAIN_ENV, "auto")


#: Parts of variable names that usually hold credentials: never handed to submission code.
SECRET_MARKERS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY", "ACCESS_KEY", "PRIVATE_KEY")


def _secret(name: str) -> bool:
    upper = name.upper()
    return any(m in upper for m in SECRET_MARKERS) or upper.startswith(("AWS_", "GITHUB_", "HF_TOKEN", "SSH_"))


def worker_env(scratch: Path, impl: Path, kit: Path, build_dir: Path, contain: str,
               prebuilt: bool = False) -> dict[str, str]:
    """The worker's environment: none of our ATTN_KIT_ variables (no seed), its own paths and policy.
    ``prebuilt``: its extensions are built already, and its build folder is read-only to it (a
    submission's tasks share one build folder: no task's tests may plant a module another loads)."""
    from .build import PREBUILT_ENV
    from .containment import POLICY_ENV, Policy, package_dirs_on_pythonpath, python_read_paths

    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_KIT_") and not _secret(k)}
    home, tmp = scratch / "home", scratch / "tmp"
    for d in (home, tmp, build_dir):
        d.mkdir(parents=True, exist_ok=True)
    builds = dict(read=[str(build_dir)], write=[]) if prebuilt else dict(read=[], write=[str(build_dir)])
    policy = Policy(read=[str(kit), str(impl), *python_read_paths(), *builds["read"]],
                    write=[str(scratch), *builds["write"]], mode=contain,
                    memory_bytes=int(os.environ.get(MEMORY_ENV) or 0), own_uid=os.environ.get(OWN_UID_ENV) == "1")
    env.update({
        "PYTHONPATH": os.pathsep.join([str(kit), *package_dirs_on_pythonpath()]), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
        "HOME": str(home), "TMPDIR": str(tmp), "ATTN_KIT_IMPL": str(impl),
        "PYTHONNOUSERSITE": "1",  # HOME is writable: its site-packages would run before containment
        "ATTN_KIT_BUILD_DIR": str(build_dir), POLICY_ENV: policy.to_env(),
    })
    if prebuilt:
        env[PREBUILT_ENV] = "1"
    for key in ("ATTN_KIT_CUDA_ARCH",):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


class WorkerProcess:
    """One worker: its process, its pipes, its generation number."""

    generations = 0

    def __init__(self, scratch: Path, log_path: Path, env: dict[str, str], kit: Path | None = None):
        WorkerProcess.generations += 1
        self.generation = WorkerProcess.generations
        self.scratch = scratch
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        scratch.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(log_path, "ab")
        # Owned (harness.proctree): stopping the judge's other worker (the yardstick's) spares this one.
        self.proc = start_owned(lambda: subprocess.Popen(
            [sys.executable, "-m", "harness.worker", str(req_r), str(rep_w)],
            # Its working folder is the kit, which it cannot write: ``python -m`` puts the working
            # folder first on sys.path, and the next worker must not import what this one wrote.
            cwd=kit or Path(env["PYTHONPATH"].split(os.pathsep)[0]), env=env, pass_fds=(req_r, rep_w),
            stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        ))
        os.close(req_r)
        os.close(rep_w)
        self.req_w, self.rep_r = req_w, rep_r
        self.dead_reason: str | None = None
        self.stopped = False
        self.memory_limit_hit: int | None = None  # the limit in bytes, if the worker's cgroup hit it

    def alive(self) -> bool:
        return self.dead_reason is None and self.proc.poll() is None

    def stop(self, reason: str) -> None:
        if self.dead_reason is None:
            self.dead_reason = reason
        if self.stopped:  # twice would close fd numbers that may belong to someone else by now
            return
        self.stopped = True
        from .containment import kill_worker_cgroups, memory_limit_hit, remove_worker_cgroups
        from .proctree import kill_tree, reap_orphans, release_owned

        kill_worker_cgroups(self.proc.pid)  # fast and complete where the worker has cgroups
        if self.proc.poll() is None:  # once reaped, the pid may be someone else's
            kill_tree(self.proc.pid)
        reap_orphans()  # what it left behind was handed to us, its subreaper
        self.memory_limit_hit = memory_limit_hit(self.proc.pid)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        release_owned(self.proc.pid)
        remove_worker_cgroups(self.proc.pid)
        for fd in (self.req_w, self.rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()


#: Workers started by :func:`start_early`, by scratch folder, until a client adopts them.
_early: dict[Path, WorkerProcess] = {}


def start_early() -> None:
    """In the judge: start the worker now, while pytest is still importing, and the yardstick's
    too where the grader asked for one: a worker's start (a Python, torch, containment) took about
    20 s of a timed part's first yardstick test on the H200 when it waited for that test."""
    if not is_judge() or _early:
        return
    scratch, impl, kit, build, contain = judge_settings()
    _early[scratch] = WorkerProcess(scratch, scratch / "worker.log",
                                    worker_env(scratch, impl, kit, build, contain, prebuilt_wanted()), kit)
    yard = yardstick_settings()
    if yard is not None:
        scratch, impl, kit, build, contain = yard
        build = build or scratch / "build"  # as harness.remote.Client defaults it
        _early[scratch] = WorkerProcess(scratch, scratch / "worker.log",
                                        worker_env(scratch, impl, kit, build, contain), kit)


def take_early(scratch: Path) -> WorkerProcess | None:
    """The worker :func:`start_early` started for ``scratch``, once, if it is alive."""
    worker = _early.pop(scratch, None)
    if worker is not None and not worker.alive():
        worker.stop("not needed")
        return None
    return worker


def stop_early() -> None:
    """Stop the early workers no client adopted (a run whose tests never asked for them)."""
    while _early:
        _early.popitem()[1].stop("not needed")
