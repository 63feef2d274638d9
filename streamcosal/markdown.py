"""Markdown pipe tables, for the reports the runs, the nightly evaluation, the archive and the
benchmarks write."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """The lines of a Markdown pipe table. ``align``: one letter per column, ``l`` or ``r`` (right, for
    numbers); columns past its end are left-aligned. Cells are written with ``str``; a ``|`` in a cell is
    escaped and a line break becomes a space, so no cell breaks the table."""
    rules = ["---:" if align[i:i + 1] == "r" else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rules) + "|"]
    for row in rows:
        cells = (str(cell).replace("|", "\\|").replace("\n", " ") for cell in row)
        lines.append("| " + " | ".join(cells) + " |")
    return lines
