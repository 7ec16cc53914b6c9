"""Sweep: every reference kernel of the kit against every SDPA backend, over sequence length,
head_dim and the causal mask, each checked against float64, with the GPU's ceilings measured
in the same run. Writes one JSON file for bench/plot_sweep.py.

    ATTN_KIT_IMPL=solutions python bench/sweep.py            # the full grid, reference kernels (~2 min warm)
    ATTN_KIT_IMPL=solutions python bench/sweep.py --quick    # a smoke run: 2 lengths, head_dim 128 (~30 s)
    python bench/sweep.py --only 'task4_*' 'sdpa_flash_*' --seq 1024 4096 --out /tmp/s.json
    python bench/sweep.py --list                             # the grid and kernels, nothing run
    python bench/sweep.py --device cpu                       # exercises the script itself on the CPU

Prefill grid (``--modes prefill``): S in 128 ... 16384 (powers of two), head_dim 64 and 128,
causal and not. Every shape has hidden = heads * head_dim = 4096 (the kit's problem of record:
32 heads of 128, or 64 of 64) and B * S = 16384 tokens (B = 128 at S = 128, B = 1 at S = 16384):
a fixed token budget per batch, as in training. So q, k, v and o are 256 MB each in float32 at
every shape (the minimum traffic is constant), the FLOPs grow linearly with S, and every shape
has B * heads * S / 128 >= 4096 query tiles of 128 rows, enough to fill every SM: the curves
show how each kernel's rate depends on S, not on a grid too small for the GPU.

Decode grid (``--modes decode``): one query token per sequence against a cache of L = 128 ...
16384 keys, B = 16 (the kit's target configuration 16x1024 among them), hidden 4096, head_dim
64 and 128, no mask (a lone query sees every key). Task 5's kernel reads the cache in place.

Kernels (``--only`` takes names or shell patterns): task4_fp32, task4_bf16, task4_3xtf32,
task2_fp32, task5_decode_fp32 (the kit's, from ATTN_KIT_IMPL; see bench/sweep_kernels.py)
and sdpa_{math,efficient,flash,cudnn}_{fp32,bf16} (``sdpa_kernel`` with that one backend).
A backend that refuses a shape or dtype is recorded as ``unsupported`` with torch's reason;
a kit kernel whose file, build or function is missing as ``skipped`` with the reason; the
math backend and task 2 materialise the [B, heads, S, S] scores and are skipped where those
would pass SCORE_MATRIX_CAP_BYTES (8 GiB; their peak is ~3x that).

For each (kernel, shape), in the JSON:
* the time: median, IQR (p25/p75), min/max and repetitions from harness.timing.time_function
  (CUDA events, warm-up, L2 flushed before each repetition, two input sets in turn);
* TFLOP/s: 4 * B * heads * S^2 * head_dim, half of that causal (bench/flash_attention.py's
  count: the two matrix products; decode: the same with one query row, 4 * B * heads * L * d);
* bytes: the minimum traffic (q, k, v read once, o written once), the arithmetic intensity
  FLOPs / bytes, and the bytes per second that implies (decode: the fraction of copy bandwidth);
* the float64 check: batch item 0 (all heads) of the first input set against float64 under the
  kit's tolerance rule (harness/compare.py: at most 8x PyTorch's own error in the kernel's
  precision, never below 64 float32 ulps; the yardstick per kernel as in the kit's tests,
  sweep_kernels.RULE_*), max |error|, the allowance, pass or fail.

The GPU's ceilings (bench/ceilings.py) are measured first: copy bandwidth, float32 FMA (cuBLAS
SGEMM), TF32 and bf16 tensor-core GEMM. The JSON holds the GPU, torch, the date, the git
commit and the seed, and is rewritten after every shape (a run cut short keeps what it did).

Time on an H200 with warm extension builds, estimated (not yet measured): ~2-3 minutes for the
full grid: 528 cells, about 400 of them timed (the rest are refused or capped at once), each
~0.15 s of repetitions (BUDGET_S) or five calls where one call is longer (at most ~0.1 s: the
float32 kernels at S = 16384), plus the float64 references (~2 s a shape at S = 16384). Cold
builds add the compile time (the extensions build side by side, ~2-3 minutes).
Without a GPU it says so and exits with status 2.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for path in (str(REPO), str(BENCH)):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

from harness import formulas  # noqa: E402
from harness.compare import FLOOR_ULPS, TOLERANCE_FACTOR, compare, strict_float32  # noqa: E402
from harness.inputs import randn, run_seed  # noqa: E402
from harness.shared_checks import attention_references  # noqa: E402
from harness.timing import bind_tail, time_function  # noqa: E402

# bench/'s own modules (bench/ is on sys.path above)
import sweep_kernels as kernels_mod  # noqa: E402
from ceilings import describe as describe_ceilings, measure_ceilings  # noqa: E402
from flash_attention import attention_flops  # noqa: E402 (the benchmark's FLOP count, shared)
from sweep_kernels import RULE_3XTF32, RULE_BF16, RULE_FP32, recorded_warnings, sdpa_bsh, sdpa_refusal  # noqa: E402

# ---------------------------------------------------------------- the grid
SEQ_LENS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
HEAD_DIMS = (64, 128)
CAUSAL = (False, True)
#: heads * head_dim at every shape (the kit's problem of record: 32 heads of 128).
HIDDEN = 4096
#: B * S at every prefill shape: B = TOKENS // S (see the module docstring).
TOKENS = 16384
#: Decode: sequences per step, and the cache lengths (the prefill lengths).
DECODE_BATCH = 16
DECODE_LENGTHS = SEQ_LENS
#: --quick: a smoke run of every kernel on a few shapes, the roofline shape and ncu's among them.
QUICK_SEQ_LENS, QUICK_HEAD_DIMS, QUICK_DECODE_LENGTHS = (256, 4096), (128,), (1024, 16384)
#: --device cpu: tiny shapes that only exercise the script (SDPA only, wall clock).
CPU_SEQ_LENS, CPU_HEAD_DIMS, CPU_HIDDEN, CPU_TOKENS, CPU_DECODE_BATCH = (16, 64), (16,), 64, 128, 2
#: The shape the roofline chart and bench/ncu_profile.sh look at: in every kernel's range (the
#: math backend's scores are exactly the cap here), B = 4, 32 heads, a large share of the GPU.
ROOFLINE_SHAPE = dict(seq=4096, head_dim=128, causal=False)

#: Largest [B, heads, S, S] score matrix the math backend and task 2 may materialise (bytes).
SCORE_MATRIX_CAP_BYTES = 8 << 30
#: Bytes per score the cap counts, whatever the inputs' dtype: the math backend may compute a
#: bf16 problem's scores in float32 (it upcasts reduced precision), and task 2 is float32.
SCORE_ITEMSIZE = 4
#: Input sets the timing rotates through (harness.timing: nothing is cached between repetitions).
INPUT_SETS = 2
#: Timing of each (kernel, shape): one warm-up (the sweep calls each kernel once before, for the
#: check), then as many repetitions as fit in BUDGET_S, within MIN_REPS .. MAX_REPS.
WARMUP, MIN_REPS, MAX_REPS, BUDGET_S = 1, 3, 50, 0.15
#: Batch items checked against float64 (all heads of each): the float64 reference of the whole
#: batch would cost more than the timing at S = 16384, and every kernel sees item 0 like the rest.
CHECK_ITEMS = 1
MODES = ("prefill", "decode")
RESULTS_DIR = BENCH / "results"


@dataclass(frozen=True)
class Shape:
    """One problem: ``seq`` query rows against ``keys`` keys per sequence (prefill: the same)."""

    mode: str
    batch: int
    heads: int
    seq: int
    keys: int
    head_dim: int
    causal: bool

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    @property
    def flops(self) -> float:
        if self.mode == "prefill":
            return attention_flops(self.batch, self.heads, self.seq, self.head_dim, self.causal)
        return 4.0 * self.batch * self.heads * self.seq * self.keys * self.head_dim

    def min_bytes(self, itemsize: int) -> int:
        """q and o (``seq`` rows), k and v (``keys`` rows), each moved once."""
        return 2 * self.batch * (self.seq + self.keys) * self.hidden * itemsize

    def score_bytes(self, itemsize: int) -> int:
        return self.batch * self.heads * self.seq * self.keys * itemsize

    def label(self) -> str:
        rows = f"S={self.seq}" if self.mode == "prefill" else f"L={self.keys}"
        return f"{self.mode} B={self.batch} heads={self.heads} {rows} d={self.head_dim}" + (
            " causal" if self.causal else "")


def prefill_shapes(seq_lens, head_dims, hidden=HIDDEN, tokens=TOKENS) -> list[Shape]:
    return [Shape("prefill", max(1, tokens // s), hidden // d, s, s, d, c)
            for d in head_dims for c in CAUSAL for s in seq_lens]


def decode_shapes(lengths, head_dims, hidden=HIDDEN, batch=DECODE_BATCH) -> list[Shape]:
    return [Shape("decode", batch, hidden // d, 1, length, d, False) for d in head_dims for length in lengths]


# ---------------------------------------------------------------- inputs and references
def input_sets(shape: Shape, device: str) -> dict:
    """INPUT_SETS (q, k, v) per dtype: float32 drawn from the run's seed, bf16 rounded from them."""
    tag = f"bench/sweep/{shape.label()}"
    fp32 = [tuple(randn(shape.batch, rows, shape.hidden, tag=f"{tag}/{n}{i}", device=device)
                  for n, rows in (("q", shape.seq), ("k", shape.keys), ("v", shape.keys)))
            for i in range(INPUT_SETS)]
    return {torch.float32: fp32, torch.bfloat16: [tuple(t.to(torch.bfloat16) for t in s) for s in fp32]}


