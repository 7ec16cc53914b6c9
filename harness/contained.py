"""``python -m harness.contained -m MODULE [ARGS]``: run a kit module contained like a worker.

The grader builds a submission's CUDA code this way: the policy in the
environment (harness.containment) is applied first, then the module runs in
this same process, and every compiler it starts inherits the containment.
"""
from __future__ import annotations

import os
import runpy
import sys

from .containment import POLICY_ENV, PROC_ALL, Policy, apply


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "-m":
        print("usage: python -m harness.contained -m MODULE [ARGS]", file=sys.stderr)
        return 2
    policy = Policy.from_env(os.environ.get(POLICY_ENV, "{}"))
    policy.proc_write = PROC_ALL  # the tests it runs start children that open the GPU too
    print(f"containment: {apply(policy)}", flush=True)
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
