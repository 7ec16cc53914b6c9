"""Containment of the worker: what the operating system lets submission code touch.

The judge describes a :class:`Policy` (folders to read, the one folder to write)
and the worker applies it to itself first thing, before any submission code is
imported; every process it starts inherits it.

* **Landlock** (Linux >= 5.13, unprivileged, per process): outside the policy's
  folders nothing can be read or written, no TCP port bound or connected, and
  (ABI >= 6) no signal sent to a process outside the sandbox. A root worker
  also drops every capability.
* Where the kernel has no Landlock, the worker runs **uncontained** and says
  so; the grader marks every result of such a run.

Resource limits apply in both cases: core dumps off, a cap on the size of any
file written, a bound on the processes of the worker's tree (RLIMIT_NPROC, or
for root, to whom the kernel never applies it, a pids cgroup) and on its memory
(a memory cgroup, where this machine lets us make one; on a Slurm node the job's
own cgroup bounds it too).
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Environment variable carrying the policy (JSON) from the judge to the worker.
POLICY_ENV = "ATTN_KIT_CONTAINMENT"
#: Largest file a contained process may write (builds are a few MB; logs are capped too).
MAX_FILE_BYTES = 2 << 30
LANDLOCK = "landlock"
UNCONTAINED = "uncontained"

#: System folders a Python + PyTorch + CUDA worker reads (those that exist are used).
SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/opt", "/proc", "/sys")


#: Where in /proc a contained process may write. The NVIDIA driver writes into the
#: /proc entry of the process that opens the GPU (seen on an H200: without it,
#: cudaGetDeviceCount fails with error 304), so a worker may write its own entry;
#: a process whose children use the GPU too (the one-process test runs) needs all of it.
PROC_SELF, PROC_ALL = "self", "all"


@dataclass
class Policy:
    read: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)
    mode: str = "auto"  # auto: Landlock where the kernel has it; none: uncontained
    proc_write: str = PROC_SELF
    memory_bytes: int = 0  # the worker's memory bound; 0: MEMORY_SHARE of the machine
    #: For root: bound the processes by a user id of the worker's own even where a pids cgroup
    #: could do it (the tests use it; a root machine without cgroups does it anyway).
    own_uid: bool = False

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> "Policy":
        data = json.loads(text)
        return cls(read=list(data.get("read", [])), write=list(data.get("write", [])), mode=data.get("mode", "auto"),
                   proc_write=data.get("proc_write", PROC_SELF), memory_bytes=int(data.get("memory_bytes", 0)),
                   own_uid=bool(data.get("own_uid", False)))


def package_dirs_on_pythonpath() -> list[str]:
    """``PYTHONPATH`` entries that hold packages (a wheel folder), never a checkout of the kit."""
    out = []
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and Path(entry).is_dir() and not (Path(entry) / "harness").exists():
            out.append(str(Path(entry).resolve()))
    return out


def python_read_paths() -> list[str]:
    """The interpreter, its standard library and the site packages (never the kit repo)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, *package_dirs_on_pythonpath()}
    for entry in sys.path:
        if entry and ("site-packages" in entry or "dist-packages" in entry):
            paths.add(entry)
    cuda = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda:
        paths.add(cuda)
    return sorted(p for p in paths if p and Path(p).exists())


def landlock_abi() -> int:
    try:
        import landlockpy
    except ImportError:
        return 0
    try:
        return landlockpy.abi_version()
    except Exception:  # noqa: BLE001 - any failure means: not available
        return 0


def available() -> str:
    """The containment this machine allows, in words."""
    abi = landlock_abi()
    return f"{LANDLOCK} (ABI {abi})" if abi else UNCONTAINED


