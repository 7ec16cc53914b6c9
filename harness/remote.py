"""The judge's side of the judge/worker split.

When the grader runs a task's tests it runs them as the *judge*
(``ATTN_KIT_ROLE=judge``): the pristine test code draws the inputs, computes
the float64 references and applies the tolerances in this process, which never
imports a submission file. Every student object lives in a *worker*
(:mod:`harness.worker`): :func:`harness.impl.load_module` returns a
:class:`RemoteObject` for it, and using that object (reading an attribute,
calling it) is a request over a pipe. Tensors travel as values: arguments are
sent, results come back, arguments the call changed in place are changed here
too. What comes back is only ever data, checked by the judge like any output.

A worker that dies, hangs (no answer within the call time limit) or breaks the
protocol fails the check that was waiting for it, with the reason, and the
next check gets a fresh worker. Every process a worker started is killed with
it: the judge is the subreaper of the workers' trees.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
import weakref
from pathlib import Path

import torch

from . import channel, spawn
from .compare import CheckFailed
from .proctree import reap_orphans, set_subreaper
from .spawn import WorkerProcess

from .spawn import JUDGE, ROLE_ENV  # noqa: E402,F401 - re-exported
from .spawn import CONTAIN_ENV, WORKER_BUILD_ENV, WORKER_DIR_ENV  # noqa: E402,F401 - re-exported
#: Seconds one call may take before the worker is declared hung.
CALL_TIMEOUT_ENV = "ATTN_KIT_CALL_TIMEOUT_S"
DEFAULT_CALL_TIMEOUT_S = 300.0
#: After this many lost workers in one run the remaining checks fail at once (each restart costs
#: seconds: a file that crashes every check would cost minutes); a worker that hangs ends the
#: run at once (each hang costs the call time limit).
MAX_WORKER_FAILURES = 8
#: Seconds a new worker gets to start (import torch, contain itself).
START_TIMEOUT_S = 120.0
from .spawn import YARDSTICK_DIR_ENV, YARDSTICK_IMPL_ENV  # noqa: E402,F401 - re-exported


is_judge = spawn.is_judge


class WorkerFailed(CheckFailed):
    """The worker died, hung or broke the protocol while answering a check."""


class RuleBroken(CheckFailed):
    """The submission's code called something its task forbids."""


class RemoteError(RuntimeError):
    """An exception raised in the worker whose type is not a built-in one."""


#: Exceptions re-raised here as themselves (the tests expect some of them by type).
_BUILTIN_ERRORS = {e.__name__: e for e in (ValueError, TypeError, RuntimeError, NotImplementedError,
                                          IndexError, KeyError, AttributeError, AssertionError,
                                          ZeroDivisionError, OverflowError, MemoryError, ImportError,
                                          ModuleNotFoundError, SyntaxError, FileNotFoundError)}


