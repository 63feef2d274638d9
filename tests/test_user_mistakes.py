"""Issue 12: what a careless or unlucky user runs into, on real files.

The rule: a user's mistake or bad luck never destroys data, never ends in a traceback, never
gives a wrong result with exit status 0; the message names the file and what to do.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import group_images, untrained_checkpoint
from typer.testing import CliRunner

from streamcosal.cli import app
from streamcosal.model import GICD, build_backbone, save_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("ck"), 64, "dev.pt")


def photos(data: Path, dest: Path, n: int = 2, suffix: str = ".jpg", group: str = "Horse") -> list[Path]:
    """n real photos copied (or converted, for .png) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in group_images(data, "pascal_coseg", group, n):
        target = dest / f"{src.stem}{suffix}"
        if suffix == ".jpg":
            shutil.copy(src, target)
        else:
            cv2.imwrite(str(target), cv2.imread(str(src)))
        out.append(target)
    return out


def images(inp: Path, out: Path, checkpoint: Path, *extra: str):
    return runner.invoke(app, ["images", str(inp), "--out", str(out), "--weights", str(checkpoint), *extra])


# ----------------------------------------------------------------------------- data loss


@pytest.mark.parametrize("layout", ["groups", "flat"])
def test_an_output_folder_that_is_the_input_is_refused_and_the_photos_stay(data, tmp_path, checkpoint, layout):
    inp = tmp_path / "inpng"
    originals = photos(data, inp / "Horse" if layout == "groups" else inp, suffix=".png")
    before = {p: p.read_bytes() for p in originals}
    for out in (inp, originals[0].parent):
        result = images(inp, out, checkpoint)
        assert result.exit_code == 2, result.output
        assert "input folder" in result.output and "separate output folder" in result.output
        assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in originals} == before
    assert sorted(p for p in inp.rglob("*") if p.is_file()) == sorted(originals)


def test_images_sharing_a_stem_keep_both_maps(data, tmp_path, checkpoint):
    inp, out = tmp_path / "in", tmp_path / "out"
    jpg = photos(data, inp / "g", n=2)
    cv2.imwrite(str(inp / "g" / f"{jpg[0].stem}.png"), cv2.imread(str(jpg[1])))  # same stem, another photo
    result = images(inp, out, checkpoint)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (out / "g").iterdir())
    assert names == sorted([f"{jpg[0].name}.png", f"{jpg[0].stem}.png.png", f"{jpg[1].stem}.png"])
    assert "share a stem" in result.output and f"{jpg[0].name}.png" in result.output
    assert "wrote 3 maps" in result.output


def test_image_group_overlays_sharing_a_stem_keep_both(data, tmp_path, checkpoint):
    inp, out = tmp_path / "g", tmp_path / "out"
    jpg = photos(data, inp, n=2)
    cv2.imwrite(str(inp / f"{jpg[0].stem}.png"), cv2.imread(str(jpg[1])))
    result = runner.invoke(app, ["video", str(inp), "--out", str(out), "--overlay", "--weights", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert "consensus of group 'g': " in result.output  # the group's most probable ImageNet classes
    (folder,) = (out / "overlays").glob("*/*")
    assert len([p for p in folder.iterdir() if p.name != "contact_sheet.png"]) == 3


# ----------------------------------------------------------------------------- smaller, same rule


def test_a_flat_folder_with_a_subfolder_keeps_its_own_images(data, tmp_path, checkpoint):
    inp, out = tmp_path / "mixed", tmp_path / "out"
    own = photos(data, inp, n=2)
    photos(data, inp / "Cat", n=1, group="Cat")
    result = images(inp, out, checkpoint)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "mixed").iterdir()) == sorted(f"{p.stem}.png" for p in own)
    assert len(list((out / "Cat").iterdir())) == 1


def test_images_of_the_current_folder_get_a_group_folder(data, tmp_path, checkpoint, monkeypatch):
    own = photos(data, tmp_path / "here", n=2)
    monkeypatch.chdir(tmp_path / "here")
    result = images(Path("."), tmp_path / "out", checkpoint)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out" / "here").iterdir()) == sorted(f"{p.stem}.png" for p in own)


