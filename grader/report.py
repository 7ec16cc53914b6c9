"""Stage 5: the results people and tools read.

* ``results.json``: the Gradescope autograder format (tests with name, score,
  max_score, status, output, visibility; execution_time; a leaderboard).
* ``report.md``: what a student reads: every check, its measurement, its message.
* ``raw.json``: everything the grader knows, for tools (``grader collect``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .rubric import Rubric

#: Output of a check shown in results.json / report.md is cut to this length.
MAX_OUTPUT_CHARS = 4000



def _skipped(check: dict) -> str:
    """", 24 skipped (needs a CUDA GPU, and none is visible here)": how many were skipped, and why."""
    if not check.get("skipped"):
        return ""
    why = check.get("skip_reason")
    return f", {check['skipped']} skipped" + (f" ({why})" if why else "")


def _held(part: dict) -> str:
    """" (2 held for review)": the points a check or speedup earned that are held until review."""
    return f" ({part['held_points']:g} held for review)" if part.get("held_points") else ""


def _cut(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 20] + "\n... (cut)"


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def total_points(results: dict) -> tuple[float, float]:
    tasks = results.get("tasks", {}).values()
    return round(sum(t.get("points", 0.0) for t in tasks), 4), sum(t.get("max_points", 0.0) for t in tasks)


def bonus_points(results: dict) -> tuple[float, float]:
    """The bonus points earned and on offer (tasks' bonus parts), outside :func:`total_points`."""
    tasks = results.get("tasks", {}).values()
    return (round(sum(t.get("bonus_points", 0.0) for t in tasks), 4),
            round(sum(t.get("bonus_max_points", 0.0) for t in tasks), 4))


def _bonus_tests(n: str, head: str, r: dict, first: int) -> tuple[list[dict], list[dict]]:
    """Gradescope tests (extra credit: max_score 0, the points earned as score) and leaderboard
    entries of a task's bonus parts."""
    tests, board = [], []
    parts = [(p, kind, item) for p in r.get("bonus", []) for kind in ("checks", "speedups") for item in p[kind]]
    for j, (p, kind, x) in enumerate(parts, first):
        text = (f"{x['passed']}/{x['ran']} cases passed" + _skipped(x)
                + ("\n" + "\n".join(x["messages"]) if x["messages"] else "")) if kind == "checks" else (
            x["reason"] + "".join(f"\n{k}: {v:.3g}x" for k, v in x["configs"].items()))
        tests.append(dict(
            name=f"{head} - bonus ({p['name']}): {x['name']}", number=f"{n}.{j}", score=x["points"], max_score=0.0,
            status="passed" if x["status"] == "passed" else "failed", visibility="visible",
            output=_cut(f"Bonus, extra credit outside the assignment's points: up to {x['max_points']:g}.\n" + text)))
        if kind == "speedups" and x.get("ranked") and not x.get("flagged") and x.get("value"):
            board.append(dict(name=f"Task {n} bonus {p['name']} speedup", value=round(x["value"], 4), order="desc"))
    return tests, board


def gradescope(results: dict) -> dict:
    """The Gradescope ``results.json`` document.

    Bonus parts are extra credit: each of their checks and speedups is a test with
    ``max_score`` 0 and the points it earned as its ``score``, and the document's ``score``
    (which Gradescope takes over the sum of the tests) is the assignment's points plus the
    bonus, so a full score with bonus is above the assignment's total."""
    tests, leaderboard = [], []
    for task, r in results.get("tasks", {}).items():
        n = task.removeprefix("task")
        head = f"Task {n}: {r.get('title', '')}"
        if not r.get("checks") and not r.get("speedups"):
            tests.append(dict(name=head, number=n, score=r.get("points", 0.0), max_score=r.get("max_points", 0.0),
                              status="failed", visibility="visible",
                              output=_cut(f"{r.get('status')}: {r.get('reason')}\n\n" + _build_text(r))))
            continue
        for i, c in enumerate(r["checks"], 1):
            tests.append(dict(
                name=f"{head} - {c['name']}", number=f"{n}.{i}", score=c["points"], max_score=c["max_points"],
                status="passed" if c["status"] == "passed" else "failed", visibility="visible",
                output=_cut(f"{c['passed']}/{c['ran']} cases passed"
                            + _skipped(c) + _held(c)
                            + ("\n" + "\n".join(c["messages"]) if c["messages"] else "")),
            ))
        for j, s in enumerate(r["speedups"], len(r["checks"]) + 1):
            tests.append(dict(
                name=f"{head} - {s['name']}", number=f"{n}.{j}", score=s["points"], max_score=s["max_points"],
                status="passed" if s["status"] == "passed" else "failed", visibility="visible",
                output=_cut(s["reason"] + _held(s) + "".join(f"\n{k}: {v:.3g}x" for k, v in s["configs"].items())),
            ))
            if s.get("ranked") and not s.get("flagged") and s.get("value"):
                leaderboard.append(dict(name=f"Task {n} speedup", value=round(s["value"], 4), order="desc"))
        extra, board = _bonus_tests(n, head, r, len(r["checks"]) + len(r["speedups"]) + 1)
        tests += extra
        leaderboard += board
    score = round(total_points(results)[0] + bonus_points(results)[0], 4)
    flags = results.get("flags", []) + [f for r in results.get("tasks", {}).values() for f in r.get("flags", [])]
    output = summary_text(results)
    if flags:
        output += "\n\nFlagged for review:\n" + "\n".join(f"- {f}" for f in flags)
    if results.get("grader_error"):
        output += "\n\nThe grader itself failed; the scores above are what it had:\n" + _cut(results["grader_error"])
    doc = dict(score=score, execution_time=int(results.get("execution_time", 0)), output=output,
               visibility="visible", stdout_visibility="hidden", tests=tests)
    if leaderboard:
        doc["leaderboard"] = leaderboard
    return _clean(doc)


def validate_gradescope(doc: dict) -> list[str]:
    """Problems with a results.json document against Gradescope's format (empty if none)."""
    problems = []
    if not isinstance(doc.get("tests"), list) and "score" not in doc:
        problems.append("needs 'score' or 'tests'")
    if "score" in doc and not isinstance(doc["score"], (int, float)):
        problems.append("'score' must be a number")
    if "execution_time" in doc and not isinstance(doc["execution_time"], (int, float)):
        problems.append("'execution_time' must be a number")
    for i, t in enumerate(doc.get("tests", [])):
        for key, kind in (("score", (int, float)), ("max_score", (int, float)), ("name", str), ("output", str)):
            if key in t and not isinstance(t[key], kind):
                problems.append(f"tests[{i}].{key} has the wrong type")
        if "score" not in t:
            problems.append(f"tests[{i}] has no score")
        if t.get("status") not in (None, "passed", "failed"):
            problems.append(f"tests[{i}].status must be 'passed' or 'failed'")
        if t.get("visibility") not in (None, "hidden", "after_due_date", "after_published", "visible"):
            problems.append(f"tests[{i}].visibility is not one Gradescope knows")
        if isinstance(t.get("score"), (int, float)) and isinstance(t.get("max_score"), (int, float)):
            # max_score 0 with a positive score is extra credit (the bonus parts); otherwise no more than the max.
            if t["score"] > t["max_score"] + 1e-9 and t["max_score"] != 0:
                problems.append(f"tests[{i}] scores more than its max_score")
    for i, e in enumerate(doc.get("leaderboard", [])):
        if not isinstance(e.get("name"), str) or not isinstance(e.get("value"), (int, float, str)):
            problems.append(f"leaderboard[{i}] needs a name and a value")
    try:
        json.dumps(doc, allow_nan=False)
    except ValueError:
        problems.append("not valid JSON (NaN or infinity)")
    return problems


def _build_text(r: dict) -> str:
    b = r.get("build")
    if b and not b.get("ok"):
        return "Compiler output:\n" + _cut(b.get("log_tail", ""), MAX_OUTPUT_CHARS)
    t = r.get("tests")
    if t and t.get("problem"):
        return "Test output (end):\n" + _cut(t.get("output_tail", "")[-MAX_OUTPUT_CHARS:])
    return ""


def summary_rows(results: dict) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for task, r in results.get("tasks", {}).items():
        reason = (r.get("reason") or "").strip().splitlines()
        rows.append((task, f"{r.get('points', 0):g}", f"{r.get('max_points', 0):g}", r.get("status", ""),
                     (reason[0] if reason else "")[:110]))
    return rows


def summary_text(results: dict) -> str:
    rows = [("task", "points", "max", "status", "reason")] + summary_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    score, max_score = total_points(results)
    lines.append(f"total {score:g} / {max_score:g}   (seed {results.get('seed')}, GPU: {results.get('gpu')})")
    bonus, bonus_max = bonus_points(results)
    if bonus_max:
        lines.append(f"bonus {bonus:g} / {bonus_max:g}   (extra points, outside the total: " + "; ".join(
            f"{task} {p['name']} {p['points']:g}/{p['max_points']:g}"
            for task, r in results.get("tasks", {}).items() for p in r.get("bonus", [])) + ")")
    return "\n".join(lines)


def _bonus_markdown(r: dict) -> list[str]:
    """report.md's lines for a task's bonus parts."""
    if not r.get("bonus"):
        return []
    out = ["", f"Bonus (extra points, outside the task's {r.get('max_points', 0):g}): "
           f"{r.get('bonus_points', 0):g} / {r.get('bonus_max_points', 0):g}", ""]
    for p in r["bonus"]:
        out.append(f"- **bonus, {p['name']}**: {p['points']:g} / {p['max_points']:g}: {p.get('reason', '')}")
        for c in p["checks"]:
            out.append(f"  - {c['name']}: {c['points']:g} / {c['max_points']:g} "
                       f"({c['passed']}/{c['ran']} cases passed{_skipped(c)})")
            for m in c["messages"]:
                out += ["", "    ```text", *("    " + line for line in m.splitlines()), "    ```"]
        for s in p["speedups"]:
            out.append(f"  - {s['name']}: {s['points']:g} / {s['max_points']:g}: {s['reason']}")
            out += [f"    - `{k}`: {v:.3g}x" for k, v in s.get("configs", {}).items()]
    return out


def _containments(results: dict) -> str:
    """The containment each task's worker reported (one value when all agree)."""
    seen = {t: r["containment"] for t, r in results.get("tasks", {}).items() if r.get("containment")}
    if not seen:
        return str(results.get("containment", "unknown"))
    if len(set(seen.values())) == 1:
        return next(iter(seen.values()))
    return ", ".join(f"{t}: {c}" for t, c in seen.items())


def markdown(results: dict) -> str:
    score, max_score = total_points(results)
    bonus, bonus_max = bonus_points(results)
    extra = f" (bonus: {bonus:g} / {bonus_max:g} more)" if bonus_max else ""
    out = [f"# Grading report: {score:g} / {max_score:g}{extra}", "",
           f"- submission: `{results.get('submission')}`", f"- GPU: {results.get('gpu')}",
           f"- seed: {results.get('seed')} (inputs were drawn from it; a re-run uses a new one)",
           f"- wall time: {results.get('execution_time', 0):.0f} s"
           + (f", of which {results['reference_seconds']:.0f} s timing the reference solution beside it"
              if results.get("reference_seconds") else ""),
           f"- containment of the submission's code: {_containments(results)}", "",
           "| task | points | status | reason |", "| --- | --- | --- | --- |"]
    for task, pts, mx, status, reason in summary_rows(results):
        out.append(f"| {task} | {pts} / {mx} | {status} | {reason.replace('|', '/')} |")
    flags = results.get("flags", []) + [f for r in results.get("tasks", {}).values() for f in r.get("flags", [])]
    if flags:
        out += ["", "## Flagged for review", ""] + [f"- {f}" for f in flags]
    for task, r in results.get("tasks", {}).items():
        out += ["", f"## {task}: {r.get('title', '')} ({r.get('points', 0):g} / {r.get('max_points', 0):g})", "",
                f"Status: **{r.get('status')}**: {r.get('reason', '')}", ""]
        if r.get("held_points"):
            out += [f"Held for review: {r['held_points']:g} / {r.get('max_points', 0):g} points earned, paid once a "
                    "person has reviewed the flagged code (rubric: pay_flagged_before_review = false)"
                    + (f"; as graded: {r['earned_reason']}" if r.get("earned_reason") else ""), ""]
        out += [f"Note: {n}" for n in r.get("notes", [])] + ([""] if r.get("notes") else [])
        secs = r.get("stage_seconds", {})
        if secs:
            out.append("Time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in secs.items()))
            out.append("")
        for c in r.get("checks", []):
            out.append(f"- **{c['name']}**: {c['points']:g} / {c['max_points']:g}{_held(c)} "
                       f"({c['passed']}/{c['ran']} cases passed{_skipped(c)})")
            for m in c["messages"]:
                out += ["", "  ```text", *("  " + line for line in m.splitlines()), "  ```"]
        for s in r.get("speedups", []):
            out.append(f"- **{s['name']}**: {s['points']:g} / {s['max_points']:g}{_held(s)}: {s['reason']}")
            for k, v in s.get("configs", {}).items():
                out.append(f"  - `{k}`: {v:.3g}x")
        out += _bonus_markdown(r)
        durations = (r.get("tests") or {}).get("duration_by_test") or {}
        if durations:
            out += ["", "Seconds per test: " + ", ".join(f"{k} {v:.1f}" for k, v in durations.items())]
        extra = _build_text(r)
        if extra:
            out += ["", "```text", extra, "```"]
    table = results.get("results_md") or []
    if table:
        out += ["", "## Results.md against the grader's measurements", "",
                "| task | row | column | reported | measured |", "| --- | --- | --- | --- | --- |"]
        for e in table:
            rep = "(empty)" if e["reported"] is None else f"{e['reported']:.4g}"
            meas = f"{e['measured']:.4g}" if isinstance(e["measured"], (int, float)) else str(e["measured"])
            out.append(f"| {e['task']} | {e['row']} | {e['column'] + 1} | {rep} | {meas} |")
    if results.get("grader_error"):
        out += ["", "## The grader failed", "", "```text", results["grader_error"], "```"]
    return "\n".join(out) + "\n"


def write_all(results: dict, rubric: Rubric, out: Path) -> None:
    """Write every report; each is written even if another fails."""
    out.mkdir(parents=True, exist_ok=True)
    writers = (
        ("raw.json", lambda: json.dumps(_clean(results), indent=2, default=str)),
        ("results.json", lambda: json.dumps(gradescope(results), indent=2)),
        ("report.md", lambda: markdown(results)),
    )
    for name, make in writers:
        try:
            (out / name).write_text(make())
        except Exception as exc:  # noqa: BLE001 - the other reports must still be written
            (out / f"{name}.error.txt").write_text(f"could not write {name}: {exc!r}\n")
