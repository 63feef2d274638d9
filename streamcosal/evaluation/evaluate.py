"""Co-SOD evaluation: score saliency maps against a dataset's masks with the field's metrics.

This module computes and returns results; it writes and prints nothing (files and the batch of
methods: :mod:`streamcosal.evaluation.report`; the console: the CLI).

Metrics come from pysodmetrics (``py_sod_metrics``) with the field's conventions: maps and masks are
read as uint8 grey images, pysodmetrics binarises each mask at ``> 128`` (a non-binary mask, e.g.
anti-aliased edges, is binarised, not rejected) and min-max normalises each map itself (we pass the
raw uint8 map: no double normalisation).

- ``S``: S-measure (alpha 0.5), per image, averaged.
- ``maxF`` / ``meanF``: max / mean of the F-measure curve (beta^2 = 0.3) over the 256 thresholds
  0..255, the curve first averaged over all images. ``adpF``: F-measure at the adaptive threshold
  ``min(2 * mean(map), 1)`` per image, averaged.
- ``maxE`` / ``meanE`` / ``adpE``: the same for the E-measure.
- ``MAE``: mean absolute error per image (normalised map vs binary mask), averaged.
- ``wF``: weighted F-measure (beta^2 = 1, as in Margolin et al.), per image, averaged.

Overall numbers average over every evaluated image of the dataset (not over groups), exactly as one
pysodmetrics object fed all images would; per-group numbers come from one pysodmetrics object per
group, and the overall ones are their image-count-weighted average (identical, since every result
is a per-image mean).

A GT image without prediction is *skipped* (as the field's toolboxes do), not scored as an all-zero
map: it is counted and listed in :attr:`EvalResult.missing` and announced first in every report. A
map of another size than its mask is resized to the mask (bilinear) and listed in
:attr:`EvalResult.resized`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import py_sod_metrics as sod

from streamcosal.evaluation.results import METRICS, Curves, EvalCounts, EvalResult, GroupResult
from streamcosal.io.datasets import CoSODDataset, Sample, index_images, load_dataset, named_alike
from streamcosal.io.imagefile import read_gray_checked, read_mask


@dataclass
class _Findings:
    """What evaluating one method noticed, sample by sample (``group/stem``); becomes the result's
    lists and warnings."""

    missing: list[str] = field(default_factory=list)  # GT images without prediction (skipped)
    missing_masks: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)  # with the sizes
    unreadable: list[str] = field(default_factory=list)  # with the reason
    non_binary: list[str] = field(default_factory=list)
    scaled: list[str] = field(default_factory=list)  # label masks (max <= 128) binarised at half their maximum
    constant: list[str] = field(default_factory=list)  # maps of one value throughout
    colour: list[str] = field(default_factory=list)  # maps drawn in colour (heat maps), scored by their luma
    missing_by_group: dict[str, int] = field(default_factory=dict)

    def warnings(self, n_images: int, pred_dir: Path) -> list[str]:
        """One sentence per kind of problem, most important first."""
        kinds = (  # (samples, what happened to them: "{}" is the first one), most important first
            (self.scaled, "mask(s) have their maximum at or below 128 (label masks such as 0/1), so the binarisation "
                          "at > 128 would leave them empty: they were binarised at half their maximum instead, e.g. {}"),
            (self.colour, "map(s) are colour pictures (a heat map's colour scale?), scored by their brightness, which "
                          "is not their values: give grey maps (0 = background, 255 = object), e.g. {}"),
            (self.constant, "map(s) hold one value throughout (an empty or saturated map, or values in an unread "
                            "channel), e.g. {}"),
            ([f"{pred_dir / key}.png" for key in self.missing],
             f"of {n_images} GT images have no prediction and were SKIPPED (not scored as empty maps), e.g. {{}}: "
             "the metrics cover only the other images"),
            (self.missing_masks, "GT image(s) have no mask and were not evaluated, e.g. {}"),
            (self.unreadable, "map(s) or mask(s) could not be read and were skipped, e.g. {}"),
            (self.resized, "map(s) differ in size from their mask and were resized (bilinear) to it, e.g. {}"),
            (self.non_binary, "mask(s) hold values other than 0 and 255 and were binarised at > 128, e.g. {}"),
        )
        return [f"{len(samples)} " + sentence.format(samples[0]) for samples, sentence in kinds if samples]


@dataclass
class _Summary:
    """Per-image means and mean curves of ``n`` images."""

    n: int
    sm: float
    mae: float
    wfm: float
    adaptive_f: float
    adaptive_e: float
    curves: Curves

    def metrics(self) -> dict[str, float]:
        """The named metrics of ``METRICS``."""
        return {
            "S": float(self.sm),
            "maxF": float(self.curves.fmeasure.max()),
            "meanF": float(self.curves.fmeasure.mean()),
            "adpF": float(self.adaptive_f),
            "maxE": float(self.curves.emeasure.max()),
            "meanE": float(self.curves.emeasure.mean()),
            "adpE": float(self.adaptive_e),
            "MAE": float(self.mae),
            "wF": float(self.wfm),
        }


class _GroupMeter:
    """The pysodmetrics objects of one group of images."""

    def __init__(self) -> None:
        self.n = 0
        self.sm = sod.Smeasure(alpha=0.5)
        self.em = sod.Emeasure()
        self.mae = sod.MAE()
        self.wfm = sod.WeightedFmeasure()
        self.fm = sod.FmeasureV2(
            {
                "fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3),
                "p": sod.PrecisionHandler(with_dynamic=True, with_adaptive=False),
                "r": sod.RecallHandler(with_dynamic=True, with_adaptive=False),
            }
        )

    def step(self, pred: np.ndarray, mask: np.ndarray) -> None:
        """Add one uint8 map and its uint8 mask of the same (H, W)."""
        for metric in (self.sm, self.em, self.mae, self.wfm, self.fm):
            metric.step(pred, mask)
        self.n += 1

    def summary(self) -> _Summary:
        """Means over the images stepped so far; curves flipped to ascending thresholds."""
        fm = self.fm.get_results()
        em = self.em.get_results()["em"]
        curves = Curves(
            precision=np.flip(fm["p"]["dynamic"]),
            recall=np.flip(fm["r"]["dynamic"]),
            fmeasure=np.flip(fm["fm"]["dynamic"]),
            emeasure=np.flip(em["curve"]),
        )
        return _Summary(
            n=self.n,
            sm=float(self.sm.get_results()["sm"]),
            mae=float(self.mae.get_results()["mae"]),
            wfm=float(self.wfm.get_results()["wfm"]),
            adaptive_f=float(fm["fm"]["adaptive"]),
            adaptive_e=float(em["adp"]),
            curves=curves,
        )


def evaluate(
    pred_dir: Path | str,
    gt: Path | str | CoSODDataset,
    *,
    name: str = "method",
    groups: Sequence[str] | None = None,
    on_image: Callable[[], None] | None = None,
) -> EvalResult:
    """Evaluate the saliency maps of one method on a Co-SOD dataset.

    Args:
        pred_dir: maps as ``<pred_dir>/<group>/<stem>.png`` (8-bit grey, what ``streamcosal images``
            writes; other image extensions are accepted). For a flat dataset (one group, no group
            folders) the maps may also lie in ``<pred_dir>/<image folder name>/`` (what
            ``streamcosal images <root>/images`` writes) or directly in ``<pred_dir>``. A method's maps of
            several datasets side by side are found in ``<pred_dir>/<dataset name>/<group>/``.
        gt: a dataset root in any layout of :mod:`streamcosal.io.datasets`, or a loaded dataset.
        name: the method's name in reports.
        groups: evaluate only these groups (default: all).
        on_image: called once per GT image as it is done (a progress bar's advance).

    Raises:
        FileNotFoundError: ``pred_dir`` or the dataset is missing.
        ValueError: unknown group names, or no image at all could be evaluated.
    """
    dataset = gt if isinstance(gt, CoSODDataset) else load_dataset(gt)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder {pred_dir} of method {name!r} does not exist")
    pred_dir = _dataset_predictions(pred_dir, dataset)
    selected = select_groups(dataset, groups)

    summaries: dict[str, _Summary] = {}
    found = _Findings()
    warnings = [f"dataset {dataset.name}: {w}" for w in dataset.warnings]
    n_images = sum(len(dataset.groups[group]) for group in selected)
    for group in selected:
        samples = dataset.groups[group]
        predictions, extra = _group_predictions(pred_dir, group, samples, dataset.flat, dataset.image_dir.name, warnings)
        if extra:
            warnings.append(
                f"group {group!r}: {len(extra)} prediction(s) match no GT image and were ignored "
                f"(e.g. {extra[0]}): check that --pred and --gt belong together"
            )
        meter = _GroupMeter()
        found.missing_by_group[group] = 0
        for sample in samples:
            if on_image is not None:
                on_image()
            if sample.mask is None:
                found.missing_masks.append(sample.key)
                continue
            pred_path = predictions.get(sample.stem)
            if pred_path is None:
                found.missing.append(sample.key)
                found.missing_by_group[group] += 1
                continue
            try:
                (pred, colour), (mask, read_as) = read_gray_checked(pred_path), read_mask(sample.mask)
            except OSError as error:
                found.unreadable.append(f"{sample.key}: {error}")
                continue
            if colour:
                found.colour.append(sample.key)
            if pred.min() == pred.max():
                found.constant.append(sample.key)
            if read_as == "labels":  # label masks ({0, 1}; JPEG's {0, 1, 2}) would be empty at > 128
                found.scaled.append(sample.key)
            if not _is_binary(mask):
                found.non_binary.append(sample.key)
            if pred.shape != mask.shape:
                turned = " (width and height swapped: a map turned by EXIF orientation?)" if pred.shape == mask.shape[::-1] else ""
                found.resized.append(f"{sample.key} ({pred.shape[1]}x{pred.shape[0]} -> {mask.shape[1]}x{mask.shape[0]}){turned}")
                pred = cv2.resize(pred, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR)
            meter.step(pred, mask)
        if meter.n:
            summaries[group] = meter.summary()
        else:
            warnings.append(f"group {group!r}: no image could be evaluated; its metrics are NaN")

    if not summaries and len(found.missing_masks) == n_images:
        first = dataset.groups[selected[0]][0]
        masks = sorted(index_images(dataset.mask_dir / selected[0] if not dataset.flat else dataset.mask_dir)[0].values())
        held = (f"the masks there are named otherwise (e.g. {masks[0].name} for the image {first.image.name}): a mask "
                "pairs with its image by the stem, the name before the ending" if masks else
                "the masks folder is empty or missing")
        raise ValueError(
            f"no GT image of {dataset.root} has a mask (e.g. {found.missing_masks[0]}): {held}; put one mask per "
            f"image (same stem, .png; e.g. {first.stem}.png) in {dataset.mask_dir} and run again"
        )
    if not summaries:
        example = pred_dir / selected[0] / f"{dataset.groups[selected[0]][0].stem}.png"
        deeper = sorted(p.parent for p in pred_dir.glob(f"*/{selected[0]}") if p.is_dir())
        hint = f" (the maps seem to lie one folder deeper: give {deeper[0]})" if len(deeper) == 1 else ""
        raise ValueError(
            f"method {name!r}: no map in {pred_dir} could be scored against {dataset.root} "
            f"({len(found.missing)} without prediction, {len(found.missing_masks)} without mask, "
            f"{len(found.unreadable)} unreadable); a map is expected at e.g. {example}{hint}"
        )

    warnings = found.warnings(n_images, pred_dir) + warnings
    overall = _combine(list(summaries.values()))
    nan_metrics = {metric: math.nan for metric in METRICS}
    group_results = {
        group: GroupResult(
            n_images=summaries[group].n if group in summaries else 0,
            n_missing=found.missing_by_group[group],
            metrics=summaries[group].metrics() if group in summaries else dict(nan_metrics),
        )
        for group in selected
    }
    counts = EvalCounts(
        images=n_images,
        evaluated=overall.n,
        missing=len(found.missing),
        missing_masks=len(found.missing_masks),
        unreadable=len(found.unreadable),
        resized=len(found.resized),
    )
    return EvalResult(
        method=name,
        dataset=dataset.name,
        pred_dir=pred_dir,
        gt_root=dataset.root,
        overall=overall.metrics(),
        groups=group_results,
        curves=overall.curves,
        counts=counts,
        missing=found.missing,
        missing_masks=found.missing_masks,
        resized=found.resized,
        unreadable=found.unreadable,
        warnings=warnings,
    )


def select_groups(dataset: CoSODDataset, groups: Sequence[str] | None) -> list[str]:
    """The groups to evaluate, in dataset order; unknown names are an error."""
    if groups is None:
        return list(dataset.groups)
    if isinstance(groups, str):  # one group's name, not its letters
        groups = [groups]
    wanted = set(groups)
    if not wanted:
        raise ValueError(f"no group to evaluate (groups is empty): name some of {list(dataset.groups)}, or give None "
                         "for all")
    unknown = sorted(wanted - set(dataset.groups))
    if unknown:
        raise ValueError(f"dataset {dataset.name} has no group(s) {unknown}; its groups are {list(dataset.groups)}")
    return [g for g in dataset.groups if g in wanted]


def _dataset_predictions(pred_dir: Path, dataset: CoSODDataset) -> Path:
    """``pred_dir``, or its folder named after the dataset where a method's maps of several datasets lie side
    by side (``PRED/CoCA/<group>/``, ``PRED/CoSal2015/<group>/``) and no group of this one is directly in it."""
    nested = pred_dir / dataset.name
    if dataset.flat or not nested.is_dir() or any((pred_dir / group).is_dir() for group in dataset.groups):
        return pred_dir
    return nested


def _group_predictions(
    pred_dir: Path, group: str, samples: list[Sample], flat: bool, image_dir_name: str, warnings: list[str]
) -> tuple[dict[str, Path], list[str]]:
    """Stem -> map of one group (its folder matched in any case, as the masks' are), and the names of maps that
    match no sample."""
    present = [p.name for p in pred_dir.iterdir() if p.is_dir()] if pred_dir.is_dir() else []
    folder = pred_dir / (named_alike(present, group) or group)
    if flat:  # the group's own folder, the image folder's name (what ``streamcosal images`` writes), or none
        candidates = [folder, pred_dir / image_dir_name, pred_dir]
        folder = next((c for c in candidates if index_images(c)[0]), folder)
    predictions, duplicates = index_images(folder)
    if not folder.is_dir():
        warnings.append(f"group {group!r}: prediction folder {folder} does not exist")
    if duplicates:
        warnings.append(f"group {group!r}: maps sharing a stem were ignored: {', '.join(duplicates[:3])}")
    stems = {sample.stem for sample in samples}
    extra = sorted(path.name for stem, path in predictions.items() if stem not in stems)
    return predictions, extra


def _is_binary(mask: np.ndarray) -> bool:
    """True when the mask holds only 0 and 255."""
    return bool(np.all((mask == 0) | (mask == 255)))


def _combine(summaries: list[_Summary]) -> _Summary:
    """The summary of all images of ``summaries``: their image-count-weighted average."""
    weights = np.array([s.n for s in summaries], dtype=np.float64)
    total = weights.sum()

    def mean(values: list) -> np.ndarray:
        return np.tensordot(weights, np.asarray(values, dtype=np.float64), axes=1) / total

    curves = Curves(
        **{name: mean([getattr(s.curves, name) for s in summaries]) for name in ("precision", "recall", "fmeasure", "emeasure")}
    )
    return _Summary(
        n=int(total),
        sm=float(mean([s.sm for s in summaries])),
        mae=float(mean([s.mae for s in summaries])),
        wfm=float(mean([s.wfm for s in summaries])),
        adaptive_f=float(mean([s.adaptive_f for s in summaries])),
        adaptive_e=float(mean([s.adaptive_e for s in summaries])),
        curves=curves,
    )
