"""``grader run``: stage, build, test and score each task, then report.

Every task goes through the stages in its own folder and processes, so one
task's crash, hang or build failure costs that task only. When the kit's
reference solutions are present, a performance task's timed tests also time the
reference, beside the submission in a worker of its own (harness.yardstick), so
speedups are scored relative to what the reference reaches on this GPU, seconds apart.
"""
from __future__ import annotations

import os
import secrets
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.containment import UNCONTAINED
from harness.containment import available as containment_available
from harness.proctree import kill_owned, set_subreaper
from harness.remote import CALL_TIMEOUT_ENV, CONTAIN_ENV, WORKER_BUILD_ENV, YARDSTICK_DIR_ENV, YARDSTICK_IMPL_ENV
from harness.spawn import MEMORY_ENV, WORKER_PREBUILT_ENV
from harness.build import ARCH_ENV, target_archs
from harness.impl import IMPL_ENV
from harness.tasks import REPO_ROOT, RESULTS_FILE, TASKS, TIMED_MARK, timed_test_functions

from . import report as report_mod
from .builder import build_task
from .source_scan import scan_file
from .results_check import check_results_md
from .rubric import Rubric
from .runner import ONE_PROCESS_FLAG, TestRun, joined, run_tests
from .scoring import cases_of, geometric_mean, measured_speedups, score_task
from .stage import Unreadable, kit_hashes, read_submission_file, stage_task

#: The containment this machine gives the worker (harness.containment), for every report.
CONTAINMENT = containment_available()


def expected_containment() -> str:
    """What the workers of this run should report: none when staff turned it off."""
    return UNCONTAINED if os.environ.get(CONTAIN_ENV) == "none" else CONTAINMENT

SOLUTIONS = REPO_ROOT / "solutions"


class Progress:
    """One line per stage, with the elapsed time, so a long GPU run shows where it is."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.start = time.perf_counter()

    def __call__(self, task: str, text: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.start:7.1f}s] {task}: {text}", file=sys.stderr, flush=True)


def child_env(seed: int, build_cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_KIT_")}
    env.update(
        ATTN_KIT_SEED=str(seed),
        # A build cache named by the caller (say, one per node) is shared: builds are
        # keyed by the sources' contents, so sharing is safe.
        ATTN_KIT_BUILD_DIR=os.environ.get("ATTN_KIT_BUILD_DIR", str(build_cache)),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
    )
    for key in (ARCH_ENV, CONTAIN_ENV):  # staff may pin these for the whole run
        if key in os.environ:
            env[key] = os.environ[key]
    if ARCH_ENV not in env and _gpu_available():
        # The GPU this process sees, for every build of the run: a contained process may not see
        # it, and would build for the fallback list, where the cache holds this one's builds.
        env[ARCH_ENV] = target_archs()
    # PYTHONPATH is kept (site packages may live there); the staged folder still comes
    # first, because `python -m pytest` puts the working directory at the front.
    return env


def _can_compile_cuda() -> bool:
    import shutil

    import torch

    return torch.version.cuda is not None and (
        shutil.which("nvcc") is not None or Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc").exists()
    )


def _gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def has_timed_tests(task: str) -> bool:
    """Whether the kit's tests of ``task`` (the grader's pristine copy) have a timed test."""
    return any(timed_test_functions(REPO_ROOT / module) for module in TASKS[task].tests)


@dataclass(frozen=True)
class Part:
    """One test run of a task's kind of tests (correctness or timed): the task's own, or its bonus's."""

    which: str  # "task" or "bonus"
    only: tuple[str, ...]  # just these test functions (empty: all)
    exclude: tuple[str, ...]  # never these (the task's run leaves the bonus's out)
    timeout_s: float
    name: str  # the part's name in log and report file names ("", "checks", "bonus-timed", ...)
    whose: str  # how progress lines name it ("" or "the bonus part's ")


