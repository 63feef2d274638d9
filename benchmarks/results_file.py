"""Where a benchmark's Markdown table goes: printed, and written to ``--out`` when given."""

from __future__ import annotations

from pathlib import Path


def write_results(text: str, out: Path | None) -> None:
    """Print ``text``; also write it to ``out`` (its folder created) when ``out`` is given."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
