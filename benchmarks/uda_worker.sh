#!/bin/bash
# One worker of the UDA re-measure (issue 16): every (scenario, row) job of one seed, the rows the paired
# differences need first (source-only, xMUDA, FtD++), then FtD++ + PL and the oracle, then the seed's results.json.
# Every job resumes where it stopped (train_or_reuse); rerun the same command to continue.
# usage: nohup benchmarks/uda_worker.sh SEED > outputs/uda_worker$SEED.log 2>&1 &   (one worker per seed; outputs in
# outputs/bench_uda/<scenario>/seed<SEED>/; afterwards `python -m benchmarks.bench_uda --scenario S --table`)
cd "$(dirname "$0")/.." || exit 1
seed=$1
run() {
  echo "=== $(date -Is) $*"
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 .venv/bin/python -m benchmarks.bench_uda --seeds "$seed" "$@" \
    || echo "=== FAILED $*"
}
for scenario in day-night city rig; do run --scenario "$scenario" --only source_only xmuda ftd; done
for scenario in day-night city rig; do run --scenario "$scenario" --only ftd_pl oracle; done
for scenario in day-night city rig; do run --scenario "$scenario"; done
echo "=== $(date -Is) done"
