"""Benchmark: the Task 4 FlashAttention kernel against PyTorch's float32 SDPA.

    python bench/flash_attention.py                  # the kernel of the implementation root
    ATTN_KIT_IMPL=solutions python bench/flash_attention.py    # the reference solution
    python bench/flash_attention.py --variants 128,64,256,8,1 64,64,128,8,0

Both sides get the same q, k, v of shape [B, S, hidden] (float32) and return
[B, S, hidden]: ``custom_flash_attention(q, k, v, heads, causal)`` against
``scaled_dot_product_attention`` on the [B, heads, S, head_dim] views of the
same tensors. TFLOP/s count 4*B*heads*S^2*head_dim operations non-causal and
half of that causal (the two matrix products; the softmax is not counted).

``--variants BR,BC,THREADS,TM[,PREFETCH_K] ...`` builds the reference solution's
kernel with other tile sizes (macros FA_BR, FA_BC, FA_THREADS, FA_TM,
FA_PREFETCH_K; head_dim 128 only) in parallel and times each one.
bench/NOTES.md records what was measured and why the defaults are what they are.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from harness import build, timing  # noqa: E402
from harness.compare import strict_float32  # noqa: E402

SOLUTION_SOURCE = REPO / "solutions" / "task4" / "attention_kernel.cu"


def variant_name(spec: str) -> str:
    return "fa_variant_" + spec.replace(",", "_")


def build_variant(spec: str, verbose: bool = False):
    """Build (or load, if built) the solution's kernel with tile sizes ``BR,BC,THREADS,TM``."""
    from torch.utils import cpp_extension

    br, bc, threads, tm, *rest = (int(x) for x in spec.split(","))
    prefetch = rest[0] if rest else 1
    name = variant_name(spec)
    archs = build.target_archs()
    # Keyed on the kit's headers too (the kernel includes harness/csrc/kit_checks.cuh).
    headers = hashlib.sha1(b"".join(h.read_bytes() for h in build.kit_headers())).hexdigest()[:8]
    build_dir = build.build_root() / "bench" / f"{name}-{archs.replace(';', '_').replace('.', '')}-{headers}"
    build_dir.mkdir(parents=True, exist_ok=True)
    build._copy_kit_headers(build_dir)  # into build_dir/include, as harness/build.py does
    flags = list(build.NVCC_FLAGS) + [
        f"-DFA_BR={br}", f"-DFA_BC={bc}", f"-DFA_THREADS={threads}", f"-DFA_TM={tm}",
        f"-DFA_PREFETCH_K={prefetch}", "-DFA_ONLY_HEAD_DIM_128",
    ]
    if os.environ.get(build.PTXAS_VERBOSE_ENV) == "1":
        flags.append("-Xptxas=-v")
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    return cpp_extension.load(
        name=name,
        sources=[str(SOLUTION_SOURCE)],
        extra_cflags=list(build.CXX_FLAGS),
        extra_cuda_cflags=flags,
        extra_include_paths=[str(build_dir / "include")],
        build_directory=str(build_dir),
        verbose=verbose,
    )


def build_variants_parallel(specs: list[str]) -> dict[str, str]:
    """Build every variant in its own process (nvcc is single-threaded); returns errors by spec."""
    errors: dict[str, str] = {}

    def one(spec: str):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--build-only", spec],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        return spec, proc, time.perf_counter() - t0

    with cf.ThreadPoolExecutor(max_workers=max(1, min(len(specs), os.cpu_count() or 1))) as pool:
        for spec, proc, secs in pool.map(one, specs):
            if proc.returncode != 0:
                errors[spec] = (proc.stdout + proc.stderr)[-4000:]
                print(f"  variant {spec}: BUILD FAILED after {secs:.0f} s", flush=True)
            else:
                regs = [l.strip() for l in proc.stdout.splitlines() if "registers" in l or "spill" in l]
                print(f"  variant {spec}: built in {secs:.0f} s {' | '.join(regs[-2:])}", flush=True)
    return errors


def attention_flops(b: int, heads: int, s: int, d: int, causal: bool) -> float:
    flops = 4.0 * b * heads * s * s * d
    return flops / 2 if causal else flops


