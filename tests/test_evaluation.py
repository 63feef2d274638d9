"""Co-SOD evaluation against pysodmetrics itself, on real pascal_coseg masks and generated maps."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import py_sod_metrics as sod
import pytest
from conftest import DATA

from streamcosal.evaluation.evaluate import evaluate
from streamcosal.evaluation.report import EvalBatchError, compare, run_eval, write_outputs
from streamcosal.evaluation.results import METRICS
from streamcosal.io.datasets import load_dataset

PASCAL = DATA / "pascal_coseg"
GROUPS = {"Sofa": 4, "Table": 3}  # group -> images taken from pascal_coseg


@pytest.fixture(autouse=True, scope="module")
def _real_data(data: Path) -> None:
    """The real data must be there (the conftest fixture fails the tests when it is not)."""


def blurred_noisy(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible saliency map: the mask blurred, with noise."""
    blurred = cv2.GaussianBlur(mask.astype(np.float64), (0, 0), sigmaX=6)
    return np.clip(blurred * 0.8 + rng.normal(0, 20, mask.shape), 0, 255).astype(np.uint8)


def center_prior(mask: np.ndarray) -> np.ndarray:
    """A map that knows nothing of the image: a Gaussian at its centre."""
    h, w = mask.shape
    y, x = np.mgrid[0:h, 0:w]
    prior = np.exp(-(((x - w / 2) / (0.3 * w)) ** 2 + ((y - h / 2) / (0.3 * h)) ** 2) / 2)
    return (255 * prior).astype(np.uint8)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``gt/`` (ours layout, real images and masks) and prediction folders ``gt_maps``, ``blurred``
    and ``center`` as ``<pred>/<group>/<stem>.png``."""
    root = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    for group, count in GROUPS.items():
        for mask_path in sorted((PASCAL / "masks" / group).glob("*.png"))[:count]:
            for folder, source in (("images", PASCAL / "images" / group / f"{mask_path.stem}.jpg"), ("masks", mask_path)):
                (root / "gt" / folder / group).mkdir(parents=True, exist_ok=True)
                (root / "gt" / folder / group / source.name).symlink_to(source)
            mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
            for method, prediction in (("gt_maps", mask), ("blurred", blurred_noisy(mask, rng)), ("center", center_prior(mask))):
                (root / method / group).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / method / group / mask_path.name), prediction)
    return root


def copy_bench(bench: Path, tmp_path: Path, *folders: str) -> Path:
    """A private copy of some bench folders (symlinks kept), for tests that alter files."""
    for folder in folders:
        shutil.copytree(bench / folder, tmp_path / folder, symlinks=True)
    return tmp_path


def reference(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, object]:
    """The metrics of (map, mask) pairs computed with pysodmetrics directly, the classic way
    (the deprecated ``Fmeasure`` class, as the field's tables were made)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm = sod.Fmeasure(beta=0.3)
    sm, em, mae, wfm = sod.Smeasure(alpha=0.5), sod.Emeasure(), sod.MAE(), sod.WeightedFmeasure()
    for pred, mask in pairs:
        for metric in (fm, sm, em, mae, wfm):
            metric.step(pred=pred, gt=mask)
    f, e = fm.get_results(), em.get_results()["em"]
    return {
        "S": sm.get_results()["sm"],
        "maxF": f["fm"]["curve"].max(),
        "meanF": f["fm"]["curve"].mean(),
        "adpF": f["fm"]["adp"],
        "maxE": e["curve"].max(),
        "meanE": e["curve"].mean(),
        "adpE": e["adp"],
        "MAE": mae.get_results()["mae"],
        "wF": wfm.get_results()["wfm"],
        "precision": np.flip(f["pr"]["p"]),
        "recall": np.flip(f["pr"]["r"]),
        "fmeasure": np.flip(f["fm"]["curve"]),
    }


def read_pairs(pred_dir: Path, gt_root: Path, group: str | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(map, mask) pairs of a bench folder, all groups or one."""
    pairs = []
    for mask_path in sorted((gt_root / "masks").glob(f"{group or '*'}/*.png")):
        pred_path = pred_dir / mask_path.parent.name / mask_path.name
        if pred_path.exists():
            pairs.append((cv2.imread(str(pred_path), cv2.IMREAD_GRAYSCALE), cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)))
    return pairs


def assert_matches(metrics: dict[str, float], expected: dict[str, object]) -> None:
    for metric in METRICS:
        assert metrics[metric] == pytest.approx(expected[metric], abs=1e-12), metric


@pytest.mark.parametrize("method", ["blurred", "center"])
def test_matches_pysodmetrics_overall_and_per_group(bench: Path, method: str) -> None:
    result = evaluate(bench / method, bench / "gt", name=method)
    expected = reference(read_pairs(bench / method, bench / "gt"))
    assert_matches(result.overall, expected)
    for name in ("precision", "recall", "fmeasure"):
        np.testing.assert_allclose(getattr(result.curves, name), expected[name], atol=1e-12)
        assert getattr(result.curves, name).shape == (256,)
    for group, count in GROUPS.items():
        assert result.groups[group].n_images == count
        assert_matches(result.groups[group].metrics, reference(read_pairs(bench / method, bench / "gt", group)))
    assert result.counts.evaluated == result.counts.images == sum(GROUPS.values())
    assert result.warnings == []


def test_ground_truth_as_prediction_is_perfect(bench: Path) -> None:
    m = evaluate(bench / "gt_maps", bench / "gt").overall
    assert m["S"] == pytest.approx(1, abs=1e-6)
    assert m["maxF"] == pytest.approx(1) and m["wF"] == pytest.approx(1)
    assert m["maxE"] == pytest.approx(1, abs=1e-4)  # pysodmetrics divides by (H*W - 1): slightly above 1
    assert m["MAE"] == 0



def test_benchmark_pack_with_the_maps_of_several_datasets(bench: Path, tmp_path: Path) -> None:
    """Packs as distributed: test/images/<dataset>/ beside test/gts/<dataset>/, and a method's maps of every
    dataset side by side (PRED/<dataset>/<group>/), given as PRED: the dataset's own folder is scored."""
    (tmp_path / "test" / "images").mkdir(parents=True)
    (tmp_path / "test" / "images" / "CoCA").symlink_to(bench / "gt" / "images")
    (tmp_path / "test" / "gts").mkdir()
    (tmp_path / "test" / "gts" / "CoCA").symlink_to(bench / "gt" / "masks")
    (tmp_path / "preds" / "method").mkdir(parents=True)
    (tmp_path / "preds" / "method" / "CoCA").symlink_to(bench / "gt_maps")
    (tmp_path / "preds" / "method" / "CoSal2015").symlink_to(bench / "center")
    result = evaluate(tmp_path / "preds" / "method", tmp_path / "test" / "gts" / "CoCA")
    assert result.dataset == "CoCA" and result.overall["maxF"] == pytest.approx(1)
    assert sum(g.n_images for g in result.groups.values()) == sum(GROUPS.values())


def _rewrite(folder: Path, convert, suffix: str = ".png") -> None:
    """Each grey PNG under ``folder`` (links replaced) rewritten as ``convert(array)`` (a PIL image) with ``suffix``."""
    for path in sorted(folder.rglob("*.png")):
        array = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        path.unlink()
        convert(array).save(path.with_suffix(suffix))


def test_masks_and_maps_as_drawn_by_other_tools(bench: Path, tmp_path: Path) -> None:
    """Transparency over white (RGBA, the object in alpha) and 0/1 label masks saved as JPEG (values 0-2) score as
    the plain files; heat maps, constant maps and maps turned by 90 degrees are scored with a warning each."""
    from PIL import Image

    plain = evaluate(bench / "blurred", bench / "gt").overall
    root = copy_bench(bench, tmp_path, "gt", "blurred", "gt_maps")
    shutil.copytree(root / "gt", root / "gt_jpg", symlinks=True)
    _rewrite(root / "gt" / "masks", lambda a: Image.fromarray(np.dstack([np.full_like(a, 255)] * 3 + [a]), "RGBA"))
    _rewrite(root / "blurred", lambda a: Image.fromarray(np.dstack([np.zeros_like(a)] * 3 + [a]), "RGBA"))
    assert_matches(evaluate(root / "blurred", root / "gt").overall, plain)
    _rewrite(root / "gt_jpg" / "masks", lambda a: Image.fromarray((a > 128).astype(np.uint8)), ".jpg")
    labels = evaluate(bench / "gt_maps", root / "gt_jpg")
    assert labels.overall["maxF"] > 0.9 and any("half their maximum" in w for w in labels.warnings)

    sofa = sorted((root / "gt_maps" / "Sofa").iterdir())
    jet = cv2.applyColorMap(cv2.imread(str(sofa[0]), cv2.IMREAD_GRAYSCALE), cv2.COLORMAP_JET)
    cv2.imwrite(str(sofa[0]), jet)
    cv2.imwrite(str(sofa[1]), np.zeros_like(cv2.imread(str(sofa[1]), cv2.IMREAD_GRAYSCALE)))
    cv2.imwrite(str(sofa[2]), np.rot90(cv2.imread(str(sofa[2]), cv2.IMREAD_GRAYSCALE)))
    warned = " ".join(evaluate(root / "gt_maps", bench / "gt").warnings)
    assert "1 map(s) are colour pictures" in warned and "1 map(s) hold one value throughout" in warned
    assert "width and height swapped" in warned


def test_palette_and_16_bit_label_masks_are_read_by_their_values(bench: Path, tmp_path: Path) -> None:
    """VOC's palette masks (object index 1 drawn (128, 0, 0), a void border of index 255) scored by their
    indices, and 16-bit 0/1 label masks by their values: perfect maps score 1 (the palette's greys made the
    void border the object, maxF 0.34; 16-bit labels read as empty masks)."""
    from PIL import Image

    def voc(a: np.ndarray) -> Image.Image:
        index = (a > 128).astype(np.uint8)
        index[(cv2.dilate(index, np.ones((5, 5), np.uint8)) > 0) & (index == 0)] = 255  # void, outside the object
        img = Image.fromarray(index, "P")
        img.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 253 + [224, 224, 192])
        return img

    root = copy_bench(bench, tmp_path, "gt")
    shutil.copytree(root / "gt", root / "gt16", symlinks=True)
    _rewrite(root / "gt" / "masks", voc)
    _rewrite(root / "gt16" / "masks", lambda a: Image.fromarray((a > 128).astype(np.uint16)))
    for gt in ("gt", "gt16"):
        result = evaluate(bench / "gt_maps", root / gt)
        assert result.overall["maxF"] == pytest.approx(1) and result.overall["MAE"] < 0.01, (gt, result.overall)


def test_prediction_folders_match_their_groups_in_any_case(bench: Path, tmp_path: Path) -> None:
    """Maps in `pred/sofa` for the group `Sofa` (masks matched so already): the group was skipped, exit 1."""
    root = copy_bench(bench, tmp_path, "gt_maps")
    for group in [p for p in (root / "gt_maps").iterdir() if p.is_dir()]:
        group.rename(group.with_name(group.name.lower()))
    result = evaluate(root / "gt_maps", bench / "gt")
    assert result.overall["maxF"] == pytest.approx(1) and not result.missing, result.warnings


def test_masks_named_otherwise_are_said_so(bench: Path, tmp_path: Path) -> None:
    root = copy_bench(bench, tmp_path, "gt")
    for mask in sorted((root / "gt" / "masks").rglob("*.png")):
        mask.rename(mask.with_name(f"{mask.stem}_gt.png"))
    with pytest.raises(ValueError, match=r"the masks there are named otherwise \(e\.g\. .*_gt\.png for the image"):
        evaluate(bench / "gt_maps", root / "gt")



def test_maps_one_folder_too_deep_and_16_bit_maps_over_part_of_the_range(bench: Path, tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "maps").symlink_to(bench / "blurred")
    with pytest.raises(ValueError, match="one folder deeper: give .*nested/maps"):
        evaluate(tmp_path / "nested", bench / "gt")
    for path in sorted((bench / "blurred").rglob("*.png")):  # 0-255 as 0-1000 of 65535
        target = tmp_path / "wide" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), np.round(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) * (1000 / 255)).astype(np.uint16))
    wide, plain = evaluate(tmp_path / "wide", bench / "gt").overall, evaluate(bench / "blurred", bench / "gt").overall
    assert wide["maxF"] == pytest.approx(plain["maxF"], abs=0.005) and wide["S"] == pytest.approx(plain["S"], abs=0.005)

