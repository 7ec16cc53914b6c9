"""The kernels bench/sweep.py times: the kit's reference kernels and every SDPA backend.

    from sweep_kernels import prefill_kernels, decode_kernels     # (bench/ on sys.path)

Every kernel is one ``Kernel``: a name (what ``--only`` selects, what the JSON and the
plots call it), the dtype of its inputs and output, the tolerance rule its float64 check
uses, and a call on the kit's layout:

* prefill: ``call(q, k, v, heads, causal)``, q, k, v and the output ``[B, S, heads*head_dim]``
  (the interface of every task-2/4 kernel and of ``harness.shared_checks.sdpa_core``);
* decode: ``call(q, k, v, heads)``, q ``[B, 1, H]``, k and v ``[B, L, H]``, output ``[B, 1, H]``
  (task 5's ``custom_flash_attention_decode`` over all L cache rows).

The kit's kernels come from the implementation root (``ATTN_KIT_IMPL``; ``solutions`` for the
reference kernels), built on first use by ``harness.build.load_extension``. A kernel whose
extension, source file or function is missing is kept with ``unavailable`` set to the reason,
so the JSON says why it has no numbers. SDPA runs inside ``torch.nn.attention.sdpa_kernel``
with exactly one backend allowed; a backend that refuses a shape or dtype raises, and the
sweep records the refusal (see :func:`sdpa_refusal`).
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

#: The tolerance rules of the float64 check (see sweep.References): which PyTorch computation
#: of the same thing the allowance is measured from, as in the kit's tests.
RULE_FP32 = "fp32"      # task 2/4/5 tests: float64 formulas recomputed in float32 (TF32 off)
RULE_3XTF32 = "3xtf32"  # task 4 bonus: float32 SDPA (TF32 off) on the same inputs
RULE_BF16 = "bf16"      # task 4 bonus: bf16 SDPA (its default backend) on the same bf16 inputs

#: Short dtype names used in kernel names and in the JSON.
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}


@dataclass
class Kernel:
    name: str
    dtype: torch.dtype
    rule: str
    family: str                      # "kit" (a reference kernel of the kit) or "sdpa"
    describe: str
    call: Callable | None = None
    backend: object = None           # the SDPBackend an SDPA kernel is pinned to
    #: Materialises the [B, heads, S, S] score matrix (the math backend, task 2): capped in size.
    score_matrix: bool = False
    unavailable: str = ""            # why there is no call (a missing extension, file or function)
    extension: str = ""              # the kit extension it comes from, if any

    def context(self):
        """What the call must run inside: SDPA pinned to its one backend, else nothing."""
        if self.backend is None:
            return contextlib.nullcontext()
        from torch.nn.attention import sdpa_kernel

        return sdpa_kernel(self.backend)

    def as_dict(self) -> dict:
        return dict(name=self.name, dtype=DTYPE_NAMES[self.dtype], rule=self.rule, family=self.family,
                    describe=self.describe, available=not self.unavailable, unavailable=self.unavailable,
                    extension=self.extension, score_matrix=self.score_matrix)


# ---------------------------------------------------------------- SDPA on the kit's layout
def sdpa_bsh(q, k, v, heads: int, causal: bool = False):
    """``scaled_dot_product_attention`` on ``[B, S, H]`` tensors through ``[B, heads, S, d]`` views,
    ``[B, Sq, H]`` out: ``harness.shared_checks.sdpa_core`` (the kit's baseline), also for a query
    block shorter than the keys (decode; there ``causal`` must be False: SDPA aligns its mask
    top-left)."""
    b, sq, h = q.shape
    d = h // heads
    split = lambda t: t.view(b, t.shape[1], heads, d).transpose(1, 2)  # noqa: E731 (views, no copy)
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=causal)
    return out.transpose(1, 2).reshape(b, sq, h)


def _sdpa_decode(q, k, v, heads: int):
    return sdpa_bsh(q, k, v, heads, False)


#: (kernel-name part, SDPBackend attribute, what it is). CUDNN_ATTENTION is absent from old torch.
SDPA_BACKENDS = (
    ("math", "MATH", "PyTorch's composite reference: materialises the scores"),
    ("efficient", "EFFICIENT_ATTENTION", "memory-efficient attention (xFormers/CUTLASS)"),
    ("flash", "FLASH_ATTENTION", "FlashAttention-2 (bf16/fp16 only)"),
    ("cudnn", "CUDNN_ATTENTION", "cuDNN's fused attention"),
)


def _sdpa_kernels(decode: bool) -> list[Kernel]:
    from torch.nn.attention import SDPBackend

    kernels = []
    for short, attr, what in SDPA_BACKENDS:
        backend = getattr(SDPBackend, attr, None)
        for dtype in (torch.float32, torch.bfloat16):
            kernel = Kernel(
                name=f"sdpa_{short}_{DTYPE_NAMES[dtype]}", dtype=dtype, family="sdpa",
                rule=RULE_FP32 if dtype == torch.float32 else RULE_BF16,
                describe=f"SDPA, {attr} backend only: {what}; {DTYPE_NAMES[dtype]}",
                call=_sdpa_decode if decode else sdpa_bsh, backend=backend, score_matrix=(short == "math"),
            )
            if backend is None:
                kernel.call, kernel.unavailable = None, f"this torch ({torch.__version__}) has no SDPBackend.{attr}"
            kernels.append(kernel)
    return kernels


def sdpa_refusal(exc: BaseException, caught: list, last_reason: dict, key: str) -> str:
    """Why an SDPA backend refused: the warnings it gave (torch says which condition failed,
    e.g. "Expected query, key and value to all be of dtype: {Half, BFloat16}"), else the one
    it gave for the same backend and dtype earlier (some are warned once per process), else
    the error itself."""
    lines = []
    for w in caught:
        text = re.sub(r"\s*\(Triggered internally at .*\)\s*$", "", str(w.message), flags=re.DOTALL).strip()
        if text and not text.endswith("not used because:") and text not in lines:
            lines.append(text)
    if lines:
        last_reason[key] = "; ".join(lines)
    return last_reason.get(key) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextlib.contextmanager
def recorded_warnings():
    """Every warning raised inside, recorded (not printed), repeats included."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


# ---------------------------------------------------------------- the kit's kernels
#: (kernel name, extension, function, dtype, tolerance rule, what it is)
KIT_PREFILL = (
    ("task4_fp32", "custom_flash_attention", "custom_flash_attention", torch.float32, RULE_FP32,
     "task 4: the fused FlashAttention kernel, float32 FMA (CUDA cores)"),
    ("task4_bf16", "custom_flash_attention_tc", "custom_flash_attention_bf16", torch.bfloat16, RULE_BF16,
     "task 4 bonus: the fused kernel on bf16 tensor cores (mma.sync), bf16 in and out"),
    ("task4_3xtf32", "custom_flash_attention_tc", "custom_flash_attention_3xtf32", torch.float32, RULE_3XTF32,
     "task 4 bonus: the fused kernel on TF32 tensor cores, three products per product (float32 accuracy)"),
    ("task2_fp32", "custom_self_attention", "custom_attention", torch.float32, RULE_FP32,
     "task 2: attention from separate kernels (GEMM_NT, mask, softmax, GEMM_NN): materialises the scores"),
)
KIT_DECODE = (
    ("task5_decode_fp32", "custom_flash_attention_decode", "custom_flash_attention_decode", torch.float32,
     RULE_FP32, "task 5: split-K decode attention over the whole cache, float32"),
)


def _missing_sources(extension: str) -> str:
    """Why the extension's sources are not there (empty when they are)."""
    from harness.impl import MissingSubmissionFile, source_path
    from harness.tasks import EXTENSIONS

    for rel in EXTENSIONS[extension].sources:
        try:
            source_path(rel)
        except MissingSubmissionFile as exc:
            return str(exc).splitlines()[0]
    return ""


def prebuild(extensions: list[str]) -> None:
    """Build the extensions side by side (harness.build.prebuild_in_parallel: one nvcc per core)
    before they are loaded one by one; those whose sources are missing are left out."""
    from harness.build import prebuild_in_parallel

    present = [e for e in dict.fromkeys(extensions) if not _missing_sources(e)]
    if len(present) > 1:
        # The children import harness from the repository root, wherever the sweep was started.
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        prebuild_in_parallel(present)


def _load(extension: str, function: str):
    """The extension's function, or the reason it cannot be had (the first line of the error)."""
    from harness.build import BuildError
    from harness.build import extension as built

    missing = _missing_sources(extension)
    if missing:
        return None, missing
    try:
        module = built(extension)  # loaded once per process, however many kernels it holds
    except BuildError as exc:
        lines = exc.log.strip().splitlines() or ["(no compiler output)"]
        first_error = next((line for line in lines if "error" in line.lower()), lines[-1])
        return None, f"{extension} did not build: {first_error.strip()[:300]}"
    except Exception as exc:  # noqa: BLE001 - a broken extension skips its kernels, never the sweep
        return None, f"{extension} did not load: {type(exc).__name__}: {str(exc)[:300]}"
    fn = getattr(module, function, None)
    if fn is None:
        return None, f"{extension} has no function {function}"
    return fn, ""


def _kit_kernels(table, decode: bool) -> list[Kernel]:
    kernels = []
    for name, extension, function, dtype, rule, what in table:
        fn, reason = _load(extension, function)
        call = None
        if fn is not None:
            if decode:
                def call(q, k, v, heads, fn=fn):
                    return fn(q, k, v, heads, False, seq_len=k.shape[1])
            else:
                call = fn
        kernels.append(Kernel(name=name, dtype=dtype, rule=rule, family="kit", describe=what, call=call,
                              unavailable=reason, extension=extension,
                              score_matrix=name.startswith("task2")))
    return kernels


def selected(names: list[str], patterns: list[str] | None) -> list[str]:
    """The names matching any of ``patterns`` (shell-style: ``sdpa_*_bf16``); all without patterns."""
    if not patterns:
        return names
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def prefill_names() -> list[str]:
    return [row[0] for row in KIT_PREFILL] + [f"sdpa_{s}_{d}" for s, _, _ in SDPA_BACKENDS for d in ("fp32", "bf16")]


def decode_names() -> list[str]:
    return [row[0] for row in KIT_DECODE] + [f"sdpa_{s}_{d}" for s, _, _ in SDPA_BACKENDS for d in ("fp32", "bf16")]


def extensions_for(prefill: list[str], decode: list[str]) -> list[str]:
    """The kit extensions the selected kernels need (task 4's module is needed by task 5's too)."""
    wanted = set(prefill) | set(decode)
    return [ext for name, ext, *_ in (*KIT_PREFILL, *KIT_DECODE) if name in wanted]


def prefill_kernels(only: list[str] | None = None, kit: bool = True) -> list[Kernel]:
    """The selected prefill kernels (``kit=False``: SDPA only, for the CPU smoke run)."""
    names = selected(prefill_names(), only)
    kit_table = tuple(row for row in KIT_PREFILL if row[0] in names) if kit else ()
    return [k for k in (*_kit_kernels(kit_table, decode=False), *_sdpa_kernels(decode=False)) if k.name in names]


def decode_kernels(only: list[str] | None = None, kit: bool = True) -> list[Kernel]:
    names = selected(decode_names(), only)
    kit_table = tuple(row for row in KIT_DECODE if row[0] in names) if kit else ()
    return [k for k in (*_kit_kernels(kit_table, decode=True), *_sdpa_kernels(decode=True)) if k.name in names]


def gpu_slug(name: str) -> str:
    """A file-name form of a device name: "NVIDIA H200" -> "nvidia-h200"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"
