"""The package's shape: the folder tree names the stages, no module imports its caller (no import
circle), no module grows past 400 lines, the command line answers without torch and the core
imports no optional extra."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"streamcosal": REPO / "streamcosal", "streamcosal.model": REPO / "model",
            "streamcosal.storage": REPO / "storage", "streamcosal.flows": REPO / "flows"}
STAGES = ("io", "inference", "run", "training", "evaluation")


def modules() -> dict[str, Path]:
    """Every module of the installed package by its dotted name."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if package == "streamcosal" and parts and parts[0] in ("model", "storage", "flows"):
                continue
            found[".".join((package, *parts))] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere: at import time, under ``TYPE_CHECKING``
    and inside functions (a lazy import is a dependency all the same)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    found.add(target if target in known else base)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def test_no_import_circle() -> None:
    known = modules()
    graph = {name: imports(name, path, set(known)) for name, path in known.items()}
    state: dict[str, int] = {}
    circles = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)
    # the stages import the model, storage and each other, never the orchestration or the CLI
    climbs = [(name, target) for name, targets in graph.items() for target in targets
              if not name.startswith(("streamcosal.flows", "streamcosal.cli"))
              and target.startswith(("streamcosal.flows", "streamcosal.cli"))]
    assert not climbs, f"library modules importing the orchestration or the CLI: {climbs}"
    # model/ is the network alone: no stage, no storage but the atomic file writer its checkpoints use
    model = [(n, t) for n, ts in graph.items() if n.startswith("streamcosal.model") for t in ts
             if not t.startswith("streamcosal.model") and t != "streamcosal.storage.files"]
    assert not model, f"model/ imports the rest of the package at import time: {model}"


def test_folder_tree_names_the_stages_and_modules_stay_small() -> None:
    for stage in STAGES:
        assert (REPO / "streamcosal" / stage / "__init__.py").is_file(), stage
    flat = sorted(p.name for p in (REPO / "streamcosal").glob("*.py"))
    assert flat == ["__init__.py", "markdown.py", "params.py"], flat  # and the cli/ package
    long = {str(path.relative_to(REPO)): n for path in modules().values()
            if (n := len(path.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_the_cli_and_the_core_import_no_torch_and_no_extra() -> None:
    """``streamcosal --help`` imports neither torch nor an optional extra; the video and image runs
    import no extra (Prefect, httpx, matplotlib, Ray)."""
    code = ("import sys; import streamcosal.cli, streamcosal.run.pipeline, streamcosal.run.images, "
            "streamcosal.run.search; heavy = {'prefect', 'httpx', 'matplotlib', 'ray'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
    code = "import sys, streamcosal.cli; assert 'torch' not in sys.modules; streamcosal.cli.app(['--help'])"
    help_text = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    for command in ("images", "video", "search", "eval", "train", "serve"):
        assert f"  {command} " in help_text, help_text


def test_a_wrong_path_fails_before_the_model_loads_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = ("import sys, streamcosal.cli\ntry:\n    streamcosal.cli.app(['video', sys.argv[1], '--out', sys.argv[2]])\n"
            "except SystemExit as e:\n    assert 'torch' not in sys.modules, 'torch was imported'\n    raise")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing.mp4"), str(out)], capture_output=True,
                          text=True)
    assert done.returncode == 2 and f"no such file or folder: {tmp_path / 'missing.mp4'}" in done.stderr
    assert not out.exists()
