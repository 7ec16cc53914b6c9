"""Benchmark: the Task 5 decode kernel against the GPU's copy bandwidth and PyTorch SDPA.

    PYTHONPATH=. python bench/decode_attention.py                       # kernel of the implementation root
    ATTN_KIT_IMPL=solutions PYTHONPATH=. python bench/decode_attention.py   # the reference solution
    PYTHONPATH=. python bench/decode_attention.py --configs 16x1024 1x32768 --sweep

One decode step of attention: q [B, 1, H] against a cache of L keys and values
[B, L, H], float32, 32 heads of head_dim 128 (H = 4096). The kernel reads the
cache in place; each step must read all of K and V once, 2 * B * L * H * 4
bytes, and does ~2 FLOPs per float read, so the step is bound by memory
bandwidth. The benchmark prints

* the copy bandwidth it measured (a large device-to-device copy, bytes read
  plus bytes written, the practical ceiling of this GPU's memory);
* per configuration: time, TB/s (K and V bytes over time), the fraction of the
  copy bandwidth, PyTorch SDPA's time and TB/s on the same cache views, and the
  speedup over SDPA. Both are checked against a float64 reference first.

``--sweep`` also times the reference solution's kernel with several
``num_splits`` (the split-K factor; 0 = its own choice).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from harness import formulas
from harness.build import load_extension
from harness.compare import compare, strict_float32
from harness.timing import copy_bandwidth, time_function

HIDDEN, HEADS = 4096, 32
#: The two target configurations of the issue, then two more shapes for context.
DEFAULT_CONFIGS = ["16x1024", "1x32768", "4x4096", "64x512"]
SWEEP = [0, 1, 4, 16, 64, 256]
TARGET_FRACTION = 0.60


def sdpa_decode(q, k, v, heads):
    b, length, h = k.shape
    d = h // heads
    out = F.scaled_dot_product_attention(
        q.view(b, 1, heads, d).transpose(1, 2),
        k.view(b, length, heads, d).transpose(1, 2),
        v.view(b, length, heads, d).transpose(1, 2),
    )
    return out.transpose(1, 2).reshape(b, 1, h)


def check(out, q, k, v, heads, what):
    split = formulas.split_heads
    ref = formulas.merge_heads(formulas.attention(split(q, heads), split(k, heads), split(v, heads)))
    with strict_float32():
        t32 = formulas.merge_heads(
            formulas.attention(split(q, heads), split(k, heads), split(v, heads), dtype=torch.float32)
        )
    rep = compare(out, ref, t32, what=what)
    if not rep.passed:
        print(rep.message, file=sys.stderr)
    return rep


def bench_config(ext, batch: int, length: int, bw: float, sweep: bool, sets: int = 2) -> dict:
    h, heads = HIDDEN, HEADS
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1000 * batch + length)
    inputs = []
    for _ in range(sets):
        q = torch.randn(batch, 1, h, device="cuda", generator=gen)
        k = torch.randn(batch, length, h, device="cuda", generator=gen)
        v = torch.randn(batch, length, h, device="cuda", generator=gen)
        inputs.append((q, k, v))
    nbytes = 2 * batch * length * h * 4
    q, k, v = inputs[0]
    custom = lambda q, k, v: ext.custom_flash_attention_decode(q, k, v, heads, False, seq_len=length)  # noqa: E731
    with torch.no_grad(), strict_float32():
        err = check(custom(q, k, v), q, k, v, heads, f"decode B={batch} L={length}")
        err_sdpa = check(sdpa_decode(q, k, v, heads), q, k, v, heads, f"SDPA B={batch} L={length}")
        t_custom = time_function(custom, inputs, min_reps=20, max_reps=200, budget_s=0.5)
        t_sdpa = time_function(lambda q, k, v: sdpa_decode(q, k, v, heads), inputs, min_reps=20, max_reps=200, budget_s=0.5)
        row = dict(
            B=batch, L=length, hidden=h, heads=heads, bytes=nbytes,
            custom_ms=t_custom.median_ms, custom_iqr=(t_custom.p25_ms, t_custom.p75_ms),
            custom_tb_s=nbytes / t_custom.median_ms / 1e9, sdpa_ms=t_sdpa.median_ms,
            sdpa_tb_s=nbytes / t_sdpa.median_ms / 1e9, speedup_vs_sdpa=t_sdpa.median_ms / t_custom.median_ms,
            max_abs_error=err.max_abs_error, allowed=err.allowed, passed=err.passed,
            sdpa_max_abs_error=err_sdpa.max_abs_error,
        )
        row["fraction_of_copy_bw"] = row["custom_tb_s"] * 1e12 / bw
        row["sdpa_fraction_of_copy_bw"] = row["sdpa_tb_s"] * 1e12 / bw
        if sweep:
            row["sweep"] = {}
            for splits in SWEEP:
                try:
                    fn = lambda q, k, v, s=splits: ext.custom_flash_attention_decode(  # noqa: E731
                        q, k, v, heads, False, seq_len=length, num_splits=s
                    )
                    ok = check(fn(q, k, v), q, k, v, heads, f"num_splits={splits}").passed
                    t = time_function(fn, inputs, min_reps=10, max_reps=100, budget_s=0.25)
                except (TypeError, RuntimeError) as exc:  # a kernel without num_splits
                    row["sweep"][splits] = str(exc).splitlines()[0]
                    break
                row["sweep"][splits] = dict(ms=t.median_ms, tb_s=nbytes / t.median_ms / 1e9, correct=ok)
    del inputs
    torch.cuda.empty_cache()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS, help="BxL, e.g. 16x1024 1x32768")
    parser.add_argument("--sweep", action="store_true", help="also time several num_splits")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    ext = load_extension("custom_flash_attention_decode")
    bw = copy_bandwidth()
    print(f"device: {torch.cuda.get_device_name()}; copy bandwidth {bw / 1e12:.3f} TB/s (read + write)")
    rows = []
    for cfg in args.configs:
        b, length = (int(x) for x in cfg.lower().split("x"))
        row = bench_config(ext, b, length, bw, args.sweep)
        rows.append(row)
        if args.sweep:
            print(f"B={b} L={length} num_splits sweep (0 = automatic):")
            for s, r in row["sweep"].items():
                print(f"   {s:>4}: {r if isinstance(r, str) else '%.4f ms  %.3f TB/s%s' % (r['ms'], r['tb_s'], '' if r['correct'] else '  WRONG')}")
    print()
    print(f"decode attention, float32, hidden {HIDDEN}, {HEADS} heads (head_dim {HIDDEN // HEADS}); "
          f"copy bandwidth {bw / 1e12:.3f} TB/s; target >= {TARGET_FRACTION:.0%} of it")
    print(f"{'B':>3} {'L':>6} | {'custom ms':>9} {'TB/s':>6} {'of copy':>7} | {'SDPA ms':>8} {'TB/s':>6} {'of copy':>7} | "
          f"{'vs SDPA':>7} | {'max err':>8} {'allowed':>8}")
    for r in rows:
        flag = "" if r["fraction_of_copy_bw"] >= TARGET_FRACTION else "  (below target)"
        print(f"{r['B']:>3} {r['L']:>6} | {r['custom_ms']:>9.4f} {r['custom_tb_s']:>6.3f} {r['fraction_of_copy_bw']:>7.1%} | "
              f"{r['sdpa_ms']:>8.4f} {r['sdpa_tb_s']:>6.3f} {r['sdpa_fraction_of_copy_bw']:>7.1%} | "
              f"{r['speedup_vs_sdpa']:>6.2f}x | {r['max_abs_error']:>8.1e} {r['allowed']:>8.1e}"
              f"{'' if r['passed'] else '  WRONG'}{flag}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), copy_bandwidth=bw, rows=rows), f, indent=1)
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
