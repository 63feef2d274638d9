"""What an event shows: a JPEG of its peak frame with the overlay drawn, and optionally an MP4 clip of
its frames (`streamcosal.run.overlay.highlight`: the mask tinted, outlined and boxed).

    jpeg = snapshot_jpeg(image, mask)                   # [H,W,3] uint8 RGB, [H,W] bool -> JPEG bytes, H x W
    frames = [(t, clip_frame(image, mask)), ...]        # each frame of the event, as it comes
    mp4 = clip_mp4(frames)                              # -> H.264 MP4 bytes
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from streamcosal.run.overlay import VideoSink, highlight

SNAPSHOT_QUALITY = 90  # JPEG quality of a snapshot (full size)
CLIP_QUALITY = 80  # JPEG quality of a clip's frames, kept until the event is final
CLIP_MAX_SIDE = 640  # a clip's frames are made at most this long on their longer side


def jpeg(image: np.ndarray, quality: int) -> bytes:
    """[H,W,3] uint8 RGB -> JPEG bytes."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as JPEG")
    return data.tobytes()


def snapshot_jpeg(image: np.ndarray, mask: np.ndarray) -> bytes:
    """The frame [H,W,3] uint8 RGB with its mask [H,W] bool highlighted, as a JPEG of the frame's size."""
    return jpeg(highlight(image, mask), SNAPSHOT_QUALITY)


def clip_frame(image: np.ndarray, mask: np.ndarray) -> bytes:
    """One frame of a clip: highlighted, at most `CLIP_MAX_SIDE` px on its longer side, as a JPEG."""
    shown = highlight(image, mask)
    scale = CLIP_MAX_SIDE / max(shown.shape[:2])
    if scale < 1:
        size = (max(2, round(shown.shape[1] * scale)), max(2, round(shown.shape[0] * scale)))
        shown = cv2.resize(shown, size, interpolation=cv2.INTER_AREA)
    return jpeg(shown, CLIP_QUALITY)


def clip_mp4(frames: Sequence[tuple[float, bytes]]) -> bytes:
    """(timestamp, JPEG) frames in time order -> an H.264 MP4 (``VideoSink``) showing each at its time from
    the first; the nominal rate is the median spacing's (10 fps for one frame)."""
    if not frames:
        raise ValueError("a clip needs at least one frame")
    times = np.array([t for t, _ in frames], dtype=np.float64)
    spacing = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    fps = 1.0 / spacing if spacing > 0 else 10.0
    with tempfile.TemporaryDirectory(prefix="streamcosal-clip-") as folder:
        path = Path(folder) / "clip.mp4"
        with VideoSink(path, fps) as sink:
            for t, data in frames:
                bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise ValueError(f"a clip frame at {t:.3f} s is not a JPEG")
                sink.write(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t - times[0])
        return path.read_bytes()
