#!/usr/bin/env bash
# The kit's whole check on a GPU machine, in two parts that fit one device call each:
#   PART=suite  bash scripts/gpu_final.sh   # the README's `pytest`, everything (solutions by default)
#   PART=grade  bash scripts/gpu_final.sh   # grader over solutions/ and the stubs, plus the benchmarks
# Needs the wheels of pytest-json-report and pytest-metadata in .whl/ (see README of the device tool).
# Logs go to $OUT (default /tmp/gpu_final).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_final}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site
export PYTHONUNBUFFERED=1 ATTN_KIT_BUILD_DIR=/tmp/attn-kit-build
PART=${PART:-suite}
t0=$(date +%s)
stamp() { echo "=== [$(( $(date +%s) - t0 )) s] $*"; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee -a "$OUT/$PART.log"

if [ "$PART" = suite ]; then
  stamp "prebuild: every extension, stubs and solutions, in parallel (content-addressed cache)" | tee -a "$OUT/$PART.log"
  pids=""
  for impl in "$PWD" "$PWD/solutions"; do
    for t in task2 task4 task5; do
      ATTN_KIT_IMPL=$impl python3 -m $t.compile > "/tmp/build-$t-$(basename "$impl").log" 2>&1 & pids="$pids $!"
    done
  done
  for p in $pids; do wait "$p" || echo "a prebuild failed (pid $p)"; done
  tail -n 2 /tmp/build-*.log | tee -a "$OUT/$PART.log"
  stamp "pytest (the README's test command)" | tee -a "$OUT/$PART.log"
  timeout 450 python3 -m pytest -rfEs --durations=15 2>&1 | tee "$OUT/pytest.log" | tail -n 80 >> "$OUT/$PART.log"
  stamp "done" | tee -a "$OUT/$PART.log"
  tail -n 80 "$OUT/$PART.log"
else
  stamp "grader run over the reference solution, every task" | tee -a "$OUT/$PART.log"
  timeout 330 python3 -m grader run --submission solutions --out "$OUT/grade-solutions" 2>&1 | tee -a "$OUT/$PART.log"
  stamp "grader run over the stubs (this checkout's task files)" | tee -a "$OUT/$PART.log"
  timeout 120 python3 -m grader run --submission . --out "$OUT/grade-stubs" --no-reference 2>&1 | tee -a "$OUT/$PART.log"
  stamp "benchmarks" | tee -a "$OUT/$PART.log"
  ATTN_KIT_IMPL=solutions timeout 120 python3 bench/flash_attention.py 2>&1 | tail -n 20 | tee -a "$OUT/$PART.log"
  ATTN_KIT_IMPL=solutions timeout 60 python3 bench/decode_attention.py 2>&1 | tail -n 20 | tee -a "$OUT/$PART.log"
  stamp "done" | tee -a "$OUT/$PART.log"
  cp "$OUT/grade-solutions/report.md" "$OUT/report-solutions.md" 2>/dev/null
  cp "$OUT/grade-solutions/results.json" "$OUT/results-solutions.json" 2>/dev/null
  cp "$OUT/grade-stubs/report.md" "$OUT/report-stubs.md" 2>/dev/null
  rm -rf "$OUT/grade-solutions" "$OUT/grade-stubs"
fi