class Client:
    """The judge's connection to its worker; restarts the worker after a failure."""

    def __init__(self, scratch: Path, impl: Path, kit: Path, *, contain: str = "auto",
                 call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S, build_dir: Path | None = None,
                 prebuilt: bool = False):
        self.scratch, self.impl, self.kit = scratch, impl, kit
        self.contain, self.call_timeout_s = contain, call_timeout_s
        self.build_dir = build_dir or scratch / "build"
        self.prebuilt = prebuilt  # its build folder read-only to it (spawn.worker_env)
        self.worker: WorkerProcess | None = None
        self.info: dict = {}
        self._released: list[tuple[int, int]] = []
        self.failures = 0  # workers lost in this run
        self.last_failure = ""
        set_subreaper()

    # -- the worker's life ----------------------------------------------------
    def env(self) -> dict[str, str]:
        """The worker's environment: no ATTN_KIT_ variable of ours but its own paths and policy."""
        return spawn.worker_env(self.scratch, self.impl, self.kit, self.build_dir, self.contain, self.prebuilt)

    def _ensure(self) -> WorkerProcess:
        if self.worker is not None and self.worker.alive():
            return self.worker
        if self.failures >= MAX_WORKER_FAILURES:
            raise WorkerFailed(f"not run: the worker was lost {self.failures} times in this run, the last "
                               f"time with: {self.last_failure}")
        if self.worker is not None:
            self.worker.stop(self.worker.dead_reason or "restarted")
            self.worker = None
        early = spawn.take_early(self.scratch)
        self.worker = early or spawn.WorkerProcess(self.scratch, self.scratch / "worker.log", self.env(), self.kit)
        self._released.clear()
        self.info = self._request({"op": "hello"}, [], timeout_s=START_TIMEOUT_S, what="starting the worker").result
        return self.worker

    def close(self) -> None:
        from .containment import sweep_stale_cgroups

        if self.worker is not None:
            self.worker.stop("closed")
            self.worker = None
        reap_orphans()
        sweep_stale_cgroups()

    # -- requests -------------------------------------------------------------
    def _fail(self, worker: WorkerProcess, what: str, why: str) -> WorkerFailed:
        worker.stop(why)
        code = worker.proc.returncode
        status = ""
        if code is not None and code < 0:
            try:
                status = f" (it died of {signal.Signals(-code).name})"
            except ValueError:
                status = f" (it died of signal {-code})"
        elif code is not None:
            status = f" (it exited with status {code})"
        if worker.memory_limit_hit:
            status += f": it used more than {worker.memory_limit_hit / 2**30:.1f} GiB, the worker's memory limit"
        tail = _log_tail(worker.log.name)
        self.failures += 1
        self.last_failure = f"{why}{status}"
        return WorkerFailed(f"{what}: {why}{status}; this check scores nothing."
                            + (f"\n  worker output, last lines:\n{tail}" if tail else ""))

    def _request(self, fields: dict, tensors: list, *, timeout_s: float | None = None, what: str):
        worker = self.worker
        assert worker is not None
        if self._released:
            ids = [i for gen, i in self._released if gen == worker.generation]
            self._released.clear()
            fields_release = {"op": "release", "ids": ids}
            if ids:
                self._exchange(worker, fields_release, [], timeout_s, what)
        return self._exchange(worker, fields, tensors, timeout_s, what)

    def _exchange(self, worker, fields, tensors, timeout_s, what):
        deadline = time.monotonic() + (timeout_s or self.call_timeout_s)
        try:
            channel.write_message(worker.req_w, fields, tensors, deadline)
            reply, out = channel.read_message(worker.rep_r, deadline, device_map=_device_here)
        except channel.ChannelTimeout:
            failure = self._fail(worker, what, f"no answer within {timeout_s or self.call_timeout_s:.0f} s "
                                 "(an endless loop, a deadlock or a kernel that hangs?); the worker was stopped")
            # One hang ends the run: each further hang would cost the whole time limit again.
            self.failures = MAX_WORKER_FAILURES
            raise failure from None
        except channel.ChannelClosed:
            worker.proc.poll()
            time.sleep(0.05)
            raise self._fail(worker, what, "the worker process ended without answering") from None
        except (channel.ProtocolError, RecursionError, RuntimeError, ValueError, OverflowError, MemoryError) as exc:
            raise self._fail(worker, what, f"the worker broke the protocol ({type(exc).__name__}: {exc})") from None
        if not reply.get("ok"):
            raise _error_from(reply.get("error") or {})
        try:
            result = channel.decode(reply.get("result"), out, lambda h: self._remote(h, worker))
            mutated = [(tuple(p), channel.decode(v, out, lambda h: None)) for p, v in reply.get("mutated", [])
                       if isinstance(p, list) and len(p) == 2 and p[0] in ("args", "kwargs")]
        except (channel.ProtocolError, RecursionError, ValueError) as exc:
            raise self._fail(worker, what, f"the worker broke the protocol ({type(exc).__name__})") from None
        counts = _op_counts(reply.get("op_counts")) if "op_counts" in reply else None
        return _Reply(result, mutated, [str(v) for v in reply.get("violations", [])], counts)

    def _remote(self, handle: dict, worker: WorkerProcess) -> "RemoteObject":
        i = handle.get("__handle__")
        if not isinstance(i, int):
            raise channel.ProtocolError("a handle without an id")
        return RemoteObject(self, worker.generation, i, str(handle.get("type", "object")),
                            bool(handle.get("callable")))

    def _send_ref(self, value, generation: int):
        def on_other(obj):
            if isinstance(obj, RemoteObject):
                if obj._generation != generation:
                    raise WorkerFailed("an object from a worker that was restarted was passed to the new one")
                return {"__ref__": obj._id}
            raise TypeError(f"cannot send a {type(obj).__name__} to the worker")
        return on_other

    def request(self, op: str, what: str, *, tensors_from=None, **fields):
        worker = self._ensure()
        tensors: list = []
        for key, value in (tensors_from or {}).items():
            fields[key] = channel.encode(value, tensors, self._send_ref(value, worker.generation))
        return self._request({"op": op, **fields}, tensors, what=what)

    # -- what the tests use ---------------------------------------------------
    def import_module(self, dotted: str) -> "RemoteObject":
        return self.request("import", f"importing {dotted}", module=dotted).result


