"""harness/tasks.py is the one manifest: the rubric, pyproject.toml and the README follow it.

The last test adds a toy task to a copy of the kit, editing nothing but the
manifest, the rubric's section for it and its own folder, and grades it.
"""
import dataclasses
import filecmp
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader import rubric as rubric_mod
from harness.tasks import REPO_ROOT, TASKS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The README's task table starts at this header row.
TABLE_HEADER = "| task | you write | run |"
#: One row: "| 1. Title (2 pts) | `task1/attention.py` | `python -m task1.test` |".
TABLE_ROW = re.compile(r"\| (?P<number>\d+)\. (?P<title>.+) \((?P<points>\d+(?:\.\d+)?) pts?\) \| (?P<files>.*?) \| .* \|")
#: Shell-style wildcards in pytest's testpaths are expanded from this version on (pytest#9897).
PYTEST_GLOBS_TESTPATHS = (7, 2)


def without_section(text: str, task: str) -> str:
    """``text`` (rubric.toml) without ``[task]`` and its ``[[task.checks]]``/``[[task.speedups]]`` tables."""
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        header = re.match(r"\[\[?([^.\]]+)", line)
        if header:
            inside = header.group(1) == task
        if not inside:
            kept.append(line)
    return "".join(kept)


def load_text(tmp_path: Path, text: str) -> rubric_mod.Rubric:
    (tmp_path / "rubric.toml").write_text(text)
    return rubric_mod.load(tmp_path / "rubric.toml")


def test_the_rubric_pays_the_manifests_points_and_time_limits():
    rubric = rubric_mod.load()
    assert list(rubric.tasks) == list(TASKS)
    for name, task in TASKS.items():
        assert rubric.tasks[name].points == task.points, name
        # The kit's rubric overrides no limit: each task's is the one on its entry.
        assert rubric.tasks[name].test_timeout_s == task.test_timeout_s, name
    assert rubric.total == sum(t.points for t in TASKS.values())


def test_a_task_without_a_rubric_section_fails_loudly(tmp_path):
    with pytest.raises(rubric_mod.RubricError, match=r"no section for task7 .*add \[task7\]"):
        load_text(tmp_path, without_section(rubric_mod.RUBRIC_PATH.read_text(), "task7"))


def test_points_that_disagree_with_the_manifest_fail_loudly(tmp_path, monkeypatch):
    text = rubric_mod.RUBRIC_PATH.read_text()
    was = TASKS["task1"].points
    # The manifest decides: worth one more point there, the rubric's restated points disagree...
    monkeypatch.setitem(TASKS, "task1", dataclasses.replace(TASKS["task1"], points=was + 1))
    with pytest.raises(rubric_mod.RubricError,
                       match=rf"\[task1\] says points = {was:g}, but harness/tasks.py makes task1 worth {was + 1:g}"):
        load_text(tmp_path, text)
    # ...and without them, its checks do not add up to the manifest's points.
    unstated = text.replace(f"[task1]\npoints = {was:g}\n", "[task1]\n")
    assert unstated != text
    with pytest.raises(rubric_mod.RubricError, match=rf"task1's checks and speedups add up to {was:g}, not the {was + 1:g} points"):
        load_text(tmp_path, unstated)


def test_a_section_for_no_task_and_a_stale_time_limit_fail_loudly(tmp_path):
    text = rubric_mod.RUBRIC_PATH.read_text()
    extra = text + '\n[task9]\n\n[[task9.checks]]\nname = "x"\ntests = ["test_x"]\npoints = 1\n'
    with pytest.raises(rubric_mod.RubricError, match="sections for task9, which harness/tasks.py does not define"):
        load_text(tmp_path, extra)
    stale = text.replace("[grading]\n", "[grading]\ntest_timeout_s = 1200\n")
    with pytest.raises(rubric_mod.RubricError, match="test_timeout_s on its entry in harness/tasks.py"):
        load_text(tmp_path, stale)