#: Processes a worker's whole tree may hold at once: a fork bomb stops here.
MAX_PROCESSES = 512
#: Share of the machine's memory a worker may use (where a memory cgroup can be made).
MEMORY_SHARE = 0.5
#: Name of the cgroup a worker makes for itself, beside the judge's: ``attn-kit-<pid>``.
CGROUP_PREFIX = "attn-kit-"


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cgroup_dir(controller: str) -> Path | None:
    """This process's cgroup folder for ``controller`` (cgroup v1 or v2), if there is one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            folder = Path("/sys/fs/cgroup", controller, path.lstrip("/"))
            if folder.is_dir():
                return folder
        if controllers == "" and controller in _v2_controllers():
            folder = Path("/sys/fs/cgroup", path.lstrip("/"))
            if folder.is_dir():
                return folder
    return None


def _v2_controllers() -> list[str]:
    try:
        return Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()
    except OSError:
        return []


def worker_cgroup(controller: str, pid: int) -> Path | None:
    """Where the worker ``pid`` put itself for ``controller`` (seen from the judge)."""
    base = cgroup_dir(controller)
    return base / f"{CGROUP_PREFIX}{pid}" if base is not None else None


def _join_cgroup(controller: str, settings: dict[str, str]) -> bool:
    """Make a cgroup of our own for ``controller``, set it, move in; False if not allowed here."""
    base = cgroup_dir(controller)
    if base is None:
        return False
    mine = base / f"{CGROUP_PREFIX}{os.getpid()}"
    try:
        mine.mkdir(exist_ok=True)
        for name, value in settings.items():
            (mine / name).write_text(value)
        (mine / "cgroup.procs").write_text(str(os.getpid()))
    except OSError:
        try:
            mine.rmdir()
        except OSError:
            pass
        return False
    return True


def kill_worker_cgroups(pid: int, rounds: int = 50) -> None:
    """SIGKILL every process in the worker's cgroups (no process can leave one), until none is left."""
    import signal

    folders = [f for f in (worker_cgroup(c, pid) for c in ("pids", "memory")) if f is not None and f.is_dir()]
    for _ in range(rounds):
        pids = set()
        for folder in folders:
            try:
                pids.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def remove_worker_cgroups(pid: int) -> None:
    """The judge's clean-up once the worker's tree is gone."""
    for controller in ("pids", "memory"):
        folder = worker_cgroup(controller, pid)
        if folder is not None and folder.is_dir():
            try:
                folder.rmdir()
            except OSError:
                pass


def sweep_stale_cgroups() -> None:
    """Remove the empty cgroups of workers that are gone (a worker killed with its judge leaves one)."""
    for controller in ("pids", "memory"):
        base = cgroup_dir(controller)
        if base is None:
            continue
        for folder in base.glob(f"{CGROUP_PREFIX}*"):
            pid = folder.name.removeprefix(CGROUP_PREFIX)
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                try:
                    folder.rmdir()  # fails while a process is still inside: then it stays
                except OSError:
                    pass


def memory_limit_hit(pid: int) -> int | None:
    """The worker's memory limit in bytes if its cgroup ever hit it, else None."""
    folder = worker_cgroup("memory", pid)
    if folder is None:
        return None
    for failcnt, limit in (("memory.failcnt", "memory.limit_in_bytes"), ("memory.events", "memory.max")):
        try:
            text = (folder / failcnt).read_text()
            hit = int(text) > 0 if failcnt.endswith("failcnt") else any(
                line.split()[0] in ("max", "oom_kill") and int(line.split()[1]) > 0 for line in text.splitlines())
            if hit:
                return int((folder / limit).read_text().strip())
        except (OSError, ValueError, IndexError):
            continue
    return None


def _user_processes() -> int:
    uid, n = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                n += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return n


#: A root worker with no pids cgroup switches to a user id of its own, because the kernel
#: applies RLIMIT_NPROC per user and never to root: WORKER_UID_BASE + its process id (below
#: 2**22, the kernel's largest pid_max), so workers running side by side never share one.
WORKER_UID_BASE = 1_900_000_000


