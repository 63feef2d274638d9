"""A group of images (a folder sorted by name, or a list of image files) as a frame source."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterator, Sequence

from streamcosal.io.frame import Frame, FrameSource, Sampler, SourceError, VideoInfo
from streamcosal.io.imagefile import IMAGE_SUFFIXES, ImageReadError, image_sizes, read_image

logger = logging.getLogger(__name__)


class ImageGroupSource(FrameSource):
    """Images as one group: a folder (sorted by file name) or a list of files (in the given order).

    Timestamps are NaN (images have no time); fps sampling is refused, stride works.
    Unreadable files (damaged, too large, or of a format no installed decoder reads: HEIC without
    pillow-heif) are skipped with a warning naming each and why, and listed in report.unreadable_files.
    """

    def __init__(self, paths: Sequence[Path], name: str, sampler: Sampler):
        super().__init__()
        self.name, self.paths = name, list(paths)
        if sampler.fps is not None:
            raise SourceError(f"{name}: images have no timestamps, so fps sampling is impossible; use stride.")
        self._sampler = sampler
        if not self.paths:
            raise SourceError(f"{name}: no images found (looked for {', '.join(IMAGE_SUFFIXES[:7])} and every other "
                              "format Pillow reads).")
        missing = [str(p) for p in self.paths if not p.is_file()]
        if len(missing) == len(self.paths):
            raise SourceError(f"{name}: image file(s) not found: {', '.join(missing[:5])}. Check the paths.")
        for path in missing:  # e.g. a broken symbolic link in a folder: skipped, said, the group partial
            self.report.unreadable_files.append(path)
            self.report.warn(f"{path}: not found (a broken symbolic link?); skipped.")
        self.paths = [p for p in self.paths if p.is_file()]
        first, errors = None, []
        for path in self.paths:
            try:
                first, _ = read_image(path)
                break
            except ImageReadError as err:
                errors.append(str(err))
        if first is None:
            reasons = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
            raise SourceError(f"{name}: none of the {len(self.paths)} images can be read: {reasons}")
        self.info = VideoInfo(
            width=first.shape[1], height=first.shape[0], fps=0.0, frame_count=len(self.paths),
            duration=None, rotation=0, codec="image",
        )

    def frame_shapes(self) -> list[tuple[int, int]]:
        """Every image's (H, W) from its header (images differ in size)."""
        return image_sizes(self.paths)

    def _read(self, index: int) -> Frame | None:
        path = self.paths[index]
        try:
            image, _ = read_image(path)
        except ImageReadError as err:
            self.report.unreadable_files.append(str(path))
            self.report.warn(f"{err}; skipped.")
            return None
        return Frame(image=image, index=index, timestamp=math.nan, source=str(path))

    def _generate(self) -> Iterator[Frame]:
        for index in range(len(self.paths)):
            if self._sampler.keep(index, math.nan):
                frame = self._read(index)
                if frame is not None:
                    yield frame

    def iter_frames(self, indices: Sequence[int]) -> Iterator[Frame]:
        for index in sorted(set(int(i) for i in indices)):
            frame = self._read(index)
            if frame is not None:
                yield frame


# ----------------------------------------------------------------------------- entry point
