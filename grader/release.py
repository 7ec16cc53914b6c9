"""``grader release OUT_DIR``: write the student handout, then prove it is clean.

The handout is every file of the kit except the staff-only ones
(:data:`STAFF_ONLY`). Four proofs follow, each printed:

1. no handout file is identical to its reference solution;
2. no symbol that only the solutions define (a function, kernel, class or
   macro the stub does not have) appears anywhere in the handout;
3. every CUDA stub compiles (with the kit's own compile scripts);
4. every stub's tests fail cleanly: each failing check says "not implemented
   yet", none crashes; tests that need a GPU skip on a machine without one.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.tasks import EXTENSIONS, REPO_ROOT, TASKS, task_names

from .builder import build_task
from . import rubric as rubric_mod
from .pipeline import child_env
from .runner import run_tests
from .scoring import cases_of
from .stage import Stage

#: Top-level folders and files students never get.
STAFF_ONLY = ("solutions", "tests", ".ci", "scripts", "bench", "build", "grader-results")
_PY_DEF = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", re.M)
_CU_DEF = re.compile(
    r"\b([A-Za-z_]\w*)\s*\([^;{}()]*(?:\([^;{}()]*\)[^;{}()]*)*\)\s*(?:const\s*)?\{"  # function definitions
    r"|#\s*define\s+([A-Za-z_]\w*)"
    r"|\b(?:struct|class|using)\s+([A-Za-z_]\w*)"
)
#: C++ words the definition pattern can catch that are not names of anything.
_KEYWORDS = {
    "if", "for", "while", "switch", "return", "sizeof", "catch", "main", "constexpr", "const",
    "static", "inline", "volatile", "decltype", "alignof", "alignas", "noexcept", "static_assert",
    "template", "typename", "operator", "else", "do", "case", "default", "namespace",
}


def kit_files(root: Path = REPO_ROOT) -> list[str]:
    """Files of the kit, as git tracks them (or every file, outside a git checkout)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, check=True,
                                capture_output=True, text=True).stdout.split("\n")
        files = [f for f in listed if f and (root / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]
    return sorted(f for f in files if f.split("/")[0] not in STAFF_ONLY and "__pycache__" not in f)


def defined_symbols(path: Path) -> set[str]:
    text = path.read_text(errors="replace")
    if path.suffix == ".py":
        return set(_PY_DEF.findall(text))
    found = set()
    for groups in _CU_DEF.findall(text):
        found.update(g for g in groups if g)
    return found - _KEYWORDS


def solution_only_symbols(root: Path = REPO_ROOT) -> dict[str, set[str]]:
    """For each solution file, the symbols it defines that its stub does not."""
    out = {}
    for sol in sorted((root / "solutions").rglob("*")):
        if not sol.is_file() or sol.suffix not in (".py", ".cu", ".cuh") or "__pycache__" in sol.parts:
            continue
        rel = sol.relative_to(root / "solutions")
        stub = root / rel
        own = defined_symbols(sol) - (defined_symbols(stub) if stub.exists() else set())
        out[str(rel)] = {s for s in own if len(s) >= 4 and not s.startswith("_")} | {
            s for s in own if s.startswith("_") and len(s) >= 6}
    return out


#: Where the README's part for course staff begins: the handout's README stops before it (it
#: speaks of solutions/, scripts/ and bench/, which a handout does not have).
STAFF_HEADING = "## For course staff"


def student_readme(text: str) -> str:
    """The README a student gets: everything before :data:`STAFF_HEADING`."""
    head, found, _ = text.partition("\n" + STAFF_HEADING)
    if not found:
        raise ValueError(f"README.md has no '{STAFF_HEADING}' section to leave out of the handout")
    return head.rstrip() + "\n"


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _say(ok: bool, text: str) -> bool:
    print(f"  [{'ok' if ok else 'FAIL'}] {text}", flush=True)
    return ok


def release(out_dir: Path, *, build: bool = True, tests: bool = True, root: Path = REPO_ROOT) -> bool:
    if out_dir.exists() and any(out_dir.iterdir()):
        print(f"error: {out_dir} exists and is not empty; choose a new folder", file=sys.stderr)
        return False
    files = kit_files(root)
    for rel in files:
        dst = out_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dst)
    print(f"wrote {len(files)} files to {out_dir}")
    if (out_dir / "README.md").exists():
        (out_dir / "README.md").write_text(student_readme((root / "README.md").read_text()))
        print(f"README.md: the student guide only (up to '{STAFF_HEADING}')")
    ok = True

    print("1. no handout file equals its reference solution")
    for sol in sorted((root / "solutions").rglob("*")):
        if sol.is_file() and "__pycache__" not in sol.parts:
            rel = sol.relative_to(root / "solutions")
            same = (out_dir / rel).exists() and (out_dir / rel).read_bytes() == sol.read_bytes()
            ok &= _say(not same, f"{rel} {'IS IDENTICAL to' if same else 'differs from'} its solution")

    print("2. no symbol defined only by the solutions appears in the handout")
    # A leak is a solution-only symbol that a handout file of the same language
    # defines, or that a file the student edits mentions at all. (Mentions in
    # provided files, like an extension's name in the manifest, are not code.)
    editable = {f for t in TASKS.values() for f in (*t.editable, *t.optional)}
    handout_code = [rel for rel in files if Path(rel).suffix in (".py", ".cu", ".cuh")]
    for sol_rel, symbols in solution_only_symbols(root).items():
        lang = Path(sol_rel).suffix == ".py"
        leaks = []
        for rel in handout_code:
            if (Path(rel).suffix == ".py") != lang:
                continue
            path = out_dir / rel
            found = symbols & defined_symbols(path)
            if rel in editable:
                text = path.read_text(errors="replace")
                found |= {s for s in symbols if re.search(rf"\b{re.escape(s)}\b", text)}
            leaks += [f"{s} (in {rel})" for s in sorted(found)]
        ok &= _say(not leaks, f"{sol_rel}: {len(symbols)} solution-only symbols checked"
                   + (f"; LEAKED: {', '.join(leaks[:10])}" if leaks else ""))

    with tempfile.TemporaryDirectory(prefix="attn-kit-release-") as tmp:
        env = child_env(seed=0, build_cache=Path(tmp) / "build")
        env.setdefault("ATTN_KIT_CUDA_ARCH", os.environ.get("ATTN_KIT_CUDA_ARCH", ""))
        if not env["ATTN_KIT_CUDA_ARCH"]:
            env.pop("ATTN_KIT_CUDA_ARCH")
        logs = Path(tmp) / "logs"
        rubric = rubric_mod.load()
        present = [t for t in task_names(existing_only=True) if all((out_dir / f).exists() for f in TASKS[t].tests)]
        unproven: list[str] = []
        if build:
            print("3. every CUDA stub compiles")
            if not torch_cuda_available():
                print("   (no GPU here: each extension compiles on the CPU, a few minutes apiece on a small "
                      "machine, about 19 minutes in all on 2 cores)", flush=True)
            for task in present:
                result = build_task(Stage(task, out_dir), env=env, timeout_s=1800, logs=logs)
                if result is not None:
                    ok &= _say(result.ok, f"{task}: {result.reason}"
                               + ("" if result.ok else "\n" + result.proc.output_tail[-3000:]))
            for name in EXTENSIONS:  # the compile scripts' import shims are no part of the handout
                (out_dir / f"{name}.py").unlink(missing_ok=True)
        if tests:
            print("4. every stub's tests fail cleanly (not implemented yet), none crashes")
            for task in present:
                run = run_tests(Stage(task, out_dir), env=env, timeout_s=1800, logs=logs)
                cases = cases_of(run)
                failed = [c for c in cases if c.outcome == "failed"]
                unclean = [c for c in failed if not c.not_implemented]
                skipped = sum(c.outcome == "skipped" for c in cases)
                # A stub must earn nothing: no case of a graded check may pass. (Tests of
                # provided parts, such as input checks or RoPE, may.)
                graded = {t for check in rubric.tasks[task].checks for t in check.tests}
                graded |= rubric.tasks[task].bonus_tests  # a bonus stub earns nothing either
                earned = [c for c in cases if c.outcome == "passed" and c.function in graded]
                clean = run.problem is None and not unclean and not earned
                graded_cases = [c for c in cases if c.function in graded]
                if clean and graded_cases and all(c.outcome == "skipped" for c in graded_cases):
                    # No graded case ran: that the stub earns nothing was not proven here.
                    why = next((c.message.split(" (")[0] for c in graded_cases if c.message), "skipped")
                    print(f"  [not proven] {task}: all {len(graded_cases)} graded cases skipped ({why})", flush=True)
                    unproven.append(task)
                    continue
                detail = f"{len(failed)} not implemented, {skipped} skipped"
                if earned:
                    detail += f"; {len(earned)} graded case(s) PASS on the stub, e.g. {earned[0].nodeid}"
                if unclean:
                    detail += f"; {len(unclean)} failed otherwise, e.g. {unclean[0].nodeid}: {unclean[0].message[:300]}"
                if run.problem:
                    detail += f"; {run.problem}"
                ok &= _say(bool(clean), f"{task}: {detail}")
        if ok and unproven:
            print(f"handout ready, but step 4 is not proven here for {', '.join(unproven)}: their tests need a "
                  "CUDA GPU; run `python -m grader release` on a GPU node to prove them")
            return ok
    print("handout ready" if ok else "the handout FAILED a check (see above); it is left in place to inspect")
    return ok