class References:
    """What one shape's kernels are checked against, each computed once, on batch item 0 of the
    first input set: the float64 result and the yardstick of each tolerance rule."""

    def __init__(self, shape: Shape, sets: dict):
        self.shape = shape
        self.items = {dtype: tuple(t[:CHECK_ITEMS] for t in s[0]) for dtype, s in sets.items()}
        self.cache: dict[str, tuple] = {}

    def _fp32(self):
        if "fp32" not in self.cache:  # the float64 formulas, and the same in float32 with TF32 off
            self.cache["fp32"] = attention_references(*self.items[torch.float32], self.shape.heads, self.shape.causal)
        return self.cache["fp32"]

    def _sdpa(self, dtype):
        """SDPA (its default backend) in ``dtype`` on the same inputs, as float32 (harness.bonus_checks)."""
        with strict_float32():
            return sdpa_bsh(*self.items[dtype], self.shape.heads, self.shape.causal).float()

    def for_rule(self, rule: str):
        """(float64 reference, yardstick, the yardstick's name) for a tolerance rule."""
        if rule not in self.cache:
            heads, causal = self.shape.heads, self.shape.causal
            if rule == RULE_FP32:
                ref, t32 = self._fp32()
                self.cache[rule] = (ref, t32, "float64 formulas recomputed in float32 (TF32 off)")
            elif rule == RULE_3XTF32:
                self.cache[rule] = (self._fp32()[0], self._sdpa(torch.float32), "PyTorch float32 SDPA")
            elif rule == RULE_BF16:
                q, k, v = (formulas.split_heads(t, heads) for t in self.items[torch.bfloat16])
                ref = formulas.merge_heads(formulas.attention(q, k, v, causal))  # bf16 widened exactly
                self.cache[rule] = (ref, self._sdpa(torch.bfloat16), "PyTorch bf16 SDPA")
            else:
                raise ValueError(f"unknown tolerance rule {rule!r}")
        return self.cache[rule]


