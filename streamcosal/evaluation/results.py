"""What an evaluation yields: per-group and overall metrics, curves and counts (`EvalResult`), and
the metric names in table order."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

METRICS: tuple[str, ...] = ("S", "maxF", "meanF", "adpF", "maxE", "meanE", "adpE", "MAE", "wF")
"""Metric names, in the order of tables and Parquet columns."""


ALL_GROUPS = "ALL"
"""The ``group`` value of the whole-dataset row in tables."""

@dataclass
class Curves:
    """Curves over the 256 thresholds 0..255 (ascending), averaged over images; each shape (256,)."""

    precision: np.ndarray
    recall: np.ndarray
    fmeasure: np.ndarray
    emeasure: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists, for JSON."""
        return {name: [float(v) for v in getattr(self, name)] for name in ("precision", "recall", "fmeasure", "emeasure")}


@dataclass
class GroupResult:
    """One group: ``n_images`` evaluated, ``n_missing`` without prediction, and its metrics.

    A group where no image could be evaluated has every metric NaN.
    """

    n_images: int
    n_missing: int
    metrics: dict[str, float]


@dataclass
class EvalCounts:
    """How many GT images were evaluated, and why the others were not."""

    images: int
    """GT images of the evaluated groups, with or without a mask."""
    evaluated: int
    missing: int
    """GT images with a mask but no prediction: skipped, not scored."""
    missing_masks: int
    unreadable: int
    resized: int
    """Evaluated maps resized to their mask (included in ``evaluated``)."""


@dataclass
class EvalResult:
    """The evaluation of one method on one dataset.

    ``missing``, ``missing_masks``, ``resized`` and ``unreadable`` list samples as ``group/stem``
    (``unreadable`` with the reason); ``warnings`` summarises everything noteworthy in sentences.
    """

    method: str
    dataset: str
    pred_dir: Path
    gt_root: Path
    overall: dict[str, float]
    groups: dict[str, GroupResult]
    curves: Curves
    counts: EvalCounts
    missing: list[str] = field(default_factory=list)
    missing_masks: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Everything as JSON-ready values (NaN becomes ``None``)."""
        return {
            "method": self.method,
            "dataset": self.dataset,
            "pred_dir": str(self.pred_dir),
            "gt_root": str(self.gt_root),
            "counts": vars(self.counts).copy(),
            "overall": json_numbers(self.overall),
            "groups": {
                group: {"n_images": g.n_images, "n_missing": g.n_missing, **json_numbers(g.metrics)}
                for group, g in self.groups.items()
            },
            "curves": self.curves.to_dict(),
            "warnings": list(self.warnings),
            "missing": list(self.missing),
            "missing_masks": list(self.missing_masks),
            "resized": list(self.resized),
            "unreadable": list(self.unreadable),
        }

    def table(self) -> pa.Table:
        """One row per group plus an ``ALL`` row (first): method, dataset, group, n_images,
        n_missing and every metric of ``METRICS``."""
        rows = [(ALL_GROUPS, self.counts.evaluated, self.counts.missing, self.overall)]
        rows += [(group, g.n_images, g.n_missing, g.metrics) for group, g in self.groups.items()]
        columns: dict[str, list] = {
            "method": [self.method] * len(rows),
            "dataset": [self.dataset] * len(rows),
            "group": [row[0] for row in rows],
            "n_images": [row[1] for row in rows],
            "n_missing": [row[2] for row in rows],
        }
        for metric in METRICS:
            columns[metric] = [float(row[3][metric]) for row in rows]
        return pa.table(columns)


def json_numbers(metrics: dict[str, float]) -> dict[str, float | None]:
    """Floats with NaN as ``None`` (JSON has no NaN)."""
    return {k: (None if math.isnan(v) else float(v)) for k, v in metrics.items()}