def test_maps_and_overlay_pngs_follow_the_umask(data, tmp_path, checkpoint):
    inp = tmp_path / "g"
    photos(data, inp, n=2)
    old = os.umask(0o022)
    try:
        assert images(inp, tmp_path / "maps", checkpoint).exit_code == 0
        result = runner.invoke(app, ["video", str(inp), "--out", str(tmp_path / "v"), "--overlay", "--weights", str(checkpoint)])
        assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    written = list((tmp_path / "maps").rglob("*.png")) + list((tmp_path / "v" / "overlays").rglob("*.png"))
    assert len(written) == 5
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_broken_and_looping_symlinks_are_reported_by_name(data, tmp_path, checkpoint):
    inp = tmp_path / "g"
    photos(data, inp, n=2)
    (inp / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (inp / "loop.jpg").symlink_to(inp / "loop.jpg")
    result = images(inp, tmp_path / "out", checkpoint)
    assert result.exit_code == 1, result.output
    assert "gone.jpg: broken symbolic link" in result.output and "loop.jpg: broken symbolic link" in result.output
    assert "wrote 2 maps" in result.output


def test_a_video_given_to_images_points_at_streamcosal_video(tmp_path, checkpoint):
    clip = tmp_path / "some.mp4"
    clip.write_bytes(b"\x00" * 100)
    result = images(clip, tmp_path / "out", checkpoint)
    assert result.exit_code == 2
    assert "some.mp4 is a file, not a folder of images" in result.output and "streamcosal video" in result.output


def test_ctrl_c_during_images_says_what_was_written(data, tmp_path, checkpoint, monkeypatch):
    from streamcosal.inference.engine import CoSalEngine

    inp = tmp_path / "in"
    photos(data, inp / "A", n=2)
    photos(data, inp / "B", n=2, group="Cat")
    segment = CoSalEngine.segment
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return segment(self, *args, **kwargs)

    monkeypatch.setattr(CoSalEngine, "segment", interrupted)
    result = images(inp, tmp_path / "out", checkpoint)
    assert result.exit_code == 130, result.output
    assert "interrupted: the 2 maps written to" in result.output and "Traceback" not in result.output
    assert len(list((tmp_path / "out" / "A").iterdir())) == 2


# ----------------------------------------------------------------------------- rich markup


def test_paths_with_brackets_are_printed_as_they_are(data, tmp_path, checkpoint):
    inp = tmp_path / "in"
    photos(data, inp / "g[", n=2)  # printed as .../g[/..., which rich reads as a closing tag
    (inp / "g[" / "bad[red]x.jpg").write_bytes(b"not a jpeg")
    result = images(inp, tmp_path / "out", checkpoint)
    assert result.exit_code == 1, result.output
    assert "g[/bad[red]x.jpg" in result.output and "MarkupError" not in result.output
    assert len(list((tmp_path / "out" / "g[").iterdir())) == 2


# ----------------------------------------------------------------------------- the consensus store


def test_rerunning_a_video_into_the_same_out_does_not_count_it_twice(data, tmp_path, checkpoint):
    from video_fixtures import davis_frames, encode_video

    from streamcosal.storage import ConsensusStore

    clip = tmp_path / "clip.mp4"
    encode_video(davis_frames("blackswan", n=12), clip, fps=10)
    args = ["video", str(clip), "--out", str(tmp_path / "out"), "--weights", str(checkpoint), "--consensus-frames", "4"]
    assert runner.invoke(app, args).exit_code == 0
    first = ConsensusStore.open(tmp_path / "out" / "consensus.npz").state("clip")
    assert runner.invoke(app, args).exit_code == 0
    second = ConsensusStore.open(tmp_path / "out" / "consensus.npz").state("clip")
    assert (second.n, second.t) == (first.n, first.t) == (4.0, pytest.approx(1.1, abs=1e-3))
    np.testing.assert_allclose(second.sums, first.sums, rtol=1e-5)


def test_brackets_in_names_paths_and_errors_of_every_command(data, tmp_path, checkpoint):
    from test_eval_cli import subset
    from video_fixtures import davis_frames, encode_video

    clip = tmp_path / "clip.mp4"
    encode_video(davis_frames("blackswan", n=4), clip, fps=10)
    result = runner.invoke(app, ["video", str(clip), "--group", "[/cat]", "--out", str(tmp_path / "v"),
                                 "--weights", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert "group '[/cat]': 4 frames" in result.output

    missing = tmp_path / "w[" / "model.pt"
    result = runner.invoke(app, ["images", str(tmp_path), "--out", str(tmp_path / "o"), "--weights", str(missing)])
    assert result.exit_code == 2 and "w[/model.pt" in result.output, result.output

    result = runner.invoke(app, ["search", "cat", "--store", str(tmp_path / "s[" / "x.npz")])
    assert result.exit_code == 2 and "no consensus store at" in result.output and "s[/x.npz" in result.output

    root = subset(data, tmp_path / "voc")
    result = runner.invoke(app, ["eval", "--pred", str(root / "masks"), "--gt", str(root), "--name", "[/m]",
                                 "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert "[/m] on" in result.output


# ----------------------------------------------------------------------------- one-line errors, before any work


@pytest.fixture
def read_only_folder(tmp_path):
    """A real read-only file system (a tmpfs mounted ro: root writes anywhere else)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a read-only tmpfs and needs root: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_an_out_that_is_a_file_or_read_only_is_refused_before_any_work(data, tmp_path, checkpoint, read_only_folder):
    from video_fixtures import davis_frames, encode_video

    clip, inp = tmp_path / "clip.mp4", tmp_path / "in"
    encode_video(davis_frames("blackswan", n=4), clip, fps=10)
    photos(data, inp, n=1)
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    for out, says in ((a_file, "is a file, not a folder"), (a_file / "sub", "is a file"),
                      (read_only_folder / "out", "cannot be written")):
        for args in (["video", str(clip)], ["images", str(inp)], ["eval", "--pred", str(inp), "--gt", str(inp)]):
            result = runner.invoke(app, [*args, "--out", str(out)] + (["--weights", str(checkpoint)] if args[0] != "eval" else []))
            assert result.exit_code == 2, (args, out, result.output)
            assert says in result.output and str(out) in result.output and "Traceback" not in result.output
            assert "model gicd" not in result.output  # refused before the model was loaded
    assert a_file.read_text() == "keep me" and not list(tmp_path.glob("**/runs"))


def test_an_unknown_device_is_a_one_line_error(data, tmp_path, checkpoint):
    photos(data, tmp_path / "in", n=1)
    result = images(tmp_path / "in", tmp_path / "out", checkpoint, "--device", "tpu")
    assert result.exit_code == 2 and "unknown device 'tpu': use auto, cpu or cuda" in result.output
    assert not (tmp_path / "out").exists()


def test_serve_with_a_bad_prefect_api_url_says_what_to_do():
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for url, says in ((f"http://127.0.0.1:{free}/api", "no Prefect API answers at"),
                          ("127.0.0.1:4200/api", "is not an http(s):// URL"),
                          (f"http://127.0.0.1:{server.server_port}/api", "is not a Prefect API (GET /health gave HTTP 404")):
            done = subprocess.run([sys.executable, "-c", "from streamcosal.cli import app; app()", "serve"],
                                  env={**os.environ, "PREFECT_API_URL": url}, capture_output=True, text=True, timeout=120)
            assert done.returncode == 2, (url, done.stderr[-2000:])
            assert says in done.stderr and "PREFECT_API_URL" in done.stderr and "Traceback" not in done.stderr
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- silent wrong results


def test_a_video_whose_size_changes_midway_gives_every_frame_once(data, tmp_path, checkpoint):
    """Two MPEG-TS clips of different sizes concatenated: decord repeats timestamps (and sizes);
    the frames must be the real ones, at their own size, with increasing timestamps."""
    from video_fixtures import davis_frames, encode_video

    from streamcosal.io.open import open_source
    from streamcosal.storage import decode_mask, read_results

    first, second = davis_frames("blackswan", n=10, size=(160, 96)), davis_frames("goat", n=10, size=(128, 80))
    encode_video(first, tmp_path / "a.ts", fps=10)
    encode_video(second, tmp_path / "b.ts", fps=10)
    joined = tmp_path / "joined.ts"
    joined.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())

    with open_source(joined) as source:
        frames = list(source)
    assert [f.index for f in frames] == list(range(20))
    assert [f.image.shape[:2] for f in frames] == [(96, 160)] * 10 + [(80, 128)] * 10
    assert np.all(np.diff([f.timestamp for f in frames]) > 0)
    for frame, original in zip(frames, first + second):
        assert np.abs(frame.image.astype(int) - original).mean() < 12  # the real frame, not a copy
    assert any("frame size changes at frame 10 from 160x96 to 128x80" in w for w in source.report.warnings)

    result = runner.invoke(app, ["video", str(joined), "--out", str(tmp_path / "out"), "--weights", str(checkpoint)])
    assert result.exit_code == 0, result.output
    rows = read_results(tmp_path / "out").sort_by("frame_index")
    assert rows.num_rows == 20 and np.all(np.diff(rows["timestamp"].to_numpy()) > 0)
    assert [decode_mask(r).shape for r in rows.to_pylist()] == [(96, 160)] * 10 + [(80, 128)] * 10


@pytest.mark.parametrize("sampling", [["--fps", "1"], ["--stride", "6"]])
def test_sampled_runs_of_the_bundled_example_find_its_event(tmp_path, sampling):
    """The unsampled run finds one event (0.0 s to 5.9 s); sampling must not lose it."""
    from streamcosal.storage import read_events

    example = Path(__file__).resolve().parents[1] / "examples" / "cat.mp4"
    result = runner.invoke(app, ["video", str(example), "--out", str(tmp_path / "out"), *sampling])
    assert result.exit_code == 0, result.output
    (event,) = read_events(tmp_path / "out").to_pylist()
    assert event["start_time"] == pytest.approx(0.0) and event["end_time"] >= 5.0


def test_eval_with_label_masks_in_0_1_scales_them_and_says_so(data, tmp_path):
    import json

    from test_eval_cli import subset

    root = subset(data, tmp_path / "voc")
    for i, mask in enumerate(sorted((root / "masks").rglob("*.png"))):  # 0/255 -> 0/1, as datasets in the wild store them
        labels = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 128
        cv2.imwrite(str(mask), labels.astype(np.uint16 if i % 2 else np.uint8))  # 8- and 16-bit files
    oracle = tmp_path / "oracle"
    shutil.copytree(data / "pascal_coseg" / "masks", oracle, ignore=lambda d, names: [
        n for n in names if (Path(d) / n).is_file() and not (root / "masks" / Path(d).name / n).exists()])
    result = runner.invoke(app, ["eval", "--pred", str(oracle), "--gt", str(root), "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert "warning: 6 mask(s) have their maximum at or below 128" in result.output
    summary = json.loads(next((tmp_path / "e").rglob("summary.json")).read_text())
    assert summary["overall"]["maxF"] > 0.99


def test_eval_names_an_empty_masks_folder_and_fails_on_skipped_maps(data, tmp_path):
    from test_eval_cli import subset

    root = subset(data, tmp_path / "voc")
    maps = tmp_path / "maps"
    shutil.copytree(root / "masks", maps)
    shutil.move(root / "masks", tmp_path / "masks_elsewhere")
    (root / "masks").mkdir()
    result = runner.invoke(app, ["eval", "--pred", str(maps), "--gt", str(root), "--out", str(tmp_path / "e")])
    assert result.exit_code == 1, result.output  # the method failed: nothing to score
    assert "has a mask" in result.output and "masks folder is empty" in result.output

    shutil.rmtree(root / "masks")
    shutil.move(tmp_path / "masks_elsewhere", root / "masks")
    unreadable, missing = sorted((maps / "Cat").iterdir())[:2]
    unreadable.write_bytes(b"not a png")
    missing.unlink()
    result = runner.invoke(app, ["eval", "--pred", str(maps), "--gt", str(root), "--out", str(tmp_path / "e2")])
    assert result.exit_code == 1, result.output
    assert "warning: 1 of 6 GT images have no prediction" in result.output
    assert "warning: 1 map(s) or mask(s) could not be read" in result.output and unreadable.stem in result.output
    assert "2 images were skipped" in result.output


@pytest.mark.parametrize("threshold", ["0", "1.5", "nan", "-0.1"])
def test_a_threshold_outside_0_1_is_refused_before_any_work(tmp_path, threshold):
    example = Path(__file__).resolve().parents[1] / "examples" / "cat.mp4"
    result = runner.invoke(app, ["video", str(example), "--out", str(tmp_path / "out"), "--threshold", threshold])
    assert result.exit_code == 2, result.output
    assert "threshold" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_training_state_given_as_weights_points_at_best_pt(data, tmp_path):
    torch.save({"decoder": {}, "optimizer": {}, "epoch": 1}, tmp_path / "state.pt")
    photos(data, tmp_path / "in", n=1)
    result = images(tmp_path / "in", tmp_path / "out", tmp_path / "state.pt")
    assert result.exit_code == 2
    assert f"It is a training state (for --resume): the trained model is {tmp_path / 'best.pt'}" in result.output


def test_checkpoints_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(GICD(build_backbone("efficientnet_lite0")), tmp_path / "best.pt", input_size=64, version="t")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "best.pt").stat().st_mode) == 0o644


def test_two_videos_of_one_name_in_different_folders_stay_two_groups(tmp_path, checkpoint):
    from video_fixtures import davis_frames, encode_video

    from streamcosal.storage import ConsensusStore

    for folder, video in (("a", "blackswan"), ("b", "goat")):
        (tmp_path / folder).mkdir()
        encode_video(davis_frames(video, n=4), tmp_path / folder / "clip.mp4", fps=10)
    clips = [str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.mp4")]
    result = runner.invoke(app, ["video", *clips, "--out", str(tmp_path / "out"), "--weights", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert sorted(ConsensusStore.open(tmp_path / "out" / "consensus.npz").groups()) == sorted(clips)

    # the same in two runs into one --out: the second clip does not replace the first's consensus
    for clip in clips:
        result = runner.invoke(app, ["video", clip, "--out", str(tmp_path / "out2"), "--weights", str(checkpoint)])
        assert result.exit_code == 0, result.output
    store = ConsensusStore.open(tmp_path / "out2" / "consensus.npz")
    assert sorted(store.groups()) == sorted(["clip", clips[1]])
    assert store.source("clip") == clips[0] and store.source(clips[1]) == clips[1]
    result = runner.invoke(app, ["video", clips[0], "--out", str(tmp_path / "out2"), "--weights", str(checkpoint)])
    assert sorted(ConsensusStore.open(tmp_path / "out2" / "consensus.npz").groups()) == sorted(["clip", clips[1]])

    # a group made in streaming mode says where it came from too
    for clip in clips:
        result = runner.invoke(app, ["video", clip, "--out", str(tmp_path / "out3"), "--weights", str(checkpoint),
                                     "--mode", "streaming"])
        assert result.exit_code == 0, result.output
    store = ConsensusStore.open(tmp_path / "out3" / "consensus.npz")
    assert sorted(store.groups()) == sorted(["clip", clips[1]]) and store.source("clip") == clips[0]


def test_a_broken_link_in_an_image_folder_video_is_skipped_and_said(data, tmp_path, checkpoint):
    inp = tmp_path / "g"
    photos(data, inp, n=2)
    (inp / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    result = runner.invoke(app, ["video", str(inp), "--out", str(tmp_path / "out"), "--weights", str(checkpoint)])
    assert result.exit_code == 1, result.output  # partial: one image is missing
    assert "partial" in result.output and "2 frames" in result.output
    import json

    (report,) = (tmp_path / "out" / "runs").glob("*.json")
    (run,) = json.loads(report.read_text())["sources"]
    assert any("gone.jpg: not found (a broken symbolic link?)" in w for w in run["warnings"])  # also logged on stderr