def test_method_named_after_the_folder_above_the_datasets_maps(bench: Path, tmp_path: Path) -> None:
    """--pred PRED/GICD/gt (the maps of the dataset named gt): the method is GICD, not gt."""
    (tmp_path / "preds" / "GICD").mkdir(parents=True)
    (tmp_path / "preds" / "GICD" / "gt").symlink_to(bench / "gt_maps")
    (result,) = run_eval([tmp_path / "preds" / "GICD" / "gt"], bench / "gt", None, tmp_path / "out")
    assert result.method == "GICD" and (tmp_path / "out" / "GICD").is_dir()

def test_center_prior_scores_below_blurred_ground_truth(bench: Path) -> None:
    blurred = evaluate(bench / "blurred", bench / "gt").overall
    center = evaluate(bench / "center", bench / "gt").overall
    for metric in ("S", "maxF", "maxE", "meanF", "wF"):
        assert center[metric] < blurred[metric], metric
    assert center["MAE"] > blurred["MAE"]


def test_missing_prediction_is_skipped_counted_and_reported(bench: Path, tmp_path: Path) -> None:
    root = copy_bench(bench, tmp_path, "gt", "blurred")
    lost = sorted((root / "blurred" / "Table").iterdir())[0]
    lost.unlink()
    result = evaluate(root / "blurred", root / "gt", name="blurred")
    assert result.missing == [f"Table/{lost.stem}"]
    assert (result.counts.missing, result.counts.evaluated) == (1, sum(GROUPS.values()) - 1)
    assert result.groups["Table"].n_missing == 1 and result.groups["Table"].n_images == GROUPS["Table"] - 1
    assert "SKIPPED" in result.warnings[0]
    assert_matches(result.overall, reference(read_pairs(root / "blurred", root / "gt")))
    paths = write_outputs(result, tmp_path / "out")
    assert "1 of 7 GT images have no prediction and were skipped" in paths["markdown"].read_text()


