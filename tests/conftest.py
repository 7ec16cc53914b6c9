"""Shared by the kit's own tests (the students' task tests have harness/pytest_plugin.py)."""
import pytest

#: Marks a test that grades tasks 1 and 3 to prove the grader's own machinery (containment,
#: verdicts, reports, mutants): their checks are the same with or without a GPU.
GRADER_WITHOUT_GPU = "grader_without_gpu"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{GRADER_WITHOUT_GPU}: the processes this test starts (the grader's judge and worker, a "
                   "student's test run) see no GPU, so that it costs on a GPU node what it costs in CI; "
                   "it is also a proof (pytest -m proof)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that grades submissions to prove the grader's machinery is a slow end-to-end proof
    (harness/pytest_plugin.py's marker, which runs after this hook): the 40-odd gradings of the
    adversarial, mutant and grader tests then run with ``pytest -m proof`` (CI runs both commands),
    and the README's ``pytest`` on a GPU node checks the kit's own code and the tasks' tests."""
    for item in items:
        if item.get_closest_marker(GRADER_WITHOUT_GPU):
            item.add_marker(pytest.mark.proof)


@pytest.fixture(autouse=True)
def _hide_the_gpu_from_child_processes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """On a GPU node a grading of tasks 1 and 3 also runs their CUDA cases and starts CUDA in both
    the judge and the worker: 25-54 s a grading on an H200 against about 8 s in CI (2026-12-02),
    and tests/test_adversarial.py alone grades 22 times. Tests of the grader's machinery hide the
    GPU from the processes they start (this process keeps it); the GPU path of a grading keeps
    its own tests (test_grader.py's test_reference_solution_gets_full_marks, the proofs)."""
    if request.node.get_closest_marker(GRADER_WITHOUT_GPU):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