# ---------------------------------------------------------------- one (kernel, shape)
def _timing_fields(t) -> dict:
    d = t.as_dict()
    d.pop("samples_ms", None)
    return d


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def measure(kernel, shape: Shape, sets: dict, refs: References, refusals: dict, device: str) -> dict:
    """Check, then time, one kernel on one shape; the JSON row (``status`` says what happened)."""
    itemsize = torch.empty((), dtype=kernel.dtype).element_size()
    nbytes = shape.min_bytes(itemsize)
    row = dict(kernel=kernel.name, dtype=kernels_mod.DTYPE_NAMES[kernel.dtype], family=kernel.family,
               **asdict(shape), flops=shape.flops, bytes=nbytes, arithmetic_intensity=shape.flops / nbytes)
    if kernel.unavailable:
        return dict(row, status="skipped", reason=kernel.unavailable)
    scores = shape.score_bytes(SCORE_ITEMSIZE)
    if kernel.score_matrix and scores > SCORE_MATRIX_CAP_BYTES:
        return dict(row, status="skipped", reason=f"it would materialise {scores / 2**30:.1f} GiB of scores "
                    f"(cap {SCORE_MATRIX_CAP_BYTES / 2**30:.3g} GiB)")
    tail = (shape.heads, shape.causal) if shape.mode == "prefill" else (shape.heads,)
    fn = bind_tail(kernel.call, *tail)
    data = sets[kernel.dtype]
    try:
        with kernel.context(), recorded_warnings() as caught:
            out = fn(*data[0])
            if device == "cuda":
                torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        return dict(row, status="unsupported", reason=f"out of memory: {_first_line(exc)}")
    except RuntimeError as exc:
        if kernel.backend is None:
            return dict(row, status="error", reason=_first_line(exc))
        reason = sdpa_refusal(exc, caught, refusals, f"{kernel.name}/{shape.mode}/d{shape.head_dim}/{shape.causal}")
        return dict(row, status="unsupported", reason=reason)
    ref, yardstick, yardstick_name = refs.for_rule(kernel.rule)
    report = compare(out[:CHECK_ITEMS].float(), ref, yardstick, what=f"{kernel.name} {shape.label()}",
                     baseline_name=yardstick_name)
    del out
    check = dict(passed=report.passed, max_abs_error=report.max_abs_error, allowed=report.allowed,
                 error_over_allowed=report.max_abs_error / report.allowed if report.allowed else math.inf,
                 rel_error=report.rel_error, yardstick=yardstick_name, yardstick_error=report.torch32_error,
                 checked=f"batch item 0 of {shape.batch}, all {shape.heads} heads, input set 0")
    with kernel.context():
        t = time_function(fn, data, warmup=WARMUP, min_reps=MIN_REPS, max_reps=MAX_REPS, budget_s=BUDGET_S)
    seconds = t.median_ms / 1e3
    return dict(row, status="ok", reason="", timing=_timing_fields(t), median_ms=t.median_ms,
                p25_ms=t.p25_ms, p75_ms=t.p75_ms, tflops=shape.flops / seconds / 1e12,
                bytes_per_s=nbytes / seconds, check=check)


