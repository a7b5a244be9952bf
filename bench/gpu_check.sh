#!/usr/bin/env bash
# One device run: environment, the Triton tests, and the kernel benchmark (GPU part; CPU part measured elsewhere).
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
timeout 240 python3 -m pytest -q -p no:cacheprovider -o addopts="" --noconftest tests/kernels/test_triton_combine.py tests/kernels/test_reference.py 2>&1 | tee "$OUT/tests.log" | tail -25
timeout 150 python3 bench/kernel_combine.py --json --no-cpu 2>&1 | tee "$OUT/bench.log"
