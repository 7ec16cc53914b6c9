"""The one manifest of the assignment: what each task is, which files a student
edits in it, and which CUDA extensions it builds.

Everything that needs to know the layout reads it from here: the build helper,
the implementation loader, the grader (staging, release, points and time limits)
and the project's own tests. Adding a task means adding one entry here, its
folder, and its section in grader/rubric.toml (how its points are split over
its checks; loading the rubric fails, naming the task, until that section exists
and adds up to the entry's points). pyproject.toml finds task folders by
pattern, and tests/test_manifest.py holds the README's task table to this list
and grades a toy task added this way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: The repository root: the folder that holds task1 ... task7 and harness/.
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Students report their numbers here; every task's submission includes it.
RESULTS_FILE = "Results.md"
#: The pytest marker of a timed test (harness/pytest_plugin.py declares it): the part of a task's
#: tests the grader runs alone on the machine, after every build and correctness test.
TIMED_MARK = "perf"


def timed_test_functions(module: Path) -> set[str]:
    """The test functions of a test module that ``@pytest.mark.perf`` decorates, read from its
    source (never imported: the grader asks this of the kit's pristine copy)."""
    import ast

    out = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            marks = (ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list)
            if f"pytest.mark.{TIMED_MARK}" in marks:
                out.add(node.name)
    return out

#: Seconds a task's tests may run in the grader (past it they are stopped as a hang) unless
#: its entry says otherwise; the CPU tasks take well under a minute of it.
DEFAULT_TEST_TIMEOUT_S = 1200.0


@dataclass(frozen=True)
class Extension:
    """A CUDA extension: its Python module name and the sources it is built from.

    ``sources`` are paths relative to the repository root. Whether a source is
    taken from the submission or from the pristine kit depends on whether it is
    listed as editable in its task (see :func:`editable_files`).
    """

    name: str
    task: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    name: str  # "task1"
    title: str
    #: Files (relative to the repository root) that the student writes.
    editable: tuple[str, ...]
    #: What the task is worth; grader/rubric.toml splits it over the task's checks and speedups.
    points: float
    #: Extensions this task's code imports (built by ``python -m taskN.compile``).
    extensions: tuple[str, ...] = ()
    #: True when nothing in the task can run without a CUDA GPU.
    needs_gpu: bool = False
    #: Test modules, relative to the repository root.
    tests: tuple[str, ...] = field(default=())
    #: True when the tests run as judge and worker (harness.remote): the submission's
    #: code never shares a process with the checks. Tasks not yet converted run their
    #: tests in one contained process, and the grader flags their scores for review.
    judged: bool = False
    #: Seconds the grader lets the task's tests run before it stops them (a hang).
    test_timeout_s: float = DEFAULT_TEST_TIMEOUT_S
    #: Files of the task's bonus part (relative to the repository root): a student may edit or
    #: add them, the grader takes them from a submission like ``editable`` ones, but a submission
    #: without them is not missing anything: the task keeps its score and only the bonus is 0.
    optional: tuple[str, ...] = ()
    #: Extensions of the bonus part, built from ``optional`` files by the task's compile script
    #: after its own; a bonus build that fails (or a bonus file that is absent) fails only the
    #: bonus tests, never the compile step (see :func:`harness.build.compile_main`).
    bonus_extensions: tuple[str, ...] = ()
    #: Seconds the bonus part's tests may run. The grader runs them after the task's own, in a
    #: judge and worker of their own: a bonus that hangs or crashes costs only the bonus.
    bonus_test_timeout_s: float = DEFAULT_TEST_TIMEOUT_S

    @property
    def number(self) -> int:
        return int(self.name.removeprefix("task"))


EXTENSIONS: dict[str, Extension] = {
    ext.name: ext
    for ext in (
        Extension("custom_self_attention", "task2", ("task2/attention_kernel.cu",)),
        Extension("custom_flash_attention", "task4", ("task4/attention_kernel.cu",)),
        # Task 4's bonus part: the tensor-core kernels (bf16 and 3xTF32), an optional file.
        Extension("custom_flash_attention_tc", "task4", ("task4/attention_kernel_tc.cu",)),
        Extension(
            "custom_flash_attention_decode", "task5", ("task5/attention_kernel.cu",)
        ),
        # Provided (students don't edit it): task 6's weight-streaming linear layers for decode.
        Extension("decode_linear", "task6", ("task6/decode_linear.cu",)),
    )
}

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "task1",
            "Multi-head attention in PyTorch",
            editable=("task1/attention.py",),
            points=2,
            tests=("task1/test.py",),
            judged=True,
        ),
        Task(
            "task2",
            "Attention from separate CUDA kernels (softmax, GEMMs)",
            editable=("task2/attention_kernel.cu",),
            points=3,
            extensions=("custom_self_attention",),
            needs_gpu=True,
            tests=("task2/test.py",),
            judged=True,
        ),
        Task(
            "task3",
            "FlashAttention-2 (Algorithm 1) in PyTorch",
            editable=("task3/attention.py",),
            points=3,
            tests=("task3/test.py",),
            judged=True,
        ),
        Task(
            "task4",
            "One fused FlashAttention CUDA kernel",
            editable=("task4/attention_kernel.cu",),
            points=4,
            extensions=("custom_flash_attention",),
            needs_gpu=True,
            tests=("task4/test.py",),
            judged=True,
            # Longer than the default: the shape grid, then four timed configurations up to S=4096
            # (the bonus part's two grids and eight timed configurations run apart, in their own limit).
            test_timeout_s=2400,
            optional=("task4/attention_kernel_tc.cu",),
            bonus_extensions=("custom_flash_attention_tc",),
        ),
        Task(
            "task5",
            "KV-cache update and decode kernels",
            editable=("task5/attention_kernel.cu",),
            points=4,
            extensions=("custom_flash_attention", "custom_flash_attention_decode"),
            needs_gpu=True,
            tests=("task5/test.py",),
            judged=True,
            # Longer than the default: prefill, then decode steps timed one by one.
            test_timeout_s=1800,
        ),
        Task(
            "task6",
            "An end-to-end model: prefill, then decode",
            editable=("task6/model.py",),
            points=3,
            extensions=("custom_flash_attention", "custom_flash_attention_decode", "decode_linear"),
            needs_gpu=True,
            tests=("task6/test.py",),
            judged=True,
            # Longer than the default: a whole model, prefill then decode, timed against its PyTorch path.
            test_timeout_s=2400,
        ),
        Task(
            "task7",
            "GPT-2 generating text with your kernels",
            editable=(),
            points=1,
            extensions=("custom_flash_attention", "custom_flash_attention_decode"),
            needs_gpu=True,
            tests=("task7/test.py",),
            judged=True,
        ),
    )
}


def editable_files() -> set[str]:
    """Every path a student may edit, across all tasks (plus Results.md), the bonus parts'
    optional files included."""
    files = {RESULTS_FILE}
    for task in TASKS.values():
        files.update(task.editable)
        files.update(task.optional)
    return files


def task_names(existing_only: bool = True) -> list[str]:
    """Task names in order; with ``existing_only``, only those whose tests exist."""
    names = sorted(TASKS, key=lambda n: TASKS[n].number)
    if existing_only:
        names = [n for n in names if all((REPO_ROOT / t).exists() for t in TASKS[n].tests)]
    return names
