"""Evaluation reports: the files of an evaluation (JSON, Parquet, PR and F-measure curve plots,
Markdown tables) and the batch jobs that write them (``streamcosal eval``).

Works on :class:`streamcosal.evaluation.results.EvalResult` objects (:mod:`streamcosal.evaluation` computes
them), one method (``write_outputs``, ``markdown_report``) or several (``compare``: the paper's
Table 1 and Fig. 7). Prints nothing: the CLI prints what the results and errors say. Plots use
matplotlib's ``Figure`` directly (Agg rendering, no pyplot state), so they work headless and from
threads.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from streamcosal import markdown
from streamcosal.evaluation.evaluate import evaluate, select_groups
from streamcosal.evaluation.results import EvalResult
from streamcosal.io.datasets import load_dataset
from streamcosal.storage.files import atomic_write

if TYPE_CHECKING:
    from streamcosal.inference.engine import CoSalEngine

Tracker = Callable[[str, int], Callable[[], None]]
"""A progress display: given a description and a number of images, the callable to call per image."""

TABLE_METRICS: tuple[str, ...] = ("S", "maxF", "maxE", "MAE", "meanF", "meanE", "adpF", "adpE", "wF")
"""Column order of Markdown tables: the paper's four first."""

LISTED_AT_MOST = 10
"""How many missing or resized samples a Markdown report names before pointing to the JSON."""


class EvalBatchError(RuntimeError):
    """Some methods of a :func:`run_eval` batch failed; the others were evaluated and written.

    Attributes:
        results: the successful evaluations.
        failures: method name -> error message.
    """

    def __init__(self, results: list[EvalResult], failures: dict[str, str]):
        self.results = results
        self.failures = failures
        lines = "\n".join(f"  {name}: {message}" for name, message in failures.items())
        evaluations = len(set(failures) | {result.method for result in results})  # a method may fail after its result
        super().__init__(f"{len(failures)} of {evaluations} evaluation(s) failed:\n{lines}")


