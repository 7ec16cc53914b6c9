#!/usr/bin/env bash
# The grader's GPU check, as one command (about 10 minutes on an H100/H200):
#
#   bash scripts/gpu_grader.sh        # logs and reports in $LOG (default /tmp/gpu_grader), copied to $OUT
#
#   1. the containment this node allows (Landlock ABI, or none);
#   2. the reference solutions' extensions built in parallel into the shared cache;
#   3. `grader run` over every task for the reference solutions: full marks expected,
#      with the containment named in each result;
#   4. `grader run` over the GPU tasks for the stubs: 0 expected, each with a reason;
#   5. the task tests of tasks 1, 3 and 4 (correctness only) in a student's run.
# Needs the wheels of pytest-json-report, pytest-metadata and landlockpy in .whl/ where pip has no network.
set -u
cd "$(dirname "$0")/.."
LOG=${LOG:-/tmp/gpu_grader}
mkdir -p "$LOG"
# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh
t0=$SECONDS
stamp() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$LOG/progress.log"; }
copy_out() {
  [ -n "${OUT:-}" ] || return 0
  cp "$LOG"/*.log "$OUT"/ 2>/dev/null
  for r in ref stubs; do
    [ -f "$LOG/$r/report.md" ] && cp "$LOG/$r/report.md" "$OUT/report-$r.md"
    [ -f "$LOG/$r/raw.json" ] && cp "$LOG/$r/raw.json" "$OUT/raw-$r.json"
  done
  true
}
trap copy_out EXIT

stamp "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
stamp "1. containment: $(python3 -c 'from harness.containment import available; print(available())')"

stamp "2. building the reference solutions' extensions, each once, in parallel"
pids=""
for name in $(python3 -c 'from harness.tasks import EXTENSIONS; print(*EXTENSIONS)'); do
  ATTN_KIT_IMPL=$SOL python3 -c "import sys, time; from harness.build import load_extension; t = time.perf_counter(); load_extension(sys.argv[1]); print(f'ok: {sys.argv[1]} in {time.perf_counter() - t:.0f} s')" "$name" > "$LOG/build-$name.log" 2>&1 & pids="$pids $!"
done
for p in $pids; do wait "$p" || stamp "   a build failed (pid $p)"; done
stamp "   builds: $(grep -h '^ok:' "$LOG"/build-*.log | tr '\n' ';')"

# PARTS picks the steps (default all); the device tool's 10-minute calls run "ref" then "stubs student".
PARTS=${PARTS:-ref stubs student}
if [[ " $PARTS " == *" ref "* ]]; then
stamp "3. grader run, reference solutions, tasks ${REF_TASKS:=1,2,3,4,5,6,7}"
timeout ${REF_TIMEOUT:-900} python3 -m grader run --submission "$SOL" --tasks "$REF_TASKS" --out "$LOG/ref" > "$LOG/grade-ref.log" 2>&1
stamp "   rc=$?: $(grep -E '^total' "$LOG/grade-ref.log")"
grep -E '^task[0-9]' "$LOG/grade-ref.log" | while read -r line; do stamp "   $line"; done
fi

if [[ " $PARTS " == *" stubs "* ]]; then
stamp "4. grader run, stubs, tasks ${STUB_TASKS:=2,4,5,6,7}"
timeout 600 python3 -m grader run --submission "$PWD" --tasks "$STUB_TASKS" --no-reference --out "$LOG/stubs" > "$LOG/grade-stubs.log" 2>&1
stamp "   rc=$?: $(grep -E '^total' "$LOG/grade-stubs.log")"
grep -E '^task[0-9]' "$LOG/grade-stubs.log" | while read -r line; do stamp "   $line"; done
fi

[[ " $PARTS " == *" student "* ]] || { stamp DONE; exit 0; }
stamp "5. task tests 1, 3, 4 (correctness) as a student runs them"
ATTN_KIT_IMPL=$SOL timeout 600 python3 -m pytest -q -rfEs -m "not perf" task1 task3 task4 > "$LOG/pytest.log" 2>&1
stamp "   rc=$?: $(tail -n 1 "$LOG/pytest.log")"
stamp "DONE"
