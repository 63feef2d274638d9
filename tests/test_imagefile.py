"""One image reader, one EXIF-orientation rule: a phone photo stored sideways is read upright by the
image groups, the evaluation and the training data alike, and its map lines up with its mask."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import group_images
from PIL import Image

from streamcosal.evaluation.report import predict_and_evaluate
from streamcosal.inference.engine import CoSalEngine
from streamcosal.io.imagefile import read_gray_checked, read_image
from streamcosal.run.images import segment_folders
from streamcosal.training import jigsaw

ROTATE_90_CW = 6  # EXIF orientation: the stored pixels must be turned 90 degrees clockwise to view


@pytest.fixture(scope="module")
def phone(tmp_path_factory: pytest.TempPathFactory, data: Path) -> dict[str, Path | np.ndarray]:
    """A real PASCAL photo stored sideways with an orientation tag (as phones save them), beside its
    upright mask (as a person labels what a viewer shows); plus an untagged photo of the same group."""
    root = tmp_path_factory.mktemp("phone") / "phone"
    upright_path, plain_path = group_images(data, "pascal_coseg", "Cat", 2)
    upright = np.asarray(Image.open(upright_path).convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = ROTATE_90_CW
    photo = root / "images" / "cat" / "sideways.jpg"
    photo.parent.mkdir(parents=True)
    Image.fromarray(np.rot90(upright)).save(photo, quality=95, exif=exif)  # stored turned 90 degrees left
    (root / "images" / "cat" / "plain.jpg").symlink_to(plain_path)
    masks = root / "masks" / "cat"
    masks.mkdir(parents=True)
    (masks / "sideways.png").symlink_to(data / "pascal_coseg" / "masks" / "Cat" / f"{upright_path.stem}.png")
    (masks / "plain.png").symlink_to(data / "pascal_coseg" / "masks" / "Cat" / f"{plain_path.stem}.png")
    return {"root": root, "photo": photo, "mask": masks / "sideways.png", "upright": upright}


def test_a_sideways_photo_is_read_upright(phone: dict) -> None:
    upright = phone["upright"]
    with Image.open(phone["photo"]) as stored:
        assert (stored.height, stored.width) == upright.shape[1::-1]  # the file holds it sideways
    rgb, size = read_image(phone["photo"])
    assert rgb.shape == upright.shape and size == upright.shape[:2]
    assert np.abs(rgb.astype(int) - upright).mean() < 3  # the same pixels, up to JPEG's loss
    assert upright.shape[0] > upright.shape[1]  # a portrait photo
    small, size = read_image(phone["photo"], max_side=64)  # a JPEG decoded at a reduced scale too
    assert size == upright.shape[:2] and upright.shape[0] > small.shape[0] > small.shape[1]
    gray = read_gray_checked(phone["photo"])[0]
    assert gray.shape == upright.shape[:2]



@pytest.mark.parametrize(("suffix", "options"), [(".tif", {}), (".tif", {"compression": "tiff_lzw"}),
                                                  (".png", {}), (".webp", {"lossless": True})])
def test_every_format_reports_the_upright_size_once(phone: dict, tmp_path: Path, suffix: str, options: dict) -> None:
    """TIFF's decoder turns the image itself (its opened size already upright): the size is not turned twice."""
    upright = phone["upright"]
    exif = Image.Exif()
    exif[0x0112] = ROTATE_90_CW
    path = tmp_path / f"sideways{suffix}"
    Image.fromarray(np.rot90(upright)).save(path, exif=exif, **options)
    rgb, size = read_image(path)
    assert rgb.shape == upright.shape and size == upright.shape[:2]

def test_the_images_command_writes_the_map_at_the_upright_size(phone: dict, tmp_path: Path) -> None:
    engine = CoSalEngine.from_pretrained(device="cpu")
    report = segment_folders(phone["root"] / "images", tmp_path, engine)
    assert report.ok
    written = np.asarray(Image.open(tmp_path / "cat" / "sideways.png"))
    assert written.shape == phone["upright"].shape[:2]


def test_evaluation_and_training_see_the_photo_and_its_mask_aligned(phone: dict, tmp_path: Path) -> None:
    engine = CoSalEngine.from_pretrained(device="cpu")
    result = predict_and_evaluate(engine, phone["root"], tmp_path, name="gicd")
    assert result.counts.evaluated == 2 and result.resized == []  # no map had to be resized to its mask
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # load_pair warns when it has to resize a mask to its image
        rgb, mask = jigsaw.load_pair(phone["photo"], phone["mask"])
    assert mask.shape == rgb.shape[:2] == phone["upright"].shape[:2]


def test_training_reads_palette_and_label_masks_by_their_values(data: Path, tmp_path: Path) -> None:
    """A real PASCAL mask saved as VOC's palette (object (128, 0, 0), grey 38), as 0/1 labels in 8 and 16 bits,
    and as a palette of greys with soft edges: training's pairs get the object each time (they were empty:
    every loss the largest, nothing learnt), the grey palette thresholded as grey."""
    image = data / "pascal_coseg" / "images" / "Cat" / "img_1001.jpg"
    truth = np.asarray(Image.open(data / "pascal_coseg" / "masks" / "Cat" / "img_1001.png").convert("L")) > 128
    voc = Image.fromarray(truth.astype(np.uint8), "P")
    voc.putpalette([0, 0, 0, 128, 0, 0])
    soft = Image.fromarray(np.where(truth, 200, 20).astype(np.uint8), "P")  # grey 200 and 20
    soft.putpalette([v for i in range(256) for v in (i, i, i)])
    for name, mask in (("voc.png", voc), ("labels.png", Image.fromarray(truth.astype(np.uint8))),
                       ("labels16.png", Image.fromarray(truth.astype(np.uint16))), ("soft.png", soft)):
        mask.save(tmp_path / name)
        assert (jigsaw.load_pair(image, tmp_path / name)[1] == truth).all(), name
