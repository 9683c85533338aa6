#!/usr/bin/env bash
# Valkey's work per send, alternated between git trees (docs/performance.md):
#
#     bench/alternate.sh PASSES TREE [TREE ...]
#
# Runs bench/send_script_cost.py (BENCH_ARGS, default below) in each TREE in
# turn, PASSES times, each under the shared benchmark lock and with that
# tree's own code, and prints the first lines of each run with the load
# average. The machine's speed drifts between minutes, so only figures of one
# pass compare. A tree at c6f06cb (before issue 13) has no bench of that shape:
# this copies bench/send_script_cost_c6f06cb.py into it and runs that.
# GLIBC_TUNABLES is passed on as set: `GLIBC_TUNABLES= bench/alternate.sh ...`
# measures every tree on glibc's default malloc (the embedded Valkey's tuning
# off), which is what a comparison of the scripts wants.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
args="${BENCH_ARGS:---concurrency 20 --count 3000 --rounds 3}"
passes="$1"
shift
for pass in $(seq "$passes"); do
  for tree in "$@"; do
    tree="$(cd "$tree" && pwd)"
    bench="bench/send_script_cost.py"
    if [ ! -e "$tree/chat/store/sends.py" ]; then
      cp "$here/bench/send_script_cost_c6f06cb.py" "$tree/bench/"
      bench="bench/send_script_cost_c6f06cb.py"
    fi
    echo "== pass $pass: $tree at $(git -C "$tree" log --oneline -1 | cut -c1-60); load $(uptime | sed 's/.*average: //')"
    # shellcheck disable=SC2086
    (cd "$tree" && PYTHONPATH="$tree" flock /tmp/dmhub-bench.lock "$python" "$bench" $args 2>&1 | sed -n 2,4p)
  done
done
