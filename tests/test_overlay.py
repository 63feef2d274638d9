"""Overlays: highlighting, the atomic H.264 VideoSink, PNG overlays and contact sheets."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from video_fixtures import davis_frames

from streamcosal.run.overlay import ImageOverlaySink, OverlayStyle, VideoSink, contact_sheet, highlight


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return davis_frames("blackswan", n=10, size=(161, 97))  # odd sizes on purpose


def square_mask(shape: tuple[int, int], top: int = 20, left: int = 30, size: int = 40) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:top + size, left:left + size] = True
    return mask


def test_highlight_tints_outlines_and_boxes_the_mask(frames):
    image = frames[0]
    mask = square_mask(image.shape[:2])
    style = OverlayStyle(color=(255, 0, 0), alpha=0.5, box_color=(0, 255, 0))
    out = highlight(image, mask, style)
    assert out.shape == image.shape and out.dtype == np.uint8
    inner = (slice(30, 50), slice(40, 60))  # well inside: tinted only
    expected = (image[inner].astype(np.float32) * 0.5 + np.array([255, 0, 0]) * 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[inner], expected)
    np.testing.assert_array_equal(out[20, 30:70], np.tile([0, 255, 0], (40, 1)))  # box on the top edge
    far = (slice(80, 97), slice(120, 161))  # away from the object: untouched
    np.testing.assert_array_equal(out[far], image[far])
    np.testing.assert_array_equal(highlight(image, np.zeros(image.shape[:2], bool)), image)
    with pytest.raises(ValueError, match="does not match"):
        highlight(image, mask[:10])


def test_video_sink_writes_h264_with_the_timestamps(frames, tmp_path):
    timestamps = [0.0, 0.05, 0.2, 0.25, 0.4, 0.9, 1.0, 1.1, 1.15, 1.6]  # variable frame rate
    path = tmp_path / "overlay.mp4"
    with VideoSink(path, fps=10) as sink:
        for image, t in zip(frames, timestamps):
            sink.write(image, t)
        assert not path.exists()  # under a hidden name until done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.mp4"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = list(container.decode(stream))
    assert (decoded[0].width, decoded[0].height) == (160, 96)  # cropped to even sizes
    np.testing.assert_allclose([f.time for f in decoded], timestamps, atol=1e-3)
    diff = np.abs(decoded[3].to_ndarray(format="rgb24").astype(int) - frames[3][:96, :160].astype(int))
    assert diff.mean() < 6  # the picture survives the encoding


def test_video_sink_keeps_frames_on_error_and_abort_leaves_nothing(frames, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with VideoSink(tmp_path / "a.mp4", fps=10) as sink:
            for image in frames[:3]:
                sink.write(image)
            raise KeyboardInterrupt
    with av.open(str(tmp_path / "a.mp4")) as container:  # complete, with the frames written
        assert sum(1 for _ in container.decode(video=0)) == 3
    sink = VideoSink(tmp_path / "b.mp4", fps=10)
    sink.write(frames[0])
    sink.abort()
    assert VideoSink(tmp_path / "c.mp4", fps=10).close() is None  # no frame, no file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]
    with pytest.raises(ValueError, match="fps"):
        VideoSink(tmp_path / "d.mp4", fps=0)


def test_image_overlays_and_contact_sheet(frames, tmp_path):
    sink = ImageOverlaySink(tmp_path / "group", thumb=64)
    for i, image in enumerate(frames[:5]):
        sink.write(highlight(image, square_mask(image.shape[:2])), tmp_path / f"img{i}.jpg")
    assert sink.close() == tmp_path / "group"
    names = sorted(p.name for p in (tmp_path / "group").iterdir())
    assert names == ["contact_sheet.png"] + [f"img{i}.png" for i in range(5)]
    png = cv2.cvtColor(cv2.imread(str(tmp_path / "group" / "img0.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(png, highlight(frames[0], square_mask(frames[0].shape[:2])))
    sheet = cv2.imread(str(tmp_path / "group" / "contact_sheet.png"))
    assert sheet.shape == (2 * 68 + 4, 4 * 68 + 4, 3)  # 5 thumbnails, 4 per row, 4 px gaps
    assert contact_sheet([frames[0]], thumb=32).shape == (40, 40, 3)