class TaskGrading:
    """One task of one submission on its way through the stages, each a method:

    ``prepare`` (stage, source scan, build), ``check`` (the correctness tests), ``time`` (the timed
    tests) and ``finish`` (score). :func:`grade_task` runs them in a row; :func:`run_grading` builds
    and checks every task at once and then times them one at a time. A stage that ends the task
    (missing files, a failed build, no GPU, a grader bug) sets ``done``; the later ones then do
    nothing, and ``finish`` returns the result as it stands. No method raises.
    """

    def __init__(self, task: str, submission: Path, out: Path, rubric: Rubric, seed: int, progress: Progress,
                 label: str = "", self_reference: bool = False, only: tuple[str, ...] = (),
                 yardstick: bool = False):
        self.task, self.submission, self.rubric, self.progress = task, submission, rubric, progress
        self.tr = rubric.tasks[task]
        self.name = f"{label}{task}"
        self.only, self.yardstick, self.self_reference = only, yardstick, self_reference
        # A submission's builds stay in its own scratch; the kit's own solutions share the cache.
        self.trusted = self_reference or label == "reference/"
        self.result: dict = dict(task=task, title=TASKS[task].title, max_points=self.tr.points, points=0.0,
                                 status="error", reason="", flags=[], stage_seconds={}, checks=[], speedups=[])
        folder = label.strip("/") or "submission"
        self.work, self.logs = out / "work" / folder, out / "logs" / folder
        self.env = child_env(seed, out / "build-cache")
        self.stage = None
        self.scan_flags: list[str] = []  # the source scan's flags: weak evidence, for review
        self.kit_before: dict | None = None
        # The test runs, by part: (task or bonus, correctness or timed) -> TestRun.
        self.runs: dict[tuple[str, str], TestRun] = {}
        self.done = False
        self.finished = False
        self.timed = has_timed_tests(task)

    # ------------------------------------------------------------ the stages
    def prepare(self) -> None:
        """Stage the submission's files, scan them, build the task's extensions."""
        self._guarded(self._prepare)

    def check(self) -> None:
        """The task's correctness tests (all of them, for a task with no timed test)."""
        self._guarded(self._check)

    def time(self) -> None:
        """The timed tests, with the yardstick where asked for: run while nothing else runs."""
        self._guarded(self._time)

    def finish(self, references: dict[str, float] | None = None) -> dict:
        """Score what ran (once); the result, whatever happened before."""
        if not self.finished:
            self.finished = True
            self._guarded(lambda: self._finish(references))
        return self.result

    # ------------------------------------------------------------ how
    def _guarded(self, step) -> None:
        if self.done:
            return
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - a grader bug must cost this task only, visibly
            self._end("error", f"the grader failed on this task: {exc!r}")
            self.result["grader_traceback"] = traceback.format_exc()

    def _end(self, status: str, reason: str, say: str = "") -> None:
        self.result.update(status=status, reason=reason)
        self.progress(self.name, say + reason)
        self.done = True

    def _prepare(self) -> None:
        task, result = self.task, self.result
        t0 = time.perf_counter()
        self.progress(self.name, "staging")
        stage = self.stage = stage_task(task, self.submission, self.work)
        result["stage_seconds"]["stage"] = round(time.perf_counter() - t0, 2)
        result["missing"], result["rejected"] = stage.missing, stage.rejected
        if stage.mapped:  # the original assignment's layout: graded the same, and said so
            result["notes"] = [f"the original assignment's layout was mapped: {src} graded as {dst}"
                               for dst, src in sorted(stage.mapped.items()) if dst in TASKS[task].editable]
        for rel in (*TASKS[task].editable, *TASKS[task].optional):  # the bonus part's files too
            if (stage.submission / rel).exists() and rel not in stage.missing:
                self.scan_flags += scan_file(stage.submission / rel, rel)
        result["flags"] += self.scan_flags
        if stage.missing or any(r in TASKS[task].editable for r in stage.rejected):
            problems = [f"{m} is missing" for m in stage.missing]
            problems += [f"{r} was not taken: {why}" for r, why in stage.rejected.items() if r in TASKS[task].editable]
            return self._end("missing files", "; ".join(problems))
        # A submission's builds stay in its own scratch, so no build can plant a module
        # for anyone else; the kit's own solutions share the cache (built once per node). The
        # scratch is the submission's, not the task's: tasks 4 to 7 all build the same task-4
        # kernel (and 5 to 7 the decode kernel), and the content-addressed folders with their
        # locks let the first build serve the others (5 compiles for the seven tasks, not 11).
        self.env[WORKER_BUILD_ENV] = self.env["ATTN_KIT_BUILD_DIR"] if self.trusted else str(self.work / "build")
        if TASKS[task].extensions:
            if not _can_compile_cuda():
                return self._end("skipped", "cannot compile CUDA here (no nvcc or a CPU-only PyTorch)", "skipped: ")
            self.progress(self.name, "building " + ", ".join(TASKS[task].extensions))
            built = build_task(stage, env=self.env, timeout_s=self.rubric.build_timeout_s, logs=self.logs)
            result["stage_seconds"]["build"] = round(built.proc.seconds, 2)
            result["build"] = dict(ok=built.ok, reason=built.reason, seconds=round(built.proc.seconds, 2),
                                   log_tail=built.proc.output_tail, log=built.proc.log_path)
            if not built.ok:
                return self._end("build failed", built.reason)
        # From here on the task's processes only import what was built: the build folder, which the
        # submission's tasks share, is read-only to them (harness.spawn.worker_env), also to the
        # workers of a task with nothing to build (task 1's code could otherwise plant task 4's module).
        self.env[WORKER_PREBUILT_ENV] = "1"
        if TASKS[task].needs_gpu and not _gpu_available():
            compiled = " (its CUDA code compiles)" if TASKS[task].extensions else ""
            return self._end("skipped", f"needs a CUDA GPU; none is visible on this machine{compiled}", "skipped: ")
        self.env[CALL_TIMEOUT_ENV] = str(self.rubric.call_timeout_s)
        if self.rubric.worker_memory_gb:
            self.env[MEMORY_ENV] = str(int(self.rubric.worker_memory_gb * 2**30))
        self.kit_before = kit_hashes(stage.folder)

    def _check(self) -> None:
        what = "correctness tests" if self.timed else "tests"
        self._run_parts("checks", f"not {TIMED_MARK}" if self.timed else "", what)

    def _time(self) -> None:
        if not self.timed:
            return
        if self.yardstick:  # the kit's reference solution, timed beside it in a worker of its own
            self.env[YARDSTICK_IMPL_ENV] = str(SOLUTIONS)
            self.env[YARDSTICK_DIR_ENV] = str(self.stage.worker.parent / "yardstick")
        self._run_parts("timed", TIMED_MARK, "timed tests, alone on the GPU")

    def _run_parts(self, kind: str, marker: str, what: str) -> None:
        """One kind of test (``marker``): the task's own and its bonus part's, each in a judge and
        worker of its own and with its own limit: a bonus that hangs or crashes costs the bonus only."""
        tr = self.tr
        apart = tuple(sorted(tr.bonus_tests)) if tr.bonus and not self.only else ()
        suffix = "" if kind == "checks" and not self.timed else kind
        parts = [Part("task", self.only, apart, tr.test_timeout_s, suffix, "")]
        if apart:
            parts.append(Part("bonus", apart, (), tr.bonus_test_timeout_s,
                                  "-".join(p for p in ("bonus", suffix) if p), "the bonus part's "))

        def run_part(part: Part) -> None:
            checks = self.runs.get((part.which, "checks"))
            if kind == "timed" and checks is not None and checks.proc.timed_out:  # it hung: so would these
                self.result["flags"].append(f"{self.task}: {part.whose}timed tests were not run: its correctness "
                                            "tests hung")
                return
            self.progress(self.name, f"{part.whose}{what} (up to {part.timeout_s:.0f} s; the submission runs in a "
                          f"worker: {expected_containment()})")
            run = self.runs[part.which, kind] = run_tests(
                self.stage, env=self.env, timeout_s=part.timeout_s, logs=self.logs, only=part.only,
                exclude=part.exclude, part=part.name, marker=marker)
            outcomes = [c.outcome for c in cases_of(run)]
            self.progress(self.name, f"{part.whose}{what.split(',')[0]}: {run.proc.seconds:.0f} s, "
                          + ", ".join(f"{outcomes.count(o)} {o}" for o in ("passed", "failed", "skipped")
                                      if o in outcomes) + (f"; {run.problem}" if run.problem else ""))

        # One part after another: the task's and the bonus's workers share the task's scratch folder
        # (a root worker's user switch hands that folder over), so two at once would race for it.
        for part in parts:
            run_part(part)

    def _joined(self, which: str) -> TestRun | None:
        kinds = [k for k in ("checks", "timed") if (which, k) in self.runs]
        if not kinds:
            return None
        names = {"checks": "the correctness tests", "timed": "the timed tests"}
        return joined([self.runs[which, k] for k in kinds], [names[k] for k in kinds])

    def _finish(self, references: dict[str, float] | None) -> None:
        task, tr, result = self.task, self.tr, self.result
        run = self._joined("task")
        if run is None:
            return
        run.bonus = self._joined("bonus")
        after = kit_hashes(self.stage.folder)
        before = self.kit_before or {}
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        # What the workers said of themselves wins over what this process expected (a worker
        # that could not import landlockpy runs uncontained, and says so): the least contained part.
        said = [str((((r.report or {}).get("attn_kit") or {}).get("worker") or {}).get("containment") or "")
                for r in self.runs.values()]
        result["containment"] = next((c for c in said if UNCONTAINED in c), None) or next(
            (c for c in said if c), expected_containment())
        if UNCONTAINED in result["containment"]:
            result["flags"].append(f"{task} ran uncontained: its code could reach the kit and the results; review")
        if not TASKS[task].judged:
            result["flags"].append(ONE_PROCESS_FLAG.format(task=task))
        # Where the task's test time went, each part once (they add up): its checks, its timed tests.
        for kind, key in (("checks", "tests"), ("timed", "timed tests")):
            if ("task", kind) in self.runs:
                result["stage_seconds"][key] = round(self.runs["task", kind].proc.seconds, 2)
        result["tests"] = dict(seconds=round(run.proc.seconds, 2), problem=run.problem,
                               returncode=run.proc.returncode, output_tail=run.proc.output_tail,
                               log=run.proc.log_path, duration_by_test=_durations(run))
        if run.bonus:
            result["stage_seconds"]["bonus tests"] = round(run.bonus.proc.seconds, 2)
            result["bonus_tests"] = dict(seconds=round(run.bonus.proc.seconds, 2), problem=run.bonus.problem,
                                         returncode=run.bonus.proc.returncode, log=run.bonus.proc.log_path)
        result["_run"] = run
        t1 = time.perf_counter()
        cases = cases_of(run)
        if self.self_reference:  # grading the reference itself: its own speedups are the yardstick
            references = speedups_by_name(tr, cases)
            result["reference_speedups"] = references
        score = score_task(self.rubric, tr, run, references)
        if self.yardstick:  # the reference's speedups as measured beside this submission (what it was scored against)
            result["reference_speedups"] = {s.name: s.reference for s in score.speedups if s.reference}
            # What timing the reference beside it cost (harness.yardstick: its set-up and blocks).
            result["reference_seconds"] = round(sum(
                float(m.get("reference_seconds") or 0.0) for c in cases for m in c.measurements.values()
                if isinstance(m, dict)), 2)
        if changed:  # the worker may only read the judge's kit: any change voids the task
            score.points, score.status = 0.0, "tampered"
            score.reason = f"the submission modified the kit ({', '.join(changed[:5])}); this task scores nothing"
        result["stage_seconds"]["score"] = round(time.perf_counter() - t1, 3)
        result.update(points=score.points, status=score.status, reason=score.reason,
                      checks=[asdict(c) for c in score.checks], speedups=[asdict(s) for s in score.speedups])
        result["flags"] += score.flags
        if score.bonus:  # the task's bonus parts: extra points, kept apart from its points
            result.update(bonus=[asdict(b) for b in score.bonus], bonus_max_points=score.bonus_max_points,
                          bonus_points=0.0 if changed else score.bonus_points)
            if changed:
                _zero_bonus_parts(result, keep=False)
            if "reference_speedups" in result:  # what the bonus speedups were scored against, too
                result["reference_speedups"].update(
                    {s.name: s.reference for b in score.bonus for s in b.speedups if s.reference})
            self.progress(self.name, f"bonus {result['bonus_points']:g}/{score.bonus_max_points:g} (outside the "
                          "task's points: " + "; ".join(f"{b.name} {b.points:g}/{b.max_points:g}: {b.reason}"
                                                        for b in score.bonus)[:300] + ")")
        if self.scan_flags and not self.rubric.pay_flagged_before_review and not self.trusted and (
                result["points"] > 0 or result.get("bonus_points")):
            hold_for_review(result, self.scan_flags)
        self.progress(self.name, f"{result['points']:g}/{tr.points:g} ({result['status']}: {result['reason']})")


