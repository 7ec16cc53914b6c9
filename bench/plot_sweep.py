"""Plots of a bench/sweep.py run: rate against sequence length, ratio to SDPA, a roofline,
decode bandwidth and the float64 check, plus a Markdown summary. Needs matplotlib, no GPU.

    python bench/plot_sweep.py                                   # every bench/results/sweep-*.json
    python bench/plot_sweep.py bench/results/sweep-nvidia-h200.json --out-dir /tmp/plots

For ``<dir>/sweep-<gpu>.json`` it writes, into ``--out-dir`` (default: the JSON's folder):

* ``sweep-<gpu>-tflops.png``: TFLOP/s against S, one panel per head_dim x causal, one line per
  kernel (solid float32, dashed bf16), the GEMM ceilings of the same run as dotted lines;
* ``sweep-<gpu>-ratio.png``: each kernel's rate over the best SDPA backend of the same dtype
  at the same shape (1 = as fast as the fastest SDPA; only SDPA results that pass the float64
  check count as the best);
* ``sweep-<gpu>-roofline.png``: FLOP/s against arithmetic intensity (log-log); the memory roof
  (copy bandwidth x intensity) and the float32 FMA, TF32 (and its third, the 3xTF32 roof) and
  bf16 roofs; each kernel at the roofline shape of the run (S=4096, head_dim 128, non-causal)
  and the decode kernels at their longest cache. The intensity counts the minimum traffic;
  where bench/ncu_profile.sh measured the kit's kernels (``ncu-<gpu>.json`` beside the sweep),
  a hollow marker at the same height shows the intensity of the DRAM bytes they really moved;
* ``sweep-<gpu>-decode.png``: decode, bytes per second against cache length with the copy
  bandwidth as the ceiling;
* ``sweep-<gpu>-accuracy.png``: the float64 check, max |error| over the allowance (below 1
  passes), for every timed kernel and shape;
* ``sweep-<gpu>-summary.md``: the ceilings, a table at the roofline shape, and per kernel how
  many shapes passed the check and why others have no number.

A cross marks a result that fails the float64 check.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS_DIR = BENCH / "results"

#: Roofs drawn on the roofline and the rate plot: ceiling key, label, line colour.
COMPUTE_ROOFS = (
    ("fp32_simt", "float32 FMA (cuBLAS SGEMM)", "tab:blue"),
    ("tf32_tensor", "TF32 tensor cores", "tab:green"),
    ("bf16_tensor", "bf16 tensor cores", "tab:red"),
)
#: 3xTF32 does three TF32 products per product: its roof is a third of the TF32 GEMM rate.
THREE_TF32_PRODUCTS = 3
#: Which measured ceiling bounds a kernel's arithmetic, for the summary's "of ceiling" column.
CEILING_OF_KERNEL = {"task4_3xtf32": ("tf32_tensor", THREE_TF32_PRODUCTS)}
CEILING_OF_DTYPE = {"fp32": ("fp32_simt", 1), "bf16": ("bf16_tensor", 1)}
FIGURE_DPI = 130
PANEL_SIZE = (5.2, 3.8)  # inches per panel
ROOFLINE_SIZE = (11, 7)  # inches, the legend beside the chart
LINE_STYLE = {"fp32": "-", "bf16": "--"}
FAMILY_MARKER = {"kit": "o", "sdpa": "s"}
DECODE_MARKER = "^"


# ---------------------------------------------------------------- reading
def load(path: Path) -> dict:
    data = json.loads(path.read_text())
    for mode in ("prefill", "decode"):
        data.setdefault(mode, [])
    return data


def timed(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and r.get("median_ms")]


def passed(r: dict) -> bool:
    return bool(r.get("check") and r["check"].get("passed"))


def kernel_order(data: dict) -> list[str]:
    """Kernels in the sweep's order (the kit's first), for stable colours and legends."""
    names = []
    for mode in ("prefill", "decode"):
        for k in data.get("kernels", {}).get(mode, []):
            if k["name"] not in names:
                names.append(k["name"])
    for r in data["prefill"] + data["decode"]:
        if r["kernel"] not in names:
            names.append(r["kernel"])
    return names


def colours(names: list[str]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def ceiling_value(data: dict, key: str) -> float | None:
    c = data.get("ceilings", {}).get(key)
    return c["value"] if c and c.get("value") else None


def best_sdpa(rows: list[dict]) -> dict[tuple, float]:
    """(shape key, dtype) -> the highest TFLOP/s of an SDPA backend that passes the float64 check."""
    best: dict[tuple, float] = {}
    for r in timed(rows):
        if r["family"] == "sdpa" and passed(r):
            key = (shape_key(r), r["dtype"])
            best[key] = max(best.get(key, 0.0), r["tflops"])
    return best


def shape_key(r: dict) -> tuple:
    return (r["mode"], r["batch"], r["heads"], r["seq"], r["keys"], r["head_dim"], r["causal"])


# ---------------------------------------------------------------- drawing helpers
def panels(n_rows: int, n_cols: int, title: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n_rows, n_cols, figsize=(PANEL_SIZE[0] * n_cols, PANEL_SIZE[1] * n_rows),
                             squeeze=False)
    fig.suptitle(title)
    return fig, axes


def finish(fig, axes, path: Path) -> Path:
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="center left", bbox_to_anchor=(1.0, 0.5),
                   fontsize="small", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def draw_series(ax, rows: list[dict], x_of, y_of, name: str, colour, dtype: str, family: str) -> None:
    rows = sorted(rows, key=x_of)
    xs, ys = [x_of(r) for r in rows], [y_of(r) for r in rows]
    ax.plot(xs, ys, LINE_STYLE.get(dtype, "-"), marker=FAMILY_MARKER.get(family, "o"), markersize=3.5,
            color=colour, label=name, linewidth=1.4 if family == "kit" else 1.0)
    bad = [(x, y) for r, x, y in zip(rows, xs, ys) if not passed(r)]
    if bad:
        ax.plot(*zip(*bad), "x", color="black", markersize=7, label="fails the float64 check")


def by_kernel(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["kernel"]].append(r)
    return groups


def prefill_panel_keys(rows: list[dict]) -> tuple[list[int], list[bool]]:
    return sorted({r["head_dim"] for r in rows}), sorted({r["causal"] for r in rows})


def log2_x(ax, label: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel(label)
    ax.grid(True, which="both", alpha=0.3)


# ---------------------------------------------------------------- the figures
def draw_panel(ax, rows: list[dict], head_dim: int, causal: bool, names: list[str], cmap: dict, y) -> None:
    """One panel of a prefill figure: each kernel's series against S at this head_dim and mask."""
    groups = by_kernel([r for r in rows if r["head_dim"] == head_dim and r["causal"] == causal])
    for name in names:
        if name in groups:
            g = groups[name]
            draw_series(ax, g, lambda r: r["seq"], y, name, cmap[name], g[0]["dtype"], g[0]["family"])


