#!/usr/bin/env bash
# Nsight Compute on the kit's reference kernels at one large shape: the DRAM bytes each moves,
# its achieved occupancy (beside the theoretical one and the launch's occupancy limits) and its
# GPU time.
#
#   ATTN_KIT_IMPL=solutions bash bench/ncu_profile.sh                 # the five reference kernels
#   KERNELS="task4_fp32 task4_bf16" ATTN_KIT_IMPL=solutions bash bench/ncu_profile.sh
#
# One ncu process runs `python bench/ncu_target.py --kernels $KERNELS`: per kernel two warm-up
# calls, then one call inside cudaProfilerStart/Stop. ncu profiles only that range
# (--profile-from-start off) and only the kit's own kernels in it (--kernel-name regex: the
# reference solutions' kernel names, not PyTorch's layout copies), at most MAX_LAUNCHES launches
# (--launch-count), with the metrics listed in bench/ncu_target.py (METRICS). The report is then
# read back as a raw CSV in base units (bytes, nanoseconds) and summarised by
# `ncu_target.py --summarize` into $RESULTS/ncu-<gpu>.csv (every launch, every metric),
# ncu-<gpu>.json (per kernel; bench/plot_sweep.py puts its DRAM intensity on the roofline) and
# ncu-<gpu>-summary.md.
#
# Shapes: prefill B=4, 32 heads, S=4096, head_dim 128, non-causal (bench/sweep.py's roofline
# shape); task 5's decode B=16, L=16384, head_dim 128. Clocks are left alone (--clock-control
# none) so the GPU time is comparable with the sweep's; ncu still flushes the caches before each
# replay pass (its default --cache-control all), as the sweep's timing flushes the L2.
#
# Skips with a message and exit status 0 when ncu is missing, no GPU is visible, or the GPU's
# performance counters are not permitted to this user (ERR_NVGPUCTRPERM: needs root, or the
# driver option NVreg_RestrictProfilingToAdminUsers=0). About 1-2 minutes on an H200 with warm
# extension builds (one start of Python and CUDA under ncu; a few replay passes per kernel).
#
# Environment: KERNELS, NCU (the ncu binary), NCU_TIMEOUT (seconds, default 300), RESULTS
# (default bench/results), PYTHON (default python3), MAX_LAUNCHES (default 32; the five
# reference kernels launch 8 or 9 kernels in their profiled calls), LOG_DIR (where ncu's log
# and raw CSV are copied; they stay in a temporary folder otherwise).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-bench/results}
NCU_TIMEOUT=${NCU_TIMEOUT:-300}
MAX_LAUNCHES=${MAX_LAUNCHES:-32}
KERNELS=${KERNELS:-task4_fp32 task4_bf16 task4_3xtf32 task2_fp32 task5_decode_fp32}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}

NCU=${NCU:-$(command -v ncu || true)}
if [ -z "$NCU" ] && [ -x /usr/local/cuda/bin/ncu ]; then NCU=/usr/local/cuda/bin/ncu; fi
if [ -z "$NCU" ]; then
  echo "skipped: Nsight Compute (ncu) is not installed here (set NCU=/path/to/ncu)"
  exit 0
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2> /dev/null; then
  echo "skipped: no CUDA GPU is visible here (torch.cuda.is_available() is False)"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ncu_profile.XXXXXX")
# shellcheck disable=SC2086  # KERNELS is a list of words
{ read -r regex; read -r metrics; } < <("$PYTHON" bench/ncu_target.py --ncu-options $KERNELS)
if [ -z "${regex:-}" ] || [ -z "${metrics:-}" ]; then
  echo "bench/ncu_target.py --ncu-options $KERNELS gave no kernel regex or metrics (an unknown kernel name?)"
  exit 1
fi
echo "ncu: $("$NCU" --version | tail -n 1); kernels: $KERNELS; work folder $work"

# shellcheck disable=SC2086
timeout "$NCU_TIMEOUT" "$NCU" --target-processes all --profile-from-start off \
  --kernel-name "regex:$regex" --launch-count "$MAX_LAUNCHES" --metrics "$metrics" \
  --clock-control none --force-overwrite --export "$work/report" \
  "$PYTHON" bench/ncu_target.py --kernels $KERNELS > "$work/ncu.log" 2>&1
rc=$?
if grep -q "ERR_NVGPUCTRPERM" "$work/ncu.log"; then
  echo "skipped: ncu may not read this GPU's performance counters (ERR_NVGPUCTRPERM): profiling needs"
  echo "root or the NVIDIA driver option NVreg_RestrictProfilingToAdminUsers=0; nothing was measured"
  exit 0
fi
grep -E "profiled call|not profiled" "$work/ncu.log"
if [ ! -f "$work/report.ncu-rep" ]; then
  echo "ncu wrote no report (exit status $rc; 124 is the timeout of ${NCU_TIMEOUT} s); the end of its log:"
  tail -n 30 "$work/ncu.log"
  exit 1
fi
[ "$rc" = 0 ] || echo "note: ncu exited with status $rc (the report is summarised all the same)"

# Base units (bytes, nanoseconds) where this ncu can print them; the summariser reads either.
"$NCU" --import "$work/report.ncu-rep" --csv --page raw --print-units base > "$work/raw.csv" 2> "$work/import.log" \
  || "$NCU" --import "$work/report.ncu-rep" --csv --page raw > "$work/raw.csv" 2>> "$work/import.log"
mkdir -p "$RESULTS"
"$PYTHON" bench/ncu_target.py --summarize "$work/raw.csv" --out-dir "$RESULTS"
status=$?
[ -z "${LOG_DIR:-}" ] || cp "$work/ncu.log" "$work/raw.csv" "$LOG_DIR/" 2> /dev/null
exit $status