def sdpa_core(q, k, v, heads: int, causal: bool):
    """PyTorch's fused attention on the same [B, S, hidden] tensors, returning [B, S, hidden]."""
    b, s, h = q.shape
    split = lambda t: t.view(b, s, heads, h // heads).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=causal)
    return out.transpose(1, 2).reshape(b, s, h)


def bench_one(fn, q, k, v, heads, causal, reps: int):
    t = timing.time_function(
        lambda a, b_, c: fn(a, b_, c, heads, causal), [(q, k, v)],
        warmup=1, min_reps=reps, max_reps=reps, budget_s=0.0,
    )
    return t.median_ms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (median)")
    p.add_argument("--modes", default="noncausal,causal")
    p.add_argument("--variants", nargs="*", default=None, help="BR,BC,THREADS,TM[,PREFETCH_K] of solution variants")
    p.add_argument("--build-only", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    if args.build_only:
        build_variant(args.build_only, verbose=True)
        return 0

    if not torch.cuda.is_available():
        print("needs a CUDA GPU; none is visible here")
        return 1

    candidates: list[tuple[str, object]] = []
    if args.variants:
        print(f"building {len(args.variants)} variant(s) of {SOLUTION_SOURCE.relative_to(REPO)} ...", flush=True)
        errors = build_variants_parallel(args.variants)
        for spec in args.variants:
            if spec not in errors:
                candidates.append((f"BR,BC,T,TM={spec}", build_variant(spec).custom_flash_attention))
        for spec, log in errors.items():
            print(f"--- build log of {spec} ---\n{log}")
    else:
        from harness.impl import describe_impl_root

        ext = build.load_extension("custom_flash_attention")
        candidates.append((f"custom ({describe_impl_root()})", ext.custom_flash_attention))

    b, s, h, heads = args.batch, args.seq, args.hidden, args.heads
    d = h // heads
    gen = torch.Generator(device="cuda").manual_seed(1234)
    q, k, v = (torch.randn(b, s, h, device="cuda", generator=gen) for _ in range(3))
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"problem: B={b}, S={s}, hidden={h}, heads={heads}, head_dim={d}, float32, {args.reps} reps (median)")

    results = []
    with strict_float32():
        for mode in args.modes.split(","):
            causal = mode == "causal"
            flops = attention_flops(b, heads, s, d, causal)
            ref = sdpa_core(q, k, v, heads, causal)
            sdpa_ms = bench_one(sdpa_core, q, k, v, heads, causal, args.reps)
            for label, fn in candidates:
                out = fn(q, k, v, heads, causal)
                diff = float((out - ref).abs().max())
                del out
                ms = bench_one(fn, q, k, v, heads, causal, args.reps)
                row = {
                    "candidate": label, "causal": causal, "custom_ms": ms, "sdpa_ms": sdpa_ms,
                    "custom_tflops": flops / ms / 1e9, "sdpa_tflops": flops / sdpa_ms / 1e9,
                    "ratio_to_sdpa": sdpa_ms / ms, "max_abs_diff_vs_sdpa": diff,
                }
                results.append(row)
                print(
                    f"{label:28s} {'causal' if causal else 'non-causal':10s} "
                    f"custom {ms:9.2f} ms {row['custom_tflops']:6.1f} TFLOP/s | "
                    f"SDPA {sdpa_ms:9.2f} ms {row['sdpa_tflops']:6.1f} TFLOP/s | "
                    f"ratio {row['ratio_to_sdpa']:.3f} | max|diff| {diff:.2e}",
                    flush=True,
                )
            del ref
            torch.cuda.empty_cache()

    print("\nsummary (custom TFLOP/s, ratio to SDPA float32):")
    for r in results:
        print(f"  {r['candidate']:28s} {'causal' if r['causal'] else 'non-causal':10s} "
              f"{r['custom_tflops']:6.1f} TFLOP/s  x{r['ratio_to_sdpa']:.3f}")
    if args.json:
        meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                "B": b, "S": s, "hidden": h, "heads": heads}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
