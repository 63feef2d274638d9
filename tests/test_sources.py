"""Frame sources: timestamps, readers, sampling, images, bad inputs and live streams."""

from __future__ import annotations

import logging
import math
import shutil
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from urllib.parse import quote

import av
import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from stream_server import serve_file, serve_stream  # noqa: E402
from video_fixtures import (  # noqa: E402
    DAVIS_IMAGES,
    corrupt_middle,
    davis_frames,
    encode_audio_only,
    encode_picture_then_video,
    encode_vfr_video,
    encode_video,
    truncate_file,
)

from streamcosal.io.frame import SourceError
from streamcosal.io.open import local_source, open_source
from streamcosal.io.redact import redact
from streamcosal.io.stream import ReconnectPolicy

N = 48  # frames per test video: 2 s at 24 fps, 160x96


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return davis_frames("blackswan", n=N)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, frames) -> dict[str, tuple[Path, list[float]]]:
    """name -> (path, written timestamps)."""
    root = tmp_path_factory.mktemp("videos")
    out = {}
    out["cfr"] = (root / "cfr.mp4", encode_video(frames, root / "cfr.mp4", fps=24))
    out["vfr"] = (root / "vfr.mp4", encode_vfr_video(frames, root / "vfr.mp4"))
    out["rot90"] = (root / "rot90.mp4", encode_video(frames[:12], root / "rot90.mp4", fps=24, rotate=90))
    out["faststart"] = (root / "fs.mp4", encode_video(frames, root / "fs.mp4", fps=24, faststart=True))
    out["ts"] = (root / "live.ts", encode_video(frames, root / "live.ts", fps=24))
    return out


def _read(path, **kwargs):
    with open_source(path, **kwargs) as source:
        return source, list(source)


def _close(a: np.ndarray, b: np.ndarray, tol: float = 12.0) -> bool:
    """Lossy H.264 at this size: mean abs pixel error of a matching frame is ~5."""
    return a.shape == b.shape and float(np.abs(a.astype(int) - b.astype(int)).mean()) < tol


# ----------------------------------------------------------------------------- timestamps and readers


@pytest.mark.parametrize("reader", ["decord", "pyav"])
@pytest.mark.parametrize("kind", ["cfr", "vfr"])
def test_timestamps_exact(videos, frames, kind, reader):
    path, written = videos[kind]
    source, out = _read(path, reader=reader)
    assert [f.index for f in out] == list(range(N))
    np.testing.assert_allclose([f.timestamp for f in out], written, atol=1e-6)
    assert all(_close(f.image, frames[f.index]) for f in out)
    assert out[0].image.dtype == np.uint8 and out[0].image.shape == (96, 160, 3)
    assert source.report.warnings == []


def test_video_info(videos):
    with open_source(videos["cfr"][0]) as source:
        info = source.info
    assert (info.width, info.height, info.frame_count, info.rotation, info.codec) == (160, 96, N, 0, "h264")
    assert info.fps == pytest.approx(24.0)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    with open_source(videos["vfr"][0]) as source:
        assert source.info.frame_count == N  # average fps of a VFR file is whatever the container says


@pytest.mark.parametrize("kind", ["cfr", "vfr", "rot90"])
def test_decord_and_pyav_agree(videos, kind):
    path, _ = videos[kind]
    _, by_decord = _read(path, reader="decord")
    _, by_pyav = _read(path, reader="pyav")
    assert len(by_decord) == len(by_pyav)
    assert [f.timestamp for f in by_decord] == [f.timestamp for f in by_pyav]  # decord's float32 on the stream's ticks
    assert all(_close(a.image, b.image, tol=2.0) for a, b in zip(by_decord, by_pyav))


