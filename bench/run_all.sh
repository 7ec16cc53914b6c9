#!/usr/bin/env bash
# The performance evidence of bench/ in one command on one GPU node: the sweep (with the GPU's
# ceilings), Nsight Compute on the reference kernels, then the plots and summaries.
#
#   bash bench/run_all.sh              # the reference solutions (ATTN_KIT_IMPL defaults to solutions/)
#   QUICK=1 bash bench/run_all.sh      # the sweep's --quick grid (a smoke run of the whole chain)
#
# 1. bench/sweep.py             -> bench/results/sweep-<gpu>.json (rewritten after every shape)
# 2. bench/ncu_profile.sh       -> bench/results/ncu-<gpu>.{csv,json}, ncu-<gpu>-summary.md
#                                  (skips, saying why, without ncu or counter permission)
# 3. bench/plot_sweep.py        -> bench/results/sweep-<gpu>-{tflops,ratio,roofline,decode,accuracy}.png
#                                  and sweep-<gpu>-summary.md
# It builds nothing itself: the extensions build on first use (harness.build.load_extension; the
# sweep starts their builds side by side), into scripts/gpu_env.sh's ATTN_KIT_BUILD_DIR, the
# cache scripts/gpu_all.sh uses too. Each step has its own timeout, and a step that fails or
# runs out of time does not stop the next (the plots draw whatever the sweep had written).
#
# Time on an H200, estimated from the grid (not yet measured): sweep ~2-3 min (about 400 timed
# cells, each ~0.15 s of repetitions or five calls, plus the float64 references), ncu ~1-2 min,
# plots ~15 s: ~5 minutes with warm builds; cold builds add ~2-3 minutes to the sweep. The
# timeouts (SWEEP_TIMEOUT 360 s, NCU_TIMEOUT 120 s, PLOT_TIMEOUT 45 s) cap it at ~9 minutes.
#
# Logs: $LOG (default $OUT/bench-logs when OUT is set, else /tmp/bench_run_all): progress.log
# and one log per step. With OUT set, bench/results/ is copied to $OUT/results (the files to
# commit: the JSON, the PNGs and the summaries).
set -u
cd "$(dirname "$0")/.."
# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh
export ATTN_KIT_IMPL=${ATTN_KIT_IMPL:-$PWD/solutions}
PYTHON=${PYTHON:-python3}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-360}
NCU_TIMEOUT=${NCU_TIMEOUT:-120}
PLOT_TIMEOUT=${PLOT_TIMEOUT:-45}
#: Seconds the ncu step may take beyond ncu's own timeout (Python start, the import, the summary).
NCU_SLACK=30
if [ -n "${OUT:-}" ]; then LOG=${LOG:-$OUT/bench-logs}; else LOG=${LOG:-/tmp/bench_run_all}; fi
mkdir -p "$LOG" bench/results
t0=$SECONDS
stamp() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$LOG/progress.log"; }

stamp "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2> /dev/null | head -n 1); ATTN_KIT_IMPL=$ATTN_KIT_IMPL"
sweep_args=()
[ "${QUICK:-0}" = 1 ] && sweep_args+=(--quick)

stamp "1. bench/sweep.py ${sweep_args[*]} (timeout ${SWEEP_TIMEOUT} s)"
timeout "$SWEEP_TIMEOUT" "$PYTHON" bench/sweep.py ${sweep_args[@]+"${sweep_args[@]}"} > "$LOG/sweep.log" 2>&1
stamp "   sweep rc=$? (124: timed out; the JSON keeps the shapes done): $(tail -n 1 "$LOG/sweep.log")"

stamp "2. bench/ncu_profile.sh (ncu timeout ${NCU_TIMEOUT} s)"
NCU_TIMEOUT=$NCU_TIMEOUT LOG_DIR=$LOG PYTHON=$PYTHON timeout $((NCU_TIMEOUT + NCU_SLACK)) bash bench/ncu_profile.sh \
  > "$LOG/ncu.log" 2>&1
stamp "   ncu rc=$?: $(grep -E '^(skipped|wrote|ncu wrote no report)' "$LOG/ncu.log" | head -n 2 | tr '\n' ' ')"

stamp "3. bench/plot_sweep.py (timeout ${PLOT_TIMEOUT} s)"
timeout "$PLOT_TIMEOUT" "$PYTHON" bench/plot_sweep.py > "$LOG/plot.log" 2>&1
stamp "   plot rc=$?: $(grep -c '^wrote' "$LOG/plot.log") files written"

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/results" && cp -r bench/results/. "$OUT/results/"
  stamp "copied bench/results/ to $OUT/results"
fi
stamp "DONE"
