#!/usr/bin/env bash
# Issue 16 on a GPU, in one call from the repository root (about 6-8 minutes on an H200; every part has a
# time limit and the script skips what would end past BUDGET_S, default 570 s):
#   1. tests/test_device_batches.py: device-resident batches on CUDA bit-identical to the host pipeline's;
#   2. ms per training step (TRM, MONAI UNet) at 64, 192 and 240 px: former host pipeline vs device-resident,
#      float32 vs --amp bf16, and compiled (--compile, fp32 and bf16) at 240 px (tests/perf/pipeline_steps.py);
#   3. cells per hour with N = 1, 2, 4, 8 cells per device (--cells-per-device N): 3 scratch cells per worker
#      at 64 px (the default suite's budget, 300 steps), with GPU utilisation and memory sampled by nvidia-smi
#      every 0.5 s.
# Writes to $OUT (default: device-out/): steps.json, cells_N*.csv, smi_N*.csv, summary.json, summary.csv and
# one log per part. Packages the machine lacks may travel as wheels in .whl/ (installed to /tmp/site).
set -uo pipefail
source tests/perf/device_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$out/gpu.txt" || exit 1
work=$(mktemp -d)
status=0
budget=${BUDGET_S:-570}  # the whole script stays under the device tool's 600 s per command
run() {  # run "name" seconds cmd...: log to $out/name.log, keep going, remember a failure; skip past the budget
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    if ((SECONDS + limit > budget)); then
        echo "!!! $name skipped: it could run past the ${budget} s budget"
        status=1
        return
    fi
    echo "=== $name"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1 || { status=1; echo "!!! $name failed or timed out"; }
    tail -n 15 "$out/$name.log"
    echo "=== $name: $((SECONDS - start)) s"
}
run identity 60 python3 -m pytest -q -p no:cacheprovider -rs tests/test_device_batches.py
run steps 200 env PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" python3 tests/perf/pipeline_steps.py --device cuda \
    --compile-sizes 240 --json "$out/steps.json"

# Cells per hour: one warm-up run generates and preprocesses the phantom, then one grid per N.
grid=(--source 01-t2-WT --target 01-t1-WT --method scratch --device cuda --cache-dir "$work/cache")
run warmup 60 python3 -m benchmarks.run "${grid[@]}" --seeds 999 --steps 5 --out "$work/warm"
for n in 1 2 4 8; do
    if ((SECONDS + 75 > budget)); then
        echo "!!! cells_N$n and beyond skipped: past the ${budget} s budget"
        status=1
        break
    fi
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
        >"$out/smi_N$n.csv" &
    smi=$!
    start=$(date +%s.%N)
    run "cells_N$n" 75 python3 -m benchmarks.run "${grid[@]}" --seeds $(seq 0 $((3 * n - 1))) --steps 300 \
        --cells-per-device "$n" --out "$work/r$n" --csv "$out/cells_N$n.csv"
    echo "$n $(date +%s.%N) $start" >>"$out/walls.txt"
    kill "$smi"
    wait "$smi" 2>/dev/null
done

python3 - "$out" <<'PY' | tee "$out/summary.txt"
import json, re, sys
from pathlib import Path
import pandas as pd

out = Path(sys.argv[1])
summary = {"steps": json.loads((out / "steps.json").read_text()) if (out / "steps.json").exists() else []}
rows = []
for line in (out / "walls.txt").read_text().splitlines() if (out / "walls.txt").exists() else []:
    n, end, start = line.split()
    if not (out / f"cells_N{n}.log").exists() or not (out / f"smi_N{n}.csv").stat().st_size:
        continue
    log = (out / f"cells_N{n}.log").read_text()
    tally = re.search(r"(\d+) ok, (\d+) failed.* in ([\d.]+) s", log)
    ok, failed, executor_s = (int(tally[1]), int(tally[2]), float(tally[3])) if tally else (0, 0, float("nan"))
    smi = pd.read_csv(out / f"smi_N{n}.csv", header=None, names=["t", "util", "mem"], skipinitialspace=True)
    cells = pd.read_csv(out / f"cells_N{n}.csv") if (out / f"cells_N{n}.csv").exists() else pd.DataFrame()
    rows.append({
        "cells_per_device": int(n),
        "cells_ok": ok,
        "cells_failed": failed,
        "executor_s": executor_s,
        "command_s": round(float(end) - float(start), 1),
        "cells_per_hour": round(ok / executor_s * 3600, 1) if executor_s == executor_s else None,
        "mean_cell_wall_s": round(cells.groupby("cell_key")["wall_s"].first().mean(), 2) if len(cells) else None,
        "threads_per_cell": int(cells["threads"].iloc[0]) if len(cells) else None,
        "gpu_util_mean_pct": round(smi["util"].mean(), 1),
        "gpu_util_p90_pct": round(smi["util"].quantile(0.9), 1),
        "gpu_mem_max_mib": int(smi["mem"].max()),
    })
for r in rows:
    r["vs_N1"] = round((r["cells_per_hour"] or float("nan")) / (rows[0]["cells_per_hour"] or float("nan")), 2)
summary["cells"] = rows
(out / "summary.json").write_text(json.dumps(summary, indent=1))
pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
steps = pd.DataFrame(summary["steps"])
if len(steps):
    print(steps.to_string(index=False))
    steps.to_csv(out / "steps.csv", index=False)
if rows:
    print(pd.DataFrame(rows).to_string(index=False))
PY
exit $status
