"""``grader gradescope OUT.zip``: build the autograder bundle for a Gradescope programming assignment.

Gradescope's specification: a zip with ``setup.sh`` and ``run_autograder`` at its
root. Gradescope unpacks it into ``/autograder/source``, runs ``setup.sh`` there
once, as root, while it builds the image, and copies ``run_autograder`` to
``/autograder/run_autograder``. For each submission it puts the student's files
in ``/autograder/submission``, runs ``run_autograder`` from ``/autograder``, and
uploads ``/autograder/results/results.json``; the script's output goes to
``/autograder/results/stdout``, which only instructors see.

The bundle holds the kit as the handout has it (``grader release``'s file list:
no ``solutions/``, which a submission's code could otherwise read) plus the two
scripts. Gradescope's machines have no GPU, so by default it grades the tasks that
need none; grade the GPU tasks with ``grader slurm``. What ``run_autograder``
runs inside the container is ``grader.gradescope_run``.
"""
from __future__ import annotations

import json
import re
import sys
import time
import zipfile
from pathlib import Path

from harness.tasks import REPO_ROOT, TASKS, task_names

from .gradescope_run import CONFIG

#: Where torch comes from in setup.sh: its CPU build (Gradescope has no GPU), a fraction of the CUDA one's size.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, in /autograder/source while it builds the
# autograder's image: it installs the kit and its dependencies into a virtual
# environment that run_autograder uses. Written by `python -m grader gradescope`.
set -euxo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
SRC="$ROOT/source"
VENV="$ROOT/venv"
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update
  apt-get install -y --no-install-recommends python3 python3-venv python3-pip
fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip
# No GPU on Gradescope: PyTorch's CPU build (ATTN_KIT_TORCH_INDEX='' takes the default index).
TORCH_INDEX="${{ATTN_KIT_TORCH_INDEX-{torch_index}}}"
"$VENV/bin/python" -m pip install ${{TORCH_INDEX:+--index-url "$TORCH_INDEX"}} {torch_spec}
"$VENV/bin/python" -m pip install -e "$SRC"
"$VENV/bin/python" -c "import torch, grader, harness; print('ready: torch', torch.__version__)"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission (as /autograder/run_autograder, from
# /autograder): it grades /autograder/submission with the kit's grader and writes
# /autograder/results/results.json. Written by `python -m grader gradescope`.
# AUTOGRADER_ROOT (default /autograder) and AUTOGRADER_PYTHON make it runnable elsewhere.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
cd "$ROOT/source" || exit 1
exec "$PYTHON" -m grader.gradescope_run run-autograder --root "$ROOT"
"""


def _torch_spec() -> str:
    """torch's requirement from pyproject.toml, so setup.sh installs what the kit is tested with."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next((d for d in deps if re.match(r"torch\b", d)), "torch")
    return "'" + spec + "'"


def bundle_files() -> list[str]:
    from .release import kit_files

    return [f for f in kit_files() if Path(f).name not in ("setup.sh", "run_autograder")]


def build_bundle(out_zip: Path, tasks: list[str] | None = None, out=sys.stdout) -> Path:
    """Write the bundle; returns its path."""
    tasks = tasks or [t for t in task_names(existing_only=True) if not TASKS[t].needs_gpu and not TASKS[t].extensions]
    out_zip = out_zip.resolve()
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    files = bundle_files()
    config = dict(tasks=tasks, built=time.strftime("%Y-%m-%dT%H:%M:%S"))
    tmp = out_zip.with_name(out_zip.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16  # a regular file with these permissions
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)

        add("setup.sh", SETUP_SH.format(torch_index=TORCH_CPU_INDEX, torch_spec=_torch_spec()).encode(), 0o755)
        add("run_autograder", RUN_AUTOGRADER.encode(), 0o755)
        add(CONFIG, (json.dumps(config, indent=2) + "\n").encode())
        for rel in files:
            add(rel, (REPO_ROOT / rel).read_bytes())
    tmp.replace(out_zip)
    gpu = [t for t in tasks if TASKS[t].needs_gpu or TASKS[t].extensions]
    print(f"wrote {out_zip}: setup.sh, run_autograder and {len(files)} files of the kit (no solutions)", file=out)
    print(f"it grades {', '.join(tasks)}" + (
        f"; {', '.join(gpu)} need a CUDA GPU, which Gradescope's machines do not have" if gpu else
        " (the others need a CUDA GPU: grade them with `python -m grader slurm`)"), file=out)
    print("upload it as the autograder of a Gradescope programming assignment; "
          "students submit the handout's layout (task1/attention.py, ...)", file=out)
    return out_zip