def _limits(memory_bytes: int = 0, own_uid: bool = False) -> tuple[list[str], bool]:
    """Core dumps off, file sizes capped, processes and memory bounded where the OS lets us.

    Returns what is in force, in words, and whether the processes still need bounding (a root
    worker without a pids cgroup: :func:`_switch_user` does it)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    cap = MAX_FILE_BYTES if hard == resource.RLIM_INFINITY else min(MAX_FILE_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
    said, unbounded = [], False
    if os.geteuid() == 0:  # the kernel never applies RLIMIT_NPROC to root: a pids cgroup does it
        if not own_uid and _join_cgroup("pids", {"pids.max": str(MAX_PROCESSES)}):
            said.append(f"at most {MAX_PROCESSES} processes")
        else:
            unbounded = True
    else:
        limit = _user_processes() + MAX_PROCESSES
        _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        said.append(f"at most {MAX_PROCESSES} more processes")
    memory = memory_bytes or int(machine_memory_bytes() * MEMORY_SHARE)
    if _join_cgroup("memory", {"memory.limit_in_bytes": str(memory)}) or _join_cgroup("memory", {"memory.max": str(memory)}):
        said.append(f"memory at most {memory / 2**30:.1f} GiB")
    return said, unbounded


def _existing(paths) -> list[str]:
    return sorted({str(p) for p in paths if os.path.exists(p)})


def _chown_tree(path: str, uid: int, undo: list[tuple[str, int, int]]) -> None:
    """Give ``path`` and everything in it to ``uid``; ``undo`` records the owners it had."""
    for root, dirs, files in os.walk(path):
        for name in (["."] if root == path else []) + dirs + files:
            target = os.path.normpath(os.path.join(root, name))
            st = os.lstat(target)
            undo.append((target, st.st_uid, st.st_gid))
            os.chown(target, uid, uid, follow_symlinks=False)


def _cuda_init_problem() -> str:
    """'' if the CUDA driver starts in this process (cuInit through libcuda), else why not."""
    try:
        code = ctypes.CDLL("libcuda.so.1").cuInit(0)
    except OSError as exc:
        return f"(the CUDA driver library: {exc})"
    return "" if code == 0 else f"(the GPU: cuInit returned error {code})"


#: Seconds the check child may take (a cuInit included) before the switch is given up.
PROBE_TIMEOUT_S = 60
#: The NVIDIA device files the CUDA driver opens (the MIG capabilities and /dev/dri are often
#: root's alone, and a CUDA process does not need them).
CUDA_DEVICE_GLOBS = ("/dev/nvidiactl", "/dev/nvidia-uvm*", "/dev/nvidia[0-9]*")


def _unreachable_as(uid: int, wants: list[tuple[str, int]], gpu: bool = False) -> str:
    """The first path a process of user ``uid`` could not open as ``wants`` says ('' if none),
    and with ``gpu``, whether the CUDA driver starts for it: a child switches to ``uid`` and
    asks the kernel (and the driver). A child that dies or hangs is an answer too."""
    import select
    import signal

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no Python clean-up, only the answer
        answer = b""
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            answer = next((p for p, mode in wants if not os.access(p, mode)), "").encode()
            if not answer and gpu:
                answer = _cuda_init_problem().encode()
            answer = answer or b"OK"
        except BaseException as exc:  # noqa: BLE001 - any failure is an answer
            answer = f"(switching user failed: {exc})".encode()
        finally:
            os.write(w, answer[:4096])
            os._exit(0)
    os.close(w)
    answer = ""
    with os.fdopen(r, "rb") as f:
        if select.select([f], [], [], PROBE_TIMEOUT_S)[0]:
            answer = f.read().decode(errors="replace")
        else:
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if answer == "OK" and os.waitstatus_to_exitcode(status) == 0:
        return ""
    return answer if answer and answer != "OK" else "(the check as that user failed or hung)"


def _worker_uid(scratch: Path | None) -> int:
    """The user id for this worker: the one its scratch folder already belongs to, when an
    earlier worker of the same grading (an input-check script's own worker, say) took it over,
    so neither takes the folder from the other; else one of its own."""
    try:
        owner = os.stat(scratch).st_uid if scratch is not None else 0
    except OSError:
        owner = 0
    return owner if owner >= WORKER_UID_BASE else WORKER_UID_BASE + os.getpid()


def _plan_user(policy: Policy) -> tuple[int | None, str]:
    """A root worker's own user id, with its scratch folder handed over to it, or why it keeps root."""
    import glob

    scratch = Path(policy.write[0]).resolve() if policy.write else None
    uid = _worker_uid(scratch)
    read = _existing([*SYSTEM_READ, *policy.read])
    wants = [(p, os.R_OK | (os.X_OK if os.path.isdir(p) else 0)) for p in read]
    gpu = sorted({p for pattern in CUDA_DEVICE_GLOBS for p in glob.glob(pattern)})
    wants += [(p, os.R_OK | os.W_OK) for p in gpu]
    missing = _unreachable_as(uid, wants, gpu=bool(gpu))
    if not missing:
        # The scratch folder (the first write path) and what lies in it become the worker's; a
        # shared folder elsewhere (the reference builds' cache) keeps its owner and must be open.
        write = _existing(policy.write)
        undo: list[tuple[str, int, int]] = []
        try:
            for path in write:
                if scratch is not None and Path(path).resolve().is_relative_to(scratch):
                    _chown_tree(path, uid, undo)
            missing = _unreachable_as(uid, [(p, os.R_OK | os.W_OK | os.X_OK) for p in write])
        except OSError as exc:  # a file that vanished, a file system that refuses chown
            missing = f"(handing the scratch folder over failed: {exc})"
        if missing:
            for path, owner, group in reversed(undo):
                try:
                    os.chown(path, owner, group, follow_symlinks=False)
                except OSError:
                    pass
    if missing and scratch is not None and Path(missing).is_absolute() and not Path(missing).resolve().is_relative_to(scratch) \
            and missing in policy.write:
        # Only the kit's own solutions get a write path outside their scratch (the node's shared
        # build cache, which stays the grader's): they are trusted, and keep the grader's user.
        return None, f"no process limit: runs as the grader's user to write the shared build cache {missing}"
    if missing:
        return None, f"no process limit: another user could not open {missing}"
    return uid, ""


_PR_SET_NO_NEW_PRIVS = 38
#: The name a switched worker goes by (USER, LOGNAME): its user id has no passwd entry.
WORKER_USER_PREFIX = "attn-kit-worker-"


def _switch_user(uid: int) -> str:
    """Become ``uid`` (no groups, no capabilities, not even inheritable ones, and no way back
    through a setuid program) with RLIMIT_NPROC bounding its tree."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    _clear_capabilities()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
    # The id has no passwd entry, so getpass.getuser() (torch._dynamo's config calls it on
    # import) would raise KeyError, as it did on the H200; it reads these variables first.
    os.environ["USER"] = os.environ["LOGNAME"] = f"{WORKER_USER_PREFIX}{uid}"
    return f"at most {MAX_PROCESSES} processes (as user {uid})"


_PR_CAPBSET_DROP = 24
_CAP_LAST = 63


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capability_bounding_set() -> None:
    """No capability can come back (through an executable's file capabilities, say)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(_CAP_LAST + 1):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last cap: fine


def _clear_capabilities() -> None:
    """A root worker that stays root gives up every capability (root's files stay root's, but no more)."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


#: Device files a contained process may open (those that exist): the usual character
#: devices and every NVIDIA device (the GPU, its control and UVM nodes, MIG capabilities).
DEVICE_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")
DEVICE_GLOBS = ("/dev/nvidia*", "/dev/nvidia-caps/*", "/dev/dri/*")


def device_paths() -> list[str]:
    import glob

    found = [p for p in DEVICE_FILES if os.path.exists(p)]
    for pattern in DEVICE_GLOBS:
        found += [p for p in glob.glob(pattern) if not os.path.isdir(p)]
    return sorted(set(found))


def apply(policy: Policy) -> str:
    """Contain this process as ``policy`` says; return the containment now in force, in words."""
    said, unbounded = _limits(policy.memory_bytes, policy.own_uid)
    for path in policy.write:  # made before they are handed over (see _plan_user)
        Path(path).mkdir(parents=True, exist_ok=True)
    uid, why = _plan_user(policy) if unbounded else (None, "")
    if why:
        said.append(why)
    contained = policy.mode != "none" and landlock_abi()
    if contained:
        _landlock(policy, whole_proc=policy.proc_write == PROC_ALL and (os.geteuid() != 0 or uid is not None))
    if os.geteuid() == 0:
        _drop_capability_bounding_set()
        if uid is not None:
            said.append(_switch_user(uid))  # leaves no capability behind
        else:
            _clear_capabilities()
    suffix = "".join(f"; {x}" for x in said)
    if not contained:
        return UNCONTAINED + suffix
    import landlockpy

    return f"{LANDLOCK} (ABI {landlockpy.abi_version()})" + suffix


def _landlock(policy: Policy, whole_proc: bool) -> None:
    import landlockpy
    from landlockpy import AccessFS, AccessNet, Ruleset, Scope

    read = AccessFS.READ_FILE | AccessFS.READ_DIR | AccessFS.EXECUTE
    devices = read | AccessFS.WRITE_FILE | AccessFS.IOCTL_DEV | AccessFS.TRUNCATE
    device_file = AccessFS.READ_FILE | AccessFS.WRITE_FILE | AccessFS.IOCTL_DEV
    everything = landlockpy.fs_for_abi(landlockpy.abi_version())
    with Ruleset(scoped=Scope.SIGNAL | Scope.ABSTRACT_UNIX_SOCKET,
                 handled_net=AccessNet.BIND_TCP | AccessNet.CONNECT_TCP | AccessNet.BIND_UDP
                 | AccessNet.CONNECT_SEND_UDP) as rules:
        for path in sorted(set(SYSTEM_READ) | set(policy.read)):
            if Path(path).exists():
                rules.allow_path(path, read)
        # Only the devices a Python + CUDA process needs: /dev as a whole would hold raw disks.
        for path in device_paths():
            rules.allow_path(path, device_file)
        if Path("/dev/shm").is_dir():
            rules.allow_path("/dev/shm", everything)
        # All of /proc only for a process that is not root (root could write its sysctls).
        proc = "/proc" if whole_proc else f"/proc/{os.getpid()}"
        if Path(proc).exists():
            rules.allow_path(proc, devices)
        for path in policy.write:
            Path(path).mkdir(parents=True, exist_ok=True)
            rules.allow_path(path, everything)
        rules.restrict()
