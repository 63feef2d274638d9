"""What a careless or unlucky user runs into, on real files.

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
        named = " ".join(result.output.split()).split("into the input folder ")[1].split(" (and")[0]
        assert Path(named) == out.resolve()  # the folder given, not a group folder below it
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


@pytest.mark.parametrize(("device", "says"), [("tpu", "unknown device 'tpu': use auto, cpu or cuda"),
                                              ("mps", ("device 'mps' is not supported: streamcosal runs on the CPU or a "
                                                       "CUDA GPU; use auto, cpu or cuda")),
                                              ("meta", "device 'meta' is not supported")])
def test_an_unknown_or_unsupported_device_is_a_one_line_error(data, tmp_path, checkpoint, device, says):
    photos(data, tmp_path / "in", n=1)
    result = images(tmp_path / "in", tmp_path / "out", checkpoint, "--device", device)
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output
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


@pytest.mark.parametrize(("args", "says"), [
    (["--fps", "inf"], "fps: Input should be a finite number"),  # a NaN frame count after the model loaded
    (["--live", "--max-latency", "inf"], "max_latency: Input should be a finite number"),  # a traceback, mid-run
    (["--live", "--max-latency", "1e308"], "max_latency: Input should be less than or equal to 3600"),
    (["--group", ""], "--group is empty (an unset shell variable?)"),  # a group named ''
    (["--mode", "global", "--step", "3"], "step sets the new frames of a streaming window"),  # ignored, no word
    (["--run-id", "../x"], "run_id '../x' cannot be used in file names"),  # refused after the model loaded
    (["--out", "{photos}"], "--out {photos} is inside the image folder {photos} given as a source"),
    (["--out", "{photos}/results"], "is inside the image folder"),  # its results then read as images
])
def test_odd_video_options_are_refused_before_any_work(data, tmp_path, args, says):
    photos(data, tmp_path / "photos", n=2)
    args = [a.format(photos=tmp_path / "photos") for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    result = runner.invoke(app, ["video", str(tmp_path / "photos"), *out, *args])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert says.format(photos=tmp_path / "photos") in " ".join(result.output.split()), result.output
    assert "model gicd" not in result.output and not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == sorted(p.name for p in (tmp_path / "photos").glob("*.jpg"))


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


# ----------------------------------------------------------------------------- issue: reported by users


def _run_report(out: Path) -> dict:
    import json

    (report,) = (out / "runs").glob("*.json")
    return json.loads(report.read_text())


def test_a_file_url_is_a_source_of_the_video_command(tmp_path, checkpoint):
    """`streamcosal video file:///path/to/existing.mp4` said "no such file"."""
    from urllib.parse import quote

    from video_fixtures import davis_frames, encode_video

    clip = tmp_path / "my clip.mp4"
    encode_video(davis_frames("blackswan", n=4), clip, fps=10)
    result = runner.invoke(app, ["video", "file://" + quote(str(clip)), "--out", str(tmp_path / "out"),
                                 "--weights", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert f"done  {clip}  group 'my clip': 4 frames" in result.output
    gone = tmp_path / "gone clip.mp4"
    result = runner.invoke(app, ["video", "file://" + quote(str(gone)), "--out", str(tmp_path / "out2"),
                                 "--weights", str(checkpoint)])
    assert result.exit_code == 2 and f"no such file or folder: {gone}. Check the path" in result.output, result.output
    assert not (tmp_path / "out2").exists()  # refused before the model loads: nothing written


def test_a_variable_frame_rate_video_gives_one_event_over_its_whole_time(tmp_path):
    """The issue's MKV: 12 frames at 0, 0.01, ... 0.5, 0.51, 2.0 ... 9.0 s, the swan in every one, and a
    container that claims 2,000 frames/s. Its rate is taken from its timestamps (said, naming the file),
    and its event covers 0-9 s (each frame stands for the time to the next), not 0-0.51 s; with --fps 5 too."""
    from fractions import Fraction

    from test_sources import VFR_TIMES
    from video_fixtures import davis_frames, encode_video

    from streamcosal.storage import read_events

    clip = tmp_path / "vfr.mkv"
    encode_video(davis_frames("blackswan", n=12), clip, fps=2000, pts=[round(t * 1000) for t in VFR_TIMES],
                 time_base=Fraction(1, 1000))
    for sampling, frames in (([], 12), (["--fps", "5"], 7)):
        out = tmp_path / f"out{len(sampling)}"
        result = runner.invoke(app, ["video", str(clip), "--out", str(out), *sampling])  # the embedded model
        assert result.exit_code == 0, result.output
        assert f"done  {clip}  group 'vfr': {frames} frames" in result.output
        (run,) = _run_report(out)["sources"]
        assert any(w.startswith(f"{clip}: the container claims 2,000 frames/s, which cannot be right") for w in run["warnings"])
        events = [(e["start_time"], e["end_time"], e["start_frame"], e["end_frame"]) for e in read_events(out).to_pylist()]
        assert events == [(0.0, 9.0, 0, 11)], sampling


def test_each_frame_of_a_variable_frame_rate_video_stands_for_the_time_to_the_next():
    """The events rule alone, on the issue's timestamps: the median spacing (0.46 s) took 2.0 ... 9.0 s,
    1.5 to 2 s apart, for absences, and the event ended at 0.51 s."""
    from test_sources import VFR_TIMES

    from streamcosal.storage import detect_events

    t = np.array(VFR_TIMES)
    (event,) = detect_events(t, np.arange(12), np.full(12, 0.1))
    assert (event.start_time, event.end_time, event.start_frame, event.end_frame, event.n_frames) == (0.0, 9.0, 0, 11, 12)
    area = np.full(12, 0.1)
    area[8:10] = 0.0  # absent in the frames at 3.5 s and 5.0 s: 3.5 s of absence, more than max_gap
    assert [(e.start_time, e.end_time) for e in detect_events(t, np.arange(12), area)] == [(0.0, 2.0), (7.0, 9.0)]
    area[8:10], area[9] = 0.1, 0.0  # absent at 5.0 s only, a frame that stands for 2 s: bridged by max_gap 2 s
    assert [(e.start_time, e.end_time) for e in detect_events(t, np.arange(12), area, max_gap=2.0)] == [(0.0, 9.0)]


def test_a_video_claiming_100000_frames_per_second_runs_live(tmp_path, checkpoint):
    """--live and --fps on a 12-frame MKV claiming 100,000 frames/s (read as 30,000): its rate is its
    timestamps' (25), said, and the live reader strides by it."""
    from fractions import Fraction

    from video_fixtures import davis_frames, encode_video

    clip = tmp_path / "fast.mkv"
    encode_video(davis_frames("blackswan", n=12), clip, fps=100_000, pts=[40 * i for i in range(12)],
                 time_base=Fraction(1, 1000))
    for options in (["--live", "--drop-policy", "all"], ["--fps", "5"]):
        out = tmp_path / options[0].strip("-")
        result = runner.invoke(app, ["video", str(clip), "--out", str(out), "--weights", str(checkpoint), *options])
        assert result.exit_code == 0, result.output
        frames = 12 if options[0] == "--live" else 3  # every frame (policy all); one per 0.2 s of its 0.44 s
        assert f"done  {clip}  group 'fast': {frames} frames" in result.output
        (run,) = _run_report(out)["sources"]
        assert any("claims 30,000 frames/s, which cannot be right (variable frame rate?); using 25 frames/s" in w
                   for w in run["warnings"]), run["warnings"]


