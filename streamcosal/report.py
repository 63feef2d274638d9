"""Evaluation reports: PR and F-measure curve plots (PNG) and Markdown tables.

Works on :class:`streamcosal.evaluation.EvalResult` objects, one method (``markdown_report``) or
several (``compare``: the paper's Table 1 and Fig. 7). Plots use matplotlib's ``Figure`` directly
(Agg rendering, no pyplot state), so they work headless and from threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from streamcosal.evaluation import EvalResult

TABLE_METRICS: tuple[str, ...] = ("S", "maxF", "maxE", "MAE", "meanF", "meanE", "adpF", "adpE", "wF")
"""Column order of Markdown tables: the paper's four first."""

LISTED_AT_MOST = 10
"""How many missing or resized samples a Markdown report names before pointing to the JSON."""


def fmt(value: float) -> str:
    """A metric as the paper prints it: three decimals, no leading zero (``.658``); NaN as ``-``."""
    if math.isnan(value):
        return "-"
    text = f"{value:.3f}"
    return text[1:] if text.startswith("0.") else text


def summary_line(result: EvalResult) -> str:
    """One line for a terminal: the paper's four metrics and the image counts."""
    m, c = result.overall, result.counts
    line = (
        f"{result.method} on {result.dataset}: S {fmt(m['S'])}  maxF {fmt(m['maxF'])}  "
        f"maxE {fmt(m['maxE'])}  MAE {fmt(m['MAE'])}  ({c.evaluated}/{c.images} images evaluated)"
    )
    if c.missing:
        line += f"  [{c.missing} without prediction, skipped]"
    return line


def markdown_report(result: EvalResult) -> str:
    """A short Markdown report of one result: counts, overall table, per-group table, warnings."""
    c = result.counts
    lines = [f"# {result.method} on {result.dataset}", ""]
    if c.missing:
        lines += [
            f"> **{c.missing} of {c.images} GT images have no prediction and were skipped**: the metrics "
            f"below cover {c.evaluated} images. Missing maps are not scored as empty maps.",
            "",
        ]
    lines += [
        f"Predictions `{result.pred_dir}`, ground truth `{result.gt_root}`: {c.evaluated} of {c.images} "
        f"images evaluated ({c.missing} without prediction, {c.missing_masks} without mask, "
        f"{c.unreadable} unreadable, {c.resized} resized to their mask).",
        "",
        _table(["method", "dataset", *TABLE_METRICS], [[result.method, result.dataset, *_values(result.overall)]]),
        "",
        "## Per group",
        "",
        _table(
            ["group", "images", "missing", *TABLE_METRICS],
            [[group, str(g.n_images), str(g.n_missing), *_values(g.metrics)] for group, g in result.groups.items()],
        ),
        "",
    ]
    if result.warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in result.warnings], ""]
    for title, keys in (("Missing predictions", result.missing), ("Resized maps", result.resized)):
        if keys:
            more = f", and {len(keys) - LISTED_AT_MOST} more (see summary.json)" if len(keys) > LISTED_AT_MOST else ""
            lines += [f"## {title}", "", ", ".join(f"`{k}`" for k in keys[:LISTED_AT_MOST]) + more, ""]
    return "\n".join(lines)


def markdown_comparison(results: Sequence[EvalResult]) -> str:
    """The paper's Table 1: one row per method, per dataset ``S / maxF / maxE / MAE`` and
    ``meanF / meanE``, then a note for every method whose predictions were incomplete."""
    datasets = _datasets(results)
    header = ["method"]
    for dataset in datasets:
        header += [f"{dataset} S / maxF / maxE / MAE", f"{dataset} meanF / meanE"]
    rows = []
    for method in dict.fromkeys(r.method for r in results):
        row = [method]
        for dataset in datasets:
            found = [r for r in results if r.method == method and r.dataset == dataset]
            if found:
                m = found[0].overall
                row += [" / ".join(fmt(m[k]) for k in ("S", "maxF", "maxE", "MAE")), f"{fmt(m['meanF'])} / {fmt(m['meanE'])}"]
            else:
                row += ["-", "-"]
        rows.append(row)
    lines = ["# Comparison", "", _table(header, rows), ""]
    notes = [
        f"- {r.method} on {r.dataset}: **{r.counts.missing} of {r.counts.images} GT images without prediction, skipped**"
        for r in results
        if r.counts.missing
    ]
    if notes:
        lines += ["Incomplete predictions (metrics cover the other images only):", "", *notes, ""]
    return "\n".join(lines)


def plot_pr(results: Sequence[EvalResult], path: Path | str) -> Path:
    """Precision-recall curves (256 thresholds, dataset-averaged), one panel per dataset."""
    return _plot(results, Path(path), "pr")


def plot_fcurve(results: Sequence[EvalResult], path: Path | str) -> Path:
    """F-measure (beta^2 = 0.3) against the threshold 0..255, one panel per dataset."""
    return _plot(results, Path(path), "f")


def compare(results: Sequence[EvalResult], out_dir: Path | str) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison_pr.png`` and ``comparison_fcurve.png`` for several
    methods (and possibly several datasets) into ``out_dir``; returns them by kind."""
    if not results:
        raise ValueError("compare() needs at least one evaluation result")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / "comparison.md"
    markdown.write_text(markdown_comparison(results))
    return {
        "markdown": markdown,
        "pr_plot": plot_pr(results, out_dir / "comparison_pr.png"),
        "f_plot": plot_fcurve(results, out_dir / "comparison_fcurve.png"),
    }


def _plot(results: Sequence[EvalResult], path: Path, kind: str) -> Path:
    """Draw PR (``kind="pr"``) or F-measure (``kind="f"``) curves and save them as PNG."""
    datasets = _datasets(results)
    figure = Figure(figsize=(5 * len(datasets), 4.5), layout="constrained")
    axes = figure.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        for result in (r for r in results if r.dataset == dataset):
            curves = result.curves
            if kind == "pr":
                ax.plot(curves.recall, curves.precision, label=result.method)
            else:
                ax.plot(np.arange(len(curves.fmeasure)), curves.fmeasure, label=result.method)
        if kind == "pr":
            ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        else:
            ax.set(xlabel="threshold", ylabel="F-measure", xlim=(0, 255), ylim=(0, 1.02))
        ax.set_title(dataset)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _datasets(results: Sequence[EvalResult]) -> list[str]:
    """Dataset names in order of first appearance."""
    return list(dict.fromkeys(r.dataset for r in results))


def _values(metrics: dict[str, float]) -> list[str]:
    """The ``TABLE_METRICS`` of a metrics dict, formatted."""
    return [fmt(metrics[k]) for k in TABLE_METRICS]


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown pipe table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
