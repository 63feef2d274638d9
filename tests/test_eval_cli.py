"""`streamcosal eval` end to end: predict-then-evaluate on a real subset, and folders of maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import torch
from conftest import group_images
from typer.testing import CliRunner

from streamcosal.cli import app
from streamcosal.model import GICD, build_backbone, save_checkpoint

runner = CliRunner()


def subset(data: Path, dest: Path) -> Path:
    for group in ("Horse", "Cat"):
        for image in group_images(data, "pascal_coseg", group, 3):
            for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
                target = dest / kind / group
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(data / "pascal_coseg" / kind / group / f"{image.stem}{suffix}", target)
    return dest


def test_eval_predicts_then_evaluates_then_compares(data: Path, tmp_path: Path) -> None:
    root = subset(data, tmp_path / "voc")
    torch.manual_seed(0)
    ck = tmp_path / "ck.pt"
    save_checkpoint(GICD(build_backbone("efficientnet_lite0")), ck, input_size=224, version="t")
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "--data", str(root), "--weights", str(ck), "--name", "untrained", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(next((out / "untrained").rglob("summary.json")).read_text())
    assert summary["counts"]["evaluated"] == 6 and summary["counts"]["missing"] == 0
    maps = out / "untrained" / "maps"
    assert sorted(p.parent.name for p in maps.rglob("*.png")) == ["Cat"] * 3 + ["Horse"] * 3

    # the same maps and the masks themselves as a second method: one comparison
    result = runner.invoke(app, ["eval", "--pred", str(maps), "--pred", str(root / "masks"), "--gt", str(root),
                                 "--name", "untrained", "--name", "oracle", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    table = pd.concat(pd.read_parquet(p) for p in (tmp_path / "cmp").rglob("metrics.parquet"))
    overall = table[table["group"] == "ALL"].set_index("method")
    assert overall.loc["oracle", "maxF"] > 0.99 > overall.loc["untrained", "maxF"]
    assert (tmp_path / "cmp" / "comparison.md").is_file()


def test_eval_needs_either_gt_or_data(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "either --pred DIR --gt DIR, or --data DIR" in result.output


def test_eval_refuses_pred_with_data(tmp_path: Path) -> None:
    """--data scores the model's own maps: maps given with --pred would be ignored."""
    (tmp_path / "maps").mkdir()
    result = runner.invoke(app, ["eval", "--data", str(tmp_path), "--pred", str(tmp_path / "maps"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--pred goes with --gt" in result.output
