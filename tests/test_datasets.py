"""Co-SOD dataset indexing: every named layout, flat folders, missing masks, the real shared sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA

from streamcosal.io.datasets import LAYOUTS, detect_layout, load_dataset

# the shared data lies beside the checkout (../shared/data), as for the rest of the suite
PASCAL = DATA / "pascal_coseg"
GROUPS = {"Sofa": 3, "Table": 2}  # group -> images taken from pascal_coseg


@pytest.fixture(autouse=True, scope="module")
def _real_data(data: Path) -> None:
    """The real data must be there (the conftest fixture fails the tests when it is not)."""


def make_tree(root: Path, image_name: str, mask_name: str, *, flat: bool = False) -> dict[str, list[str]]:
    """Link a few real pascal_coseg images and masks into ``root/<image_name>`` and
    ``root/<mask_name>``, with group folders unless ``flat``. Returns group -> stems."""
    taken: dict[str, list[str]] = {}
    for group, count in GROUPS.items():
        stems = sorted(p.stem for p in (PASCAL / "images" / group).glob("*.jpg"))[:count]
        taken[group] = stems
        for stem in stems:
            sub = "" if flat else group
            for folder, source in ((image_name, PASCAL / "images" / group / f"{stem}.jpg"),
                                   (mask_name, PASCAL / "masks" / group / f"{stem}.png")):
                target = root / folder / sub / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source)
        if flat:
            break
    return taken


LAYOUT_FOLDERS = [(layout, image, mask) for layout, pairs in LAYOUTS.items() for image, mask in pairs]


@pytest.mark.parametrize(("layout", "image_name", "mask_name"), LAYOUT_FOLDERS)
def test_every_layout_is_detected_and_loads(tmp_path: Path, layout: str, image_name: str, mask_name: str) -> None:
    taken = make_tree(tmp_path / "set", image_name, mask_name)
    _, detected_image, detected_mask = detect_layout(tmp_path / "set")
    assert (detected_image, detected_mask) == (image_name, mask_name)
    for chosen in (None, layout):
        dataset = load_dataset(tmp_path / "set", layout=chosen)
        assert dataset.image_dir == tmp_path / "set" / image_name
        assert dataset.mask_dir == tmp_path / "set" / mask_name
        assert {g: [s.stem for s in samples] for g, samples in dataset.groups.items()} == taken
        assert all(s.mask is not None and s.mask.stem == s.stem for s in dataset.samples())
        assert dataset.name == "set" and not dataset.flat and dataset.warnings == []


def test_named_layout_that_does_not_match_names_the_expected_folders(tmp_path: Path) -> None:
    make_tree(tmp_path / "set", "images", "masks")
    with pytest.raises(FileNotFoundError, match="binary"):
        load_dataset(tmp_path / "set", layout="coca")
    with pytest.raises(ValueError, match="unknown dataset layout"):
        load_dataset(tmp_path / "set", layout="duts")


def test_unknown_tree_lists_the_known_layouts(tmp_path: Path) -> None:
    (tmp_path / "set" / "pictures").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="GroundTruth"):
        load_dataset(tmp_path / "set")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "masks_of_a_group").mkdir()
    (tmp_path / "masks_of_a_group" / "a.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"it has no folders \(one group's images or masks\?\)"):
        load_dataset(tmp_path / "masks_of_a_group")



@pytest.mark.parametrize(("image_name", "mask_name"), [("image", "Binary"), ("IMAGES", "masks"), ("Img", "GT")])
def test_folder_names_match_in_any_case(tmp_path: Path, image_name: str, mask_name: str) -> None:
    taken = make_tree(tmp_path / "set", image_name, mask_name)
    dataset = load_dataset(tmp_path / "set")
    assert (dataset.image_dir.name, dataset.mask_dir.name) == (image_name, mask_name)
    assert {g: [s.stem for s in samples] for g, samples in dataset.groups.items()} == taken


@pytest.mark.parametrize(("image_tree", "mask_tree"), [("images", "gts"), ("img", "gt"), ("Image", "GroundTruth")])
def test_benchmark_pack_datasets_load_from_either_folder_or_the_pack(tmp_path: Path, image_tree: str,
                                                                      mask_tree: str) -> None:
    """<top>/images/<dataset>/<group>/ beside <top>/gts/<dataset>/<group>/ (several datasets in two trees)."""
    pack = tmp_path / "test"
    taken = make_tree(pack, f"{image_tree}/CoCA", f"{mask_tree}/CoCA")
    for given in (pack / mask_tree / "CoCA", pack / image_tree / "CoCA", pack):
        dataset = load_dataset(given)
        assert dataset.name == "CoCA" and dataset.root == given
        assert (dataset.image_dir, dataset.mask_dir) == (pack / image_tree / "CoCA", pack / mask_tree / "CoCA")
        assert {g: [s.stem for s in samples] for g, samples in dataset.groups.items()} == taken
        assert all(s.mask is not None for s in dataset.samples()) and not dataset.flat
    make_tree(pack, f"{image_tree}/CoSal2015", f"{mask_tree}/CoSal2015")
    assert load_dataset(pack / image_tree / "CoSal2015").name == "CoSal2015"
    with pytest.raises(FileNotFoundError, match=r"pack of 2 datasets \(CoCA, CoSal2015\): give one of them, e\.g\. .*/CoCA"):
        load_dataset(pack)


def test_group_folders_of_masks_match_in_any_case_and_unpaired_ones_are_warned(tmp_path: Path) -> None:
    taken = make_tree(tmp_path / "set", "images", "masks")
    (tmp_path / "set" / "masks" / "Sofa").rename(tmp_path / "set" / "masks" / "sofa")
    (tmp_path / "set" / "masks" / "Lamp").mkdir()
    dataset = load_dataset(tmp_path / "set")
    assert {g: [s.stem for s in samples] for g, samples in dataset.groups.items()} == taken
    assert dataset.missing_masks == []
    assert dataset.warnings == [f"mask folder(s) without an image folder of the same name were ignored: Lamp "
                                f"(in {tmp_path / 'set' / 'masks'})"]


def test_groups_with_subfolders_are_no_benchmark_pack(tmp_path: Path) -> None:
    """images/Sofa/sub/*.jpg beside masks/Sofa/*.png: a dataset whose images lie one level too deep."""
    make_tree(tmp_path / "set", "images", "masks")
    for group in GROUPS:
        folder = tmp_path / "set" / "images" / group
        (folder / "sub").mkdir()
        for image in folder.glob("*.jpg"):
            image.rename(folder / "sub" / image.name)
    with pytest.raises(FileNotFoundError, match="no image .* found in"):
        load_dataset(tmp_path / "set")


def test_a_linked_dataset_is_named_after_the_link(tmp_path: Path) -> None:
    make_tree(tmp_path / "CoCA_v2_20240101", "image", "binary")
    (tmp_path / "CoCA").symlink_to(tmp_path / "CoCA_v2_20240101")
    assert load_dataset(tmp_path / "CoCA").name == "CoCA"

def test_flat_folder_is_one_group_named_after_the_dataset(tmp_path: Path) -> None:
    taken = make_tree(tmp_path / "horses", "images", "masks", flat=True)
    dataset = load_dataset(tmp_path / "horses")
    assert dataset.flat
    assert list(dataset.groups) == ["horses"]
    assert [s.stem for s in dataset.groups["horses"]] == next(iter(taken.values()))
    assert dataset.missing_masks == []


def test_missing_mask_is_kept_and_reported(tmp_path: Path) -> None:
    taken = make_tree(tmp_path / "set", "Image", "GroundTruth")
    lost = taken["Sofa"][1]
    (tmp_path / "set" / "GroundTruth" / "Sofa" / f"{lost}.png").unlink()
    dataset = load_dataset(tmp_path / "set")
    assert dataset.n_images == sum(GROUPS.values())
    assert [s.key for s in dataset.missing_masks] == [f"Sofa/{lost}"]


def test_masks_without_their_image_are_warned(tmp_path: Path) -> None:
    """Two photos deleted, their masks left: "10/10 images evaluated" and exit 0, without a word."""
    taken = make_tree(tmp_path / "set", "images", "masks")
    for stem in taken["Sofa"][:2]:
        (tmp_path / "set" / "images" / "Sofa" / f"{stem}.jpg").unlink()
    dataset = load_dataset(tmp_path / "set")
    assert dataset.n_images == sum(GROUPS.values()) - 2
    assert any(w.startswith("group 'Sofa': 2 mask(s) have no image in ") and f"{taken['Sofa'][0]}.png" in w
               for w in dataset.warnings), dataset.warnings


def test_missing_mask_folder_is_warned(tmp_path: Path) -> None:
    make_tree(tmp_path / "set", "images", "masks")
    for link in (tmp_path / "set" / "masks" / "Table").iterdir():
        link.unlink()
    (tmp_path / "set" / "masks" / "Table").rmdir()
    dataset = load_dataset(tmp_path / "set")
    assert len(dataset.missing_masks) == GROUPS["Table"]
    assert any("Table" in w and "does not exist" in w for w in dataset.warnings)


def test_image_extensions_are_case_insensitive_and_junk_ignored(tmp_path: Path) -> None:
    make_tree(tmp_path / "set", "images", "masks")
    sofa = tmp_path / "set" / "images" / "Sofa"
    first = sorted(sofa.iterdir())[0]
    first.rename(sofa / f"{first.stem}.JPG")
    (sofa / "notes.txt").write_text("not an image")
    (sofa / ".DS_Store").write_bytes(b"")
    dataset = load_dataset(tmp_path / "set")
    assert [s.image.name for s in dataset.groups["Sofa"]][0] == f"{first.stem}.JPG"
    assert len(dataset.groups["Sofa"]) == GROUPS["Sofa"]


@pytest.mark.parametrize(
    ("name", "groups", "images"),
    [("davis2016", 14, 873), ("sod", 1, 237), ("weizmann_horse", 1, 328), ("pascal_coseg", 12, 612), ("oxford_pets", 3, 600)],
)
def test_shared_sets_load_completely(name: str, groups: int, images: int) -> None:
    dataset = load_dataset(DATA / name)
    assert (len(dataset.groups), dataset.n_images) == (groups, images)
    assert dataset.missing_masks == [] and dataset.warnings == []
