"""The Python side of bench/ncu_profile.sh: the program Nsight Compute profiles (one reference
kernel of the kit at one large shape), and the summary of what ncu measured.

    python bench/ncu_target.py --list                        # "<kernel> <ncu kernel-name regex>" per line
    python bench/ncu_target.py --ncu-options task4_fp32      # the --kernel-name regex and --metrics for ncu
    python bench/ncu_target.py --kernels task4_fp32 task2_fp32   # what ncu runs: per kernel, warm-up
                                                             # calls, then one profiled call
    python bench/ncu_target.py --summarize RAW.csv           # ncu -i REPORT --csv --page raw -> results

Shapes: the sweep's roofline shape for prefill (S=4096, head_dim 128, non-causal; B=4, 32
heads: bench/sweep.py ROOFLINE_SHAPE), and decode at the sweep's longest cache (B=16, L=16384,
head_dim 128), so that the DRAM bytes ncu counts sit beside the same shape's time in the sweep.

Each kernel runs WARMUP_CALLS times outside the profiled range (the first call loads the
extension and PyTorch's lazy state), then PROFILED_CALLS times between cudaProfilerStart and
cudaProfilerStop: ncu runs with ``--profile-from-start off`` and a ``--kernel-name`` regex
(KERNEL_REGEX: the reference solutions' kernel names), so only the kit's own kernels of that
call are profiled, not the layout copies around them. All kernels run in one process (one
start of Python and CUDA under ncu), one after the other.

``--summarize`` attributes each profiled launch to its kit kernel by name, adds up a kernel's
launches of one call (task 2 has four kernels, task 5 one or two), and writes bench/results/ncu-<gpu>.csv (every launch, every metric, base units),
ncu-<gpu>.json (per kernel: DRAM bytes read and written, the intensity FLOPs / DRAM bytes,
GPU time, achieved and theoretical occupancy, the occupancy limits; bench/plot_sweep.py puts
the intensity on the roofline) and ncu-<gpu>-summary.md (the table it prints).
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for path in (str(REPO), str(BENCH)):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

from harness.inputs import randn  # noqa: E402

# bench/'s own modules (bench/ is on sys.path above)
import sweep  # noqa: E402
import sweep_kernels  # noqa: E402

#: The reference solutions' kernel function names (ncu's default --kernel-name-base "function"),
#: per kit kernel: a regex that matches every kernel one call launches, and nothing else.
KERNEL_REGEX = {
    "task4_fp32": "flash_attention_kernel",
    "task4_bf16": "flash_attention_bf16_kernel",
    "task4_3xtf32": "flash_attention_3xtf32_kernel",
    "task2_fp32": "gemm_nt_kernel|scale_and_causal_mask|batched_softmax_kernel|gemm_nn_kernel",
    "task5_decode_fp32": "decode_split_kernel|decode_merge_kernel",
}
#: Calls before the profiled range (extension load, allocator, lazy module loading), and in it.
WARMUP_CALLS, PROFILED_CALLS = 2, 1
#: The metrics bench/ncu_profile.sh asks for (kept in one place; the script reads --ncu-options).
METRICS = (
    "dram__bytes_read.sum", "dram__bytes_write.sum", "gpu__time_duration.sum",
    "sm__warps_active.avg.pct_of_peak_sustained_active",   # achieved occupancy
    "sm__maximum_warps_per_active_cycle_pct",               # theoretical occupancy
    "launch__occupancy_limit_blocks", "launch__occupancy_limit_registers",
    "launch__occupancy_limit_shared_mem", "launch__occupancy_limit_warps",
    "launch__registers_per_thread", "launch__shared_mem_per_block_dynamic",
    "launch__grid_size", "launch__block_size",
)
ACHIEVED, THEORETICAL = "sm__warps_active.avg.pct_of_peak_sustained_active", "sm__maximum_warps_per_active_cycle_pct"
#: Unit scales ncu may print (``--print-units base`` should leave only the base ones).
UNIT_SCALE = {"byte": 1, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "tbyte": 1e12,
              "nsecond": 1e-9, "ns": 1e-9, "usecond": 1e-6, "us": 1e-6, "msecond": 1e-3, "ms": 1e-3,
              "second": 1.0, "s": 1.0}


def profiled_shape(name: str) -> sweep.Shape:
    if name.startswith("task5"):
        d = sweep.ROOFLINE_SHAPE["head_dim"]
        return sweep.decode_shapes((max(sweep.DECODE_LENGTHS),), (d,))[0]
    s, d, causal = (sweep.ROOFLINE_SHAPE[k] for k in ("seq", "head_dim", "causal"))
    return sweep.Shape("prefill", max(1, sweep.TOKENS // s), sweep.HIDDEN // d, s, s, d, causal)


def run_kernel(name: str) -> None:
    """WARMUP_CALLS calls, then PROFILED_CALLS inside the profiled range."""
    shape = profiled_shape(name)
    make = sweep_kernels.decode_kernels if shape.mode == "decode" else sweep_kernels.prefill_kernels
    kernel = next(iter(make([name])), None)
    if kernel is None or kernel.unavailable:
        print(f"{name}: not profiled: {kernel.unavailable if kernel else 'no such kernel'}", flush=True)
        return
    q, k, v = (randn(shape.batch, rows, shape.hidden, tag=f"bench/ncu/{name}/{n}", device="cuda", dtype=kernel.dtype)
               for n, rows in (("q", shape.seq), ("k", shape.keys), ("v", shape.keys)))
    tail = (shape.heads, shape.causal) if shape.mode == "prefill" else (shape.heads,)
    with torch.no_grad():
        for _ in range(WARMUP_CALLS):
            kernel.call(q, k, v, *tail)
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        for _ in range(PROFILED_CALLS):
            kernel.call(q, k, v, *tail)
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
    del q, k, v
    torch.cuda.empty_cache()
    print(f"{name}: {shape.label()}, {PROFILED_CALLS} profiled call(s) after {WARMUP_CALLS} warm-up(s)", flush=True)


def kit_kernel_of(launch_name: str) -> str | None:
    """Which kit kernel a profiled launch belongs to (the regexes do not overlap)."""
    return next((name for name, regex in KERNEL_REGEX.items() if re.search(regex, launch_name)), None)


# ---------------------------------------------------------------- reading ncu's CSV
def read_raw_csv(path: Path) -> list[dict]:
    """Launch rows of ``ncu -i REPORT --csv --page raw``, values scaled to base units (bytes, seconds)."""
    rows = list(csv.reader(path.read_text().splitlines()))
    start = next((i for i, r in enumerate(rows) if r and r[0] == "ID"), None)
    if start is None:
        return []
    header, body = rows[start], rows[start + 1:]
    units = {}
    if body and not body[0][0].strip():  # the units row under the header
        units = dict(zip(header, body[0]))
        body = body[1:]
    launches = []
    for r in body:
        if len(r) != len(header):
            continue
        launch = {}
        for column, value in zip(header, r):
            number = _number(value)
            scale = UNIT_SCALE.get(units.get(column, "").strip().lower(), 1)
            if number is None:
                launch[column] = value
            else:
                launch[column] = int(number) if scale == 1 and number.is_integer() else number * scale
        launches.append(launch)
    return launches


def _number(text: str):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def summarize_kernel(name: str, launches: list[dict]) -> dict:
    shape = profiled_shape(name)
    itemsize = 2 if name.endswith("bf16") else 4
    read = sum(x.get("dram__bytes_read.sum") or 0 for x in launches)
    write = sum(x.get("dram__bytes_write.sum") or 0 for x in launches)
    seconds = sum(x.get("gpu__time_duration.sum") or 0 for x in launches)
    weight = lambda key: (sum((x.get(key) or 0) * (x.get("gpu__time_duration.sum") or 0) for x in launches)  # noqa: E731
                          / seconds if seconds else None)
    return dict(
        mode=shape.mode, shape=shape.label(), launches=len(launches), flops=shape.flops,
        min_bytes=shape.min_bytes(itemsize), dram_read_bytes=read, dram_write_bytes=write, dram_bytes=read + write,
        dram_intensity=shape.flops / (read + write) if read + write else None,
        dram_over_min_bytes=(read + write) / shape.min_bytes(itemsize), gpu_time_ms=seconds * 1e3,
        # Several launches (task 2): the averages are weighted by each launch's time.
        achieved_occupancy_pct=weight(ACHIEVED), theoretical_occupancy_pct=weight(THEORETICAL),
        per_launch=[{k: x.get(k) for k in ("Kernel Name", *METRICS)} for x in launches],
    )


def summarize(report_csv: Path, out_dir: Path) -> int:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "unknown GPU"
    slug = sweep_kernels.gpu_slug(gpu)
    out_dir.mkdir(parents=True, exist_ok=True)
    launches = read_raw_csv(report_csv) if report_csv.exists() else []
    groups: dict[str, list[dict]] = {}
    for launch in launches:
        name = kit_kernel_of(str(launch.get("Kernel Name", "")))
        if name:
            groups.setdefault(name, []).append(launch)
    kernels = {name: summarize_kernel(name, group) for name, group in groups.items()}
    table_rows = [dict(kit_kernel=name, launch=i, **launch) for name, group in groups.items()
                  for i, launch in enumerate(group)]
    if not kernels:
        print(f"nothing to summarise: no launch in {report_csv} matches a kit kernel's name "
              f"({', '.join(KERNEL_REGEX.values())})")
        return 1
    columns = ["kit_kernel", "launch"] + [c for c in table_rows[0] if c not in ("kit_kernel", "launch")]
    with open(out_dir / f"ncu-{slug}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table_rows)
    meta = dict(gpu=gpu, torch=torch.__version__, metrics=list(METRICS), warmup_calls=WARMUP_CALLS,
                profiled_calls=PROFILED_CALLS, note="ncu replays each kernel (caches flushed between passes); "
                "GPU time is ncu's, at the clocks ncu_profile.sh leaves unlocked")
    (out_dir / f"ncu-{slug}.json").write_text(json.dumps(dict(meta=meta, kernels=kernels), indent=1))
    lines = [f"# Nsight Compute: the kit's reference kernels ({gpu})", "",
             "| kernel | shape | launches | DRAM read GB | DRAM write GB | DRAM / minimum bytes | FLOP per DRAM byte "
             "| GPU time ms | achieved occupancy | theoretical occupancy |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, k in kernels.items():
        lines.append(
            f"| {name} | {k['shape']} | {k['launches']} | {k['dram_read_bytes'] / 1e9:.3f} | "
            f"{k['dram_write_bytes'] / 1e9:.3f} | {k['dram_over_min_bytes']:.2f} | "
            f"{k['dram_intensity'] or 0:.1f} | {k['gpu_time_ms']:.3f} | {k['achieved_occupancy_pct'] or 0:.1f}% | "
            f"{k['theoretical_occupancy_pct'] or 0:.1f}% |")
    summary = "\n".join(lines) + "\n"
    (out_dir / f"ncu-{slug}-summary.md").write_text(summary)
    print(summary)
    print(f"wrote {out_dir}/ncu-{slug}.csv, .json and -summary.md")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--list", action="store_true", help="print each kernel and its ncu --kernel-name regex")
    group.add_argument("--ncu-options", nargs="*", choices=list(KERNEL_REGEX), metavar="KERNEL",
                       help="print two lines for ncu: one --kernel-name regex for these kernels (default: all), "
                            "and the metrics, comma-separated")
    group.add_argument("--kernels", nargs="+", choices=list(KERNEL_REGEX), help="run these kernels, in turn, for ncu")
    group.add_argument("--summarize", type=Path, metavar="CSV", help="summarise ncu's raw CSV of the run")
    p.add_argument("--out-dir", type=Path, default=sweep.RESULTS_DIR, help="where --summarize writes")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(f"{name} {regex}" for name, regex in KERNEL_REGEX.items()))
        return 0
    if args.ncu_options is not None:
        print("|".join(KERNEL_REGEX[name] for name in (args.ncu_options or KERNEL_REGEX)))
        print(",".join(METRICS))
        return 0
    if args.summarize:
        return summarize(args.summarize, args.out_dir)
    if not torch.cuda.is_available():
        print("bench/ncu_target.py runs a CUDA kernel, and no CUDA GPU is visible here", file=sys.stderr)
        return 2
    for name in args.kernels:
        run_kernel(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
