"""Cheap static look at submitted files for code that tries to reach past its task.

The pristine tests catch what matters at run time (wrong answers, PyTorch
operators in the attention core); this scan only *flags* constructs a kernel or
attention module has no reason to contain, for a person to review.
"""
from __future__ import annotations

import re
from pathlib import Path

#: The harness modules that grade (a student file has no reason to name them); the old names
#: of two of them (reference, integrity) too, for code written against an earlier kit.
_GRADING_MODULES = "compare|timing|formulas|reference|op_recorder|integrity|shared_checks|pytest_plugin|inputs|remote"

PY_SUSPICIOUS = {
    r"\bimport\s+(os|sys|subprocess|builtins|importlib|inspect|gc|ctypes|socket|pytest)\b": "imports a system module",
    r"\bfrom\s+(os|sys|subprocess|builtins|importlib|inspect|gc|ctypes|socket|pytest)\b": "imports a system module",
    rf"\bharness\.({_GRADING_MODULES})\b": "reaches into the grading harness",
    rf"\bfrom\s+harness\s+import\s+({_GRADING_MODULES})\b": "reaches into the grading harness",
    r"__import__|\bexec\(|\beval\(|\bglobals\(\)|sys\.modules|setattr\(": "rewrites code or modules at run time",
    r"\bopen\(": "opens files",
}
CU_SUSPICIOUS = {
    r"\b(system|popen|fork|execv\w*|dlopen)\s*\(": "runs other programs or loads libraries",
    r"\bfopen\s*\(|std::ofstream|std::ifstream": "opens files",
    r"\bpy::module_?::import\b|PyImport_": "imports Python modules from C++",
    # Python run from a kernel file can rewrite the kit's code in the worker (its timer, its checks).
    r"\bpy::(exec|eval|eval_file)\b|\bPyRun_\w+|\bPyEval_Eval\w*": "runs Python code from C++ (it could rewrite "
                                                                  "the kit's timer or checks in the worker)",
    # The kit times kernels with CUDA events on PyTorch's current stream.
    r"\bcudaStreamCreate\w*|\bgetStreamFromPool\b|\bgetStreamFromExternal\b|\bcudaStreamPerThread\b": (
        "uses a CUDA stream of its own (work on a stream of its own escapes the timed events, which are "
        "recorded on PyTorch's current stream)"),
}


def scan_file(path: Path, rel: str) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    rules = PY_SUSPICIOUS if rel.endswith(".py") else CU_SUSPICIOUS if rel.endswith((".cu", ".cuh")) else {}
    flags = []
    for pattern, what in rules.items():
        match = re.search(pattern, text)
        if match:
            line = text.count("\n", 0, match.start()) + 1
            flags.append(f"{rel}:{line} {what} ('{match.group(0)}'); flagged for review")
    return flags
