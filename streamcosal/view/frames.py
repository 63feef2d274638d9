"""A frame with its mask drawn, as JPEG, from a stored row.

The mask is the row's COCO RLE. The frame is read again from the source the row names when that is
a local file that is still there (a video file, frame by frame as the pipeline read it, or an image
file); the mask is drawn over it as the overlay videos draw it (:func:`streamcosal.run.overlay.highlight`:
tinted, outlined, boxed). Where the frame cannot be had (a camera or stream, whose frames are not
kept; a file moved, deleted or changed since), the mask is drawn alone on black and the note says why;
a file of the right size written or moved there after its run started is drawn, with a note that the picture may
not be the one the mask was made on.
Paths come only from the rows, never from a request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from streamcosal.io.file import VideoFileSource
from streamcosal.io.frame import Sampler, SourceError
from streamcosal.io.imagefile import ImageReadError, is_image_name, read_image
from streamcosal.io.open import local_source
from streamcosal.io.redact import redact
from streamcosal.io.stream import is_stream
from streamcosal.storage import decode_mask

JPEG_QUALITY = 90
MAX_SIDE = 1280  # larger frames are sent scaled down
OPEN_VIDEOS = 4  # video files kept open between requests
RUN_START_RESOLUTION = timedelta(milliseconds=1)  # a report's start is given to the millisecond (or to the second)


@dataclass(frozen=True)
class RenderedFrame:
    """A frame as JPEG bytes, and why it shows the mask on black instead of the frame (None: it does not)."""

    jpeg: bytes
    note: str | None


class FrameRenderer:
    """Draws rows' masks over their frames; keeps a few video files open. Thread-safe (one frame at a time)."""

    def __init__(self, open_videos: int = OPEN_VIDEOS) -> None:
        self._videos: OrderedDict[tuple[str, int, int], VideoFileSource] = OrderedDict()
        self._open_videos = open_videos
        self._lock = threading.Lock()

    def render(self, row: Mapping[str, Any], started_in: Path | None = None,
               started_at: datetime | None = None) -> RenderedFrame:
        """``row``'s frame with its mask drawn, or its mask alone on black with the reason. ``started_in``:
        the folder the row's run started in, which a relative source is read from (else from this
        process's); ``started_at``: when it started (a source modified since is noted)."""
        from streamcosal.run.overlay import highlight  # the overlay videos' style; imports the engine's modules

        mask = decode_mask(row)
        with self._lock:
            image, note = self._frame(str(row["source"]), int(row["frame_index"]), mask.shape, started_in,
                                       started_at)
        if image is None:
            image = np.zeros((*mask.shape, 3), np.uint8)
        drawn = highlight(image, mask)
        scale = MAX_SIDE / max(drawn.shape[:2])
        if scale < 1:
            size = (max(1, round(drawn.shape[1] * scale)), max(1, round(drawn.shape[0] * scale)))
            drawn = cv2.resize(drawn, size, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode frame {row['frame_index']} of {redact(str(row['source']))}")
        return RenderedFrame(jpeg.tobytes(), note)

    @staticmethod
    def warm_up() -> None:
        """Import the drawing (it imports torch: seconds) before the first frame is asked for."""
        from streamcosal.run.overlay import highlight  # noqa: F401

    def close(self) -> None:
        """Close the open video files."""
        with self._lock:
            for video in self._videos.values():
                video.close()
            self._videos.clear()

    def _frame(self, source: str, index: int, shape: tuple[int, ...], started_in: Path | None,
               started_at: datetime | None) -> tuple[np.ndarray | None, str | None]:
        """(the [H, W, 3] uint8 RGB frame, None or a note) or (None, why it cannot be shown)."""
        shown = redact(source)
        if is_stream(source):
            return None, f"{shown} is a live stream or camera: its frames are not kept, so the mask is shown on black"
        try:
            path = Path(local_source(source))
        except SourceError as e:
            return None, f"{e}: the mask is shown on black"
        where = ""
        if not path.is_absolute():
            where = (f" (in {started_in}, the folder its run started in)" if started_in is not None else
                     " (in the folder the viewer runs in: a running run's own is known when it ends)")
            path = (started_in or Path.cwd()) / path
        if not path.is_file():
            why = "is not a regular file" if path.exists() else "no longer exists"
            return None, f"the source {shown}{where} {why}: the mask is shown alone, on black"
        try:
            image = read_image(path)[0] if is_image_name(path) else self._video_frame(path, index)
        except (SourceError, ImageReadError, OSError, ValueError, av.error.FFmpegError) as e:
            return None, f"frame {index} of {shown} cannot be read ({redact(str(e))}): the mask is shown on black"
        if image is None:
            return None, f"{shown} has no frame {index} now (it changed since the run): the mask is shown on black"
        if image.shape[:2] != tuple(shape):
            return None, (f"frame {index} of {shown} is {image.shape[1]}x{image.shape[0]} now, its mask "
                          f"{shape[1]}x{shape[0]} (the file changed since the run): the mask is shown on black")
        if started_at is not None:
            stat = path.stat()  # the inode's change time too: a file moved into place keeps its modification time
            changed = datetime.fromtimestamp(max(stat.st_mtime, stat.st_ctime), started_at.tzinfo)
            if changed > started_at + (RUN_START_RESOLUTION if started_at.microsecond else timedelta(seconds=1)):
                return image, (f"{shown}{where} was written or put in place at "
                               f"{changed.isoformat(timespec='seconds')}, after its run started "
                               f"({started_at.isoformat(timespec='seconds')}): the picture may not be the one the "
                               "mask was made on")
        return image, None

    def _video_frame(self, path: Path, index: int) -> np.ndarray | None:
        """Frame ``index`` of a video file (upright, as the pipeline read it); None past its end."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        video = self._videos.pop(key, None)
        if video is None:
            video = VideoFileSource(path, Sampler())
        self._videos[key] = video
        while len(self._videos) > self._open_videos:
            self._videos.popitem(last=False)[1].close()
        frames = video.read_frames([index])
        return frames[0].image if frames else None
