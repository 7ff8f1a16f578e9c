#!/usr/bin/env bash
# Seconds per training step and fixed cost per cell of the paper suites' setup on this machine's GPU (or
# CPU): runs suite paper-cost-phantom at two step budgets and differences the cells' wall_s.
# Usage (repository root): tests/perf/device_cost.sh [LOW HIGH]   (default 40 240 steps)
# Writes both stores' CSVs and cost.txt to $OUT (default: device-out/).
set -euo pipefail
low=${1:-40}
high=${2:-240}
source tests/perf/device_env.sh
work=$(mktemp -d)
for steps in "$low" "$high"; do
    python3 -m benchmarks.run --suite paper-cost-phantom --steps "$steps" --out "$work/r$steps" \
        --cache-dir "$work/cache" --csv "$out/cost_$steps.csv"
done
python3 - "$out" "$low" "$high" <<'PY' | tee "$out/cost.txt"
import sys
import pandas as pd

out, low, high = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
walls = {s: pd.read_csv(f"{out}/cost_{s}.csv").groupby("method")["wall_s"].first() for s in (low, high)}
device = pd.read_csv(f"{out}/cost_{high}.csv")["device"].iloc[0]
print(f"device {device}; cells at {low} and {high} steps (each phase: --steps overrides source and target)")
print(f"{'method':10s} {'wall@' + str(low):>10s} {'wall@' + str(high):>10s} {'s/step':>8s} {'fixed s':>8s}")
for method in walls[high].index:
    a, b = walls[low][method], walls[high][method]
    # the first cell of a source (finetune here) also trains it: two phases of --steps steps each
    phases = 2 if method == "finetune" else 1
    per_step = (b - a) / ((high - low) * phases)
    print(f"{method:10s} {a:10.1f} {b:10.1f} {per_step:8.4f} {a - low * phases * per_step:8.1f}")
PY
# where a step's time goes: the step alone vs loading a batch in the training process
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" python3 tests/perf/step_and_loading.py | tee -a "$out/cost.txt"