def plot_tflops(data: dict, names: list[str], cmap: dict, path: Path) -> Path | None:
    rows = timed(data["prefill"])
    if not rows:
        return None
    dims, causals = prefill_panel_keys(rows)
    fig, axes = panels(len(dims), len(causals), f"Prefill attention, TFLOP/s ({data['meta'].get('gpu')})")
    for i, d in enumerate(dims):
        for j, c in enumerate(causals):
            ax = axes[i][j]
            draw_panel(ax, rows, d, c, names, cmap, lambda r: r["tflops"])
            for key, label, colour in COMPUTE_ROOFS:
                value = ceiling_value(data, key)
                if value:
                    ax.axhline(value / 1e12, color=colour, linestyle=":", linewidth=1, label=f"ceiling: {label}")
            log2_x(ax, "sequence length S")
            ax.set_yscale("log")
            ax.set_ylabel("TFLOP/s")
            ax.set_title(f"head_dim {d}, {'causal' if c else 'non-causal'}, B*S = {rows[0]['batch'] * rows[0]['seq']}")
    return finish(fig, axes, path)


def plot_ratio(data: dict, names: list[str], cmap: dict, path: Path) -> Path | None:
    rows = timed(data["prefill"])
    best = best_sdpa(rows)
    rows = [r for r in rows if (shape_key(r), r["dtype"]) in best]
    if not rows:
        return None
    dims, causals = prefill_panel_keys(rows)
    fig, axes = panels(len(dims), len(causals), "Rate / best SDPA backend of the same dtype at the same shape")
    ratio = lambda r: r["tflops"] / best[(shape_key(r), r["dtype"])]  # noqa: E731
    for i, d in enumerate(dims):
        for j, c in enumerate(causals):
            ax = axes[i][j]
            draw_panel(ax, rows, d, c, names, cmap, ratio)
            ax.axhline(1.0, color="grey", linewidth=1)
            log2_x(ax, "sequence length S")
            ax.set_yscale("log")
            ax.set_ylabel("ratio to best SDPA (same dtype)")
            ax.set_title(f"head_dim {d}, {'causal' if c else 'non-causal'}")
    return finish(fig, axes, path)