def grade_task(task: str, submission: Path, out: Path, rubric: Rubric, seed: int, progress: Progress,
               references: dict[str, float] | None = None, label: str = "",
               self_reference: bool = False, only: tuple[str, ...] = (), yardstick: bool = False) -> dict:
    """Stage, build, test and score one task; always returns a result (never raises). ``only``
    runs just those test functions; ``yardstick``: the timed tests also time the kit's reference
    solution beside the submission, in a worker of its own (harness.yardstick)."""
    grading = TaskGrading(task, submission, out, rubric, seed, progress, label=label,
                          self_reference=self_reference, only=only, yardstick=yardstick)
    grading.prepare()
    grading.check()
    grading.time()
    return grading.finish(references)


def hold_for_review(result: dict, flags: list[str]) -> None:
    """The rubric's ``pay_flagged_before_review = false``: a task the source scan flagged scores 0
    until a person has reviewed it. What it earned stays in the result (``held_points``, on the task
    and on each check and speedup), so review can release it without grading again."""
    held = result["points"]
    for part in (*result["checks"], *result["speedups"]):
        part["held_points"], part["points"] = part["points"], 0.0
    for speedup in result["speedups"]:  # on a leaderboard only as "flagged for review", as an implausible one
        speedup["flagged"] = True
    result.update(points=0.0, held_points=held, status="held for review", earned_reason=result["reason"],
                  reason=f"held for review: {'; '.join(flags)} ({held:g} of {result['max_points']:g} points "
                         "earned, paid after review; rubric: pay_flagged_before_review = false)")
    result["flags"].append(f"{held:g} of {result['max_points']:g} points held until the flagged code is reviewed "
                           "(rubric: pay_flagged_before_review = false)")
    if result.get("bonus_points"):  # a bonus part's points too, kept apart as they are paid
        result["held_bonus_points"], result["bonus_points"] = result["bonus_points"], 0.0
        result["flags"].append(f"{result['held_bonus_points']:g} bonus point(s) held with them")
    _zero_bonus_parts(result, keep=True)


