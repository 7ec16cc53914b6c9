"""The class leaderboard of ``grader collect``: each rubric speedup, students ranked by it.

It is made from the same speedups a student's ``results.json`` puts on Gradescope's
leaderboard (``grader.report.gradescope``), read back from every ``raw.json``: only
speedups the grader measured and ranked (every timed configuration ran with a right
output, every correctness check passed; never a number from Results.md). One flagged
for review (implausibly fast) is listed with its flag here, so staff see it, and is
kept off Gradescope's leaderboard, which students see, until then.

Writes ``leaderboard.md`` and, with matplotlib, ``leaderboard.png``.
"""
from __future__ import annotations

from pathlib import Path

LEADERBOARD_MD = "leaderboard.md"
LEADERBOARD_PNG = "leaderboard.png"
#: Bars drawn per board in the plot (the Markdown lists everyone).
PLOT_TOP = 20


def boards(rows: list[dict]) -> dict[str, list[dict]]:
    """``{"task4: <speedup name>": [{"student", "value", "reference", "flagged"}, ...]}``, best first.
    A bonus part's speedup has its own board, ``"task4 bonus (<part>): <speedup name>"``."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        raw = row.get("raw") or {}
        for task, r in raw.get("tasks", {}).items():
            named = [(f"{task}: {s.get('name', '')}", s) for s in r.get("speedups", [])]
            named += [(f"{task} bonus ({b.get('name', '')}): {s.get('name', '')}", s)
                      for b in r.get("bonus", []) for s in b.get("speedups", [])]
            for board, s in named:
                value = s.get("value")
                if not s.get("ranked") or not isinstance(value, (int, float)) or value <= 0:
                    continue
                out.setdefault(board, []).append(dict(
                    student=row["student"], value=float(value), reference=s.get("reference"),
                    flagged=bool(s.get("flagged"))))
    for entries in out.values():
        entries.sort(key=lambda e: (-e["value"], e["student"]))
    return dict(sorted(out.items()))


def markdown(b: dict[str, list[dict]]) -> str:
    lines = ["# Leaderboard", "",
             "Speedups the grader measured on the class's GPUs (never a Results.md number), best first.",
             "\"x reference\" divides by the reference solution's speedup, timed beside each submission.", ""]
    if not b:
        return "\n".join(lines + ["No speedups in these results (they are measured on a GPU).", ""])
    for board, entries in b.items():
        lines += [f"## {board}", "", "| rank | student | speedup | x reference | note |", "| --- | --- | --- | --- | --- |"]
        for i, e in enumerate(entries, 1):
            ref = e["reference"]
            vs = f"{e['value'] / ref:.2f}" if isinstance(ref, (int, float)) and ref > 0 else ""
            lines.append(f"| {i} | {e['student']} | {e['value']:.3g}x | {vs} | "
                         f"{'flagged for review' if e['flagged'] else ''} |")
        lines.append("")
    return "\n".join(lines)


def plot(b: dict[str, list[dict]], path: Path) -> str:
    """Horizontal bars per board (the top :data:`PLOT_TOP`); '' when written, else why not."""
    if not b:
        return f"{path.name} skipped: no speedups in these results (they need a GPU)"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"{path.name} skipped: matplotlib is not installed (pip install matplotlib)"
    fig, axes = plt.subplots(len(b), 1, figsize=(7, 1.2 + 0.35 * sum(min(len(e), PLOT_TOP) for e in b.values())
                                                  + 0.8 * len(b)), squeeze=False)
    for ax, (board, entries) in zip(axes[:, 0], b.items()):
        top = entries[:PLOT_TOP][::-1]
        ax.barh([e["student"] for e in top], [e["value"] for e in top],
                color=["tab:orange" if e["flagged"] else "tab:blue" for e in top])
        refs = {e["reference"] for e in entries if isinstance(e["reference"], (int, float))}
        if len(refs) == 1:
            ax.axvline(refs.pop(), color="k", ls="--", lw=1, label="reference solution")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(board + (f" (top {PLOT_TOP} of {len(entries)})" if len(entries) > PLOT_TOP else ""), fontsize=9)
        ax.set_xlabel("speedup (x); orange: flagged for review")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""


def write(results_dir: Path, rows: list[dict], plots: bool = True) -> tuple[dict, list[str], str]:
    """Write the leaderboard files; returns the boards, the files written and a note."""
    b = boards(rows)
    (results_dir / LEADERBOARD_MD).write_text(markdown(b))
    written, note = [LEADERBOARD_MD], ""
    if plots:
        note = plot(b, results_dir / LEADERBOARD_PNG)
        if not note:
            written.append(LEADERBOARD_PNG)
    return b, written, note
