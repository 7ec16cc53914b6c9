"""``python -m harness.worker REQUEST_FD REPLY_FD``: the only process that runs submission code.

The judge (:mod:`harness.remote`) starts it and sends requests over a pipe
(:mod:`harness.channel`): import a task module, read an attribute, call
something. Objects stay here and the judge holds handles to them; tensors go
back as data. The worker contains itself (:mod:`harness.containment`) and
installs the tripwires of :mod:`harness.rules` before it imports any
submission code, and it knows nothing of the run's seed or of the verdict:
the judge draws every input, computes every reference and applies every
tolerance itself.
"""
from __future__ import annotations

import collections
import itertools
import os
import sys
import traceback

#: How much of a submission's traceback goes back to the judge.
MAX_TRACEBACK_CHARS = 4000


class _Outcome:
    """What an operation returns: its value, the reply's other fields, whether to keep the value here."""

    def __init__(self, value, extra: dict, keep: bool = False):
        self.value, self.extra, self.keep = value, extra, keep


class Worker:
    def __init__(self, request_fd: int, reply_fd: int, containment: str):
        self.request_fd, self.reply_fd = request_fd, reply_fd
        self.containment = containment
        self.objects: dict[int, object] = {}
        self.ids = itertools.count(1)

    # -- encoding -------------------------------------------------------------
    def _handle(self, obj) -> dict:
        i = next(self.ids)
        self.objects[i] = obj
        return {"__handle__": i, "type": type(obj).__qualname__, "callable": callable(obj)}

    def _encode(self, value, tensors):
        from .channel import encode

        return encode(value, tensors, self._handle)

    def _decode(self, value, tensors):
        from .channel import ProtocolError, decode

        def on_handle(ref):
            i = ref.get("__ref__")
            if i not in self.objects:
                raise ProtocolError(f"no object {i} in this worker")
            return self.objects[i]

        return decode(value, tensors, on_handle)

    # -- operations -----------------------------------------------------------
    def op_hello(self, req, tensors):
        import torch

        return dict(pid=os.getpid(), containment=self.containment, torch=torch.__version__,
                    cuda=torch.cuda.is_available())

    def op_import(self, req, tensors):
        from .impl import load_module

        return load_module(str(req["module"]))

    def op_getattr(self, req, tensors):
        return getattr(self._decode(req["target"], tensors), str(req["name"]))

    def op_call(self, req, tensors):
        import torch

        from . import rules

        target = self._decode(req["target"], tensors)
        args = self._decode(req.get("args", []), tensors)
        kwargs = self._decode(req.get("kwargs", {"__dict__": []}), tensors)
        # The arguments the judge declared as outputs go back after the call, changed or not: a CUDA
        # kernel writing through a pointer leaves no trace in a tensor's version counter.
        declared = {str(o) for o in req.get("outputs", [])}
        watched = [(("args", i), a) for i, a in enumerate(args) if isinstance(a, torch.Tensor) and str(i) in declared]
        watched += [(("kwargs", k), a) for k, a in kwargs.items() if isinstance(a, torch.Tensor) and k in declared]
        rules.take_violations()
        ops = None
        if req.get("record_ops"):
            from .op_recorder import ops_called

            result, ops = ops_called(target, *args, **kwargs)
        else:
            result = target(*args, **kwargs)
        if isinstance(result, torch.Tensor) or any(isinstance(a, torch.Tensor) for _, a in watched):
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the reply carries finished values only
        mutated = [[list(path), a] for path, a in watched]
        extra = dict(violations=rules.take_violations(), mutated=mutated)
        if ops is not None:
            extra["op_counts"] = dict(collections.Counter(ops))  # each operator, with how often it ran
        return _Outcome(result, extra, keep=bool(req.get("keep")))

    def op_release(self, req, tensors):
        for i in req.get("ids", []):
            self.objects.pop(i, None)
        return None

    # -- the loop -------------------------------------------------------------
    def serve(self) -> None:
        from .channel import ChannelClosed, read_message, write_message

        while True:
            try:
                req, tensors = read_message(self.request_fd)
            except ChannelClosed:
                return
            out_tensors: list = []
            try:
                handler = getattr(self, f"op_{req.get('op')}", None)
                if handler is None:
                    raise ValueError(f"unknown operation {req.get('op')!r}")
                outcome = handler(req, tensors)
                if not isinstance(outcome, _Outcome):
                    outcome = _Outcome(outcome, {})
                extra = dict(outcome.extra)
                if "mutated" in extra:
                    extra["mutated"] = [[p, self._encode(t, out_tensors)] for p, t in extra["mutated"]]
                encoded = self._handle(outcome.value) if outcome.keep else self._encode(outcome.value, out_tensors)
                reply = {"ok": True, "result": encoded, **extra}
            except Exception as exc:  # noqa: BLE001 - the submission's errors go back as data
                out_tensors = []
                reply = {"ok": False, "error": {
                    "type": type(exc).__name__,
                    "builtin": type(exc).__module__ == "builtins" or type(exc).__module__.startswith("torch"),
                    "message": str(exc)[:MAX_TRACEBACK_CHARS],
                    "traceback": "".join(traceback.format_exception(exc))[-MAX_TRACEBACK_CHARS:],
                }}
            write_message(self.reply_fd, reply, out_tensors)


def main(argv: list[str]) -> int:
    request_fd, reply_fd = int(argv[0]), int(argv[1])
    from .containment import POLICY_ENV, Policy, apply

    policy = Policy.from_env(os.environ.get(POLICY_ENV, "{}"))
    containment = apply(policy)
    from . import rules
    from .impl import impl_root
    from .tasks import editable_files

    rules.install(str(impl_root() / rel) for rel in editable_files())
    Worker(request_fd, reply_fd, containment).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
