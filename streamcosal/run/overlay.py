"""Overlays: the co-salient object highlighted (tinted mask, contour, box) on frames and images.

- `highlight(image, mask)`: one frame, [H,W,3] uint8 RGB + [H,W] bool -> [H,W,3] uint8 RGB.
- `VideoSink`: an H.264 mp4 (PyAV, libx264, yuv420p) written under a hidden temporary name in
  the target folder and renamed to its final name on `close()`, so a reader never sees a
  half-written video: the file is there complete, or not at all.
- `ImageOverlaySink`: PNG overlays for an image group, plus a contact sheet of all of them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from streamcosal.run.images import map_name, write_png
from streamcosal.storage.files import temporary_path

TIME_BASE = Fraction(1, 1000)  # overlay video timestamps in milliseconds


@dataclass(frozen=True)
class OverlayStyle:
    """How the object is drawn. color: RGB; alpha: tint strength in [0,1]; widths in pixels."""

    color: tuple[int, int, int] = (255, 48, 48)
    alpha: float = 0.45
    contour_width: int = 2
    box_width: int = 2
    box_color: tuple[int, int, int] = (255, 220, 0)


def highlight(image: np.ndarray, mask: np.ndarray, style: OverlayStyle = OverlayStyle()) -> np.ndarray:
    """image [H,W,3] uint8 RGB, mask [H,W] bool -> a new [H,W,3] uint8 RGB image with the mask
    tinted, its outer contours drawn and its bounding box drawn. An empty mask leaves a copy."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"highlight needs an [H,W,3] uint8 RGB image, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the image {image.shape[:2]}")
    out = image.copy()
    if not mask.any():
        return out
    color = np.array(style.color, dtype=np.float32)
    out[mask] = (out[mask].astype(np.float32) * (1.0 - style.alpha) + color * style.alpha).astype(np.uint8)
    mask8 = mask.astype(np.uint8)
    contours, _ = cv2.findContours(mask8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, style.color, style.contour_width, lineType=cv2.LINE_AA)
    x, y, w, h = cv2.boundingRect(mask8)
    cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), style.box_color, style.box_width)
    return out


class VideoSink:
    """Write RGB frames to an H.264 mp4 at `path`, atomically.

        with VideoSink("out.mp4", fps=10) as sink:
            sink.write(image, timestamp)   # [H,W,3] uint8 RGB, seconds (None: frame count / fps)

    The size is the first frame's, cropped to even numbers (yuv420p needs them); later frames of
    another size are resized to it. Timestamps become the frames' presentation times (so
    variable frame rate and gaps are kept); they must increase (a repeat is nudged by 1 ms).
    `close()` (also on leaving a `with`, even by an exception: the frames written are kept)
    finishes the file and renames it; `abort()` deletes it. A write error (a full disk) in
    `write` or `close` deletes the unfinished file and raises OSError naming the folder; the
    sink is then closed (`close()` returns None).
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 23, preset: str = "veryfast") -> None:
        if not fps > 0:
            raise ValueError(f"{path}: overlay video fps must be > 0, got {fps}")
        self.path = Path(path)
        self.fps = fps
        self.frames = 0
        self._options = {"crf": str(crf), "preset": preset}
        self._tmp = temporary_path(self.path, ".tmp.mp4")
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._size = (0, 0)  # (width, height)
        self._last_pts = -1
        self._done = False

    def _open(self, image: np.ndarray) -> None:
        height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        if width < 2 or height < 2:
            raise ValueError(f"{self.path}: frame {image.shape} is too small for an H.264 video")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
        except OSError as error:
            raise self._failed(error) from error
        stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE
        stream.options = self._options
        self._stream, self._size = stream, (width, height)

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        """Add one [H,W,3] uint8 RGB frame shown at `timestamp` seconds."""
        if self._done:
            raise RuntimeError(f"{self.path}: the overlay video is already closed")
        if self._container is None:
            self._open(image)
        width, height = self._size
        if image.shape[:2] != (height, width):
            if image.shape[0] // 2 * 2 == height and image.shape[1] // 2 * 2 == width:
                image = image[:height, :width]
            else:
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        if timestamp is None or not math.isfinite(timestamp):
            timestamp = self.frames / self.fps
        pts = max(round(timestamp / TIME_BASE), self._last_pts + 1)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, frame.time_base = pts, TIME_BASE
        try:
            for packet in self._stream.encode(frame):  # type: ignore[union-attr]
                self._container.mux(packet)  # type: ignore[union-attr]
        except OSError as error:
            raise self._failed(error) from error
        self._last_pts = pts
        self.frames += 1

    def close(self) -> Path | None:
        """Finish and rename the video; returns its path (None when no frame was written)."""
        if self._done:
            return self.path if self.path.exists() else None
        self._done = True
        if self._container is None:
            return None
        try:
            for packet in self._stream.encode():  # type: ignore[union-attr]
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        except OSError as error:
            raise self._failed(error) from error
        except BaseException:  # never leave the hidden file behind, even on a second Ctrl-C
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the video: nothing is left on disk. The container is closed once, here: a
        container whose write failed is never flushed or closed again (PyAV crashes on that)."""
        self._done = True
        container, self._container, self._stream = self._container, None, None
        if container is not None:
            try:
                container.close()
            except (av.error.FFmpegError, OSError):
                pass
        self._tmp.unlink(missing_ok=True)

    def _failed(self, error: OSError) -> OSError:
        """Abort after a write error (a full disk); the error to raise, naming the video and the folder."""
        self.abort()
        failed = OSError(f"overlay video {self.path.name} not written ({error.strerror or error}); "
                         f"free space in {self.path.parent} and run again")
        failed.errno = error.errno
        return failed

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def contact_sheet(images: list[np.ndarray], columns: int = 4, thumb: int = 256, gap: int = 4) -> np.ndarray:
    """[H,W,3] uint8 RGB images -> one [h,w,3] uint8 RGB sheet of thumbnails (longer side `thumb`),
    `columns` per row, centred in `thumb` x `thumb` cells on white, `gap` pixels apart."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    sheet = np.full((rows * (thumb + gap) + gap, columns * (thumb + gap) + gap, 3), 255, np.uint8)
    for i, image in enumerate(images):
        scale = thumb / max(image.shape[:2])
        h, w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        top = gap + (i // columns) * (thumb + gap) + (thumb - h) // 2
        left = gap + (i % columns) * (thumb + gap) + (thumb - w) // 2
        sheet[top:top + h, left:left + w] = small
    return sheet


class ImageOverlaySink:
    """PNG overlays of an image group in `folder` (named like the maps of `images.map_names`:
    `<stem>.png`, or `<name>.png` where stems collide; each written atomically), and on close
    `contact_sheet.png` of them all."""

    SHEET = "contact_sheet.png"

    def __init__(self, folder: str | os.PathLike, thumb: int = 256) -> None:
        self.folder = Path(folder)
        self.thumb = thumb
        self.frames = 0
        self._thumbs: list[np.ndarray] = []

    def write(self, image: np.ndarray, source: str | os.PathLike) -> None:
        """Write the [H,W,3] uint8 RGB overlay of the image file `source` as `folder/<name>.png`."""
        write_png(self.folder / f"{map_name(Path(source))}.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        scale = min(1.0, self.thumb / max(image.shape[:2]))
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        self._thumbs.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        self.frames += 1

    def close(self) -> Path | None:
        """Write the contact sheet; returns the folder (None when no image was written)."""
        if not self._thumbs:
            return None
        sheet = contact_sheet(self._thumbs, thumb=self.thumb)
        write_png(self.folder / self.SHEET, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        self._thumbs = []
        return self.folder