class _Reply:
    def __init__(self, result, mutated, violations, op_counts: dict[str, int] | None):
        self.result, self.mutated, self.violations = result, mutated, violations
        #: Each operator the call ran, with how often (None: the call was not recorded).
        self.op_counts = op_counts

    @property
    def ops(self) -> list[str]:
        return sorted(self.op_counts or {})


#: The largest operator count believed (more is not a count a call could run, and would overflow
#: the float arithmetic of the checks that use it).
MAX_OP_COUNT = 2**53


def _op_counts(value) -> dict[str, int]:
    """The worker's operator counts, as data: names to whole numbers from 0 to MAX_OP_COUNT."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items()
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_OP_COUNT}


def _device_here(name: str) -> str:
    if name.startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    return name


def _error_from(err: dict) -> BaseException:
    name, message = str(err.get("type", "Exception")), str(err.get("message", ""))
    cls = _BUILTIN_ERRORS.get(name)
    if cls is None and err.get("builtin"):
        cls = RuntimeError  # torch's own errors (OutOfMemoryError, AcceleratorError) are RuntimeErrors
    exc = cls(message) if cls is not None else RemoteError(f"{name}: {message}")
    exc.remote_traceback = str(err.get("traceback", ""))
    return exc


def _log_tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4000))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


class RemoteObject:
    """An object that lives in the worker: attributes and calls are requests."""

    __slots__ = ("_client", "_generation", "_id", "_type", "_callable", "__weakref__")

    def __init__(self, client: Client, generation: int, i: int, type_name: str, is_callable: bool):
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_generation", generation)
        object.__setattr__(self, "_id", i)
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_callable", is_callable)
        weakref.finalize(self, client._released.append, (generation, i))

    def _check_alive(self) -> None:
        w = self._client.worker
        if w is None or w.generation != self._generation or not w.alive():
            raise WorkerFailed("this object lived in a worker that has since stopped")

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        self._check_alive()
        return self._client.request("getattr", f"reading {self._type}.{name}",
                                    tensors_from={"target": self}, name=name).result

    def __setattr__(self, name, value):
        raise AttributeError("objects in the worker are read-only from the judge")

    def __call__(self, *args, **kwargs):
        return self.call(args, kwargs)

    def call(self, args=(), kwargs=None, *, record_ops: bool = False, keep: bool = False,
             outputs: tuple = (), count_ops: bool = False):
        """Call it in the worker. ``outputs`` names the arguments (positions or keywords) the
        call is meant to change in place; only their new values come back into the judge's
        tensors. A change to any other argument is ignored: the judge's inputs, from which
        it computes its references, are the judge's alone."""
        self._check_alive()
        kwargs = dict(kwargs or {})
        reply = self._client.request(
            "call", f"calling {self._type}", tensors_from={"target": self, "args": list(args), "kwargs": kwargs},
            record_ops=record_ops, keep=keep, outputs=[o for o in outputs if isinstance(o, (int, str))],
        )
        for (where, key), value in reply.mutated:
            if key not in outputs or not isinstance(value, torch.Tensor):
                continue
            original = args[key] if where == "args" and isinstance(key, int) and 0 <= key < len(args) else (
                kwargs.get(key) if where == "kwargs" else None)
            if isinstance(original, torch.Tensor) and original.shape == value.shape and original.dtype == value.dtype:
                with torch.no_grad():
                    original.copy_(value.to(original.device))
        if reply.violations:
            from .rules import violation_message

            raise RuleBroken(violation_message(reply.violations, f"{self._type}"))
        if record_ops:  # count_ops: how often each operator ran, instead of their names
            return reply.result, (dict(reply.op_counts or {}) if count_ops else reply.ops)
        return reply.result

    def __repr__(self) -> str:
        return f"<{self._type} in the worker>"


