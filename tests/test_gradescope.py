"""``grader gradescope``: the bundle, unpacked into an /autograder-shaped folder and run there.

Gradescope's contract: the zip has setup.sh and run_autograder at its root and
is unpacked into /autograder/source; run_autograder grades /autograder/submission
and writes /autograder/results/results.json. Here AUTOGRADER_ROOT points the
script at a temporary folder and AUTOGRADER_PYTHON at this test's interpreter
(setup.sh, which downloads PyTorch, is only checked, not run).
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader.report import validate_gradescope
from harness.tasks import REPO_ROOT

#: The grader's machinery, tested on tasks 1 and 3: on a GPU node the processes started here see
#: no GPU, as in CI (tests/conftest.py says why).
pytestmark = pytest.mark.grader_without_gpu

SOLUTIONS = REPO_ROOT / "solutions"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    proc = subprocess.run([sys.executable, "-m", "grader", "gradescope", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "task1, task3" in proc.stdout
    return out


def unpack(bundle: Path, root: Path) -> Path:
    """What Gradescope does with the zip: /autograder/source, run_autograder copied beside it."""
    src = root / "source"
    with zipfile.ZipFile(bundle) as z:
        for info in z.infolist():
            z.extract(info, src)
            mode = info.external_attr >> 16
            if mode:
                os.chmod(src / info.filename, mode & 0o777)
    shutil.copy2(src / "run_autograder", root / "run_autograder")
    return root


def run_autograder(root: Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_KIT_")}
    env.update(AUTOGRADER_ROOT=str(root), AUTOGRADER_PYTHON=sys.executable)
    proc = subprocess.run([str(root / "run_autograder")], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)
    doc = json.loads((root / "results" / "results.json").read_text())
    assert validate_gradescope(doc) == [], validate_gradescope(doc)
    return proc, doc


def submit(root: Path, files: dict[str, Path], under: str = "") -> None:
    sub = root / "submission" / under
    for rel, src in files.items():
        (sub / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, sub / rel)


def test_bundle_layout(bundle):
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
        setup = z.read("setup.sh").decode()
    assert {"setup.sh", "run_autograder", "autograder.json"} <= names  # at the root, as Gradescope requires
    assert modes["run_autograder"] & stat.S_IXUSR and modes["setup.sh"] & stat.S_IXUSR
    assert {"grader/__main__.py", "harness/tasks.py", "task1/test.py", "task3/attention.py", "pyproject.toml"} <= names
    assert not any(n.startswith(("solutions/", "tests/", ".ci/", "scripts/", "bench/")) for n in names), \
        "the bundle must not carry the solutions or staff material"
    assert json.loads(zipfile.ZipFile(bundle).read("autograder.json"))["tasks"] == ["task1", "task3"]
    assert "pip install -e \"$SRC\"" in setup and "'torch>=" in setup
    assert subprocess.run(["bash", "-n", "-c", setup]).returncode == 0


def test_reference_submission_full_marks(bundle, tmp_path):
    root = unpack(bundle, tmp_path / "autograder")
    submit(root, {"task1/attention.py": SOLUTIONS / "task1/attention.py",
                  "task3/attention.py": SOLUTIONS / "task3/attention.py", "Results.md": REPO_ROOT / "Results.md"})
    proc, doc = run_autograder(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"kit: {root / 'source'}" in proc.stdout  # the bundle's own copy of the kit did the grading
    assert doc["score"] == 5
    assert all(t["status"] == "passed" for t in doc["tests"])


def test_folder_zipped_with_its_parent_and_a_missing_file(bundle, tmp_path):
    root = unpack(bundle, tmp_path / "autograder")
    submit(root, {"task1/attention.py": SOLUTIONS / "task1/attention.py"}, under="my-handout")
    proc, doc = run_autograder(root)
    assert proc.returncode == 0
    assert doc["score"] == 2
    assert "found in the folder 'my-handout'" in doc["output"]
    assert any("task3/attention.py is missing" in t["output"] for t in doc["tests"])


def test_empty_submission_still_gets_valid_results(bundle, tmp_path):
    root = unpack(bundle, tmp_path / "autograder")
    (root / "submission").mkdir()
    proc, doc = run_autograder(root)
    assert proc.returncode == 0 and doc["score"] == 0