def _zero_bonus_parts(result: dict, keep: bool) -> None:
    """Every bonus part, check and speedup of ``result`` at 0 points (``keep``: what it earned kept
    as ``held_points``), its speedups off the leaderboards: what results.json, the gradebook and the
    leaderboards show follows the task's hold or voiding, not only the bonus total."""
    for part in result.get("bonus") or []:
        for item in (part, *part.get("checks", []), *part.get("speedups", [])):
            if keep:
                item["held_points"] = item.get("points", 0.0)
            item["points"] = 0.0
        for speedup in part.get("speedups", []):
            speedup["flagged"], speedup["ranked"] = True, False


def _durations(run: TestRun) -> dict[str, float]:
    """Seconds per test function, summed over its cases (where the time of a task goes)."""
    out: dict[str, float] = {}
    for test in run.tests:
        fn = test.get("nodeid", "").split("::")[-1].split("[")[0]
        secs = sum((test.get(s) or {}).get("duration", 0.0) for s in ("setup", "call", "teardown"))
        out[fn] = round(out.get(fn, 0.0) + secs, 3)
    return out


def speedups_by_name(tr, cases) -> dict[str, float]:
    """The geometric-mean speedup of each of a task's rubric speedups, where measured."""
    values = {}
    for s in tr.all_speedups:  # the bonus parts' too
        configs, _ = measured_speedups(s, cases)
        if configs:
            values[s.name] = geometric_mean(list(configs.values()))
    return values


