#!/usr/bin/env bash
# The GPU row, in one go where a CUDA GPU is lent (under 8 minutes on one H200-class GPU):
#   1. the GPU tests (`pytest -m gpu`: CUDA engine = CPU fp32 engine within tolerance, bf16/fp16
#      close, faiss-gpu store round trip, a video end to end), then
#   2. the GPU benchmark table (VGG-16 and the default model, fp32/bf16/fp16, groups of 8/32/64:
#      frames/s and peak memory) -> benchmarks/results/engine_gpu.md (and $OUT/ when set).
# Usage: benchmarks/gpu.sh    (from the repository root, streamcosal installed with .[gpu,test])
set -uo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "gpu.sh: no NVIDIA GPU here" >&2; exit 2; }
mkdir -p benchmarks/results
timeout 270 python -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee benchmarks/results/gpu_tests.txt
tests=${PIPESTATUS[0]}
timeout 180 python benchmarks/bench_gpu.py --runs 5 --out benchmarks/results/engine_gpu.md
bench=$?
if [ -n "${OUT:-}" ]; then cp benchmarks/results/gpu_tests.txt benchmarks/results/engine_gpu.md "$OUT"/ 2>/dev/null; fi
echo "gpu.sh: tests exit $tests, benchmark exit $bench"
exit $(( tests != 0 ? tests : bench ))