def describe_row(r: dict) -> str:
    head = f"  {r['kernel']:20s}"
    if r["status"] != "ok":
        return f"{head} {r['status']}: {r['reason']}"
    c = r["check"]
    verdict = "ok" if c["passed"] else "WRONG"
    return (f"{head} {r['median_ms']:10.4f} ms (IQR {r['p25_ms']:.4g}-{r['p75_ms']:.4g}) "
            f"{r['tflops']:8.2f} TFLOP/s {r['bytes_per_s'] / 1e12:6.3f} TB/s | "
            f"float64: {c['max_abs_error']:.2e} <= {c['allowed']:.2e}? {verdict}")


# ---------------------------------------------------------------- the run
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def run_metadata(args, device: str) -> dict:
    from harness.impl import describe_impl_root

    meta = dict(
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        git_commit=_git("rev-parse", "HEAD"), git_dirty=bool(_git("status", "--porcelain")),
        torch=torch.__version__, cuda=torch.version.cuda, python=sys.version.split()[0],
        impl_root=describe_impl_root(), seed=run_seed(), argv=sys.argv[1:], device=device,
        timing=dict(module="harness.timing.time_function", warmup=WARMUP, min_reps=MIN_REPS, max_reps=MAX_REPS,
                    budget_s=BUDGET_S, input_sets=INPUT_SETS, l2_flush=device == "cuda"),
        tolerance=dict(rule="harness.compare: allowed = max(TOLERANCE_FACTOR * yardstick error, FLOOR_ULPS * "
                            "eps32 * max|ref64|)", TOLERANCE_FACTOR=TOLERANCE_FACTOR, FLOOR_ULPS=FLOOR_ULPS,
                       checked="batch item 0 (all heads) of input set 0"),
        score_matrix_cap_bytes=SCORE_MATRIX_CAP_BYTES, roofline_shape=ROOFLINE_SHAPE,
        flops="4*B*heads*S_q*S_k*head_dim, halved causal (bench/flash_attention.py)",
        bytes="minimum traffic: q, k, v read once and o written once",
    )
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        meta.update(gpu=torch.cuda.get_device_name(), sm_count=props.multi_processor_count,
                    memory_bytes=props.total_memory, l2_bytes=getattr(props, "L2_cache_size", None),
                    capability=f"{props.major}.{props.minor}")
    else:
        meta.update(gpu="cpu")
    return meta


