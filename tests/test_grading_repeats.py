"""scripts/grading_repeats.py, the repeatability summary of issue 15, on made-up grader folders."""
import importlib.util
import json
from pathlib import Path

import pytest

from harness.tasks import REPO_ROOT

_spec = importlib.util.spec_from_file_location("grading_repeats", REPO_ROOT / "scripts" / "grading_repeats.py")
repeats = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(repeats)


def fake_run(root: Path, points: float, ratio: float, ref_ms: float, bonus_ratio: float = 1.0) -> Path:
    """A grader --out folder: raw.json (with a bonus part) and one pytest report with a beside measurement."""
    (root / "logs" / "submission").mkdir(parents=True)
    bonus = [dict(name="tc", speedups=[dict(name="bf16", value=0.5 * bonus_ratio, vs_reference=bonus_ratio)])]
    raw = dict(execution_time=100.0, tasks=dict(
        task4=dict(points=points, stage_seconds=dict(build=1.0, tests=60.0),
                   speedups=[dict(name="core", value=0.8 * ratio, vs_reference=ratio)],
                   bonus=bonus, bonus_points=1.0, bonus_max_points=2.0)))
    (root / "raw.json").write_text(json.dumps(raw))
    (root / "results.json").write_text("{}")  # a finished grading writes both
    timing = dict(total_ms=ref_ms / 2)
    report = dict(tests=[dict(metadata=dict(measurements=dict(core_speedup=[
        dict(vs_reference=ratio, reference=dict(candidate=timing, baseline=timing)), dict(speedup=1.0)])))])
    (root / "logs" / "submission" / "task4-pytest.json").write_text(json.dumps(report))
    return root


def test_runs_that_repeat_pass(tmp_path):
    runs = [repeats.load_run(fake_run(tmp_path / str(i), 4, r, 2000.0)) for i, r in enumerate((1.0, 0.99, 1.02))]
    assert runs[0]["reference_ms"] == 2000.0
    lines, ok = repeats.summarize(runs)
    assert ok, lines
    assert "points: identical in all 3 runs (5 in all)" in lines  # task 4's 4 and its bonus 1
    assert any("worst 2.0 % from it (within" in line for line in lines), lines


def test_a_stray_ratio_or_other_points_fail_with_what_differs(tmp_path):
    runs = [repeats.load_run(fake_run(tmp_path / str(i), p, r, 10.0)) for i, (p, r) in enumerate([(4, 1.0), (4, 1.0), (3.5, 0.9)])]
    lines, ok = repeats.summarize(runs)
    assert not ok
    assert any(line.startswith("points: NOT identical") for line in lines), lines
    assert any("OUTSIDE +-3 %" in line for line in lines), lines
    assert repeats.main([str(tmp_path / "0"), str(tmp_path / "2")]) == 1


def test_an_unfinished_grading_is_named(tmp_path):
    (tmp_path / "cut").mkdir()
    with pytest.raises(SystemExit, match="cut: .*no results.json"):
        repeats.load_run(tmp_path / "cut")


def test_a_bonus_speedup_counts_like_the_task_s_own(tmp_path):
    runs = [repeats.load_run(fake_run(tmp_path / str(i), 4, 1.0, 10.0, bonus_ratio=b))
            for i, b in enumerate((1.0, 1.0, 0.9))]
    lines, ok = repeats.summarize(runs)
    assert not ok
    assert any(line.startswith("task4: bf16: vs_reference 1.000, 1.000, 0.900") and "OUTSIDE" in line
               for line in lines), lines