def run_grading(submission: Path, tasks: list[str], out: Path, rubric: Rubric, *, quiet: bool = False,
                use_reference: bool = True, seed: int | None = None) -> dict:
    """Grade ``tasks`` of ``submission`` into ``out``; the returned results are also written there.

    With the rubric's ``overlap_stages`` (the default), every task's build starts at once, with the
    reference solution's builds for the yardstick, and each task's correctness tests run as soon as
    its build is done; the timed tests then run one task at a time, in task order, while nothing
    else runs on the machine (no compile, no other test). Without it, one task after another.
    """
    started = time.time()
    seed = seed if seed is not None else secrets.randbelow(2**63)
    progress = Progress(quiet)
    results: dict = dict(submission=str(submission), out=str(out), seed=seed, tasks={}, flags=[],
                         started=started, rubric=str(rubric.source), gpu=_gpu_name())
    results["containment"] = expected_containment()
    out.mkdir(parents=True, exist_ok=True)
    set_subreaper()  # whatever a worker leaves behind becomes ours, and is ended after each task
    gradings: list[TaskGrading] = []
    try:
        # Grading the reference solution itself: its own speedups are the reference,
        # so it is not timed twice.
        is_reference = SOLUTIONS.is_dir() and submission.resolve() == SOLUTIONS.resolve()
        for task in tasks:
            # A student's timed tests time the reference beside it (harness.yardstick): its
            # correctness grid is never re-run, and its speed is measured seconds apart.
            beside = use_reference and not is_reference and bool(rubric.tasks[task].speedups) and SOLUTIONS.is_dir()
            grading = TaskGrading(task, submission, out, rubric, seed, progress,
                                  self_reference=use_reference and is_reference, yardstick=beside)
            gradings.append(grading)
            results["tasks"][task] = grading.result  # filled in place: an interrupted run keeps what it has
        reference_tasks = [g.task for g in gradings if g.yardstick]
        if rubric.overlap_stages:
            _build_and_check_at_once(gradings, reference_tasks, out, seed, rubric, progress, results)
        elif reference_tasks:
            results["reference_build"] = build_reference(reference_tasks, out, seed, rubric, progress)
        for grading in gradings:  # one task at a time: its timed tests run alone
            if not rubric.overlap_stages:
                grading.prepare()
                grading.check()
            grading.time()
            grading.finish()
            grading.result.setdefault("reference_speedups", {})
        spent = [r["reference_seconds"] for r in results["tasks"].values() if "reference_seconds" in r]
        if spent:  # the yardstick's cost, for staff who pay for grading in GPU-hours
            results["reference_seconds"] = round(sum(spent), 2)
            progress("reference", f"timing the reference beside the submission took {sum(spent):.1f} s "
                     f"of the {time.time() - started:.0f} s so far")
        cases = {t: cases_of(r["_run"]) for t, r in results["tasks"].items() if r.get("_run")}
        try:
            results_text = read_submission_file(submission, RESULTS_FILE).decode(errors="replace")
        except FileNotFoundError:
            results_text = ""
        except (Unreadable, OSError) as exc:  # a FIFO, a folder, a link: reported, costs no task anything
            results_text = ""
            results["flags"].append(f"Results.md was not read: {exc}")
        flags, table = check_results_md(results_text, cases, rubric.results_mismatch_factor)
        results["flags"] += flags
        results["results_md"] = table
    except BaseException as exc:  # noqa: BLE001 - nothing lost: write what we have, then re-raise
        results["grader_error"] = "".join(traceback.format_exception(exc))
        if not isinstance(exc, Exception):
            results["grader_error"] = f"interrupted ({type(exc).__name__})\n" + results["grader_error"]
        for grading in gradings:
            if not grading.result["reason"]:  # never finished: say so rather than show an empty error
                grading.result["reason"] = "the grading run stopped before this task was scored"
        raise
    finally:
        results["execution_time"] = round(time.time() - started, 1)
        for r in results["tasks"].values():
            r.pop("_run", None)
        report_mod.write_all(results, rubric, out)
    return results