def test_prediction_of_another_size_is_resized_and_reported(bench: Path, tmp_path: Path) -> None:
    root = copy_bench(bench, tmp_path, "gt", "blurred")
    small = sorted((root / "blurred" / "Sofa").iterdir())[0]
    full = cv2.imread(str(small), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(small), cv2.resize(full, (full.shape[1] // 2, full.shape[0] // 2), interpolation=cv2.INTER_AREA))
    result = evaluate(root / "blurred", root / "gt")
    assert result.counts.resized == 1 and result.resized[0].startswith(f"Sofa/{small.stem} (")
    assert any("resized" in w for w in result.warnings)
    pairs = read_pairs(root / "blurred", root / "gt")
    pairs = [(cv2.resize(p, (m.shape[1], m.shape[0]), interpolation=cv2.INTER_LINEAR), m) for p, m in pairs]
    assert_matches(result.overall, reference(pairs))


def test_non_binary_mask_is_binarised_above_128(bench: Path, tmp_path: Path) -> None:
    root = copy_bench(bench, tmp_path, "gt", "blurred")
    link = sorted((root / "gt" / "masks" / "Sofa").iterdir())[0]
    mask = cv2.imread(str(link), cv2.IMREAD_GRAYSCALE)
    soft = np.where(mask > 128, 200, 0).astype(np.uint8)  # object at 200 ...
    soft[: soft.shape[0] // 4][soft[: soft.shape[0] // 4] == 0] = 100  # ... and a band of background at 100
    link.unlink()
    cv2.imwrite(str(link), soft)
    result = evaluate(root / "blurred", root / "gt")
    assert any("binarised at > 128" in w for w in result.warnings)
    assert_matches(result.overall, evaluate(bench / "blurred", bench / "gt").overall)


@pytest.mark.parametrize("pred_sub", ["", "images", "sofa"])
def test_flat_dataset(bench: Path, tmp_path: Path, pred_sub: str) -> None:
    """A flat dataset is one group; its maps may lie flat, under the image folder's name (what
    ``streamcosal images sofa/images`` writes) or under the group's name."""
    for folder in ("sofa/images", "sofa/masks", f"pred/{pred_sub}"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    for mask in sorted((bench / "gt" / "masks" / "Sofa").iterdir()):
        (tmp_path / "sofa" / "masks" / mask.name).symlink_to(mask.resolve())
        (tmp_path / "sofa" / "images" / f"{mask.stem}.jpg").symlink_to((bench / "gt" / "images" / "Sofa" / f"{mask.stem}.jpg").resolve())
        shutil.copy(bench / "blurred" / "Sofa" / mask.name, tmp_path / "pred" / pred_sub / mask.name)
    result = evaluate(tmp_path / "pred", tmp_path / "sofa")
    assert list(result.groups) == ["sofa"] and result.counts.evaluated == GROUPS["Sofa"]
    assert_matches(result.overall, reference(read_pairs(bench / "blurred", bench / "gt", "Sofa")))


def test_user_errors_have_clear_messages(bench: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="prediction folder"):
        evaluate(tmp_path / "nothing", bench / "gt")
    with pytest.raises(ValueError, match="no group"):
        evaluate(bench / "blurred", bench / "gt", groups=["Cow"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="expected at e.g."):
        evaluate(tmp_path / "empty", bench / "gt")


def test_groups_subset(bench: Path) -> None:
    result = evaluate(bench / "blurred", load_dataset(bench / "gt"), groups=["Table"])
    assert list(result.groups) == ["Table"] and result.counts.images == GROUPS["Table"]
    assert_matches(result.overall, reference(read_pairs(bench / "blurred", bench / "gt", "Table")))


def test_outputs_are_written(bench: Path, tmp_path: Path) -> None:
    result = evaluate(bench / "blurred", bench / "gt", name="blurred")
    paths = write_outputs(result, tmp_path / "out")
    summary = json.loads(paths["json"].read_text())
    assert summary["overall"]["maxF"] == pytest.approx(result.overall["maxF"])
    assert set(summary["groups"]) == set(GROUPS) and len(summary["curves"]["fmeasure"]) == 256
    table = pd.read_parquet(paths["parquet"])
    assert list(table["group"]) == ["ALL", *GROUPS]
    assert list(table["n_images"]) == [sum(GROUPS.values()), *GROUPS.values()]
    assert {"method", "dataset", *METRICS} <= set(table.columns)
    assert table.loc[0, "S"] == pytest.approx(result.overall["S"])
    for kind in ("pr_plot", "f_plot"):
        assert paths[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[kind].stat().st_size > 5000
    markdown = paths["markdown"].read_text()
    assert "| method | dataset | S | maxF | maxE | MAE |" in markdown and "| Sofa | 4 | 0 |" in markdown


def test_compare_two_methods(bench: Path, tmp_path: Path) -> None:
    results = [evaluate(bench / m, bench / "gt", name=m) for m in ("blurred", "center")]
    paths = compare(results, tmp_path)
    table = paths["markdown"].read_text()
    assert "| method | gt S / maxF / maxE / MAE | gt meanF / meanE |" in table
    assert table.count("| blurred |") == 1 and table.count("| center |") == 1
    assert all(paths[kind].stat().st_size > 5000 for kind in ("pr_plot", "f_plot"))


def test_run_eval_writes_everything_and_finishes_after_a_failure(bench: Path, tmp_path: Path) -> None:
    with pytest.raises(EvalBatchError) as caught:
        run_eval([bench / "blurred", tmp_path / "missing", bench / "center"], bench / "gt", ["blur", "broken", "center"], tmp_path / "out")
    assert list(caught.value.failures) == ["broken"]
    assert [r.method for r in caught.value.results] == ["blur", "center"]
    for method in ("blur", "center"):
        assert (tmp_path / "out" / method / "gt" / "metrics.parquet").is_file()
    assert (tmp_path / "out" / "comparison.md").is_file()
    results = run_eval([bench / "blurred"], bench / "gt", None, tmp_path / "single")
    assert results[0].method == "blurred" and (tmp_path / "single" / "blurred" / "gt" / "report.md").is_file()
    with pytest.raises(ValueError, match="one name per prediction folder"):
        run_eval([bench / "blurred"], bench / "gt", ["a", "b"], tmp_path / "x")
