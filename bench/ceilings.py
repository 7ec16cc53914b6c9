"""The GPU's ceilings, measured in the same run as the kernels they bound (bench/sweep.py).

    python bench/ceilings.py            # on its own: prints the four numbers (needs a GPU)

Four numbers, each timed with harness/timing.py (CUDA events, warm-up, L2 flush, rotated
inputs, median and interquartile range) like every kernel of the sweep:

* ``copy_bandwidth``: a 1 GiB device-to-device copy, bytes read plus bytes written over the
  median time: the practical ceiling of memory traffic (what harness.timing.copy_bandwidth
  measures; here with its spread);
* ``fp32_simt``: a square float32 GEMM with TF32 off: cuBLAS SGEMM on the CUDA cores (FMA,
  no tensor cores). It is what a well-tuned FMA kernel reaches, a little below the FMA
  peak (SMs x FP32 lanes x 2 x clock), and the ceiling the task-4 float32 kernel is bound by;
* ``tf32_tensor``: the same GEMM with TF32 on (tensor cores, 10-bit mantissas): the ceiling
  of one TF32 product; 3xTF32 needs three per product, so its own ceiling is about a third;
* ``bf16_tensor``: the same GEMM in bfloat16 (tensor cores, float32 accumulation): the
  ceiling of the bf16 kernels and of SDPA's FlashAttention and cuDNN backends.

GEMM FLOPs are 2*N^3. Cached inputs cannot help a GEMM this size (compute-bound), but
the flush and the rotation are the same as for the kernels, so the numbers are comparable.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from harness import timing  # noqa: E402
from harness.compare import strict_float32  # noqa: E402

#: Bytes copied to measure bandwidth: far larger than any L2 (harness.timing's own choice).
COPY_BYTES = timing.COPY_BANDWIDTH_BYTES
#: Side of the square GEMMs: 2*8192^3 = 1.1 TFLOP a call, ~20 ms in float32 and ~1-2 ms on bf16
#: tensor cores on an H100/H200: long enough to reach the steady rate, short enough to repeat.
GEMM_N = 8192
#: Input sets each GEMM rotates through (as the kernels do; 2 x 2 x 256 MB in float32).
GEMM_INPUT_SETS = 2
#: Timing of each ceiling: warm-ups (cuBLAS picks its kernel on the first call), repetitions, budget.
WARMUP, MIN_REPS, MAX_REPS, BUDGET_S = 2, 5, 30, 0.5
#: Sizes for the CPU smoke run (bench/sweep.py --device cpu), which only exercises the code.
CPU_COPY_BYTES, CPU_GEMM_N = 64 << 20, 512


@contextlib.contextmanager
def tf32_matmul():
    """Let float32 matmuls use TF32 tensor cores (the opposite of harness.compare.strict_float32)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _timing_fields(t: timing.Timing) -> dict:
    d = t.as_dict()
    d.pop("samples_ms", None)  # the statistics are kept, the raw repetitions are not
    return d


def measure_copy(device: str = "cuda", nbytes: int = COPY_BYTES) -> dict:
    t = timing.time_copy(nbytes, device, warmup=WARMUP, min_reps=MIN_REPS, max_reps=MAX_REPS, budget_s=BUDGET_S)
    return dict(value=2 * nbytes / (t.median_ms / 1e3), unit="B/s", bytes=2 * nbytes,
                what=f"device-to-device copy of {nbytes / 2**30:.3g} GiB, bytes read + written / median time",
                timing=_timing_fields(t))


def measure_gemm(dtype: torch.dtype, tf32: bool, device: str = "cuda", n: int = GEMM_N) -> dict:
    sets = [(torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype))
            for _ in range(GEMM_INPUT_SETS)]
    mode = tf32_matmul() if tf32 else strict_float32()
    with mode, torch.no_grad():
        t = timing.time_function(torch.mm, sets, warmup=WARMUP, min_reps=MIN_REPS, max_reps=MAX_REPS,
                                 budget_s=BUDGET_S)
    del sets
    flops = 2.0 * n ** 3
    kind = {torch.bfloat16: "bf16 tensor cores (float32 accumulation)"}.get(
        dtype, "TF32 tensor cores (allow_tf32=True)" if tf32 else "cuBLAS SGEMM, CUDA-core FMA (TF32 off)")
    return dict(value=flops / (t.median_ms / 1e3), unit="FLOP/s", flops=flops,
                what=f"torch.mm {n}x{n}x{n}, {kind}", timing=_timing_fields(t))


def measure_ceilings(device: str = "cuda") -> dict:
    """The four ceilings (see the module docstring), keyed by name."""
    cpu = device == "cpu"
    n = CPU_GEMM_N if cpu else GEMM_N
    out = {
        "copy_bandwidth": measure_copy(device, CPU_COPY_BYTES if cpu else COPY_BYTES),
        "fp32_simt": measure_gemm(torch.float32, tf32=False, device=device, n=n),
        "tf32_tensor": measure_gemm(torch.float32, tf32=True, device=device, n=n),
        "bf16_tensor": measure_gemm(torch.bfloat16, tf32=False, device=device, n=n),
    }
    if cpu:
        for c in out.values():
            c["what"] += " [CPU smoke run: not a GPU ceiling]"
    else:
        torch.cuda.empty_cache()
    return out


def describe(ceilings: dict) -> str:
    lines = []
    for name, c in ceilings.items():
        value = f"{c['value'] / 1e12:8.2f} TB/s " if c["unit"] == "B/s" else f"{c['value'] / 1e12:8.1f} TFLOP/s"
        t = c["timing"]
        lines.append(f"  {name:15s} {value}  (median {t['median_ms']:.4g} ms, IQR {t['p25_ms']:.4g}-"
                     f"{t['p75_ms']:.4g}, {t['reps']} reps): {c['what']}")
    return "\n".join(lines)


def main() -> int:
    if not torch.cuda.is_available():
        print("bench/ceilings.py measures a GPU, and none is visible here (torch.cuda.is_available() is False).")
        return 2
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(describe(measure_ceilings()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