def write_outputs(result: EvalResult, out_dir: Path | str) -> dict[str, Path]:
    """Write one result's files into ``out_dir``: ``summary.json``, ``metrics.parquet``,
    ``pr_curve.png``, ``f_curve.png`` and ``report.md``. Returns them by kind."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "summary.json", "parquet": out_dir / "metrics.parquet",
             "markdown": out_dir / "report.md"}
    with atomic_write(paths["json"], "w") as f:
        f.write(json.dumps(result.to_dict(), indent=2) + "\n")
    with atomic_write(paths["parquet"]) as f:
        pq.write_table(result.table(), f)
    with atomic_write(paths["markdown"], "w") as f:
        f.write(markdown_report(result))
    paths["pr_plot"] = plot_pr([result], out_dir / "pr_curve.png")
    paths["f_plot"] = plot_fcurve([result], out_dir / "f_curve.png")
    return paths


def run_eval(
    pred: Sequence[Path | str],
    gt: Path | str,
    names: Sequence[str] | None,
    out_dir: Path | str,
    *,
    groups: Sequence[str] | None = None,
    track: Tracker | None = None,
) -> list[EvalResult]:
    """What ``streamcosal eval --pred DIR [--pred DIR2 ...] --gt DIR [--name ...] --out DIR`` does.

    Evaluates each prediction folder on the dataset ``gt``, writes each method's files into
    ``<out_dir>/<method>/<dataset>/`` (see :func:`write_outputs`) and, with several methods,
    the comparison ``<out_dir>/comparison.md``, ``comparison_pr.png`` and ``comparison_fcurve.png``.

    Args:
        names: one name per prediction folder; default: each folder's name.
        track: a progress display over each method's images (default: none).

    Returns:
        The results, in the order of ``pred`` (their ``warnings`` say what to tell the user).

    Raises:
        ValueError: ``names`` does not match ``pred``, or two methods share a name.
        FileNotFoundError: the dataset cannot be loaded.
        EvalBatchError: after evaluating and writing all the others, when some methods failed.
    """
    pred = [Path(p) for p in pred]
    if not pred:
        raise ValueError("no prediction folder given: pass at least one --pred DIR")
    dataset = load_dataset(gt)
    if names is None:  # the folder's name as given; its parent's where it is the dataset's (PRED/GICD/CoCA: GICD)
        names = [p.name if p.name.lower() != dataset.name.lower() or p.parent == p else p.parent.name
                 for p in (Path(os.path.abspath(p)) for p in pred)]
    elif len(names) != len(pred):
        raise ValueError(f"{len(names)} --name for {len(pred)} --pred: give one name per prediction folder, or none")
    folders = [safe_name(n) for n in names]
    duplicates = sorted({n for n, folder in zip(names, folders) if folders.count(folder) > 1})
    if duplicates:
        raise ValueError(
            f"methods {duplicates} would share an output folder: give each prediction folder a distinct --name"
        )
    out_dir = Path(out_dir)

    results: list[EvalResult] = []
    failures: dict[str, str] = {}
    for pred_dir, name, folder in zip(pred, names, folders):
        n_images = sum(len(samples) for group, samples in dataset.groups.items() if groups is None or group in groups)
        on_image = track(f"{name} on {dataset.name}", n_images) if track is not None else None
        try:
            result = evaluate(pred_dir, dataset, name=name, groups=groups, on_image=on_image)
        except (OSError, ValueError) as error:
            failures[name] = str(error)
            continue
        write_outputs(result, out_dir / folder / safe_name(dataset.name))
        results.append(result)
    if len(results) > 1:
        compare(results, out_dir)
    if failures:
        raise EvalBatchError(results, failures)
    return results


def predict_and_evaluate(engine: CoSalEngine, data: Path | str, out_dir: Path | str, *, name: str,
                         groups: Sequence[str] | None = None, track: Tracker | None = None) -> EvalResult:
    """What ``streamcosal eval --data DIR`` does: segment every group of the dataset (or ``groups``) with ``engine``
    (maps to ``<out_dir>/<name>/maps/<group>/<stem>.png``), then evaluate them like :func:`run_eval`.

    Raises:
        EvalBatchError: when some images could not be segmented (after evaluating the rest; the
            message names each).
    """
    from streamcosal.run.images import OutputError, segment_folders

    dataset = load_dataset(data)
    selected = select_groups(dataset, groups)  # unknown names fail before any work
    maps_dir = Path(out_dir) / safe_name(name) / "maps"
    for group in {*selected, dataset.image_dir.name} if dataset.flat else selected:  # an earlier run's maps
        for stale in (maps_dir / group).glob("*.png"):  # would be scored for images that fail this time
            stale.unlink()
    folder = segment_folders(dataset.image_dir, maps_dir, engine, show_progress=track is not None, groups=selected)
    if folder.stopped:
        raise OutputError(f"{folder.stopped}; the {folder.maps} maps written to {maps_dir} are kept")
    (result,) = run_eval([maps_dir], dataset.root, [name], out_dir, groups=groups, track=track)
    if not folder.ok:
        reasons = "; ".join(failure.reason for failure in folder.failures)
        raise EvalBatchError([result], {name: f"{len(folder.failures)} images could not be segmented: {reasons}"})
    return result


def safe_name(name: str, fallback: str = "method") -> str:
    """``name`` usable as a file or folder name (``fallback`` when nothing of it is)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or fallback


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
    markdown = out_dir / "comparison.md"
    with atomic_write(markdown, "w") as f:
        f.write(markdown_comparison(results))
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
    """A Markdown pipe table, metric columns right-aligned."""
    return "\n".join(markdown.table(header, rows, align="l" * (len(header) - len(TABLE_METRICS)) + "r" * len(TABLE_METRICS)))
