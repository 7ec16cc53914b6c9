"""The rubric switch ``pay_flagged_before_review``: what a source-scan flag does to a score.

A source pattern is weak evidence (the scan cannot be certain), so by default flagged work is
paid and listed for review; with the switch off, a flagged task scores 0, "held for review", and
keeps what it earned in ``held_points``, shown in report.md and the gradebook.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from grader import rubric as rubric_mod
from grader.collect import gradebook_rows
from grader.pipeline import run_grading
from grader.report import validate_gradescope
from harness.tasks import REPO_ROOT

SOLUTIONS = REPO_ROOT / "solutions"
#: One line the source scan flags ("imports a system module") in an otherwise correct task 1.
FLAGGED_LINE = "import os  # nothing uses it: only the source scan notices\n"


def flagged_submission(root: Path) -> Path:
    """The reference's tasks 1 and 3, task 1 with a line the source scan flags."""
    for rel in ("task1/attention.py", "task3/attention.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SOLUTIONS / rel, root / rel)
    text = (root / "task1/attention.py").read_text()
    (root / "task1/attention.py").write_text(text.replace("class CustomSelfAttention", FLAGGED_LINE + "\n\nclass "
                                                          "CustomSelfAttention", 1))
    shutil.copy(REPO_ROOT / "Results.md", root / "Results.md")
    return root


def rubric_holding(tmp_path: Path) -> rubric_mod.Rubric:
    text = rubric_mod.RUBRIC_PATH.read_text()
    assert text.count("pay_flagged_before_review = true") == 1
    (tmp_path / "rubric.toml").write_text(text.replace("pay_flagged_before_review = true",
                                                       "pay_flagged_before_review = false"))
    return rubric_mod.load(tmp_path / "rubric.toml")


def test_the_switch_is_read():
    assert rubric_mod.load().pay_flagged_before_review is True  # the default: a pattern is weak evidence


def test_flagged_work_is_paid_by_default_and_held_when_switched_off(tmp_path):
    sub = flagged_submission(tmp_path / "sub")
    paid = run_grading(sub, ["task1", "task3"], tmp_path / "paid", rubric_mod.load(), quiet=True, use_reference=False)
    t1 = paid["tasks"]["task1"]
    assert t1["points"] == 2 and t1["status"] == "graded" and "held_points" not in t1, t1["reason"]
    assert any("imports a system module" in f for f in t1["flags"]), t1["flags"]

    held = run_grading(sub, ["task1", "task3"], tmp_path / "held", rubric_holding(tmp_path), quiet=True,
                       use_reference=False)
    t1, t3 = held["tasks"]["task1"], held["tasks"]["task3"]
    assert t1["points"] == 0 and t1["held_points"] == 2 and t1["status"] == "held for review", t1
    assert t1["reason"].startswith("held for review: task1/attention.py:") and "imports a system module" in t1["reason"]
    assert [c["points"] for c in t1["checks"]] == [0.0] and [c["held_points"] for c in t1["checks"]] == [2.0]
    assert any("2 of 2 points held" in f for f in t1["flags"]), t1["flags"]
    assert t3["points"] == 3 and "held_points" not in t3  # an unflagged task is paid as usual

    out = tmp_path / "held"
    doc = json.loads((out / "results.json").read_text())
    assert validate_gradescope(doc) == [] and doc["score"] == 3
    assert any("held for review" in t["output"] for t in doc["tests"] if t["name"].startswith("Task 1"))
    report = (out / "report.md").read_text()
    assert "Held for review: 2 / 2 points earned" in report and "| task1 | 0 / 2 | held for review |" in report
    raw = json.loads((out / "raw.json").read_text())
    line = gradebook_rows([dict(student="s", status="graded", note="", raw=raw, job={})], ["task1", "task3"])[0]
    assert line["task1"] == 0 and line["task1_status"] == "held for review"
    assert "task1: 2 of 2 points held until the flagged code is reviewed" in line["flags"], line["flags"]


def test_a_hold_reaches_every_bonus_part():
    """Held work shows no bonus points anywhere (results.json's bonus tests, the leaderboards):
    every bonus part, check and speedup is at 0 with what it earned kept, its speedups unranked."""
    from grader.pipeline import hold_for_review

    speed = dict(name="bf16 speed", points=0.5, max_points=0.5, ranked=True, flagged=False)
    result = dict(points=3.0, max_points=4.0, reason="graded", flags=[], bonus_points=1.0,
                  checks=[dict(name="core", points=2.0)], speedups=[dict(name="core speed", points=1.0)],
                  bonus=[dict(name="bf16", points=1.0, max_points=1.0,
                              checks=[dict(name="bf16 core", points=0.5)], speedups=[speed])])
    hold_for_review(result, ["task4/attention_kernel_tc.cu:3 runs Python code from C++"])
    part = result["bonus"][0]
    assert result["points"] == 0 and result["bonus_points"] == 0 and result["held_bonus_points"] == 1.0
    assert part["points"] == 0 and part["held_points"] == 1.0
    assert part["checks"][0]["points"] == 0 and part["checks"][0]["held_points"] == 0.5
    assert speed["points"] == 0 and speed["held_points"] == 0.5 and speed["flagged"] and not speed["ranked"]