@pytest.mark.parametrize("kind", ["mpeg2 with B-frames", "cut inside a GOP"])
def test_mpeg_ts_is_read_with_pyav_every_frame_once_in_order(tmp_path, frames, kind, caplog):
    """decord 0.6.0 misreads MPEG-TS without a word: MPEG-2 starts a GOP late (its frame 0 is the file's
    frame 12); a recording cut inside a GOP gets copies of its last frame for the frames that cannot be
    decoded. PyAV reads every MPEG-TS."""
    path = tmp_path / "recorder.ts"
    if kind == "mpeg2 with B-frames":
        encode_video(frames, path, fps=24, codec="mpeg2video", container_format="mpegts")
    else:
        encode_video(frames, tmp_path / "whole.ts", fps=24, container_format="mpegts")  # GOPs of 24 frames
        data = (tmp_path / "whole.ts").read_bytes()
        path.write_bytes(data[len(data) // 188 // 4 * 188:])  # from a TS packet inside the first GOP
    with caplog.at_level(logging.INFO, logger="streamcosal"):
        _, out = _read(path)
    _, by_pyav = _read(path, reader="pyav")
    assert [f.index for f in out] == [f.index for f in by_pyav] and len(out) > N // 3
    assert all(_close(a.image, b.image, tol=0.5) for a, b in zip(out, by_pyav, strict=True))
    nearest = [int(np.argmin([np.abs(f.image.astype(int) - g).mean() for g in frames])) for f in out]
    assert nearest == sorted(set(nearest))  # each frame once, in order (MPEG-2 at its default rate: 5-13 levels off)
    assert "a container without an index; reading with PyAV" in caplog.text


def test_decord_is_not_used_where_its_frame_0_is_not_ffmpegs(videos, frames, monkeypatch, caplog):
    """Where decord's first frame differs from FFmpeg's (as it does where it misreads a file), PyAV reads it."""
    import decord

    get_batch = decord.VideoReader.get_batch
    monkeypatch.setattr(decord.VideoReader, "get_batch", lambda vr, indices: get_batch(vr, [i + 12 for i in indices]))
    with caplog.at_level(logging.INFO, logger="streamcosal"):
        _, out = _read(videos["cfr"][0])
    assert [f.index for f in out] == list(range(N)) and all(_close(f.image, frames[f.index]) for f in out)
    assert "decord's frame 0 is not the file's first frame; reading with PyAV" in caplog.text


def _h264(frames: list[np.ndarray], path: Path, container_format: str | None = None, bframes: int = 0,
          gop: int = 10) -> None:
    """H.264 at 25 frames/s, with B-frames where asked (AVI: their times come in decoding order)."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"bf": str(bframes), "g": str(gop), "preset": "ultrafast"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def _mkv_of_raw(raw: Path, path: Path, skip: int = 0) -> Path:
    """The raw H.264 stream ``raw`` copied into an MKV at 25 frames/s (as ``ffmpeg -c copy`` does), without
    its first ``skip`` packets."""
    with av.open(str(raw), format="h264") as source, av.open(str(path), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        stream.time_base = Fraction(1, 1000)
        packets = [packet for packet in source.demux(source.streams.video[0]) if packet.size]
        for i, packet in enumerate(packets[skip:], start=skip):
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i * 40, i * 40, Fraction(1, 1000)
            packet.duration = 40
            out.mux(packet)
    return path


def _started_inside_a_gop(frames: list[np.ndarray], tmp_path: Path) -> Path:
    """An MKV copied from a raw H.264 stream without its first keyframe (a recording started with -c copy
    inside a GOP): frames 1-9 cannot be decoded; the first that can is 0.36 s after the file starts."""
    _h264(frames, tmp_path / "raw.h264", "h264")
    return _mkv_of_raw(tmp_path / "raw.h264", tmp_path / "late.mkv", skip=1)


def test_a_frame_size_change_in_an_indexed_file_keeps_each_frames_size(tmp_path, frames):
    """An MKV whose camera changed resolution after 10 frames: decord scaled every frame to the first size,
    without a word; the last keyframe's size sends such a file to PyAV, which segments each at its own."""
    bigger = [cv2.resize(f, (320, 192)) for f in frames[10:20]]
    _h264(frames[:10], tmp_path / "a.h264", "h264")
    _h264(bigger, tmp_path / "b.h264", "h264")
    (tmp_path / "ab.h264").write_bytes((tmp_path / "a.h264").read_bytes() + (tmp_path / "b.h264").read_bytes())
    path = _mkv_of_raw(tmp_path / "ab.h264", tmp_path / "camera.mkv")
    source, out = _read(path)
    assert [f.image.shape[:2] for f in out] == [(96, 160)] * 10 + [(192, 320)] * 10
    assert source.report.warnings == [f"{path}: the frame size changes at frame 10 from 160x96 to 320x192; every "
                                      "frame is segmented at its own size"]
    assert all(_close(f.image, g) for f, g in zip(out, frames[:10] + bigger))


@pytest.mark.parametrize("kind", ["raw H.264", "AVI with B-frames", "repeated times", "started inside a GOP"])
def test_frames_without_times_or_with_repeated_ones_keep_the_files_times(tmp_path, frames, kind, caplog):
    """A raw H.264 file (or pipe) gave no frame and exit 0 ("done, 0 frames": its frames carry no time); AVI's
    B-frames came with scrambled times and a warning of joined clips; a repeated time shifted every later
    frame; decord read a recording started inside a GOP with every time early and copies of its last frame."""
    first, says = 0.0, None
    if kind == "raw H.264":
        path = tmp_path / "camera.h264"
        _h264(frames, path, "h264")
    elif kind == "AVI with B-frames":
        path = tmp_path / "old.avi"
        _h264(frames, path, bframes=3)
    elif kind == "repeated times":
        path = tmp_path / "repeat.mkv"
        encode_video(frames[:8], path, codec="ffv1", pts=[0, 40, 80, 80, 120, 160, 200, 240],
                     time_base=Fraction(1, 1000))
        says = "frame 3 repeats the timestamp of the frame before (0.080 s); the file's times are kept"
    else:
        path, first = _started_inside_a_gop(frames, tmp_path), 0.36
    with av.open(str(path)) as container:  # FFmpeg's own decoding: which frames there are
        decodable = sum(1 for _ in container.decode(video=0))
    source, out = _read(path)
    times = [f.timestamp for f in out]
    assert len(out) == decodable and len(out) >= 8, (len(out), decodable)
    if kind == "repeated times":
        assert times == pytest.approx([0, 0.04, 0.08, 0.08, 0.12, 0.16, 0.2, 0.24]) and source.report.warnings == [
            f"{path}: {says}"]
    else:
        assert times == pytest.approx([first + 0.04 * i for i in range(len(out))]), times
        assert source.report.warnings == []
    nearest = [int(np.argmin([np.abs(f.image.astype(int) - g).mean() for g in frames])) for f in out]
    assert nearest == sorted(set(nearest))  # each frame once, in order


@pytest.mark.parametrize("reader", ["decord", "pyav"])
def test_rotation_applied(videos, frames, reader):
    source, out = _read(videos["rot90"][0], reader=reader)
    assert source.info.rotation == 90
    assert (source.info.width, source.info.height) == (96, 160)
    assert all(_close(f.image, np.rot90(frames[f.index], 1)) for f in out)


@pytest.mark.parametrize("reader", ["decord", "pyav"])
def test_fps_sampling_by_timestamp(videos, reader):
    _, out = _read(videos["cfr"][0], fps=6, reader=reader)
    assert [f.index for f in out] == list(range(0, N, 4))  # 24 fps -> every 4th, 12 in 2 s
    path, written = videos["vfr"]
    _, out = _read(path, fps=10, reader=reader)
    slots = [math.floor(t * 10 + 1e-6) for t in written]
    expected = [i for i in range(N) if i == 0 or slots[i] > slots[i - 1]]
    assert [f.index for f in out] == expected
    assert len(out) == len(set(slots))  # one frame per 0.1 s slot that has frames


def test_stride_and_bad_sampling_arguments(videos):
    _, out = _read(videos["cfr"][0], stride=5)
    assert [f.index for f in out] == list(range(0, N, 5))
    with pytest.raises(ValueError, match="either fps or stride"):
        open_source(videos["cfr"][0], fps=5, stride=2)


def test_read_frames_random_access(videos, frames):
    for reader in ("decord", "pyav"):
        with open_source(videos["cfr"][0], reader=reader) as source:
            got = source.read_frames([40, 3, 3, 17])
        assert [f.index for f in got] == [3, 17, 40]
        assert all(_close(f.image, frames[f.index]) for f in got)


def test_random_access_that_decord_gives_up_on_midway_is_finished_by_pyav(videos, frames, monkeypatch):
    """iter_frames yields each frame as decoded; when decord fails after the first, a PyAV pass
    gives the rest, none twice."""
    with open_source(videos["cfr"][0], reader="decord") as source:
        calls = []
        get_batch = source._vr.get_batch

        def failing_after_one(indices):
            calls.append(indices)
            if len(calls) > 1:
                raise RuntimeError("decord: seek failed")
            return get_batch(indices)

        monkeypatch.setattr(source._vr, "get_batch", failing_after_one)
        got = list(source.iter_frames([40, 3, 17]))
    assert [f.index for f in got] == [3, 17, 40] and len(calls) == 2
    assert all(_close(f.image, frames[f.index]) for f in got)


# ----------------------------------------------------------------------------- images


def test_image_folder_sorted_with_odd_formats_and_a_broken_file(tmp_path, caplog):
    names = sorted(p.name for p in (DAVIS_IMAGES / "bmx-trees").iterdir())[:3]
    for name in names:
        shutil.copy(DAVIS_IMAGES / "bmx-trees" / name, tmp_path / name)
    base = cv2.imread(str(tmp_path / names[0]))
    cv2.imwrite(str(tmp_path / "90_gray.png"), cv2.cvtColor(base, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "91_rgba.png"), cv2.cvtColor(base, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "92_16bit.png"), base.astype(np.uint16) * 257)
    (tmp_path / "50_broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING), open_source(tmp_path) as source:
        out = list(source)
    assert [Path(f.source).name for f in out] == names + ["90_gray.png", "91_rgba.png", "92_16bit.png"]
    assert all(f.image.dtype == np.uint8 and f.image.shape == (480, 854, 3) for f in out)
    assert all(math.isnan(f.timestamp) for f in out)
    rgb = cv2.cvtColor(base, cv2.COLOR_BGR2RGB)
    assert np.array_equal(out[-1].image, rgb) and np.array_equal(out[-2].image, rgb)
    assert source.report.unreadable_files == [str(tmp_path / "50_broken.jpg")]
    assert "50_broken.jpg" in caplog.text
    assert [f.index for f in out] == [0, 1, 2, 4, 5, 6]  # index = position in the group


def test_a_folder_of_videos_given_as_an_image_group_says_how_to_give_them(tmp_path, videos):
    shutil.copy(videos["cfr"][0], tmp_path / "porch.mp4")
    shutil.copy(videos["vfr"][0], tmp_path / "yard.mp4")
    with pytest.raises(SourceError, match=r"a folder is one group of images, and it holds 2 video file\(s\) "
                                          r"\(porch\.mp4, yard\.mp4\) and no image: give the videos themselves "
                                          r"\(.*/\*\.mp4\)"):
        open_source(tmp_path)


def test_image_list_keeps_given_order_and_refuses_fps(tmp_path):
    paths = sorted((DAVIS_IMAGES / "goat").iterdir())[:3][::-1]
    with open_source(paths) as source:
        assert [f.source for f in source] == [str(p) for p in paths]
    with pytest.raises(SourceError, match="fps sampling"):
        open_source(paths, fps=2)
    with pytest.raises(SourceError, match="not found"):
        open_source([tmp_path / "nope.jpg"])


# ----------------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match=r"missing\.mp4: no such file"):
        open_source(tmp_path / "missing.mp4")


def test_a_file_url_is_read_as_its_path(tmp_path, videos, frames):
    """Issue: `file:///path/to/existing.mp4` said "no such file"."""
    clip = tmp_path / "my clip #1.mp4"  # percent-encoded in a URL: my%20clip%20%231.mp4
    shutil.copy(videos["cfr"][0], clip)
    url = "file://" + quote(str(clip))
    assert "%20" in url and local_source(url) == str(clip)
    for spec in (url, "file://localhost" + quote(str(clip)), "FILE:" + quote(str(clip))):
        source, out = _read(spec)
        assert source.name == str(clip) and [f.index for f in out] == list(range(N)), spec
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(DAVIS_IMAGES / "goat" / "00000.jpg", folder / "a.jpg")
    source, out = _read("file://" + quote(str(folder)))
    assert len(out) == 1 and out[0].source == str(folder / "a.jpg")
    with pytest.raises(SourceError, match=rf"{tmp_path}/gone clip.mp4: no such file"):  # the path, decoded
        open_source("file://" + quote(str(tmp_path / "gone clip.mp4")))
    with pytest.raises(SourceError, match="on the machine 'nas'; mount it and give its local path"):
        open_source("file://nas/share/clip.mp4")
    assert local_source("rtsp://cam/live") == "rtsp://cam/live" and local_source(clip) == clip


def test_zero_length_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.mp4: file is empty"):
        open_source(tmp_path / "empty.mp4")


def test_audio_only_file(tmp_path):
    encode_audio_only(tmp_path / "audio.mp4")
    with pytest.raises(SourceError, match=r"audio\.mp4: has no video stream .*audio aac"):
        open_source(tmp_path / "audio.mp4")


def test_an_audio_file_with_cover_art_has_no_video(tmp_path):
    encode_audio_only(tmp_path / "song.mp4", cover=True)
    with pytest.raises(SourceError, match=r"song\.mp4: has no video stream .*video mjpeg \(a picture: cover art"):
        open_source(tmp_path / "song.mp4")


def test_the_video_is_read_where_a_picture_stream_comes_first(tmp_path, frames):
    """A one-frame picture stream before the video (a thumbnail): the video's frames are read, by both readers."""
    encode_picture_then_video(frames, tmp_path / "thumb.mkv")
    for reader in ("auto", "pyav"):
        source, out = _read(tmp_path / "thumb.mkv", reader=reader)
        assert (source.info.width, source.info.height, source.info.codec) == (160, 96, "h264")
        assert [f.index for f in out] == list(range(N)) and all(_close(f.image, frames[f.index]) for f in out)


def test_text_file_named_mp4(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(SourceError, match=r"notes\.mp4: cannot open as a video"):
        open_source(tmp_path / "notes.mp4")


def test_unsupported_codec(tmp_path, videos):
    data = videos["cfr"][0].read_bytes()
    sample_entry = data.find(b"avc1", data.find(b"stsd"))  # the codec fourcc, not the ftyp brand
    (tmp_path / "odd.mp4").write_bytes(data[:sample_entry] + b"zzzz" + data[sample_entry + 4 :])
    with pytest.raises(SourceError, match=r"odd\.mp4: video stream #0 uses a codec .* cannot decode"):
        open_source(tmp_path / "odd.mp4")


def test_truncated_file_keeps_decoded_frames(tmp_path, videos, frames, caplog):
    path = tmp_path / "cut.mp4"
    shutil.copy(videos["faststart"][0], path)
    truncate_file(path, 0.6)
    with caplog.at_level(logging.WARNING):
        source, out = _read(path)
    assert 10 < len(out) < N
    assert [f.index for f in out] == list(range(len(out)))
    assert all(_close(f.image, frames[f.index]) for f in out)
    assert source.report.truncated
    last = out[-1]
    assert "cut.mp4: file is truncated" in caplog.text
    assert f"last good frame {last.index} at {last.timestamp:.3f} s" in caplog.text


@pytest.mark.parametrize("reader", ["auto", "pyav"])
def test_a_recording_cut_short_without_a_frame_count_is_partial(tmp_path, frames, reader):
    """An MKV (no frame count in the container) cut in half, as an interrupted recording leaves it: its frames
    are read and the source is partial, said with where its frames end against its announced duration."""
    path = tmp_path / "cut.mkv"
    encode_video(frames + frames, path, fps=24)  # 4 s
    truncate_file(path, 0.5)
    source, out = _read(path, reader=reader)
    assert N // 2 < len(out) < 2 * N and [f.index for f in out] == list(range(len(out)))
    assert source.report.truncated
    assert f"cut.mkv: its frames end at {out[-1].timestamp + 1 / 24:.2f} s of the 4.00 s its container announces: cut " \
           "short" in " ".join(source.report.warnings)
    encode_video(frames + frames, tmp_path / "whole.mkv", fps=24)
    source, whole = _read(tmp_path / "whole.mkv", reader=reader)
    assert len(whole) == 2 * N and not source.report.truncated and source.report.warnings == []


def test_corrupt_stretch_is_skipped_and_reported(tmp_path, videos, caplog):
    path = tmp_path / "damaged.mp4"
    shutil.copy(videos["cfr"][0], path)
    corrupt_middle(path, start_fraction=0.45, length=4000)
    with caplog.at_level(logging.WARNING):
        source, out = _read(path)
    report = source.report
    lost = report.bad_packets + report.corrupt_frames
    assert lost >= 1
    assert len(out) + lost == N  # every frame either read or counted as skipped
    assert out[-1].index == N - 1  # kept going past the damage
    indices = [f.index for f in out]
    assert indices == sorted(set(indices))
    assert "damaged.mp4: skipped" in caplog.text


# ----------------------------------------------------------------------------- live streams

FAST_RETRY = ReconnectPolicy(max_attempts=2, backoff_s=0.02, max_backoff_s=0.1)


@pytest.fixture
def ts_bytes(videos) -> bytes:
    return videos["ts"][0].read_bytes()


def test_http_mpegts_stream_read_to_the_end(ts_bytes, videos, frames):
    with serve_stream(ts_bytes, plays=1) as server:
        with open_source(server.url, reconnect=FAST_RETRY) as source:
            out = list(source)
    assert source.info.frame_count is None and (source.info.width, source.info.height) == (160, 96)
    assert [f.index for f in out] == list(range(N))
    np.testing.assert_allclose([f.timestamp for f in out], videos["ts"][1], atol=1e-6)
    assert all(_close(f.image, frames[f.index]) for f in out)
    assert source.report.reconnects == 0
    assert "stream ended" in source.report.warnings[-1]


def test_a_raw_h264_stream_is_read_timed_by_its_rate(tmp_path, frames):
    """A raw H.264 stream (a Raspberry Pi camera's, served as it comes) carries no frame times: every frame
    was dropped and the stream ended having given none."""
    _h264(frames, tmp_path / "camera.h264", "h264")
    with serve_stream((tmp_path / "camera.h264").read_bytes(), plays=1) as server:
        with open_source(server.url, reconnect=FAST_RETRY) as source:
            out = list(source)
    assert [f.index for f in out] == list(range(N))
    assert [f.timestamp for f in out] == pytest.approx([i / source.info.fps for i in range(N)])
    assert all(_close(f.image, frames[f.index]) for f in out)


def test_stream_drop_reconnects_then_ends_cleanly(ts_bytes, videos, caplog):
    """Cut at half, then the server plays the file again from its start: the frames already read
    are not read again, the rest continue the stream's own time; then the server's 404 ends it at
    once (no retries)."""
    with serve_stream(ts_bytes, drop_after_bytes=len(ts_bytes) // 2, plays=2) as server:
        with caplog.at_level(logging.WARNING), open_source(server.url, reconnect=FAST_RETRY) as source:
            out = list(source)
        connections = server.connections
    lost = source.report.bad_packets + source.report.corrupt_frames
    assert len(out) + lost == out[-1].index + 1  # every index read or counted as lost
    times = np.array([f.timestamp for f in out])
    assert len(out) >= N - lost and np.all(np.diff(times) > 0)  # every frame once (a frame lost at the cut may come back)
    assert np.abs(times[:, None] - np.asarray(videos["ts"][1])[None]).min(axis=1).max() < 1e-6  # the file's own times
    assert source.report.reconnects == 1
    assert connections == 3  # two plays, then one try: the 404 that ends it is not retried
    assert f"{server.url}: stream ended: reconnecting, the server answered 404 Not Found" in caplog.text


def test_a_stalled_stream_replaying_its_start_ends_after_the_bounded_tries(ts_bytes, videos):
    """Half the file, then silence; every reconnect sends the same half again: that is no progress."""
    with serve_stream(ts_bytes, stall_after_bytes=len(ts_bytes) // 2) as server:
        start = time.monotonic()
        with open_source(server.url, reconnect=FAST_RETRY, read_timeout_s=0.5) as source:
            out = list(source)
        seconds = time.monotonic() - start
        connections = server.connections
    assert 10 < len(out) < N and [f.index for f in out] == list(range(len(out)))
    np.testing.assert_allclose([f.timestamp for f in out], videos["ts"][1][: len(out)], atol=1e-6)
    assert connections == 1 + FAST_RETRY.max_attempts and seconds < 10
    assert any("no new frames after 2 reconnect tries" in w for w in source.report.warnings)


def test_closing_a_stream_ends_its_reconnect_backoff_at_once(ts_bytes):
    slow = ReconnectPolicy(max_attempts=3, backoff_s=30.0, max_backoff_s=30.0)
    with serve_stream(ts_bytes, plays=1) as server:
        source = open_source(server.url, reconnect=slow)
        frames = iter(source)
        next(frames)
        reader = threading.Thread(target=lambda: list(frames), daemon=True)
        reader.start()
        time.sleep(1.0)  # the play ends; the reader waits 30 s before its next try
        start = time.monotonic()
        source._stopped.set()  # what close() does first, from the thread that stops the run
        reader.join(5)
        assert not reader.is_alive() and time.monotonic() - start < 2


def test_unreachable_url_fails_after_bounded_tries():
    with serve_stream(b"", status=503) as server:  # a server error: may pass, so retried
        with pytest.raises(SourceError, match=r"unreachable after 3 tries .*5XX"):
            open_source(server.url, reconnect=FAST_RETRY)
        assert server.connections == 3


@pytest.mark.parametrize(("status", "says"), [
    (404, "404 Not Found"), (401, "401 Unauthorized"), (403, "403 Forbidden"),
])
def test_http_404_401_403_fail_at_once_naming_the_url(status, says):
    """Issue: a 404 was retried 6 times over 15 s (the default policy) before failing."""
    with serve_stream(b"", status=status) as server:
        url = server.url.replace("http://", "http://viewer:s3cret@")
        start = time.monotonic()
        with pytest.raises(SourceError) as raised:
            open_source(url)  # the default ReconnectPolicy: 6 tries over 15.5 s, were it retried
        seconds, connections = time.monotonic() - start, server.connections
    message = str(raised.value)
    assert connections == 1 and seconds < 3
    assert message.startswith(redact(url) + ": ") and "viewer:***@" in message and "s3cret" not in message
    assert says in message and "Not retried" in message


def test_a_camera_device_that_does_not_exist_fails_at_once():
    """Issue: a missing /dev/videoN was retried like a dropped stream."""
    device = next(f"/dev/video{n}" for n in range(90, 200) if not Path(f"/dev/video{n}").exists())
    start = time.monotonic()
    with pytest.raises(SourceError, match=rf"^{device}: no such camera device .*Not retried"):
        open_source(device)
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("faststart", [False, True])
def test_a_file_served_over_http_ends_at_its_end(videos, frames, faststart, caplog):
    """Issue: a finished MP4 on a web server ended with "no new frames after 5 reconnect tries" after
    reconnecting and reading it again; it ends when read (an MP4 without faststart is read with ranges)."""
    path = videos["faststart" if faststart else "cfr"][0]
    with serve_file(path.read_bytes()) as server:
        start = time.monotonic()
        with caplog.at_level(logging.INFO), open_source(server.url) as source:
            out = list(source)
        seconds, connections = time.monotonic() - start, server.connections
    assert [f.index for f in out] == list(range(N))
    np.testing.assert_allclose([f.timestamp for f in out], videos["cfr"][1], atol=1e-6)
    assert all(_close(f.image, frames[f.index]) for f in out)
    assert source.report.warnings == [] and source.report.reconnects == 0
    assert connections <= 2 and seconds < 5  # the file once (its index and data by ranges), no retries
    assert f"{server.url}: ended: the whole file was read ({N} frames)" in caplog.text


def test_a_dropped_stream_that_is_then_refused_ends_naming_why(ts_bytes):
    """A 404 on a reconnect (the feed is over) ends the stream at once, the frames read kept."""
    with serve_stream(ts_bytes, plays=1) as server, open_source(server.url) as source:  # default policy: 15 s of tries
        start = time.monotonic()
        out = list(source)
        seconds = time.monotonic() - start
    assert len(out) == N and server.connections == 2 and seconds < 3
    assert source.report.warnings == [(f"{server.url}: stream ended: reconnecting, the server answered 404 Not Found "
                                       f"(the stream is gone); not retried. {N} frames were read and kept.")]


# ----------------------------------------------------------------------------- implausible frame rates

VFR_TIMES = [0.0, 0.01, 0.02, 0.03, 0.04, 0.5, 0.51, 2.0, 3.5, 5.0, 7.0, 9.0]
"""The issue's variable-frame-rate example: 12 frames, a burst at the start, then seconds apart."""


@pytest.fixture(scope="module")
def odd_rates(tmp_path_factory, frames) -> dict[str, tuple[Path, list[float]]]:
    """MKVs that claim a frame rate that cannot be right: 2,000 frames/s (variable frame rate, 12
    frames over 9 s) and 100,000 frames/s (read back as 30,000; 12 frames 40 ms apart)."""
    root = tmp_path_factory.mktemp("rates")
    ms = Fraction(1, 1000)
    return {
        "vfr": (root / "vfr.mkv", encode_video(frames[:12], root / "vfr.mkv", fps=2000,
                                               pts=[round(t * 1000) for t in VFR_TIMES], time_base=ms)),
        "fast": (root / "fast.mkv", encode_video(frames[:12], root / "fast.mkv", fps=100_000,
                                                 pts=[40 * i for i in range(12)], time_base=ms)),
    }


@pytest.mark.parametrize("reader", ["decord", "pyav"])
@pytest.mark.parametrize(("kind", "claimed", "rate"), [("vfr", "2,000", 1 / 0.46), ("fast", "30,000", 25.0)])
def test_an_implausible_frame_rate_is_replaced_by_the_timestamps_own(odd_rates, kind, claimed, rate, reader):
    path, written = odd_rates[kind]
    import av

    with av.open(str(path)) as container:  # what the file claims
        assert float(container.streams.video[0].average_rate) > 1000
    source, out = _read(path, reader=reader)
    assert source.info.fps == pytest.approx(rate, rel=1e-4)
    assert source.report.warnings == [(
        f"{path}: the container claims {claimed} frames/s, which cannot be right (variable frame rate?); using "
        f"{rate:.4g} frames/s, the spacing of its first 12 frames' timestamps (median {1000 / rate:.4g} ms)")]
    np.testing.assert_allclose([f.timestamp for f in out], written, atol=1e-6)  # frames keep their own times
    _, sampled = _read(path, reader=reader, fps=5)  # --fps 5: one frame per 0.2 s slot that has frames
    slots = [math.floor(t * 5 + 1e-6) for t in written]
    assert [f.index for f in sampled] == [i for i in range(12) if i == 0 or slots[i] > slots[i - 1]]


def test_a_stream_with_an_implausible_rate_gets_its_timestamps_rate(odd_rates):
    """A stream (no length) learns the rate from its first frames as they come."""
    with serve_stream(odd_rates["fast"][0].read_bytes(), plays=1) as server, open_source(server.url) as source:
        out = list(source)
    assert len(out) == 12 and source.info.fps == pytest.approx(25.0)
    assert any("claims 30,000 frames/s, which cannot be right" in w for w in source.report.warnings)


def test_a_live_reader_strides_by_the_replaced_rate(odd_rates):
    """--live --drop-policy stride keeps every k-th frame, k from the camera's rate: with 30,000 it kept
    one frame in 1,800."""
    from streamcosal.run.live import LiveReader

    reader = LiveReader(open_source(odd_rates["fast"][0]), policy="stride")
    try:
        reader.adapt(engine_fps=20.0)
        assert reader.stride == 2  # ceil(1.2 x 25 / 20)
    finally:
        reader.close()


def test_plausible_rate_of_no_rate_and_of_timestamps_too_close(caplog):
    from streamcosal.io.decode import plausible_rate
    from streamcosal.io.frame import SourceReport

    report = SourceReport()
    assert plausible_rate(25.0, [], "a.mp4", report) == 25.0 and report.warnings == []
    assert plausible_rate(0.0, [0.0, 0.5, 1.0, 1.1, 1.6], "b.mkv", report) == pytest.approx(2.0)
    assert report.warnings[-1].startswith("b.mkv: the container claims no frame rate, which cannot be right")
    assert plausible_rate(100_000.0, [i * 1e-5 for i in range(12)], "c.mp4", report) == 0.0
    assert report.warnings[-1].startswith("c.mp4: the container claims 100,000 frames/s, and its first frames' "
                                          "timestamps are 0.01 ms apart: its frame rate is unknown")


def test_closing_a_stream_while_another_thread_reads_it(ts_bytes):
    """Ctrl-C: the run closes the source while the prefetch thread is inside a (stalled) read."""
    with serve_stream(ts_bytes, stall_after_bytes=len(ts_bytes) // 2) as server:
        source = open_source(server.url, reconnect=FAST_RETRY, read_timeout_s=1.0)
        frames = iter(source)
        next(frames)
        read = []
        reader = threading.Thread(target=lambda: read.extend(frames), daemon=True)
        reader.start()
        time.sleep(0.5)  # the reader is blocked in the stalled read
        source.close()  # raised ValueError: generator already executing
        reader.join(5)
        assert not reader.is_alive() and len(read) < N


@pytest.mark.parametrize(("text", "shown"), [
    ("rtsp://viewer:s3cret@10.0.0.5:554/live", "rtsp://viewer:***@10.0.0.5:554/live"),
    ("rtsp://:s3cret@cam/live", "rtsp://:***@cam/live"),
    ("http://cam/video.cgi?user=admin&pwd=s3cret&res=1", "http://cam/video.cgi?user=admin&pwd=***&res=1"),
    ("Connection refused: 'rtsp://u:s3cret@cam:1/c'", "Connection refused: 'rtsp://u:***@cam:1/c'"),
    ("rtsp://viewer@cam/live", "rtsp://viewer@cam/live"),
    ("/dev/video0", "/dev/video0"),
    ("rtsp://u:p@ss@h/s", "rtsp://u:***@h/s"),  # a password may hold @, quotes and colons: the login ends at the last @
    ("http://viewer:cam'Pw2@127.0.0.1:8000/stream.ts", "http://viewer:***@127.0.0.1:8000/stream.ts"),
    ('rtsp://u:a"b:c@cam/x', "rtsp://u:***@cam/x"),
    ("Connection refused: 'rtsp://u:s3'cret@cam:1/c'", "Connection refused: 'rtsp://u:***@cam:1/c'"),
    ("failed: 'rtsp://u:pw@cam' and 'http://h/x?pwd=a'", "failed: 'rtsp://u:***@cam' and 'http://h/x?pwd=***'"),
])
def test_redact_hides_the_password_of_a_url(text, shown):
    assert redact(text) == shown
