#!/usr/bin/env bash
# GPU checks of the LEEP/TRM code in one call, run from the repository root on a CUDA machine:
#   1. LEEP at N = 10^8 in GB/s against the device's copy bandwidth, and one TRM step / one fine-tuning
#      step, on the GPU (tests/perf);
#   2. the CUDA path (eager and compiled) against the float64 numpy references, the streaming driver on
#      CUDA against CPU, and a TRM cell end to end on the GPU (tests that skip without CUDA);
#   3. the default suite (finetune, scratch, trm) on the GPU.
# Logs, benchmark JSON and the suite's CSV go to $OUT (default: device-out/). Packages the machine lacks
# may travel as wheels in .whl/ (installed to /tmp/site, nothing else is touched).
set -uo pipefail
source tests/perf/device_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$out/gpu.txt" || exit 1

status=0
run() {  # run "name" cmd...: log to $out/name.log, keep going, remember a failure
    local name=$1 start=$SECONDS
    shift
    echo "=== $name"
    "$@" >"$out/$name.log" 2>&1 || { status=1; echo "!!! $name failed"; }
    tail -n 25 "$out/$name.log"
    echo "=== $name: $((SECONDS - start)) s"
}
run perf python3 -m pytest -q -p no:cacheprovider tests/perf/test_leep_perf.py tests/perf/test_trm_step_perf.py \
    -k "gpu or cuda" -s --benchmark-only --benchmark-enable --benchmark-json "$out/bench.json"
run tests python3 -m pytest -q -p no:cacheprovider -rs tests/test_transferability.py tests/test_trm.py
run suite python3 -m benchmarks.run --device cuda --out /tmp/ntbench-results --cache-dir /tmp/ntbench-cache \
    --csv "$out/default_suite.csv"
grep -h "^\[GPU\|^\[cuda\]" "$out/perf.log"
exit $status
