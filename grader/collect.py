"""``grader collect RESULTS_DIR``: one gradebook, a summary and plots for a whole class.

Reads every ``RESULTS_DIR/<student>/raw.json`` (see :mod:`grader.class_results`)
and writes, into ``RESULTS_DIR``:

* ``gradebook.csv``: a row per student: status, total, points and status per
  task, the flags for review (implausible speedup, Results.md mismatch, suspicious
  code), the reason a result is missing or broken;
* ``summary.md`` and ``summary.json``: statistics per task (mean, median,
  distribution), speedups against the reference, and where the grading time went
  (stage, build, tests, score), aggregated over the class;
* plots (with matplotlib): ``scores.png`` (score distributions), ``speedups.png``
  (tasks 4-6, the reference solution's speedup marked), ``time.png``;
* ``leaderboard.md`` and ``leaderboard.png``: each speedup, students ranked by it
  (see :mod:`grader.leaderboard`).

It only reads the results and rewrites its own outputs, so running it again gives
the same files. A student whose result is missing or broken gets a row that says
so; nobody is dropped.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from pathlib import Path

from harness.tasks import TASKS

from . import leaderboard
from .class_results import DONE, read_result, roster, submissions_in

GRADEBOOK = "gradebook.csv"
SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
PLOTS = ("scores.png", "speedups.png", "time.png")
BUCKETS = ("0", "<25%", "25-50%", "50-75%", "75-<100%", "full")
STAGES = ("stage", "build", "tests", "timed tests", "bonus tests", "score")


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def stats(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return dict(n=0)
    return dict(n=len(values), mean=round(statistics.fmean(values), 4), median=round(statistics.median(values), 4),
                min=round(min(values), 4), max=round(max(values), 4),
                stdev=round(statistics.stdev(values), 4) if len(values) > 1 else 0.0)


def bucket(points: float, max_points: float) -> str:
    if points <= 0 or max_points <= 0:
        return "0"
    if points >= max_points - 1e-9:
        return "full"
    f = points / max_points
    return "<25%" if f < 0.25 else "25-50%" if f < 0.5 else "50-75%" if f < 0.75 else "75-<100%"


def _task_key(name: str) -> int:
    return TASKS[name].number if name in TASKS else 99


def _fmt(x) -> str:
    return "" if x is None else f"{x:g}" if isinstance(x, float) else str(x)


def _flags(raw: dict) -> list[str]:
    flags = [str(f) for f in raw.get("flags", [])]
    for task, r in raw.get("tasks", {}).items():
        flags += [f"{task}: {f}" for f in r.get("flags", [])]
    return flags


# ------------------------------------------------------------------ reading

def gather(results_dir: Path, submissions_dir: Path | None = None) -> tuple[list[dict], list[str]]:
    """One row per known student, and the tasks seen (in order)."""
    extra = submissions_in(submissions_dir)[0] if submissions_dir else []
    rows, tasks = [], set()
    for student in roster(results_dir, extra):
        r = read_result(results_dir / student, student)
        row = dict(student=student, status=r.state, note=r.detail, raw=r.raw, job=r.job)
        if r.raw:
            tasks.update(r.raw.get("tasks", {}))
        rows.append(row)
    return rows, sorted(tasks, key=_task_key)


# ------------------------------------------------------------------ the gradebook

def gradebook_rows(rows: list[dict], tasks: list[str]) -> list[dict]:
    out = []
    for row in rows:
        raw = row["raw"] or {}
        tr = raw.get("tasks", {})
        line = dict(student=row["student"], status=row["status"])
        if raw:
            line["total"] = round(sum(_num(t.get("points")) or 0.0 for t in tr.values()), 4)
            line["max_total"] = round(sum(_num(t.get("max_points")) or 0.0 for t in tr.values()), 4)
            # Bonus parts (extra points outside the total), where a task had any.
            if any(t.get("bonus") for t in tr.values()):
                line["bonus"] = round(sum(_num(t.get("bonus_points")) or 0.0 for t in tr.values()), 4)
        for task in tasks:
            line[task] = _num(tr[task].get("points")) if task in tr else None
            line[f"{task}_status"] = tr[task].get("status", "") if task in tr else ""
            if task in tr and tr[task].get("bonus"):
                line[f"{task}_bonus"] = _num(tr[task].get("bonus_points"))
        flags = _flags(raw)
        line["flag_count"] = len(flags)
        line["flags"] = " | ".join(flags)
        line["note"] = row["note"]
        line["gpu"] = raw.get("gpu", "")
        line["containment"] = " / ".join(sorted({str(t.get("containment")) for t in tr.values() if t.get("containment")})
                                         or [str(raw.get("containment", ""))])
        line["seed"] = raw.get("seed", "")
        line["seconds"] = _num(raw.get("execution_time"))
        out.append(line)
    return out


def write_gradebook(path: Path, lines: list[dict], tasks: list[str]) -> None:
    columns = ["student", "status", "total", "max_total"]
    with_bonus = [task for task in tasks if any(f"{task}_bonus" in line for line in lines)]
    if with_bonus:
        columns.append("bonus")
    for task in tasks:
        columns += [task, f"{task}_status"] + ([f"{task}_bonus"] if task in with_bonus else [])
    columns += ["flag_count", "flags", "note", "gpu", "containment", "seed", "seconds"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for line in lines:
        writer.writerow({k: _fmt(line.get(k)) for k in columns})
    path.write_text(buf.getvalue())


# ------------------------------------------------------------------ the summary

def summarise(rows: list[dict], tasks: list[str]) -> dict:
    graded = [r for r in rows if r["status"] == DONE]
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    summary: dict = dict(students=len(rows), by_status=by_status,
                         problems=[dict(student=r["student"], status=r["status"], detail=r["note"])
                                   for r in rows if r["status"] != DONE])
    totals = [sum(_num(t.get("points")) or 0.0 for t in r["raw"]["tasks"].values()) for r in graded]
    summary["total"] = stats(totals)
    summary["total"]["max_points"] = max((sum(_num(t.get("max_points")) or 0.0 for t in r["raw"]["tasks"].values())
                                          for r in graded), default=0.0)
    summary["total"]["distribution"] = _distribution(
        [(t, summary["total"]["max_points"]) for t in totals])
    summary["tasks"], summary["speedups"] = {}, {}
    for task in tasks:
        results = [r["raw"]["tasks"][task] for r in graded if task in r["raw"]["tasks"]]
        pts = [_num(t.get("points")) or 0.0 for t in results]
        mx = max((_num(t.get("max_points")) or 0.0 for t in results), default=0.0)
        statuses: dict[str, int] = {}
        for t in results:
            statuses[t.get("status", "?")] = statuses.get(t.get("status", "?"), 0) + 1
        summary["tasks"][task] = dict(title=TASKS[task].title if task in TASKS else "", max_points=mx, **stats(pts),
                                      full=sum(1 for p in pts if p >= mx - 1e-9 and mx > 0),
                                      zero=sum(1 for p in pts if p <= 0),
                                      distribution=_distribution([(p, mx) for p in pts]), statuses=statuses)
        speedups: dict[str, dict] = {}
        for t in results:
            refs = t.get("reference_speedups") or {}
            bonus = [(f"bonus: {s.get('name', '?')}", s) for b in t.get("bonus", []) for s in b.get("speedups", [])]
            for name, s in [(s.get("name", "?"), s) for s in t.get("speedups", [])] + bonus:
                e = speedups.setdefault(name, dict(values=[], references=[]))
                if _num(s.get("value")):
                    e["values"].append(_num(s["value"]))
                ref = _num(s.get("reference")) or _num(refs.get(s.get("name")))
                if ref:
                    e["references"].append(ref)
        for name, e in speedups.items():
            if e["values"] or e["references"]:
                summary["speedups"].setdefault(task, {})[name] = dict(
                    students=stats(e["values"]), reference=stats(e["references"]),
                    values=sorted(round(v, 4) for v in e["values"]),
                    references=sorted(round(v, 4) for v in e["references"]))
    bonus = [sum(_num(t.get("bonus_points")) or 0.0 for t in r["raw"]["tasks"].values()) for r in graded
             if any(t.get("bonus") for t in r["raw"]["tasks"].values())]
    if bonus:  # extra points outside the total (tasks' bonus parts)
        summary["bonus"] = dict(stats(bonus), max_points=max(
            sum(_num(t.get("bonus_max_points")) or 0.0 for t in r["raw"]["tasks"].values()) for r in graded))
    summary["time"] = _time_summary(graded, tasks)
    summary["flags"] = [dict(student=r["student"], flag=f) for r in rows if r["raw"] for f in _flags(r["raw"])]
    return summary


def _distribution(pairs: list[tuple[float, float]]) -> dict[str, int]:
    counts = {b: 0 for b in BUCKETS}
    for p, mx in pairs:
        counts[bucket(p, mx)] += 1
    return counts


def _time_summary(graded: list[dict], tasks: list[str]) -> dict:
    per_task, stage_totals, tests_time = {}, {s: 0.0 for s in STAGES}, {}
    for task in tasks:
        per_stage: dict[str, list[float]] = {}
        for r in graded:
            t = r["raw"]["tasks"].get(task)
            if not t:
                continue
            for stage, secs in (t.get("stage_seconds") or {}).items():
                if _num(secs) is not None:
                    per_stage.setdefault(stage, []).append(float(secs))
                    stage_totals[stage] = stage_totals.get(stage, 0.0) + float(secs)
            for fn, secs in ((t.get("tests") or {}).get("duration_by_test") or {}).items():
                if _num(secs) is not None:
                    tests_time.setdefault(f"{task}::{fn}", []).append(float(secs))
        per_task[task] = {stage: dict(**stats(v), total=round(sum(v), 2)) for stage, v in per_stage.items()}
    wall = [_num(r["raw"].get("execution_time")) for r in graded]
    wall = [w for w in wall if w is not None]
    total_wall = sum(wall)
    in_stages = sum(stage_totals.values())
    shares = {s: round(v / total_wall, 4) if total_wall else None for s, v in stage_totals.items()}
    jobs = [_num(r["job"].get("seconds")) for r in graded if r.get("job")]
    slowest = sorted(((k, statistics.fmean(v), len(v)) for k, v in tests_time.items()
                      if statistics.fmean(v) >= 0.05), key=lambda x: -x[1])[:10]
    return dict(
        per_submission=stats(wall), total_s=round(total_wall, 1),
        stages={s: dict(total_s=round(v, 1), share=shares[s]) for s, v in stage_totals.items()},
        # Reference-solution runs (perf tasks, same GPU) and process start-up are outside the stages.
        other=dict(total_s=round(max(0.0, total_wall - in_stages), 1),
                   share=round(max(0.0, total_wall - in_stages) / total_wall, 4) if total_wall else None),
        per_task=per_task, array_task_wall=stats([j for j in jobs if j is not None]),
        slowest_tests=[dict(test=k, mean_s=round(m, 2), runs=n) for k, m, n in slowest],
    )


def summary_markdown(s: dict, tasks: list[str], plots: list[str], plots_note: str) -> str:
    out = ["# Class summary", "",
           f"{s['students']} submission(s): " + ", ".join(f"{n} {k}" for k, n in sorted(s["by_status"].items())), ""]
    if s["problems"]:
        out += ["## Missing or broken results (in the gradebook, not in the statistics)", ""]
        out += [f"- {p['student']}: {p['status']}: {p['detail']}" for p in s["problems"]] + [""]
    t = s["total"]
    out += ["## Scores (graded submissions)", "",
            "| | n | mean | median | min | max | full marks | zero | " + " | ".join(BUCKETS) + " |",
            "| --- " * (8 + len(BUCKETS)) + "|"]

    def line(name, e, full, zero):
        if not e.get("n"):
            return f"| {name} | 0 |" + " |" * (6 + len(BUCKETS))
        dist = " | ".join(str(e["distribution"][b]) for b in BUCKETS)
        return (f"| {name} | {e['n']} | {e['mean']:.3g} | {e['median']:.3g} | {e['min']:g} | {e['max']:g} | "
                f"{full} | {zero} | {dist} |")

    out.append(line(f"total (of {t.get('max_points', 0):g})", t,
                    t["distribution"]["full"] if t.get("n") else 0, t["distribution"]["0"] if t.get("n") else 0))
    for task in tasks:
        e = s["tasks"][task]
        out.append(line(f"{task} (of {e['max_points']:g})", e, e["full"], e["zero"]))
    if s.get("bonus", {}).get("n"):
        b = s["bonus"]
        out += ["", f"Bonus (extra points outside the total, of {b['max_points']:g}): {b['n']} student(s), mean "
                f"{b['mean']:.3g}, median {b['median']:.3g}, max {b['max']:g}"]
    out += ["", "Task statuses: " + "; ".join(
        f"{task}: " + ", ".join(f"{n} {k}" for k, n in sorted(s["tasks"][task]["statuses"].items()))
        for task in tasks), ""]
    if s["speedups"]:
        out += ["## Speedups (geometric mean over each test's configurations)", "",
                "| task | measurement | students | median | min | max | reference median |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for task, items in s["speedups"].items():
            for name, e in items.items():
                st, ref = e["students"], e["reference"]
                cells = (f"{st['median']:.3g}x | {st['min']:.3g}x | {st['max']:.3g}x" if st.get("n") else " | | ")
                out.append(f"| {task} | {name} | {st.get('n', 0)} | {cells} | "
                           + (f"{ref['median']:.3g}x (n={ref['n']})" if ref.get("n") else "not measured") + " |")
        out.append("")
    else:
        out += ["No speedups were measured in these results (tasks 4-6 need a GPU).", ""]
    tm = s["time"]
    out += ["## Where the grading time goes", ""]
    if tm["per_submission"].get("n"):
        ps = tm["per_submission"]
        out.append(f"Grader wall time per submission: mean {ps['mean']:.1f} s, median {ps['median']:.1f} s, "
                   f"max {ps['max']:.1f} s; {tm['total_s']:.0f} s for the class.")
        if tm["array_task_wall"].get("n"):
            a = tm["array_task_wall"]
            out.append(f"Slurm array task (with Python start-up): mean {a['mean']:.1f} s, max {a['max']:.1f} s.")
        out += ["", "| stage | class total (s) | share of wall time |", "| --- | --- | --- |"]
        for stage, e in tm["stages"].items():
            out.append(f"| {stage} | {e['total_s']:.1f} | {100 * e['share']:.1f}% |" if e["share"] is not None
                       else f"| {stage} | {e['total_s']:.1f} | |")
        o = tm["other"]
        if o["share"] is not None:
            out.append(f"| other (reference solution runs, start-up, reports) | {o['total_s']:.1f} | {100 * o['share']:.1f}% |")
        out += ["", "| task | stage | mean (s) | median (s) | max (s) | total (s) |", "| --- | --- | --- | --- | --- | --- |"]
        for task, stages in tm["per_task"].items():
            for stage, e in stages.items():
                out.append(f"| {task} | {stage} | {e['mean']:.2f} | {e['median']:.2f} | {e['max']:.2f} | {e['total']:.1f} |")
        if tm["slowest_tests"]:
            out += ["", "Slowest tests (mean seconds per submission): " + ", ".join(
                f"{e['test']} {e['mean_s']:.1f}" for e in tm["slowest_tests"])]
    else:
        out.append("No graded submission yet.")
    out.append("")
    if s["flags"]:
        out += ["## Flagged for review", ""] + [f"- {f['student']}: {f['flag']}" for f in s["flags"]] + [""]
    out += ["## Plots", ""]
    out += [f"- ![{p}]({p})" for p in plots] if plots else []
    if plots_note:
        out.append(f"- {plots_note}")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ plots

def write_plots(results_dir: Path, s: dict, tasks: list[str], gradebook: list[dict]) -> tuple[list[str], str]:
    """The plots written, and a note on what was skipped and why."""
    for name in PLOTS:  # a plot that no longer applies must not linger from an earlier run
        (results_dir / name).unlink(missing_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return [], "plots skipped: matplotlib is not installed (pip install matplotlib)"
    written, notes = [], []
    graded = [g for g in gradebook if g["status"] == DONE]
    if graded:
        panels = [("total", [g["total"] for g in graded], s["total"].get("max_points", 0))]
        panels += [(task, [g[task] for g in graded if g[task] is not None], s["tasks"][task]["max_points"])
                   for task in tasks]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
        for ax, (name, values, mx) in zip(axes[0], panels):
            edges = [mx * i / 10 for i in range(11)] if mx > 0 else [0, 1]
            ax.hist(values, bins=edges, color="#4C72B0", edgecolor="white")
            ax.set_title(f"{name} (of {mx:g})", fontsize=10)
            ax.set_xlabel("points")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0][0].set_ylabel("students")
        fig.suptitle(f"Score distribution ({len(graded)} graded)", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        _save(fig, results_dir / "scores.png", plt)
        written.append("scores.png")
    else:
        notes.append("scores.png skipped: no graded submission")
    items = [(task, name, e) for task, d in s["speedups"].items() for name, e in d.items() if e["values"]]
    if items:
        from .rubric import load

        thresholds = {}
        try:
            for task, tr in load().tasks.items():
                for sp in tr.speedups:
                    thresholds[(task, sp.name)] = (sp.full_at, sp.zero_at)
                for sp in (s for b in tr.bonus for s in b.speedups):
                    thresholds[(task, f"bonus: {sp.name}")] = (sp.full_at, sp.zero_at)
        except Exception:  # noqa: BLE001 - the thresholds are a nicety
            pass
        fig, axes = plt.subplots(1, len(items), figsize=(4.5 * len(items), 3.2), squeeze=False)
        for ax, (task, name, e) in zip(axes[0], items):
            ax.hist(e["values"], bins=min(20, max(5, len(e["values"]))), color="#55A868", edgecolor="white")
            ref = e["reference"].get("median")
            if ref:
                ax.axvline(ref, color="#C44E52", lw=2, label=f"reference {ref:.3g}x")
                full_zero = thresholds.get((task, name))
                if full_zero:
                    ax.axvline(full_zero[0] * ref, color="#C44E52", ls="--", lw=1, label=f"full points {full_zero[0] * ref:.3g}x")
                    ax.axvline(full_zero[1] * ref, color="#8C8C8C", ls=":", lw=1, label=f"no points {full_zero[1] * ref:.3g}x")
                ax.legend(fontsize=7)
            ax.set_title(f"{task}: {name}", fontsize=8)
            ax.set_xlabel("speedup (x)")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0][0].set_ylabel("students")
        fig.tight_layout()
        _save(fig, results_dir / "speedups.png", plt)
        written.append("speedups.png")
    else:
        notes.append("speedups.png skipped: no task 4-6 speedups in these results (they need a GPU)")
    per_task = s["time"]["per_task"]
    if any(per_task.values()):
        fig, ax = plt.subplots(figsize=(6.5, 1.6 + 0.4 * len(per_task)))
        names = list(per_task)
        left = [0.0] * len(names)
        for stage, color in zip(STAGES, ("#8172B2", "#C44E52", "#4C72B0", "#55A868", "#DD8452", "#CCB974")):
            widths = [per_task[t].get(stage, {}).get("mean", 0.0) for t in names]
            if any(w > 0 for w in widths):
                ax.barh(names, widths, left=left, color=color, label=stage)
            left = [a + b for a, b in zip(left, widths)]
        ax.invert_yaxis()
        ax.set_xlabel("mean seconds per graded submission")
        ax.legend(fontsize=8, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
        fig.tight_layout()
        _save(fig, results_dir / "time.png", plt)
        written.append("time.png")
    return written, "; ".join(notes)


def _save(fig, path: Path, plt) -> None:
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


# ------------------------------------------------------------------ the command

def collect(results_dir: Path, submissions_dir: Path | None = None, plots: bool = True, out=sys.stdout) -> dict:
    results_dir = results_dir.resolve()
    rows, tasks = gather(results_dir, submissions_dir)
    lines = gradebook_rows(rows, tasks)
    write_gradebook(results_dir / GRADEBOOK, lines, tasks)
    s = summarise(rows, tasks)
    written, note = write_plots(results_dir, s, tasks, lines) if plots else ([], "plots skipped (--no-plots)")
    s["plots"], s["plots_note"] = written, note
    (results_dir / SUMMARY_JSON).write_text(json.dumps(s, indent=2, default=str) + "\n")
    (results_dir / SUMMARY_MD).write_text(summary_markdown(s, tasks, written, note))
    counts = ", ".join(f"{n} {k}" for k, n in sorted(s["by_status"].items())) or "none"
    print(f"gradebook: {results_dir / GRADEBOOK} ({len(lines)} student(s): {counts})", file=out)
    for p in s["problems"]:
        print(f"  {p['status']}: {p['student']}: {p['detail']}", file=out)
    if s["total"].get("n"):
        t = s["total"]
        print(f"total of {t['max_points']:g}: mean {t['mean']:.3g}, median {t['median']:.3g}, "
              f"min {t['min']:g}, max {t['max']:g}", file=out)
    print(f"summary: {results_dir / SUMMARY_MD}, {results_dir / SUMMARY_JSON}", file=out)
    print("plots: " + (", ".join(str(results_dir / p) for p in written) or "none") + (f" ({note})" if note else ""),
          file=out)
    boards, files, board_note = leaderboard.write(results_dir, rows, plots)
    print(f"leaderboard: {', '.join(str(results_dir / f) for f in files)} ({len(boards)} board(s))"
          + (f" ({board_note})" if board_note else ""), file=out)
    return s
