#!/usr/bin/env bash
# Run the benchmarks (B1 latency, B2 planning, B3 throughput + Slurm; with ALL=1 also B5, sweep
# overhead and B7 recovery) one after the other.
# They print figures and ratios; none of them passes or fails on a figure. The exit status is
# non-zero only when a benchmark crashed.
#
# Usage: bash bench/run.sh            (6-7 minutes with Slurm installed, 2-3 without)
#   PYTHON=...      interpreter with kubetrain installed (default: .venv/bin/python)
#   BENCH_OUT=dir   where the log and results.jsonl go (default: /tmp/kubetrain-bench-<time>)
#   B1_ARGS, B2_ARGS, B3_ARGS   extra arguments, e.g. B3_ARGS="--no-slurm"
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${BENCH_OUT:-/tmp/kubetrain-bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export BENCH_RESULTS="$OUT/results.jsonl"
: > "$BENCH_RESULTS"
status=0
run() {
  local name=$1; shift
  echo
  local start=$SECONDS what
  "$PY" "bench/$name.py" "$@" 2>&1 | tee -a "$OUT/run.log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" = 0 ]; then what=ok; else what="exit $rc"; fi
  echo "   ($name: $what, $((SECONDS - start))s)" | tee -a "$OUT/run.log"
  [ "$rc" = 0 ] || status=1
}
# shellcheck disable=SC2086
run b1_latency ${B1_ARGS:-}
# shellcheck disable=SC2086
run b2_planning ${B2_ARGS:-}
# shellcheck disable=SC2086
run b3_throughput ${B3_ARGS:-}
if [ -n "${ALL:-}" ]; then  # ALL=1: also B5 (vs MLflow, ~4 min), the sweep overhead and B7 recovery
  # shellcheck disable=SC2086
  run b5_metrics ${B5_ARGS:-}
  run sweep_overhead
  run b7_recovery
fi
echo
"$PY" bench/summarize.py "$BENCH_RESULTS" | tee -a "$OUT/run.log"
echo "log: $OUT/run.log   results: $BENCH_RESULTS"
exit $status
