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

Resource limits (core dumps off, a cap on the size of any file written) apply
in both cases.
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

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> "Policy":
        data = json.loads(text)
        return cls(read=list(data.get("read", [])), write=list(data.get("write", [])), mode=data.get("mode", "auto"),
                   proc_write=data.get("proc_write", PROC_SELF))


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


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    cap = MAX_FILE_BYTES if hard == resource.RLIM_INFINITY else min(MAX_FILE_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))


_PR_CAPBSET_DROP = 24
_CAP_LAST = 63


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    """A root worker gives up every capability (root's files stay root's, but no more)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(_CAP_LAST + 1):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last cap: fine
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def apply(policy: Policy) -> str:
    """Contain this process as ``policy`` says; return the containment now in force, in words."""
    _limits()
    if policy.mode == "none" or not landlock_abi():
        return UNCONTAINED
    import landlockpy
    from landlockpy import AccessFS, AccessNet, Ruleset, Scope

    read = AccessFS.READ_FILE | AccessFS.READ_DIR | AccessFS.EXECUTE
    devices = read | AccessFS.WRITE_FILE | AccessFS.IOCTL_DEV | AccessFS.TRUNCATE
    everything = landlockpy.fs_for_abi(landlockpy.abi_version())
    with Ruleset(scoped=Scope.SIGNAL | Scope.ABSTRACT_UNIX_SOCKET,
                 handled_net=AccessNet.BIND_TCP | AccessNet.CONNECT_TCP | AccessNet.BIND_UDP
                 | AccessNet.CONNECT_SEND_UDP) as rules:
        for path in sorted(set(SYSTEM_READ) | set(policy.read)):
            if Path(path).exists():
                rules.allow_path(path, read)
        if Path("/dev").exists():
            rules.allow_path("/dev", devices)
        proc = "/proc" if policy.proc_write == PROC_ALL else f"/proc/{os.getpid()}"
        if Path(proc).exists():
            rules.allow_path(proc, devices)
        for path in policy.write:
            Path(path).mkdir(parents=True, exist_ok=True)
            rules.allow_path(path, everything)
        rules.restrict()
    if os.geteuid() == 0:
        _drop_capabilities()
    return f"{LANDLOCK} (ABI {landlockpy.abi_version()})"