def _build_and_check_at_once(gradings: list[TaskGrading], reference_tasks: list[str], out: Path, seed: int,
                             rubric: Rubric, progress: Progress, results: dict) -> None:
    """Every task's build, and the yardstick's reference builds, at once; each task's correctness
    tests as soon as its own build is done (they may share the GPU: nothing is timed meanwhile).
    Returns when all of them have ended."""
    from concurrent.futures import ThreadPoolExecutor

    def build_and_check(grading: TaskGrading) -> None:
        grading.prepare()
        grading.check()
        if not grading.timed:  # nothing left to run: its score now, not after the others' timed tests
            grading.finish()

    pool = ThreadPoolExecutor(max_workers=len(gradings) + 1, thread_name_prefix="grade")
    try:
        futures = [pool.submit(build_and_check, g) for g in gradings]
        reference = pool.submit(build_reference, reference_tasks, out, seed, rubric, progress) if reference_tasks \
            else None
        for future in futures:
            future.result()  # TaskGrading's stages never raise; a grader bug in the pool still shows here
        if reference is not None:
            results["reference_build"] = reference.result()
    except BaseException:
        # Interrupted (Ctrl-C, a Slurm time limit): queued stages are dropped and running ones end
        # now, with their processes (each in a session of its own, so the signal did not reach them).
        pool.shutdown(wait=False, cancel_futures=True)
        kill_owned()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def build_reference(tasks: list[str], out: Path, seed: int, rubric: Rubric, progress: Progress) -> dict:
    """Build the kit's reference extensions that the yardstick of ``tasks`` loads, into the node's
    shared build cache (one process per extension, harness.build.prebuild_in_parallel), so the
    timed tests find them built: a cold cache then costs the build stage, not the timed tests'
    time limit. Cached builds load in seconds. A failure costs no task anything: the yardstick
    then says it could not be set up, and the speedups are held for review (grader.scoring)."""
    from .proc import run_process

    names = sorted({name for t in tasks for name in (*TASKS[t].extensions, *TASKS[t].bonus_extensions)})
    summary: dict = dict(extensions=names, ok=False, seconds=0.0)
    if not names or not (_can_compile_cuda() and _gpu_available()):
        summary["reason"] = "not built: no extension to build, or no CUDA compiler or GPU here"
        return summary
    env = {**child_env(seed, out / "build-cache"), IMPL_ENV: str(SOLUTIONS)}
    env.pop("ATTN_KIT_SEED", None)  # a build needs no seed
    progress("reference", "building " + ", ".join(names) + " for the yardstick (the node's shared cache)")
    # Exits with the number of extensions that failed to build (each named in the log).
    code = ("import sys; from harness.build import prebuild_in_parallel; "
            "sys.exit(len(prebuild_in_parallel(sys.argv[1:])))")
    proc = run_process([sys.executable, "-c", code, *names], cwd=REPO_ROOT, env=env,
                       timeout_s=rubric.build_timeout_s, log_path=out / "logs" / "reference-build.log")
    ok = proc.returncode == 0
    summary.update(ok=ok, seconds=round(proc.seconds, 2), log=proc.log_path)
    if not ok:
        why = "timed out" if proc.timed_out else f"exit code {proc.returncode}"
        summary["reason"] = f"failed ({why}): the yardstick will build in the timed tests, or fail there and say so"
        progress("reference", f"its builds failed (see {proc.log_path})")
    else:
        progress("reference", f"built in {proc.seconds:.1f} s")
    return summary


def _gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU only)"
    except Exception:  # noqa: BLE001
        return "unknown"
