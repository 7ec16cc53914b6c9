"""The worker's containment applied directly (harness.containment), on this machine.

The grader tests in test_adversarial.py show what a hostile submission gets; these show the
mechanism underneath: a root worker that has no pids cgroup switches to a user id of its own,
so RLIMIT_NPROC bounds its processes, and says why when it cannot.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.containment import MAX_PROCESSES, POLICY_ENV, WORKER_UID_BASE, Policy, landlock_abi, python_read_paths
from harness.tasks import REPO_ROOT

needs_root_landlock = pytest.mark.skipif(os.geteuid() != 0 or not landlock_abi(),
                                         reason="needs root and Landlock (the user-id switch is for root workers)")

#: Run contained, then report: the containment, the user id, a write inside and outside the
#: scratch folder, and how many processes the tree could start (each child waits, then exits).
PROBE = r'''
import getpass, json, os, sys, time
from harness.containment import POLICY_ENV, Policy, apply
scratch = sys.argv[1]
said = apply(Policy.from_env(os.environ[POLICY_ENV]))
out = {"said": said, "uid": os.getuid()}
try:  # torch._dynamo's config asks for the user name on import (a KeyError on the H200)
    out["user"] = getpass.getuser()
except Exception as e:
    out["user"] = type(e).__name__
try:
    open(os.path.join(scratch, "mine.txt"), "w").write("ok")
    out["scratch_write"] = "ok"
except OSError as e:
    out["scratch_write"] = type(e).__name__
try:
    open("/root/attn-kit-uid-test", "w").write("x")
    out["home_write"] = "ok"
except OSError as e:
    out["home_write"] = type(e).__name__
children = []
for _ in range(2000):
    try:
        pid = os.fork()
    except OSError as e:
        out["fork_error"] = type(e).__name__
        break
    if pid == 0:
        time.sleep(20)
        os._exit(0)
    children.append(pid)
out["forked"] = len(children)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps(out), flush=True)
'''


def open_to_others(path: Path) -> bool:
    """Can a process of another user reach ``path`` (every folder above it passable, it readable)?"""
    path = path.resolve()
    for folder in [*reversed(path.parents), path]:
        mode = folder.stat().st_mode
        if not mode & 0o001 or (folder == path and not mode & 0o004):
            return False
    return True


def landlock_package() -> Path:
    import landlockpy

    return Path(landlockpy.__file__).resolve().parent.parent


def python_for_others() -> tuple[str, list[str]]:
    """An interpreter other users may run, and what it reads: this one, or the system's."""
    if open_to_others(Path(sys.base_prefix)) and open_to_others(Path(sys.prefix)):
        return sys.executable, python_read_paths()
    system = Path("/usr/bin/python3")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if system.exists() and open_to_others(Path("/usr/lib") / version) and open_to_others(landlock_package()):
        return str(system), [str(Path("/usr/lib") / version), str(landlock_package())]
    pytest.skip(f"no Python that other users may run ({sys.base_prefix} is closed to them)")


def probe(scratch: Path, python: str, read: list[str], shared: list[str] = ()) -> dict:
    policy = Policy(read=[str(REPO_ROOT), *read], write=[str(scratch), *shared], own_uid=True)
    # No USER or LOGNAME, as on the H200's runner: the name must come from the switch.
    env = {**{k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME", "LNAME", "USERNAME")},
           POLICY_ENV: policy.to_env(),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(landlock_package())])}
    proc = subprocess.run([python, "-c", PROBE, str(scratch)], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_root_landlock
def test_a_root_worker_takes_a_user_id_of_its_own():
    if not open_to_others(REPO_ROOT):
        pytest.skip(f"the kit ({REPO_ROOT}) is closed to other users")
    python, read = python_for_others()
    base = Path(tempfile.mkdtemp(prefix="attn-kit-uid-", dir="/tmp"))
    try:
        base.chmod(0o755)  # a folder other users may pass through, as a grading checkout is
        scratch = base / "scratch"
        scratch.mkdir()
        out = probe(scratch, python, read)
        assert out["uid"] >= WORKER_UID_BASE, out
        assert f"at most {MAX_PROCESSES} processes (as user {out['uid']})" in out["said"], out
        assert out["scratch_write"] == "ok" and out["home_write"] == "PermissionError", out
        assert out["user"] == f"attn-kit-worker-{out['uid']}", out
        assert out.get("fork_error") == "BlockingIOError" and out["forked"] < MAX_PROCESSES, out
        # A second worker on the same scratch (an input-check script's own) shares that user id,
        # so neither takes the folder from the other.
        again = probe(scratch, python, read)
        assert again["uid"] == out["uid"] and again["scratch_write"] == "ok", again
        # The kit's own solutions also write the node's shared build cache, which stays the
        # grader's: that worker keeps the grader's user, and says so (seen on the H200).
        cache = base / "build-cache"
        cache.mkdir(mode=0o755)
        other = base / "scratch2"
        other.mkdir()
        shared = probe(other, python, read, shared=[str(cache)])
        assert shared["uid"] == 0 and "to write the shared build cache" in shared["said"], shared
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


@needs_root_landlock
def test_a_root_worker_says_why_it_keeps_root(tmp_path):
    scratch = tmp_path / "scratch"  # pytest's tmp_path sits under a folder only root may enter
    scratch.mkdir()
    if os.stat(tmp_path.parent.parent).st_mode & 0o001:
        pytest.skip("pytest's temporary folders are open to other users here")
    out = probe(scratch, sys.executable, python_read_paths())
    assert out["uid"] == 0 and "no process limit: another user could not open" in out["said"], out
    assert out["scratch_write"] == "ok", "the scratch folder must stay the worker's when it keeps root"


PLANTER = '''
import os
from pathlib import Path

def plant():
    """What a hostile kernel's host code can do in a worker: write a module where the submission's
    other tasks will load theirs (the shared build folder)."""
    target = Path(os.environ["ATTN_KIT_BUILD_DIR"]) / "task5" / "planted.so"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"not the module built from the sources")
        return "written"
    except OSError as exc:
        return type(exc).__name__
'''


@pytest.mark.parametrize("prebuilt", [True, False], ids=["tests (prebuilt)", "a build"])
def test_a_test_worker_cannot_write_the_submission_s_build_folder(tmp_path, prebuilt):
    """Once the grader has built a task's extensions its workers get the build folder read-only
    (harness.spawn.worker_env(prebuilt=True)): a task-4 test run cannot replace the module that the
    same submission's task-5 tests load. A build (prebuilt off) still writes there."""
    from harness import remote
    from harness.containment import available
    from harness.tasks import REPO_ROOT

    if not available().startswith("landlock"):
        pytest.skip(f"needs Landlock to deny the write (this machine: {available()})")
    impl = tmp_path / "worker" / "submission"
    (impl / "task1").mkdir(parents=True)
    (impl / "task1" / "attention.py").write_text(PLANTER)
    build_dir = tmp_path / "build"
    client = remote.Client(tmp_path / "worker", impl, REPO_ROOT, build_dir=build_dir, prebuilt=prebuilt)
    try:
        outcome = client.import_module("task1.attention").plant()
    finally:
        client.close()
    if prebuilt:
        assert outcome == "PermissionError" and not (build_dir / "task5" / "planted.so").exists(), outcome
    else:
        assert outcome == "written", outcome
