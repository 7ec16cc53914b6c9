"""The wire between the judge and the worker: data only, never code.

A message is one frame on a pipe::

    8 bytes: length of the header (big-endian)   header: UTF-8 JSON   tensor bytes, in order

The header holds the message's fields, with tensors replaced by
``{"__tensor__": i}`` and described in ``header["__tensors__"]`` (dtype, shape,
strides, device, byte count). Objects that are not data (a module, a kernel
function) never cross: they stay in the worker and travel as
``{"__handle__": id}``. Decoding accepts only these forms, so a hostile worker
can send wrong numbers but never code, and a frame larger than the reader's
limits is refused before it is read.
"""
from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from typing import Any, Callable

import torch

#: Largest JSON header either side accepts.
MAX_HEADER_BYTES = 8 << 20
#: Largest total of tensor bytes in one message (the largest tensor a check sends).
MAX_PAYLOAD_BYTES = 16 << 30
_CHUNK = 1 << 22

#: The tensor dtypes that may cross the wire.
DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
              torch.int16, torch.int8, torch.uint8, torch.bool)
}


class ChannelClosed(EOFError):
    """The other side closed the pipe (it exited or died)."""


class ChannelTimeout(TimeoutError):
    """The other side did not answer in time."""


class ProtocolError(ValueError):
    """A frame that does not follow this module's format."""


def _deadline_left(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise ChannelTimeout("no answer in time")
    return left


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    parts, got = [], 0
    while got < n:
        ready, _, _ = select.select([fd], [], [], _deadline_left(deadline))
        if not ready:
            raise ChannelTimeout("no answer in time")
        chunk = os.read(fd, min(_CHUNK, n - got))
        if not chunk:
            raise ChannelClosed("the other side closed the channel")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: memoryview | bytes, deadline: float | None) -> None:
    os.set_blocking(fd, False)  # a reader that stops reading must not block us past the deadline
    view = memoryview(data).cast("B")
    while view:
        _, ready, _ = select.select([], [fd], [], _deadline_left(deadline))
        if not ready:
            raise ChannelTimeout("the other side stopped reading")
        try:
            n = os.write(fd, view[:_CHUNK])
        except BlockingIOError:  # select promised room for a little, not for a whole chunk
            continue
        except BrokenPipeError as exc:
            raise ChannelClosed("the other side closed the channel") from exc
        view = view[n:]


# ---------------------------------------------------------------- values <-> JSON
def encode(value: Any, tensors: list[torch.Tensor], on_other: Callable[[Any], dict]) -> Any:
    """``value`` as JSON-able data; tensors are appended to ``tensors``; anything else
    goes through ``on_other`` (the worker makes a handle, the judge refuses)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return {"__tensor__": len(tensors) - 1}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, tensors, on_other) for v in value]}
    if isinstance(value, list):
        return [encode(v, tensors, on_other) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": [[k, encode(v, tensors, on_other)] for k, v in value.items()]}
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    return on_other(value)


def decode(value: Any, tensors: list[torch.Tensor], on_handle: Callable[[dict], Any]) -> Any:
    """The inverse of :func:`encode`; unknown forms raise :class:`ProtocolError`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [decode(v, tensors, on_handle) for v in value]
    if not isinstance(value, dict) or len(value) > 3:
        raise ProtocolError(f"unexpected value {str(value)[:80]}")
    if "__tensor__" in value:
        i = value["__tensor__"]
        if not isinstance(i, int) or not 0 <= i < len(tensors):
            raise ProtocolError("a tensor reference out of range")
        return tensors[i]
    if "__tuple__" in value:
        return tuple(decode(v, tensors, on_handle) for v in _list(value["__tuple__"]))
    if "__dict__" in value:
        return {str(k): decode(v, tensors, on_handle) for k, v in (_pair(p) for p in _list(value["__dict__"]))}
    if "__float__" in value:
        text = value["__float__"]
        if text not in ("inf", "-inf", "nan"):
            raise ProtocolError("a float that is not inf or nan")
        return float(text)
    if "__dtype__" in value:
        if value["__dtype__"] not in DTYPES:
            raise ProtocolError(f"dtype {value['__dtype__']!r} may not cross the wire")
        return DTYPES[value["__dtype__"]]
    if "__device__" in value:
        return torch.device(_device_name(value["__device__"]))
    if "__handle__" in value or "__ref__" in value:
        return on_handle(value)
    raise ProtocolError(f"unexpected value {str(value)[:80]}")


def _list(v) -> list:
    if not isinstance(v, list):
        raise ProtocolError("expected a list")
    return v


def _pair(p) -> tuple:
    if not isinstance(p, list) or len(p) != 2 or not isinstance(p[0], str):
        raise ProtocolError("expected a [key, value] pair")
    return p[0], p[1]