def test_every_image_format_pillow_reads_is_segmented_and_the_rest_is_named(data, tmp_path, checkpoint):
    """An AVIF in a group was left out without a word (8 maps of 9 files); a group of only AVIF/HEIC said
    "no readable images". AVIF is read (Pillow reads it here); a HEIC without the pillow-heif plugin, and
    a file that is no image, are named with the reason."""
    from PIL import Image

    group = tmp_path / "in" / "horse"
    jpgs = photos(data, group, n=9)
    Image.open(jpgs[-1]).save(group / "z_photo.avif")  # a real photo as AVIF
    jpgs[-1].unlink()
    (group / "notes.txt").write_text("where the photos come from")
    result = images(tmp_path / "in", tmp_path / "out", checkpoint)
    assert result.exit_code == 0, result.output
    assert "wrote 9 maps in 1 groups" in result.output and (tmp_path / "out" / "horse" / "z_photo.png").is_file()
    assert "group 'horse': left out 1 file(s) that are not images: notes.txt" in result.output

    phone = tmp_path / "phone" / "trip"
    phone.mkdir(parents=True)
    avif = (group / "z_photo.avif").read_bytes()
    (phone / "a.avif").write_bytes(avif)
    (phone / "b.heic").write_bytes(avif[:8] + b"heic" + avif[12:])  # a HEIF file of brand heic, as phones write
    result = images(tmp_path / "phone", tmp_path / "out2", checkpoint)
    assert result.exit_code == 1, result.output  # one image failed, the other was segmented
    assert "wrote 1 maps in 1 groups" in result.output and (tmp_path / "out2" / "trip" / "a.png").is_file()
    assert (f"failed: {phone / 'b.heic'}: HEIC images cannot be read here: Pillow has no HEIC decoder installed; "
            "install pillow-heif (pip install pillow-heif)") in " ".join(result.output.split())

    from streamcosal.io.frame import SourceError
    from streamcosal.io.open import open_source

    with open_source(phone) as source:  # `video` on the folder: the same, a warning naming the file
        frames = list(source)
    assert [Path(f.source).name for f in frames] == ["a.avif"]
    assert source.report.unreadable_files == [str(phone / "b.heic")]
    assert any(w.startswith(f"{phone / 'b.heic'}: HEIC images cannot be read here") for w in source.report.warnings)
    (phone / "a.avif").unlink()
    with pytest.raises(SourceError, match=r"none of the 1 images can be read: .*b\.heic: HEIC images cannot be read "
                                          r"here.*pillow-heif"):
        open_source(phone)


