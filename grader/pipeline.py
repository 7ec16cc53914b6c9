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
from dataclasses import asdict
from pathlib import Path

from harness.containment import UNCONTAINED
from harness.containment import available as containment_available
from harness.proctree import set_subreaper
from harness.remote import CALL_TIMEOUT_ENV, CONTAIN_ENV, WORKER_BUILD_ENV, YARDSTICK_DIR_ENV, YARDSTICK_IMPL_ENV
from harness.spawn import MEMORY_ENV
from harness.tasks import REPO_ROOT, RESULTS_FILE, TASKS

from . import report as report_mod
from .builder import build_task
from .source_scan import scan_file
from .results_check import check_results_md
from .rubric import Rubric
from .runner import ONE_PROCESS_FLAG, TestRun, run_tests
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
    for key in ("ATTN_KIT_CUDA_ARCH", CONTAIN_ENV):  # staff may pin these for the whole run
        if key in os.environ:
            env[key] = os.environ[key]
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


def grade_task(task: str, submission: Path, out: Path, rubric: Rubric, seed: int, progress: Progress,
               references: dict[str, float] | None = None, label: str = "",
               self_reference: bool = False, only: tuple[str, ...] = (), yardstick: bool = False) -> dict:
    """Stage, build, test and score one task; always returns a result (never raises). ``only``
    runs just those test functions; ``yardstick``: the timed tests also time the kit's reference
    solution beside the submission, in a worker of its own (harness.yardstick)."""
    tr = rubric.tasks[task]
    name = f"{label}{task}"
    result: dict = dict(task=task, title=TASKS[task].title, max_points=tr.points, points=0.0,
                        status="error", reason="", flags=[], stage_seconds={}, checks=[], speedups=[])
    work, logs = out / "work" / (label.strip("/") or "submission"), out / "logs" / (label.strip("/") or "submission")
    env = child_env(seed, out / "build-cache")
    try:
        t0 = time.perf_counter()
        progress(name, "staging")
        stage = stage_task(task, submission, work)
        result["stage_seconds"]["stage"] = round(time.perf_counter() - t0, 2)
        result["missing"], result["rejected"] = stage.missing, stage.rejected
        if stage.mapped:  # the original assignment's layout: graded the same, and said so
            result["notes"] = [f"the original assignment's layout was mapped: {src} graded as {dst}"
                               for dst, src in sorted(stage.mapped.items()) if dst in TASKS[task].editable]
        scan_flags: list[str] = []  # the source scan's flags: weak evidence, for review
        for rel in (*TASKS[task].editable, *TASKS[task].optional):  # the bonus part's files too
            if (stage.submission / rel).exists() and rel not in stage.missing:
                scan_flags += scan_file(stage.submission / rel, rel)
        result["flags"] += scan_flags
        if stage.missing or any(r in TASKS[task].editable for r in stage.rejected):
            problems = [f"{m} is missing" for m in stage.missing]
            problems += [f"{r} was not taken: {why}" for r, why in stage.rejected.items() if r in TASKS[task].editable]
            result.update(status="missing files", reason="; ".join(problems))
            progress(name, result["reason"])
            return result
        # A submission's builds stay in its own scratch, so no build can plant a module
        # for anyone else; the kit's own solutions share the cache (built once per node).
        trusted = self_reference or label == "reference/"
        env[WORKER_BUILD_ENV] = env["ATTN_KIT_BUILD_DIR"] if trusted else str(stage.worker / "build")
        if TASKS[task].extensions:
            if not _can_compile_cuda():
                result.update(status="skipped", reason="cannot compile CUDA here (no nvcc or a CPU-only PyTorch)")
                progress(name, "skipped: " + result["reason"])
                return result
            progress(name, "building " + ", ".join(TASKS[task].extensions))
            built = build_task(stage, env=env, timeout_s=rubric.build_timeout_s, logs=logs)
            result["stage_seconds"]["build"] = round(built.proc.seconds, 2)
            result["build"] = dict(ok=built.ok, reason=built.reason, seconds=round(built.proc.seconds, 2),
                                   log_tail=built.proc.output_tail, log=built.proc.log_path)
            if not built.ok:
                result.update(status="build failed", reason=built.reason)
                progress(name, result["reason"])
                return result
        if TASKS[task].needs_gpu and not _gpu_available():
            compiled = " (its CUDA code compiles)" if TASKS[task].extensions else ""
            result.update(status="skipped", reason=f"needs a CUDA GPU; none is visible on this machine{compiled}")
            progress(name, "skipped: " + result["reason"])
            return result
        progress(name, f"testing (up to {tr.test_timeout_s:.0f} s; the submission runs in a worker: {expected_containment()})")
        before = kit_hashes(stage.folder)
        env[CALL_TIMEOUT_ENV] = str(rubric.call_timeout_s)
        if yardstick:
            env[YARDSTICK_IMPL_ENV], env[YARDSTICK_DIR_ENV] = str(SOLUTIONS), str(stage.worker.parent / "yardstick")
        if rubric.worker_memory_gb:
            env[MEMORY_ENV] = str(int(rubric.worker_memory_gb * 2**30))
        # A bonus part's tests run after the task's own, in a judge and worker of their own and
        # with their own limit: a bonus that hangs or crashes costs the bonus, not the task.
        apart = tuple(sorted(tr.bonus_tests)) if tr.bonus and not only else ()
        run = run_tests(stage, env=env, timeout_s=tr.test_timeout_s, logs=logs, only=only, exclude=apart)
        if apart:
            progress(name, f"testing the bonus part (up to {tr.bonus_test_timeout_s:.0f} s, in a worker of its own)")
            run.bonus = run_tests(stage, env=env, timeout_s=tr.bonus_test_timeout_s, logs=logs, only=apart,
                                  part="bonus")
        after = kit_hashes(stage.folder)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        worker = ((run.report or {}).get("attn_kit") or {}).get("worker") or {}
        # What the worker said of itself wins over what this process expected (a worker
        # that could not import landlockpy runs uncontained, and says so).
        result["containment"] = str(worker.get("containment") or expected_containment())
        if UNCONTAINED in result["containment"]:
            result["flags"].append(f"{task} ran uncontained: its code could reach the kit and the results; review")
        if not TASKS[task].judged:
            result["flags"].append(ONE_PROCESS_FLAG.format(task=task))
        result["stage_seconds"]["tests"] = round(run.proc.seconds, 2)
        result["tests"] = dict(seconds=round(run.proc.seconds, 2), problem=run.problem,
                               returncode=run.proc.returncode, output_tail=run.proc.output_tail,
                               log=run.proc.log_path, duration_by_test=_durations(run))
        if run.bonus:
            result["stage_seconds"]["bonus tests"] = round(run.bonus.proc.seconds, 2)
            result["bonus_tests"] = dict(seconds=round(run.bonus.proc.seconds, 2), problem=run.bonus.problem,
                                         returncode=run.bonus.proc.returncode, log=run.bonus.proc.log_path)
        result["_run"] = run
        t1 = time.perf_counter()
        if self_reference:  # grading the reference itself: its own speedups are the yardstick
            references = speedups_by_name(tr, cases_of(run))
            result["reference_speedups"] = references
        score = score_task(rubric, tr, run, references)
        if yardstick:  # the reference's speedups as measured beside this submission (what it was scored against)
            result["reference_speedups"] = {s.name: s.reference for s in score.speedups if s.reference}
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
            progress(name, f"bonus {result['bonus_points']:g}/{score.bonus_max_points:g} (outside the task's points: "
                     + "; ".join(f"{b.name} {b.points:g}/{b.max_points:g}: {b.reason}" for b in score.bonus)[:300] + ")")
        if scan_flags and not rubric.pay_flagged_before_review and not trusted and (
                result["points"] > 0 or result.get("bonus_points")):
            hold_for_review(result, scan_flags)
        progress(name, f"{result['points']:g}/{tr.points:g} ({result['status']}: {result['reason']})")
    except Exception as exc:  # noqa: BLE001 - a grader bug must cost this task only, visibly
        result.update(status="error", reason=f"the grader failed on this task: {exc!r}",
                      grader_traceback=traceback.format_exc())
        progress(name, result["reason"])
    return result


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
    """Grade ``tasks`` of ``submission`` into ``out``; the returned results are also written there."""
    started = time.time()
    seed = seed if seed is not None else secrets.randbelow(2**63)
    progress = Progress(quiet)
    results: dict = dict(submission=str(submission), out=str(out), seed=seed, tasks={}, flags=[],
                         started=started, rubric=str(rubric.source), gpu=_gpu_name())
    results["containment"] = expected_containment()
    out.mkdir(parents=True, exist_ok=True)
    set_subreaper()  # whatever a worker leaves behind becomes ours, and is ended after each task
    try:
        # Grading the reference solution itself: its own speedups are the reference,
        # so it is not timed twice.
        is_reference = SOLUTIONS.is_dir() and submission.resolve() == SOLUTIONS.resolve()
        for task in tasks:
            # A student's timed tests time the reference beside it (harness.yardstick): its
            # correctness grid is never re-run, and its speed is measured seconds apart.
            beside = use_reference and not is_reference and bool(rubric.tasks[task].speedups) and SOLUTIONS.is_dir()
            result = grade_task(task, submission, out, rubric, seed, progress,
                                self_reference=use_reference and is_reference, yardstick=beside)
            result.setdefault("reference_speedups", {})
            results["tasks"][task] = result
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
        raise
    finally:
        results["execution_time"] = round(time.time() - started, 1)
        for r in results["tasks"].values():
            r.pop("_run", None)
        report_mod.write_all(results, rubric, out)
    return results


def _gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU only)"
    except Exception:  # noqa: BLE001
        return "unknown"