_client: Client | None = None


def client() -> Client:
    """The judge's one client, made from the environment the grader set."""
    global _client
    if _client is None:
        scratch, impl, kit, build, contain = spawn.judge_settings()
        _client = Client(scratch, impl, kit, contain=contain, build_dir=build, prebuilt=spawn.prebuilt_wanted(),
                         call_timeout_s=float(os.environ.get(CALL_TIMEOUT_ENV, DEFAULT_CALL_TIMEOUT_S)))
    return _client


_yardstick: Client | None = None


def yardstick_client() -> Client | None:
    """The judge's second worker, which runs the kit's reference solution (None where the grader
    asked for none, and in a student's own run). It builds into, and loads from, the node's shared
    build cache, so a class run builds each reference extension once."""
    global _yardstick
    settings = spawn.yardstick_settings()
    if settings is None:
        return None
    if _yardstick is None:  # its process is usually running already (spawn.start_early)
        scratch, impl, kit, build, contain = settings
        _yardstick = Client(scratch, impl, kit, contain=contain, build_dir=build,
                            call_timeout_s=float(os.environ.get(CALL_TIMEOUT_ENV, DEFAULT_CALL_TIMEOUT_S)))
    return _yardstick


@contextlib.contextmanager
def using(other: Client):
    """Route what the helpers below send to a worker (on_worker, worker_randn, bound, kept,
    harness.impl.load_module) to ``other`` for the block: the same test code then sets up and
    times the reference solution in its own worker."""
    global _client
    saved = _client
    _client = other
    try:
        yield other
    finally:
        _client = saved


def worker_report() -> dict:
    """What the judge's worker said of itself (containment, pid), if one was started."""
    return dict(_client.info) if _client is not None else {}


def shutdown() -> None:
    global _client, _yardstick
    for c in (_client, _yardstick):
        if c is not None:
            c.close()
    _client = _yardstick = None
    spawn.stop_early()  # an early worker no test asked for


# ---------------------------------------------------------------- helpers the tests use in both modes
def is_remote(obj) -> bool:
    return isinstance(obj, RemoteObject)


def on_worker(func):
    """``func`` (a function of the kit) as it runs in the process of the submission's code.

    In a student's run that is this process: ``func`` itself. In the judge it is the same
    function in the worker (for what must happen where the kernels run: poisoning the
    allocator, timing, drawing large inputs in place).
    """
    if not is_judge():
        return func
    target = client().import_module(func.__module__)
    for part in func.__qualname__.split("."):
        target = getattr(target, part)
    return target


def worker_randn(*shape: int, tag: str, device="cpu", std: float = 1.0):
    """:func:`harness.inputs.randn` drawn where the kernels run (kept there in the judge)."""
    from . import inputs

    if not is_judge():
        return inputs.randn(*shape, tag=tag, device=device, std=std)
    return on_worker(inputs.randn_seeded).call(shape, dict(seed=inputs.seed_for(tag), device=device, std=std),
                                               keep=True)


def call(fn, *args, outputs: tuple = (), **kwargs):
    """``fn(*args, **kwargs)``, where ``outputs`` names the arguments it changes in place
    (positions or keywords): in the judge their new values come back from the worker."""
    if is_remote(fn):
        return fn.call(args, kwargs, outputs=outputs)
    return fn(*args, **kwargs)


def kept(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` whose result stays where ``fn`` ran (in the judge: a handle to it
    in the worker, to pass to later calls without sending it back and forth)."""
    if is_remote(fn):
        return fn.call(args, kwargs, keep=True)
    return fn(*args, **kwargs)


def fetch(value):
    """``value`` as data in this process (an object kept in the worker is sent back)."""
    if is_remote(value):
        return on_worker(_identity)(value)
    return value


def _identity(value):
    return value


def bound(fn, *tail, **kwargs):
    """``lambda *inputs: fn(*inputs, *tail, **kwargs)``, made where ``fn`` runs."""
    from .timing import bind_tail

    if is_remote(fn) or is_judge():
        return on_worker(bind_tail).call((fn if is_remote(fn) else on_worker(fn), *tail), kwargs, keep=True)
    return bind_tail(fn, *tail, **kwargs)
