#!/usr/bin/env bash
# The GPU rows in one go, on a GPU machine as such machines come: Python 3.12 with torch and torchvision
# installed, nothing else of ours, nothing downloadable. What is missing comes from wheels prepared
# beforehand on a machine with a package index (benchmarks/gpu_wheels.sh), carried in parts of at most
# 60 MiB (WHEELS/part*); the project itself is built from this checkout.
#   1. install into DEPS (pip --target; the machine's torch stays), unless streamcosal already imports;
#   2. the GPU tests (`pytest -m gpu`; real data from STREAMCOSAL_DATA);
#   3. the engine on the GPU (benchmarks/bench_gpu.py): frames/s and peak memory by model, precision, group;
#   4. the pipeline's own rate with the engine's calls replayed, and with the engine (bench_pipeline.py; one
#      video, and an archive of 4 run 4 at a time, the GPU's default parallel_groups);
#   5. `streamcosal video --device cuda` end to end on an archive of 480p H.264 videos, and on one of them.
# Tables go to OUT (default benchmarks/results). Usage, from the repository root:
#   WHEELS=.gpu_wheels STREAMCOSAL_DATA=/path/to/data benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.gpu_wheels}
DEPS=${DEPS:-/tmp/streamcosal-deps}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "gpu.sh: no NVIDIA GPU here" >&2; exit 2; }
export PYTHONPATH="$DEPS${PYTHONPATH:+:$PYTHONPATH}"
if ! python -c "import streamcosal, av, decord, faiss, pyarrow, cv2" 2>/dev/null; then
  links=()
  for part in "$WHEELS" "$WHEELS"/part*/; do links+=(--find-links "$part"); done
  requirements=$(ls "$WHEELS"/part*/req-all-pinned.txt "$WHEELS"/req-all-pinned.txt 2>/dev/null | head -n 1)
  python -m pip install -q --no-index --no-compile "${links[@]}" --target "$DEPS" --no-deps -r "$requirements" \
    && python -m pip install -q --no-index --no-compile "${links[@]}" --target "$DEPS" --no-deps . \
    || { echo "gpu.sh: installing from $WHEELS failed" >&2; exit 3; }
fi
python -c "import torch, streamcosal; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, streamcosal {streamcosal.__version__}')"

status=0
# faiss's GPU build needs CUDA 12 libraries of several hundred MB, more than can be carried: the store test that
# needs it runs where the gpu extra is installed (python -m pytest -m gpu), not here
if python -c "import faiss, sys; sys.exit(faiss.get_num_gpus() == 0)" 2>/dev/null; then selection="gpu"
else selection="gpu and not faiss_gpu"; echo "gpu.sh: faiss has no GPU here (faiss-cpu): the faiss_gpu test is left out"; fi
timeout 300 python -m pytest -m "$selection" -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
tests=${PIPESTATUS[0]}
timeout 240 python benchmarks/bench_gpu.py --runs 3 --groups 8 32 64 --out "$OUT/engine_gpu.md" || status=$?
timeout 240 python benchmarks/bench_pipeline.py --device cuda --threads 4 --frames 1800 --runs 2 \
  --out "$OUT/pipeline_gpu.md" || status=$?
timeout 240 python benchmarks/bench_pipeline.py --device cuda --threads 4 --videos 4 --frames 600 --modes global \
  --runs 2 --out "$OUT/pipeline_archive_gpu.md" || status=$?
timeout 300 python benchmarks/bench_archive.py --device cuda --videos 4 --frames 900 --out "$OUT/video_gpu.md" \
  || status=$?
echo "gpu.sh: tests exit $tests, benchmarks exit $status"
exit $(( tests != 0 ? tests : status ))
