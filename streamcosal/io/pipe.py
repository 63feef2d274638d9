"""Pipes and FIFOs (`/dev/stdin` fed by `ffmpeg ... -f mpegts -`, a named pipe): one pass at the
writer's pace, no length; read in streaming mode, ended when the writer closes it."""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path
from typing import Iterator

import av

from streamcosal.io.decode import TimedFrames, open_container, summarise_skips, unbounded_info, upright
from streamcosal.io.frame import Frame, FrameSource, Sampler, SourceError

logger = logging.getLogger(__name__)

WRITER_NOTE_AFTER_S = 1.0
"""A FIFO that no program has opened for writing after this long is said to be waiting, once."""


class PipeSource(FrameSource):
    """A pipe or FIFO (`/dev/stdin`, a named pipe an `ffmpeg` writes to), read once, front to back,
    with PyAV as the writer writes: no length and no random access, so it is read in streaming
    mode (every frame, at the engine's pace: a full pipe holds the writer back; or, with `--live`,
    by a live reader at the writer's pace). It ends when the writer closes the pipe. Its format must
    be readable without seeking (e.g. MPEG-TS; not a plain MP4).
    """

    def __init__(self, path: Path, sampler: Sampler):
        super().__init__()
        self.path, self.name = path, str(path)
        self._sampler = sampler
        waiting_note = (f"{self.name}: waiting for a program to open the pipe for writing (e.g. ffmpeg ... -f mpegts "
                        f"{self.name}); Ctrl-C stops the wait")
        note = threading.Timer(WRITER_NOTE_AFTER_S, logger.warning, (waiting_note,))
        note.daemon = True
        note.start()
        try:
            waiting = os.open(path, os.O_RDONLY)  # waits for a FIFO's writer here, where a stop signal ends the wait
        except OSError as error:
            raise SourceError(f"{self.name}: cannot open the pipe ({error.strerror}); check its permissions.") from error
        finally:
            note.cancel()
        try:
            self._container = open_container(self.name, self.name)
        finally:
            os.close(waiting)
        self.info = unbounded_info(self._container, self.name)

    def _generate(self) -> Iterator[Frame]:
        decoded = TimedFrames(self._container, self.name, self.info, self.report)
        try:
            for index, timestamp, frame in decoded:
                if self._sampler.keep(index, timestamp):
                    yield Frame(image=upright(frame), index=index, timestamp=timestamp, source=self.name)
        except (av.error.FFmpegError, OSError) as error:
            self.report.truncated = True
            self.report.warn(f"{self.name}: the pipe stopped being readable after frame {decoded.count - 1} ({error}); "
                             "the frames before it were read. Check the program writing to it.")
        finally:
            self._container.close()
        summarise_skips(self.name, self.report, "The writer sent damaged data.")

    def close(self) -> None:
        if self._frames is None:  # never read: the container is still ours to close
            self._container.close()
        super().close()


def is_pipe(path: Path) -> bool:
    """A FIFO or an anonymous pipe (`/dev/stdin` of `... | streamcosal video /dev/stdin`)."""
    try:
        return stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        return False


# ----------------------------------------------------------------------------- live streams