def readme_task_table(readme: str) -> list[re.Match]:
    lines = readme.splitlines()
    start = lines.index(TABLE_HEADER) + 2  # past the header and its --- row
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        row = TABLE_ROW.fullmatch(line)
        assert row, f"README task table: a row not like '| 1. Title (2 pts) | `file` | `command` |': {line}"
        rows.append(row)
    return rows


def test_the_readme_task_table_lists_the_manifest():
    rows = readme_task_table((REPO_ROOT / "README.md").read_text())
    listed = [(int(r["number"]), r["title"], float(r["points"])) for r in rows]
    assert listed == [(t.number, t.title, float(t.points)) for t in TASKS.values()]
    for row, task in zip(rows, TASKS.values()):
        assert set(re.findall(r"`([^`]+)`", row["files"])) == set(task.editable), task.name


# -- adding a task --------------------------------------------------------------

#: The next free task name, so the toy never meets a real task.
TOY = f"task{max(t.number for t in TASKS.values()) + 1}"
#: The toy's points, split 1.5 / 0.5 by its rubric section: a half-right submission shows the split.
TOY_POINTS = 2
DOUBLE_POINTS, HALVE_POINTS = 1.5, 0.5
#: The toy's own test time limit; the grader's progress line shows it was the one applied.
TOY_TEST_TIMEOUT_S = 120
#: Seconds one grader run of the toy may take before this test gives up on it (it takes about 10).
GRADE_TIMEOUT_S = 300

TOY_ENTRY = f'''\
        Task(
            "{TOY}",
            "A toy: double and halve a tensor",
            editable=("{TOY}/scale.py",),
            points={TOY_POINTS},
            tests=("{TOY}/test.py",),
            judged=True,
            test_timeout_s={TOY_TEST_TIMEOUT_S},
        ),
'''

TOY_RUBRIC = f'''
[{TOY}]

[[{TOY}.checks]]
name = "doubles"
tests = ["test_double"]
points = {DOUBLE_POINTS}

[[{TOY}.checks]]
name = "halves"
tests = ["test_halve"]
points = {HALVE_POINTS}
'''

TOY_FILES = {
    f"{TOY}/__init__.py": f'"""{TOY}, a toy added by tests/test_manifest.py."""\n',
    f"{TOY}/scale.py": f'''\
"""{TOY}: double and halve a tensor."""


def double(x):
    raise NotImplementedError("not implemented yet: double in {TOY}/scale.py")


def halve(x):
    raise NotImplementedError("not implemented yet: halve in {TOY}/scale.py")
''',
    # As task1/test.py: the module comes from load_module, so under the grader it runs in the worker.
    f"{TOY}/test.py": f'''\
"""{TOY} tests: the judge draws the input and checks what the worker's functions return."""
import pytest
import torch

from harness.impl import load_module


@pytest.mark.parametrize("n", [1, 7])
def test_double(n):
    x = torch.randn(n)
    assert torch.equal(load_module("{TOY}.scale").double(x), x * 2)


def test_halve():
    x = torch.randn(5)
    assert torch.equal(load_module("{TOY}.scale").halve(x), x / 2)


if __name__ == "__main__":
    from harness.testmain import main

    raise SystemExit(main(__file__, "{TOY}: a toy."))
''',
}

TOY_RIGHT = "def double(x):\n    return x * 2\n\n\ndef halve(x):\n    return x / 2\n"
TOY_HALF_RIGHT = "def double(x):\n    return x * 2\n\n\ndef halve(x):\n    return x / 3\n"


def kit_files() -> list[str]:
    """The kit as the lead would commit it: tracked files and new ones git does not ignore."""
    if shutil.which("git") is None:
        pytest.skip("needs git to list the kit's files")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    return sorted(rel for rel in listed.stdout.split("\0") if rel and (REPO_ROOT / rel).is_file())


