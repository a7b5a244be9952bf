#!/usr/bin/env bash
# One device run: environment, the Triton tests, the kernel benchmark (GPU part; CPU part measured elsewhere) and,
# with SWEEP=1, the launch-shape sweep.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
timeout 240 python3 -m pytest -q -p no:cacheprovider -o addopts="" --noconftest tests/logit_kernels/test_triton_combine.py tests/logit_kernels/test_reference.py tests/logit_kernels/test_sampling.py 2>&1 | tee "$OUT/tests.log" | tail -25
if [ "${SWEEP:-0}" = 1 ]; then timeout 200 python3 bench/kernel_combine.py --sweep 2>&1 | tee "$OUT/sweep.log" | grep '^best'; fi
timeout 150 python3 bench/kernel_combine.py --json --no-cpu 2>&1 | tee "$OUT/bench.log"