def _jsonable(obj):
    """Strict JSON: NaN and infinities (a wrong output's error) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def save(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(result), indent=1))
    os.replace(tmp, out)  # a reader never sees half a file


def sweep_mode(mode: str, shapes: list[Shape], kernels: list, result: dict, out: Path, device: str) -> None:
    rows = result[mode]
    refusals: dict[str, str] = {}
    for shape in shapes:
        print(f"{shape.label()}: {shape.flops / 1e12:.3g} TFLOP, {shape.min_bytes(4) / 1e9:.3g} GB (fp32)",
              flush=True)
        sets = input_sets(shape, device)
        refs = References(shape, sets)
        for kernel in kernels:
            row = measure(kernel, shape, sets, refs, refusals, device)
            rows.append(row)
            print(describe_row(row), flush=True)
        del sets, refs
        if device == "cuda":
            torch.cuda.empty_cache()
        save(result, out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small grid (S 256 and 4096, head_dim 128; decode L 1024, 16384)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="kernels to run: names or shell patterns ('sdpa_*_bf16')")
    p.add_argument("--modes", default=",".join(MODES), help="prefill, decode or both (default: prefill,decode)")
    p.add_argument("--seq", nargs="+", type=int, help="sequence / cache lengths instead of the grid's")
    p.add_argument("--head-dims", nargs="+", type=int, help="head_dims instead of the grid's (64 128)")
    p.add_argument("--no-ceilings", action="store_true", help="do not measure the GPU's ceilings")
    p.add_argument("--out", type=Path, help="the JSON file (default bench/results/sweep-<gpu>[-quick].json)")
    p.add_argument("--list", action="store_true", help="print the grid and the kernels, run nothing")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cpu: SDPA only on tiny shapes, wall clock: tests the script, measures nothing")
    return p.parse_args(argv)


def grids(args) -> dict[str, list[Shape]]:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown mode(s) {sorted(unknown)}; choose from {MODES}")
    if args.device == "cpu":
        seq, dims, hidden = args.seq or CPU_SEQ_LENS, args.head_dims or CPU_HEAD_DIMS, CPU_HIDDEN
        return {"prefill": prefill_shapes(seq, dims, hidden, CPU_TOKENS) if "prefill" in modes else [],
                "decode": decode_shapes(seq, dims, hidden, CPU_DECODE_BATCH) if "decode" in modes else []}
    seq = args.seq or (QUICK_SEQ_LENS if args.quick else SEQ_LENS)
    lengths = args.seq or (QUICK_DECODE_LENGTHS if args.quick else DECODE_LENGTHS)
    dims = args.head_dims or (QUICK_HEAD_DIMS if args.quick else HEAD_DIMS)
    return {"prefill": prefill_shapes(seq, dims) if "prefill" in modes else [],
            "decode": decode_shapes(lengths, dims) if "decode" in modes else []}


def list_plan(shapes: dict[str, list[Shape]], only) -> None:
    names = {"prefill": kernels_mod.selected(kernels_mod.prefill_names(), only),
             "decode": kernels_mod.selected(kernels_mod.decode_names(), only)}
    for mode, mode_shapes in shapes.items():
        if not mode_shapes or not names[mode]:
            continue
        print(f"{mode}: {len(mode_shapes)} shapes x {len(names[mode])} kernels")
        print("  kernels: " + " ".join(names[mode]))
        for s in mode_shapes:
            print(f"  {s.label()}: {s.flops / 1e12:.3g} TFLOP, q+k+v+o {s.min_bytes(4) / 1e9:.3g} GB fp32, "
                  f"scores {s.score_bytes(4) / 2**30:.2f} GiB fp32")


def main(argv=None) -> int:
    args = parse_args(argv)
    shapes = grids(args)
    if args.list:
        list_plan(shapes, args.only)
        return 0
    chosen = {"prefill": kernels_mod.selected(kernels_mod.prefill_names(), args.only) if shapes["prefill"] else [],
              "decode": kernels_mod.selected(kernels_mod.decode_names(), args.only) if shapes["decode"] else []}
    if not any(chosen.values()):
        print(f"no kernel of the chosen modes matches --only {' '.join(args.only or [])}; the names: "
              f"{' '.join(dict.fromkeys(kernels_mod.prefill_names() + kernels_mod.decode_names()))}")
        return 2
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("bench/sweep.py times CUDA kernels, and no CUDA GPU is visible here (torch.cuda.is_available() "
              "is False). Run it on a GPU node: ATTN_KIT_IMPL=solutions python bench/sweep.py "
              "(--list shows the grid; --device cpu tests the script on the CPU).")
        return 2
    kit = device == "cuda"  # the kit's kernels are CUDA only
    if kit:
        print("building or loading the kit's extensions ...", flush=True)
        kernels_mod.prebuild(kernels_mod.extensions_for(chosen["prefill"], chosen["decode"]))
    kernels = {"prefill": kernels_mod.prefill_kernels(args.only, kit) if chosen["prefill"] else [],
               "decode": kernels_mod.decode_kernels(args.only, kit) if chosen["decode"] else []}
    meta = run_metadata(args, device)
    slug = kernels_mod.gpu_slug(meta["gpu"])
    out = args.out or RESULTS_DIR / f"sweep-{slug}{'-quick' if args.quick else ''}.json"
    result = dict(meta=meta, ceilings={}, kernels={m: [k.as_dict() for k in ks] for m, ks in kernels.items()},
                  grid={m: [asdict(s) for s in ss] for m, ss in shapes.items()}, prefill=[], decode=[],
                  complete=False)
    print(f"{meta['gpu']}, torch {meta['torch']}, {meta['impl_root']}; seed {meta['seed']}; writing {out}")
    for mode, ks in kernels.items():
        for k in ks:
            if k.unavailable:
                print(f"  {mode} {k.name}: {k.unavailable}")
    with torch.no_grad(), strict_float32():
        if not args.no_ceilings:
            result["ceilings"] = measure_ceilings(device)
            print("ceilings:\n" + describe_ceilings(result["ceilings"]), flush=True)
            save(result, out)
        for mode in MODES:
            if shapes[mode] and kernels[mode]:
                sweep_mode(mode, shapes[mode], kernels[mode], result, out, device)
    result["complete"] = True
    save(result, out)
    rows = result["prefill"] + result["decode"]
    wrong = [r for r in rows if r["status"] == "ok" and not r["check"]["passed"]]
    statuses = {s: sum(r["status"] == s for r in rows) for s in ("ok", "unsupported", "skipped", "error")}
    print(f"\n{len(rows)} cells: " + ", ".join(f"{n} {s}" for s, n in statuses.items()) +
          f"; {len(wrong)} of the timed ones fail the float64 check; written to {out}")
    for r in wrong:
        print(f"  WRONG: {r['kernel']} {Shape(**{k: r[k] for k in Shape.__dataclass_fields__}).label()}: "
              f"max |error| {r['check']['max_abs_error']} > allowed {r['check']['allowed']:.3e}")
    # A reference kernel of the kit that fails its check fails the run; an SDPA backend only reports.
    return 1 if any(r["family"] == "kit" for r in wrong) else 0


if __name__ == "__main__":
    raise SystemExit(main())
