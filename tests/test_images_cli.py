"""`streamcosal images` end to end on real groups, and every bad input a user can bring."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import group_images, untrained_checkpoint
from PIL import Image
from typer.testing import CliRunner

from streamcosal.cli import app
from streamcosal.inference.precision import cpu_has_native_bf16
from streamcosal.io.imagefile import ImageReadError, read_image
from streamcosal.model import VGG16Backbone
from streamcosal.run.images import find_groups

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("ck"), 224, "lite0.pt", "test")


def copy_group(data: Path, dataset: str, group: str, n: int, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, dest / p.name)) for p in group_images(data, dataset, group, n)]


def test_images_end_to_end_on_real_groups(data: Path, tmp_path: Path, checkpoint: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    copied = copy_group(data, "pascal_coseg", "Horse", 3, inp / "Horse") + copy_group(data, "oxford_pets", "Bengal", 2, inp / "Bengal")
    result = runner.invoke(app, ["images", str(inp), "--out", str(out), "--weights", str(checkpoint)])
    assert result.exit_code == 0, result.output
    for src in copied:
        written = cv2.imread(str(out / src.parent.name / f"{src.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint8 and written.shape == Image.open(src).size[::-1]
    assert "wrote 5 maps in 2 groups" in result.output
    # each group's consensus named: the horses' most probable ImageNet class is "sorrel", the only horse class
    assert "consensus of group 'Horse': sorrel " in result.output and "consensus of group 'Bengal': " in result.output
    first = result.output.splitlines()[0]  # what runs, said first
    if torch.cuda.is_available():
        assert first.startswith("model gicd-efficientnet_lite0 test on cuda, 224 px, guided upsampling, precision ")
        assert "(auto: this GPU" in first
    else:
        auto = "bf16 (auto: this CPU has native bf16)" if cpu_has_native_bf16() else "fp32 (auto: this CPU has no native bf16)"
        assert first == f"model gicd-efficientnet_lite0 test on cpu, 224 px, guided upsampling, precision {auto}"


def test_each_group_runs_at_the_size_of_its_median_image(tmp_path: Path, data: Path) -> None:
    from streamcosal.inference.engine import CoSalEngine
    from streamcosal.model import GICD, build_backbone, save_checkpoint
    from streamcosal.run.images import segment_folders

    ck = tmp_path / "ms.pt"  # runs groups at 64 to 128 px
    save_checkpoint(GICD(build_backbone("efficientnet_lite0")), ck, input_size=64, max_input_size=128, version="t")
    inp = tmp_path / "in"
    copy_group(data, "pascal_coseg", "Horse", 3, inp / "Horse")  # 500 px photos: 128
    (inp / "Small").mkdir()
    horses = group_images(data, "pascal_coseg", "Horse", 3)
    for path in horses[:2]:  # 120x90: 90 / 1.4 is under 96, so 64
        Image.open(path).resize((120, 90)).save(inp / "Small" / path.name)
    Image.open(horses[0]).resize((120, 90)).save(inp / "Horse" / "thumbnail.jpg")  # outvoted: still 128
    report = segment_folders(inp, tmp_path / "api", CoSalEngine.from_checkpoint(ck, device="cpu"))
    assert report.ok and report.input_sizes == {"Horse": 128, "Small": 64}
    result = runner.invoke(app, ["images", str(inp), "--out", str(tmp_path / "out"), "--weights", str(ck)])
    assert result.exit_code == 0, result.output
    assert ", 64-128 px, " in result.output.splitlines()[0]
    assert "wrote 6 maps in 2 groups to " in result.output and "(at 64-128 px by image size)" in result.output


@pytest.mark.slow
def test_input_size_flip_upsampling_and_compile_options_reach_the_engine(tmp_path: Path, checkpoint: Path,
                                                                          data: Path) -> None:
    inp = tmp_path / "in"
    copy_group(data, "pascal_coseg", "Horse", 2, inp / "Horse")
    args = ["images", str(inp), "--out", str(tmp_path / "out"), "--weights", str(checkpoint)]
    result = runner.invoke(app, [*args, "--input-size", "128", "--flip", "--upsampling", "bilinear", "--compile"])
    assert result.exit_code == 0, result.output
    assert ", 128 px, flip, compiled, precision " in result.output.splitlines()[0]  # the checkpoint's guided is off
    bad = runner.invoke(app, [*args, "--input-size", "100"])
    assert bad.exit_code == 2 and "input_size: Input should be a multiple of 32 (got 100)" in bad.output
    bad = runner.invoke(app, [*args, "--upsampling", "nearest"])
    assert bad.exit_code == 2 and "Invalid value for '--upsampling'" in bad.output, bad.output


def test_impossible_device_or_precision_is_a_clear_error(tmp_path: Path, checkpoint: Path, data: Path) -> None:
    copy_group(data, "pascal_coseg", "Horse", 1, tmp_path / "in")
    args = ["images", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--weights", str(checkpoint)]
    result = runner.invoke(app, [*args, "--device", "cpu", "--precision", "fp16"])
    assert result.exit_code == 2 and "error: fp16 runs on GPUs only" in result.output
    if not torch.cuda.is_available():
        result = runner.invoke(app, [*args, "--device", "cuda"])
        assert result.exit_code == 2 and "error: device 'cuda' was asked for but no CUDA GPU is available" in result.output
    assert not (tmp_path / "out").exists()


def test_a_flat_folder_is_one_group(data: Path, tmp_path: Path, checkpoint: Path) -> None:
    copy_group(data, "weizmann_horse", "horse", 2, tmp_path / "horses")
    result = runner.invoke(app, ["images", str(tmp_path / "horses"), "--out", str(tmp_path / "out"), "--weights", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out" / "horses").glob("*.png"))) == 2


def test_bad_files_are_reported_and_the_rest_is_processed(data: Path, tmp_path: Path, checkpoint: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = copy_group(data, "pascal_coseg", "Cat", 2, inp / "Cat")
    copy_group(data, "pascal_coseg", "Dog", 1, inp / "Dog")  # a group of one image
    (inp / "Cat" / "zero.jpg").write_bytes(b"")
    (inp / "Cat" / "truncated.jpg").write_bytes(good[0].read_bytes()[:2000])
    (inp / "Cat" / "fake.png").write_text("not an image")
    (inp / "Cat" / "notes.txt").write_text("a non-image file is left out, not an error")
    (inp / "Cat" / f"._{good[0].name}").write_bytes(b"\x00\x05\x16\x07" + bytes(80))  # macOS's AppleDouble of a copy
    (inp / "Cat" / ".DS_Store").write_bytes(bytes(64))
    (inp / "Empty").mkdir()
    result = runner.invoke(app, ["images", str(inp), "--out", str(out), "--weights", str(checkpoint)])
    assert result.exit_code == 1
    for name in ("zero.jpg", "truncated.jpg", "fake.png", "'Empty'"):
        assert name in result.output, result.output
    assert "failed: " + str(inp / "Cat" / "notes.txt") not in result.output  # left out, not an error: a note names it
    assert "group 'Cat': left out 1 file(s) that are not images: notes.txt" in " ".join(result.output.split())
    assert "._" not in result.output and ".DS_Store" not in result.output  # hidden files: neither images nor notes
    assert sorted(p.name for p in (out / "Cat").iterdir()) == sorted(f"{p.stem}.png" for p in good)
    assert (out / "Dog").is_dir() and len(list((out / "Dog").iterdir())) == 1



def test_names_subfolders_maps_of_other_runs_and_out_inside_the_input(data: Path, tmp_path: Path,
                                                                     checkpoint: Path) -> None:
    """a.jpg and a.png beside a.jpg.png (whose stem is a.jpg) get a map each; a group's subfolder is named, a group of
    only a subfolder says so; maps of another run in a group's folder are said; --out inside the input folder
    is no group the second time."""
    inp = tmp_path / "in"
    first, second = copy_group(data, "pascal_coseg", "Cat", 2, inp / "Cat")
    shutil.copy(first, inp / "Cat" / "a.jpg")
    Image.open(second).save(inp / "Cat" / "a.jpg.png")
    Image.open(second).save(inp / "Cat" / "a.png")
    copy_group(data, "pascal_coseg", "Dog", 2, inp / "Dog" / "deeper")
    copy_group(data, "pascal_coseg", "Horse", 2, inp / "Horse")
    copy_group(data, "pascal_coseg", "Horse", 1, inp / "Horse" / "sub")
    out = inp / "maps"
    (out / "Horse").mkdir(parents=True)
    cv2.imwrite(str(out / "Horse" / "stale.png"), np.zeros((4, 4), np.uint8))
    for attempt in range(2):
        result = runner.invoke(app, ["images", str(inp), "--out", str(out), "--weights", str(checkpoint)])
        text = " ".join(result.output.split())
        assert result.exit_code == 1, result.output  # the Dog group: no images of its own
        assert "group 'Dog' has no images (its subfolder(s) deeper are not read" in text
        assert "group 'Horse': left out its subfolder(s) sub" in text
        assert "group 'maps'" not in text
        assert sorted(p.name for p in (out / "Cat").iterdir()) == sorted(
            [f"{first.stem}.png", f"{second.stem}.png", "a.jpg.png", "a.png.png", "a.jpg.png.png"])
    assert "also holds 1 map(s) of no image of this group (e.g. stale.png" in text

def test_every_image_kind_is_read_as_rgb8(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    cv2.imwrite(str(tmp_path / "gray16.png"), (rng.random((40, 60)) * 65535).astype(np.uint16))
    cv2.imwrite(str(tmp_path / "rgb16.png"), (rng.random((40, 60, 3)) * 65535).astype(np.uint16))
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, rgb[:, :, :1]])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    for path in sorted(tmp_path.iterdir()):
        image, size = read_image(path)
        assert image.shape == (40, 60, 3) and image.dtype == np.uint8, path.name
        assert size == (40, 60)
    gray16 = read_image(tmp_path / "gray16.png")[0]
    assert gray16.max() > 200  # scaled from 16 bits, not clipped to 255 or truncated to 0


def test_a_very_large_image_is_decoded_reduced_and_mapped_at_full_size(tmp_path: Path, checkpoint: Path) -> None:
    big = np.zeros((6000, 8000, 3), np.uint8)
    big[2000:4000, 3000:5000] = 255
    (tmp_path / "in").mkdir()
    Image.fromarray(big).save(tmp_path / "in" / "big.jpg", quality=80)
    image, size = read_image(tmp_path / "in" / "big.jpg", max_side=896)
    assert size == (6000, 8000) and max(image.shape[:2]) <= 2000
    result = runner.invoke(app, ["images", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--weights", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out" / "in" / "big.png").size == (8000, 6000)


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ImageReadError, match="x.jpg"):
        read_image(tmp_path / "x.jpg")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_groups(tmp_path / "nowhere")


def test_wrong_or_corrupted_weights_exit_with_the_file_named(tmp_path: Path, checkpoint: Path, data: Path) -> None:
    copy_group(data, "pascal_coseg", "Cat", 1, tmp_path / "in")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(checkpoint.read_bytes()[:1000])
    result = runner.invoke(app, ["images", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--weights", str(bad)])
    assert result.exit_code == 2 and "bad.pt" in result.output
    foreign = tmp_path / "vgg_backbone.pt"
    torch.save(VGG16Backbone().state_dict(), foreign)
    result = runner.invoke(app, ["images", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--weights", str(foreign)])
    assert result.exit_code == 2 and "vgg_backbone.pt is not a streamcosal GICD checkpoint" in result.output