@pytest.fixture(scope="module")
def huge_jpegs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Flat-grey JPEGs of 14000x14000 and 20000x20000 (the 400-megapixel limit itself): 2-5 MB each."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("huge")
    out = {}
    for side in (14000, 20000):
        out[side] = folder / f"{side}.jpg"
        Image.new("L", (side, side), 90).save(out[side], quality=80)
    return out


def test_very_large_jpegs_are_decoded_at_a_reduced_scale(huge_jpegs, tmp_path):
    """14000x14000 and 20000x20000 JPEGs were refused as "truncated, corrupted or not an image" (Pillow's
    decompression-bomb limit, 179 megapixels), though the limit is 400 megapixels; over it, the message
    says too large, with the limit."""
    from streamcosal.io.imagefile import ImageReadError, image_sizes, read_image

    for side, path in huge_jpegs.items():
        small, size = read_image(path, max_side=4 * 224)  # what `images` asks for
        assert size == (side, side) and small.shape == (side // 8, side // 8, 3)  # decoded at 1/8 scale
        assert abs(int(small[0, 0, 0]) - 90) <= 2
        assert image_sizes([path]) == [(side, side)]
    over = tmp_path / "over.jpg"  # a JPEG whose header says 20001x20000: over the limit, refused before decoding
    data = bytearray(huge_jpegs[14000].read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (20000).to_bytes(2, "big") + (20001).to_bytes(2, "big")
    over.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"over\.jpg: 20001x20000 \(400,020,000 pixels\) is too large: images of at most "
                                             r"400,000,000 pixels \(400 megapixels\) are read; shrink it"):
        read_image(over)
    assert image_sizes([over]) == []


@pytest.mark.slow
def test_the_images_command_writes_the_map_of_a_14000_pixel_jpeg(data, huge_jpegs, tmp_path, checkpoint):
    """The whole way: the photo decoded at 1/8, its map written at 14000x14000 (about 3 GB at the peak)."""
    group = tmp_path / "in" / "g"
    photos(data, group, n=1)
    shutil.copy(huge_jpegs[14000], group / "huge.jpg")
    result = images(tmp_path / "in", tmp_path / "out", checkpoint)
    assert result.exit_code == 0, result.output
    assert "wrote 2 maps" in result.output
    from streamcosal.io.imagefile import read_gray_checked

    assert read_gray_checked(tmp_path / "out" / "g" / "huge.png")[0].shape == (14000, 14000)
    assert (group / "huge.jpg").read_bytes() == huge_jpegs[14000].read_bytes()  # untouched


@pytest.mark.parametrize("size", ["32", "64", "96"])
def test_an_input_size_too_small_for_the_backbone_is_refused(data, tmp_path, checkpoint, size):
    """--input-size 32 ran and gave empty maps: below 128 px the consensus is lost (EngineSpec's note has the
    measurements); refused before any work, naming the smallest usable size."""
    from streamcosal.params import EngineSpec

    photos(data, tmp_path / "in", n=1)
    for args in (["images", str(tmp_path / "in"), "--out", str(tmp_path / "out")],
                 ["video", str(tmp_path / "in"), "--out", str(tmp_path / "out")]):
        result = runner.invoke(app, [*args, "--weights", str(checkpoint), "--input-size", size])
        assert result.exit_code == 2, result.output
        assert f"input_size {size} is too small" in result.output and "use 128 or more" in result.output
        assert "model gicd" not in result.output and not (tmp_path / "out").exists()
    assert EngineSpec(input_size=128).input_size == 128


@pytest.fixture
def read_only_store(tmp_path, checkpoint):
    """A folder on a read-only file system holding a real consensus store (made by a run, then the
    tmpfs remounted read-only)."""
    from video_fixtures import davis_frames, encode_video

    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, text=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root: {mounted.stderr.strip()}")
    try:
        encode_video(davis_frames("goat", n=4), tmp_path / "goat.mp4", fps=10)
        result = runner.invoke(app, ["video", str(tmp_path / "goat.mp4"), "--out", str(tmp_path / "first"),
                                     "--store", str(folder / "store.npz"), "--weights", str(checkpoint)])
        assert result.exit_code == 0, result.output
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_a_store_that_cannot_be_written_is_refused_before_any_work(tmp_path, checkpoint, read_only_store):
    """A read-only --store failed only after the whole run, naming --out's folder and a full disk."""
    from video_fixtures import davis_frames, encode_video

    clip = tmp_path / "clip.mp4"
    encode_video(davis_frames("blackswan", n=4), clip, fps=10)
    for store, says in ((read_only_store / "store.npz", "its folder"),  # there, on a read-only file system
                        (read_only_store / "new.npz", "its folder"),
                        (read_only_store / "sub" / "new.npz", "its folder"),
                        (tmp_path / "a_folder", "is a folder: give the store's file")):
        (tmp_path / "a_folder").mkdir(exist_ok=True)
        result = runner.invoke(app, ["video", str(clip), "--out", str(tmp_path / "out"), "--store", str(store),
                                     "--weights", str(checkpoint)])
        assert result.exit_code == 2, result.output
        message = " ".join(result.output.split())
        assert f"--store {store}" in message and says in message, message
        assert "model gicd" not in result.output and not (tmp_path / "out").exists()


def test_search_for_a_group_not_in_the_store_says_so_before_loading_a_model(tmp_path, checkpoint):
    """`search GROUP` for a group the store lacks loaded the model, then said "no such file"; the answer
    had no header."""
    from video_fixtures import davis_frames, encode_video

    for name in ("blackswan", "goat"):
        encode_video(davis_frames(name, n=4), tmp_path / f"{name}.mp4", fps=10)
    result = runner.invoke(app, ["video", str(tmp_path / "blackswan.mp4"), str(tmp_path / "goat.mp4"),
                                 "--out", str(tmp_path / "out"), "--weights", str(checkpoint)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", "swan", "--store", str(tmp_path / "out"), "--weights", str(checkpoint)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"no group 'swan' in {tmp_path / 'out' / 'consensus.npz'}; its groups: 'blackswan', 'goat'." in message
    assert "model gicd" not in result.output and "no such file" not in result.output
    groups = tmp_path / "photos"  # a folder of groups: the query is one of them
    for group in ("Cat", "Dog"):
        (groups / group).mkdir(parents=True)
    (tmp_path / "stores" / "consensus.npz").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("not a store")
    for args, says in (([""], "the query is empty: give a group of"),
                       ([str(tmp_path / "goat.mp4"), "--frames", "0"], "Invalid value for '--frames'"),
                       ([str(tmp_path / "goat.mp4"), "-k", "0"], "Invalid value for '-k'"),
                       ([str(tmp_path / "goat.mp4"), "--frames", "100000"], "Invalid value for '--frames'"),
                       ([str(groups)], (f"{groups} holds folders (Cat, Dog), not images: a query is one group's "
                                        f"images or one video; give one of them, e.g. {groups / 'Cat'}")),
                       (["goat", "--store", str(tmp_path / "stores")],
                        f"{tmp_path / 'stores' / 'consensus.npz'} is a folder, not a consensus store"),
                       (["goat", "--store", str(tmp_path / "notes.txt")], "is not a consensus store: not an .npz archive")):
        store = [] if "--store" in args else ["--store", str(tmp_path / "out")]
        result = runner.invoke(app, ["search", *args, *store, "--weights", str(checkpoint)])
        assert result.exit_code == 2 and says in " ".join(result.output.split()), result.output
        assert "model gicd" not in result.output and "Traceback" not in result.output and "delete" not in result.output
    result = runner.invoke(app, ["search", "goat", "--store", str(tmp_path / "out"), "--min-similarity", "0"])
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header == "rank\tsimilarity\tgroup"
    assert [row.split("\t")[::2] for row in rows] == [["1", "blackswan"]]


def test_metrics_port_0_serves_on_a_free_port_and_says_which(tmp_path, checkpoint):
    """--metrics-port 0 was accepted and never said where the metrics were."""
    import re
    import urllib.request

    from video_fixtures import davis_frames, encode_video

    from streamcosal.run.metrics import LiveMetrics

    metrics = LiveMetrics()
    with metrics.serving(0):
        url = metrics.url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url) and not url.endswith(":0/metrics")
        assert urllib.request.urlopen(url, timeout=5).status == 200
    assert metrics.url is None

    clip = tmp_path / "clip.mp4"
    encode_video(davis_frames("blackswan", n=4), clip, fps=10)
    run = subprocess.run([sys.executable, "-c", "from streamcosal.cli import app; app()", "video", str(clip), "--out", str(tmp_path / "out"),
                          "--weights", str(checkpoint), "--live", "--metrics-port", "0"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    port = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics \(a free port", run.stderr)
    assert port and int(port.group(1)) > 0, run.stderr


# ----------------------------------------------------------------------------- Python API (engine-side checks pending)


@pytest.fixture(scope="module")
def api_engine(checkpoint):
    from streamcosal.inference.engine import CoSalEngine

    return CoSalEngine.from_checkpoint(checkpoint, device="cpu")


@pytest.mark.parametrize("chunk_size", [0, -1])
def test_a_chunk_size_below_1_is_refused_when_the_engine_is_made(checkpoint, chunk_size):
    """chunk_size 0 and -1 were accepted and failed later with internal errors (range() step 0, ...)."""
    from streamcosal.inference.engine import CoSalEngine

    with pytest.raises(ValueError, match=rf"chunk_size must be >= 1 \(images per batch\), got {chunk_size}"):
        CoSalEngine.from_checkpoint(checkpoint, device="cpu", chunk_size=chunk_size)


def test_an_empty_image_given_to_predict_group_is_named(data, api_engine):
    """A 0-row image gave a raw OpenCV error from cv2.resize."""
    photo = np.asarray(cv2.cvtColor(cv2.imread(str(group_images(data, "pascal_coseg", "Horse", 1)[0])), cv2.COLOR_BGR2RGB))
    with pytest.raises(ValueError, match=r"image 1 is empty \(shape \(0, 640, 3\)\)"):
        api_engine.predict_group([photo, np.zeros((0, 640, 3), np.uint8)])


def test_predict_group_takes_pil_images_and_generators(data, api_engine):
    """A PIL image gave AttributeError, a generator TypeError; both are what users have at hand."""
    from PIL import Image

    paths = group_images(data, "pascal_coseg", "Horse", 2)
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    expected = api_engine.predict_group(arrays)
    for given in ([Image.open(p) for p in paths],  # RGB JPEGs, as opened
                  [Image.open(p).convert("L") for p in paths][:1] + [Image.open(paths[1])],  # any mode: converted
                  (a for a in arrays)):  # a generator: read once
        maps = api_engine.predict_group(given)
        assert [m.shape for m in maps] == [a.shape[:2] for a in arrays]
    for got, want in zip(api_engine.predict_group(Image.open(p) for p in paths), expected):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_an_embedded_model_refuses_an_input_size_too_small():
    """The CLI refuses --input-size below 128 (EngineSpec); the engine, for the embedded models, too."""
    from streamcosal.inference.engine import CoSalEngine

    with pytest.raises(ValueError, match="input_size 64 is too small"):
        CoSalEngine.from_pretrained(device="cpu", input_size=64)


def test_serve_with_no_workers_names_the_option():
    result = runner.invoke(app, ["serve", "--max-workers", "0"])
    assert result.exit_code == 2 and "Invalid value for '--max-workers'" in " ".join(result.output.split())
    assert "STREAMCOSAL_MAX_WORKERS" not in result.output