def _device_name(text) -> str:
    if not isinstance(text, str) or not (text == "cpu" or text == "cuda" or text.startswith("cuda:")):
        raise ProtocolError(f"device {str(text)[:40]!r} is not cpu or cuda")
    return text


# ---------------------------------------------------------------- frames
def _tensor_meta(t: torch.Tensor) -> tuple[dict, memoryview]:
    t = t.detach()
    if type(t) is not torch.Tensor:  # a subclass: take its plain values, now
        t = t.as_subclass(torch.Tensor)
    meta = {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "device": str(t.device)}
    if meta["dtype"] not in DTYPES:
        raise ProtocolError(f"tensors of dtype {t.dtype} may not cross the wire")
    if not t.is_contiguous() and t.numel() and 0 not in t.stride() and _dense_permutation(t):
        meta["stride"] = list(t.stride())  # a non-contiguous layout (a transpose) is part of the input
    flat = t.contiguous().cpu().reshape(-1)
    data = flat.view(torch.uint8).numpy() if flat.numel() else memoryview(b"")
    meta["nbytes"] = int(flat.numel() * flat.element_size())
    return meta, memoryview(data).cast("B")


def _dense_permutation(t: torch.Tensor) -> bool:
    """True when ``t``'s strides are a permutation of a dense layout (no gaps, no overlap)."""
    dims = sorted(range(t.dim()), key=lambda d: t.stride(d))
    expected = 1
    for d in dims:
        if t.shape[d] != 1 and t.stride(d) != expected:
            return False
        expected *= t.shape[d]
    return True


def write_message(fd: int, fields: dict, tensors: list[torch.Tensor], deadline: float | None = None) -> None:
    metas, blobs = [], []
    for t in tensors:
        meta, blob = _tensor_meta(t)
        metas.append(meta)
        blobs.append(blob)
    header = json.dumps({**fields, "__tensors__": metas}, allow_nan=False).encode()
    _write_all(fd, struct.pack(">Q", len(header)) + header, deadline)
    for blob in blobs:
        _write_all(fd, blob, deadline)


def read_message(fd: int, deadline: float | None = None, *, max_payload: int = MAX_PAYLOAD_BYTES,
                 device_map: Callable[[str], str] | None = None) -> tuple[dict, list[torch.Tensor]]:
    """One frame: its fields and its tensors, rebuilt on their device (through ``device_map``)."""
    (n,) = struct.unpack(">Q", _read_exact(fd, 8, deadline))
    if n > MAX_HEADER_BYTES:
        raise ProtocolError(f"a header of {n} bytes (the limit is {MAX_HEADER_BYTES})")
    try:
        fields = json.loads(_read_exact(fd, n, deadline))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"a header that is not JSON: {type(exc).__name__}") from None
    if not isinstance(fields, dict):
        raise ProtocolError("a header that is not an object")
    metas = _list(fields.pop("__tensors__", []))
    total = 0
    for meta in metas:
        if not isinstance(meta, dict) or not isinstance(meta.get("nbytes"), int) or meta["nbytes"] < 0:
            raise ProtocolError("a tensor without a byte count")
        total += meta["nbytes"]
    if total > max_payload:
        raise ProtocolError(f"{total} bytes of tensors in one message (the limit is {max_payload})")
    tensors = [_rebuild(meta, _read_exact(fd, meta["nbytes"], deadline), device_map) for meta in metas]
    return fields, tensors


def _dense_strides(shape: list, stride: list) -> list:
    """The strides of the dense layout whose dimension order ``stride`` implies."""
    out, expected = [0] * len(shape), 1
    for d in sorted(range(len(shape)), key=lambda d: stride[d] if isinstance(stride[d], int) else 0):
        out[d] = expected if shape[d] != 1 else stride[d]
        expected *= shape[d]
    return out


def _rebuild(meta: dict, data: bytes, device_map) -> torch.Tensor:
    dtype = DTYPES.get(meta.get("dtype"))
    shape = meta.get("shape")
    if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ProtocolError("a tensor with a bad dtype or shape")
    numel = math.prod(shape)
    if numel * dtype.itemsize != len(data):
        raise ProtocolError("a tensor whose bytes do not match its shape")
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype) if numel else torch.empty(0, dtype=dtype)
    device = _device_name(meta.get("device", "cpu"))
    if device_map is not None:
        device = device_map(device)
    stride = meta.get("stride")
    if stride is not None:
        if not isinstance(stride, list) or len(stride) != len(shape) or sorted(
                stride) != sorted(_dense_strides(shape, stride)):
            raise ProtocolError("a tensor with bad strides (only permutations of a dense layout cross)")
        out = torch.empty_strided(shape, stride, dtype=dtype, device=device)
        out.copy_(flat.reshape(shape))
        return out
    return flat.reshape(shape).to(device)