def add_toy_task(kit: Path) -> None:
    """Everything adding a task takes: its folder, its manifest entry, its rubric section."""
    for rel, text in TOY_FILES.items():
        (kit / rel).parent.mkdir(parents=True, exist_ok=True)
        (kit / rel).write_text(text)
    manifest = kit / "harness" / "tasks.py"
    text = manifest.read_text()
    end = text.index("\n    )\n}\n", text.index("TASKS: dict[str, Task] = {"))  # the last entry's end
    manifest.write_text(text[: end + 1] + TOY_ENTRY + text[end + 1:])
    rubric = kit / "grader" / "rubric.toml"
    rubric.write_text(rubric.read_text() + TOY_RUBRIC)


def test_a_task_added_by_its_entry_is_graded(tmp_path):
    kit = tmp_path / "kit"
    files = kit_files()
    for rel in files:
        (kit / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, kit / rel)
    add_toy_task(kit)

    # Nothing else of the kit was edited: pyproject.toml, the grader and the harness take it as is.
    new = {str(p.relative_to(kit)) for p in kit.rglob("*") if p.is_file()} - set(files)
    changed = {rel for rel in files if not filecmp.cmp(REPO_ROOT / rel, kit / rel, shallow=False)}
    assert new == set(TOY_FILES) and changed == {"harness/tasks.py", "grader/rubric.toml"}, (new, changed)
    project = tomllib.loads((kit / "pyproject.toml").read_text())
    from setuptools import find_packages

    assert TOY in find_packages(where=str(kit), include=project["tool"]["setuptools"]["packages"]["find"]["include"])
    # pytest expands testpaths with glob, relative to the rootdir (the kit), as here.
    assert pytest.version_tuple >= PYTEST_GLOBS_TESTPATHS
    testpaths = project["tool"]["pytest"]["ini_options"]["testpaths"]
    expanded = {p for pattern in testpaths for p in glob.glob(pattern, root_dir=kit, recursive=True)}
    task_folders = {test.split("/")[0] for task in TASKS.values() for test in task.tests}
    assert task_folders | {TOY} <= expanded, expanded

    # The copy's own grader, in its own processes, on a right and a half-right submission (side by side).
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_KIT_")}
    runs = {}
    for label, code in (("right", TOY_RIGHT), ("half-right", TOY_HALF_RIGHT)):
        sub = tmp_path / label
        (sub / TOY).mkdir(parents=True)
        (sub / TOY / "scale.py").write_text(code)
        out = tmp_path / f"out-{label}"
        cmd = [sys.executable, "-m", "grader", "run", "--submission", str(sub), "--tasks", TOY.removeprefix("task"),
               "--no-reference", "--out", str(out)]
        runs[label] = (out, subprocess.Popen(cmd, cwd=kit, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True))
    graded = {}
    for label, (out, proc) in runs.items():
        try:
            stdout, stderr = proc.communicate(timeout=GRADE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            pytest.fail(f"grading the {label} toy took over {GRADE_TIMEOUT_S} s:\n{stderr[-3000:]}")
        assert proc.returncode == 0, stderr[-3000:]
        assert f"{TOY}: tests (up to {TOY_TEST_TIMEOUT_S} s" in stderr, stderr[-3000:]  # the entry's limit
        graded[label] = json.loads((out / "raw.json").read_text())["tasks"][TOY]

    right, half = graded["right"], graded["half-right"]
    assert right["title"] == "A toy: double and halve a tensor"
    assert right["max_points"] == half["max_points"] == TOY_POINTS
    assert right["points"] == TOY_POINTS and right["status"] == "graded", right["reason"]
    assert half["points"] == DOUBLE_POINTS, half["reason"]
    checks = {c["name"]: c for c in half["checks"]}
    assert checks["doubles"]["points"] == DOUBLE_POINTS and checks["halves"]["points"] == 0
    # Judged: the submission ran in a worker, so no one-process flag is raised.
    assert not any("one contained process" in f for f in right["flags"]), right["flags"]