def roofline_points(data: dict) -> list[dict]:
    """The prefill rows at the run's roofline shape, and each decode kernel at its longest cache
    (head_dim as the roofline shape's)."""
    shape = data["meta"].get("roofline_shape", {})
    pre = [r for r in timed(data["prefill"]) if r["seq"] == shape.get("seq") and
           r["head_dim"] == shape.get("head_dim") and r["causal"] == shape.get("causal")]
    dec = [r for r in timed(data["decode"]) if r["head_dim"] == shape.get("head_dim")]
    longest = max((r["keys"] for r in dec), default=None)
    return pre + [r for r in dec if r["keys"] == longest]


def ncu_measured(sweep_path: Path, data: dict, explicit: Path | None) -> dict:
    """bench/ncu_profile.sh's per-kernel DRAM bytes (``ncu-<gpu>.json`` beside the sweep), if any."""
    if explicit is None and not sweep_path.name.startswith("sweep-"):
        return {}  # a sweep saved under another name (--out): no ncu file to pair it with
    path = explicit or sweep_path.with_name(sweep_path.name.replace("sweep-", "ncu-", 1).replace("-quick", ""))
    if not path.exists() or path == sweep_path:
        return {}
    kernels = json.loads(path.read_text()).get("kernels", {})
    return {k: v for k, v in kernels.items() if isinstance(v, dict)} if isinstance(kernels, dict) else {}


