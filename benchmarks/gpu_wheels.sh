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
# what a GPU run needs: the project's own dependencies, faiss-cpu and what the GPU tests and benchmarks import
# (pytest, pytest-timeout, scikit-image's photos), with every dependency of theirs on Python 3.12, as this
# environment's metadata declares them; not what such a machine has (torch, torchvision, their CUDA libraries)
python - "$all/needed.txt" <<'PY'
import re
import sys
from importlib.metadata import PackageNotFoundError, requires

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

roots = [r for r in requires("streamcosal") if "extra" not in r] + ["faiss-cpu", "pytest", "pytest-timeout", "scikit-image"]
has = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")
needed, todo = set(), list(roots)
while todo:
    requirement = Requirement(todo.pop())
    name = canonicalize_name(requirement.name)
    if requirement.marker and not requirement.marker.evaluate({"python_version": "3.12", "extra": ""}):
        continue
    if name in needed or has.match(name):
        continue
    needed.add(name)
    try:
        todo += requires(name) or []
    except PackageNotFoundError:
        sys.exit(f"gpu_wheels.sh: {name} is needed but not installed here: pip install -c constraints.txt -e .[cpu,test]")
open(sys.argv[1], "w").write("\n".join(sorted(needed)) + "\n")
PY
# the versions of constraints.txt, its names as pip normalises them (it spells some as their projects do: PyYAML)
awk -F'==' 'NF > 1 { name = tolower($1); gsub(/[-_.]+/, "-", name); print name "==" substr($0, index($0, "==") + 2) }' \
  constraints.txt > "$all/constraints.txt"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform linux_x86_64)
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d "$all" -r <(grep -E "^($(paste -sd '|' "$all/needed.txt"))==" "$all/constraints.txt")
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