def plot_roofline(data: dict, names: list[str], cmap: dict, path: Path, ncu: dict) -> Path | None:
    import matplotlib.pyplot as plt
    import numpy as np

    bandwidth = ceiling_value(data, "copy_bandwidth")
    points = roofline_points(data)
    if not points and not bandwidth:
        return None
    fig, ax = plt.subplots(figsize=ROOFLINE_SIZE)
    shape = data["meta"].get("roofline_shape", {})
    ax.set_title(f"Roofline ({data['meta'].get('gpu')}): prefill S={shape.get('seq')}, head_dim "
                 f"{shape.get('head_dim')}, {'causal' if shape.get('causal') else 'non-causal'}; decode at its longest cache")
    intensities = [r["arithmetic_intensity"] for r in points] + [m["dram_intensity"] for m in ncu.values()
                                                                 if m.get("dram_intensity")]
    lo, hi = min(intensities + [0.1]) / 4, max(intensities + [100.0]) * 4
    roofs = [(key, label, colour, 1) for key, label, colour in COMPUTE_ROOFS]
    roofs.insert(2, ("tf32_tensor", "3xTF32 (a third of TF32)", "tab:olive", THREE_TF32_PRODUCTS))
    roofs = [(ceiling_value(data, key) / divisor, label, colour) for key, label, colour, divisor in roofs
             if ceiling_value(data, key)]
    top = max([peak for peak, _, _ in roofs] + [r["tflops"] * 1e12 for r in points])
    if bandwidth:  # the memory roof, up to the highest compute roof
        x = np.logspace(np.log10(lo), np.log10(min(hi, top / bandwidth)), 100)
        ax.plot(x, bandwidth * x / 1e12, color="black", linewidth=1.2,
                label=f"memory roof: copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    for peak, label, colour in roofs:  # each compute roof from its ridge point on
        ridge = peak / bandwidth if bandwidth else lo
        ax.plot([ridge, hi], [peak / 1e12] * 2, color=colour, linestyle="--", linewidth=1.2,
                label=f"{label}: {peak / 1e12:.1f} TFLOP/s")
    labelled = set()
    for r in sorted(points, key=lambda r: names.index(r["kernel"]) if r["kernel"] in names else 0):
        colour = cmap.get(r["kernel"], "grey")
        marker = FAMILY_MARKER.get(r["family"], "o") if r["mode"] == "prefill" else DECODE_MARKER
        label = None if r["kernel"] in labelled else r["kernel"]
        labelled.add(r["kernel"])
        ax.plot(r["arithmetic_intensity"], r["tflops"], marker, color=colour, markersize=7, label=label)
        if not passed(r):
            ax.plot(r["arithmetic_intensity"], r["tflops"], "x", color="black", markersize=9)
        measured = ncu.get(r["kernel"], {})
        if measured.get("dram_intensity") and measured.get("mode", r["mode"]) == r["mode"]:
            ax.plot(measured["dram_intensity"], r["tflops"], marker, markerfacecolor="none", color=colour,
                    markersize=9)
            ax.plot([r["arithmetic_intensity"], measured["dram_intensity"]], [r["tflops"]] * 2, color=colour,
                    linewidth=0.6, alpha=0.6)
    if any(r["mode"] == "decode" for r in points):
        ax.plot([], [], DECODE_MARKER, color="grey", label="triangles: decode (one query token)")
    if ncu:
        ax.plot([], [], "o", markerfacecolor="none", color="grey", label="hollow: intensity of the DRAM bytes ncu measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity, FLOP per byte (minimum traffic: q, k, v read, o written once)")
    ax.set_ylabel("TFLOP/s")
    bottom = min([r["tflops"] for r in points] + [top / 1e12]) / 3
    ax.set_ylim(bottom, top / 1e12 * 2)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_decode(data: dict, names: list[str], cmap: dict, path: Path) -> Path | None:
    rows = timed(data["decode"])
    if not rows:
        return None
    dims = sorted({r["head_dim"] for r in rows})
    fig, axes = panels(1, len(dims), f"Decode attention (one query token, B={rows[0]['batch']}): bytes/s")
    bandwidth = ceiling_value(data, "copy_bandwidth")
    for j, d in enumerate(dims):
        ax = axes[0][j]
        groups = by_kernel([r for r in rows if r["head_dim"] == d])
        for name in names:
            if name in groups:
                g = groups[name]
                draw_series(ax, g, lambda r: r["keys"], lambda r: r["bytes_per_s"] / 1e12, name, cmap[name],
                            g[0]["dtype"], g[0]["family"])
        if bandwidth:
            ax.axhline(bandwidth / 1e12, color="black", linestyle=":", label="ceiling: copy bandwidth")
        log2_x(ax, "cache length L")
        ax.set_ylabel("TB/s (minimum traffic / time)")
        ax.set_title(f"head_dim {d}")
    return finish(fig, axes, path)


def plot_accuracy(data: dict, names: list[str], cmap: dict, path: Path) -> Path | None:
    rows = [r for r in timed(data["prefill"] + data["decode"]) if r.get("check", {}).get("error_over_allowed")
            is not None]
    if not rows:
        return None
    dims = sorted({r["head_dim"] for r in rows})
    columns = [("prefill", False), ("prefill", True), ("decode", False)]
    columns = [c for c in columns if any(r["mode"] == c[0] and r["causal"] == c[1] for r in rows)]
    fig, axes = panels(len(dims), len(columns), "float64 check: max |error| / allowance (below 1 passes)")
    for i, d in enumerate(dims):
        for j, (mode, causal) in enumerate(columns):
            ax = axes[i][j]
            groups = by_kernel([r for r in rows if r["head_dim"] == d and r["mode"] == mode and r["causal"] == causal])
            x_of = (lambda r: r["seq"]) if mode == "prefill" else (lambda r: r["keys"])
            for name in names:
                if name in groups:
                    g = groups[name]
                    draw_series(ax, g, x_of, lambda r: r["check"]["error_over_allowed"], name, cmap[name],
                                g[0]["dtype"], g[0]["family"])
            ax.axhline(1.0, color="red", linewidth=1)
            log2_x(ax, "S" if mode == "prefill" else "cache length L")
            ax.set_yscale("log")
            ax.set_ylabel("error / allowance")
            ax.set_title(f"{mode}, head_dim {d}{', causal' if causal else ''}")
    return finish(fig, axes, path)


# ---------------------------------------------------------------- the summary
def _fmt(x, spec: str) -> str:
    return "" if x is None else format(x, spec)


def summary_markdown(data: dict, names: list[str], ncu: dict) -> str:
    meta = data["meta"]
    lines = [f"# Sweep summary: {meta.get('gpu')}", "",
             f"torch {meta.get('torch')}, CUDA {meta.get('cuda')}, {meta.get('date')}, commit "
             f"{str(meta.get('git_commit'))[:12]}{' (dirty)' if meta.get('git_dirty') else ''}, "
             f"{meta.get('impl_root')}; seed {meta.get('seed')}; run {'complete' if data.get('complete') else 'INCOMPLETE'}.",
             "", "## Ceilings (measured in the same run)", "", "| ceiling | value | median ms (IQR) | what |",
             "| --- | --- | --- | --- |"]
    for key, c in data.get("ceilings", {}).items():
        value = f"{c['value'] / 1e12:.2f} TB/s" if c["unit"] == "B/s" else f"{c['value'] / 1e12:.1f} TFLOP/s"
        t = c["timing"]
        lines.append(f"| {key} | {value} | {t['median_ms']:.4g} ({t['p25_ms']:.4g}-{t['p75_ms']:.4g}) | {c['what']} |")
    shape = meta.get("roofline_shape", {})
    best = best_sdpa(data["prefill"] + data["decode"])
    lines += ["", f"## At the roofline shape (prefill S={shape.get('seq')}, head_dim {shape.get('head_dim')}, "
              f"{'causal' if shape.get('causal') else 'non-causal'}; decode at its longest cache)", "",
              "| kernel | mode | dtype | median ms (IQR) | TFLOP/s | TB/s | of ceiling | / best SDPA | "
              "float64 error / allowed | DRAM bytes (ncu) | achieved occupancy (ncu) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = lambda r: (r["mode"] != "prefill", r["family"] != "kit",  # noqa: E731
                       names.index(r["kernel"]) if r["kernel"] in names else 0)
    for r in sorted(roofline_points(data), key=order):
        key, divisor = CEILING_OF_KERNEL.get(r["kernel"], CEILING_OF_DTYPE.get(r["dtype"], (None, 1)))
        peak = ceiling_value(data, key) if key else None
        bound = r["bytes_per_s"] / ceiling_value(data, "copy_bandwidth") if r["mode"] == "decode" and \
            ceiling_value(data, "copy_bandwidth") else (r["tflops"] * 1e12 / (peak / divisor) if peak else None)
        which = "copy bandwidth" if r["mode"] == "decode" else (f"{key}/{divisor}" if divisor != 1 else key)
        b = best.get((shape_key(r), r["dtype"]))
        c = r["check"]
        m = ncu.get(r["kernel"], {}) if ncu.get(r["kernel"], {}).get("mode", r["mode"]) == r["mode"] else {}
        lines.append(
            f"| {r['kernel']} | {r['mode']} | {r['dtype']} | {r['median_ms']:.4g} ({r['p25_ms']:.4g}-{r['p75_ms']:.4g}) "
            f"| {r['tflops']:.2f} | {r['bytes_per_s'] / 1e12:.3f} | {_fmt(bound, '.1%')} {which if bound else ''} | "
            f"{_fmt(r['tflops'] / b if b else None, '.2f')} | {c['max_abs_error']:.2e} / {c['allowed']:.2e} "
            f"{'pass' if c['passed'] else 'FAIL'} | {_fmt(m.get('dram_bytes'), '.3g')} | "
            f"{_fmt(m.get('achieved_occupancy_pct'), '.1f')}{'%' if m.get('achieved_occupancy_pct') else ''} |")
    lines += ["", "## Every shape: float64 checks, and why some cells have no number", "",
              "| kernel | mode | timed | pass the float64 check | worst error / allowed | no number: why |",
              "| --- | --- | --- | --- | --- | --- |"]
    for mode in ("prefill", "decode"):
        groups = by_kernel(data[mode])
        for name in names:
            if name not in groups:
                continue
            g = groups[name]
            ok = timed(g)
            worst = max((r["check"]["error_over_allowed"] or float("inf") for r in ok), default=None)
            why_not = [f"{r['status']}: {r['reason']}" for r in g if r["status"] != "ok"]
            why = "; ".join(f"{reason} ({why_not.count(reason)}x)" for reason in sorted(set(why_not)))
            lines.append(f"| {name} | {mode} | {len(ok)}/{len(g)} | {sum(passed(r) for r in ok)}/{len(ok)} | "
                         f"{_fmt(worst, '.3f')} | {why.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def plot_all(sweep_path: Path, out_dir: Path | None, ncu_path: Path | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    data = load(sweep_path)
    out_dir = out_dir or sweep_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = sweep_path.stem
    names = kernel_order(data)
    cmap = colours(names)
    ncu = ncu_measured(sweep_path, data, ncu_path)
    written = [
        plot_tflops(data, names, cmap, out_dir / f"{stem}-tflops.png"),
        plot_ratio(data, names, cmap, out_dir / f"{stem}-ratio.png"),
        plot_roofline(data, names, cmap, out_dir / f"{stem}-roofline.png", ncu),
        plot_decode(data, names, cmap, out_dir / f"{stem}-decode.png"),
        plot_accuracy(data, names, cmap, out_dir / f"{stem}-accuracy.png"),
    ]
    summary = out_dir / f"{stem}-summary.md"
    summary.write_text(summary_markdown(data, names, ncu))
    return [p for p in written if p is not None] + [summary]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweeps", nargs="*", type=Path, help="sweep JSON files (default: bench/results/sweep-*.json)")
    p.add_argument("--out-dir", type=Path, help="where the PNGs and the summary go (default: beside each JSON)")
    p.add_argument("--ncu", type=Path, help="bench/ncu_profile.sh's JSON (default: ncu-<gpu>.json beside the sweep)")
    args = p.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("bench/plot_sweep.py needs matplotlib (pip install matplotlib)")
        return 2
    sweeps = args.sweeps or sorted(RESULTS_DIR.glob("sweep-*.json"))
    if not sweeps:
        print(f"no sweep JSON given and none in {RESULTS_DIR}: run bench/sweep.py on a GPU node first")
        return 2
    for path in sweeps:
        for written in plot_all(path, args.out_dir, args.ncu):
            print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
