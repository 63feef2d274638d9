"""Network streams and cameras (`rtsp://`, `rtmp://`, `http(s)://`, `udp://`, `tcp://`, `srt://`,
`/dev/video*`) read with PyAV, reconnecting with exponential backoff after a drop."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av

from streamcosal.io.decode import RateCheck, decode_packets, summarise_skips, unbounded_info, upright
from streamcosal.io.frame import Frame, FrameSource, Sampler, SourceError
from streamcosal.io.redact import redact

logger = logging.getLogger(__name__)


STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://", "rtp://")


def is_stream(spec: str | Path) -> bool:
    """Whether a source is a network stream or a camera (read by :class:`StreamSource`): a URL of a
    streaming protocol or a ``/dev/video*`` device; anything else is a path."""
    text = str(spec)
    return text.lower().startswith(STREAM_PREFIXES) or text.startswith("/dev/video")


@dataclass
class ReconnectPolicy:
    """Exponential backoff: wait backoff_s, 2*backoff_s, ... (at most max_backoff_s) between tries.

    max_attempts: tries after a drop before the stream ends (and, + 1, to connect the first time).
    """

    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def delay(self, attempt: int) -> float:
        return min(self.backoff_s * 2**attempt, self.max_backoff_s)


class _SeenFrames:
    """Digests of the frames a stream delivered, by raw pts (the latest `limit`), so that frames a
    reconnect sends again (a server replaying a file from its start) are recognised."""

    def __init__(self, limit: int = 50_000):
        self._digests: OrderedDict[int, bytes] = OrderedDict()
        self._limit = limit

    @staticmethod
    def digest(frame: av.VideoFrame) -> bytes:
        return hashlib.blake2b(bytes(frame.planes[0]), digest_size=16).digest()

    def get(self, pts: int) -> bytes | None:
        return self._digests.get(pts)

    def add(self, pts: int, digest: bytes) -> None:
        self._digests[pts] = digest
        if len(self._digests) > self._limit:
            self._digests.popitem(last=False)


class StreamSource(FrameSource):
    """A live stream or camera read with PyAV, reconnecting after a drop.

    What no retry changes fails at once, naming the URL (password redacted) and what to do: a camera
    device that does not exist, an HTTP 401/403 (the login) or 404 (nothing at that address); met on a
    reconnect, it ends the stream (with a warning) instead. A finite file served over HTTP (an MP4 with
    its length: the demuxer knows its duration) ends at its end, as does HLS, which reports its own end.

    After a drop (read error, or end of data: a live stream has no end), it reconnects up to `policy.max_attempts` times with exponential
    backoff; a connection that delivers no new frame counts as a failed try. Frames a
    reconnect sends again (same pts, same pixels: a server replaying a file from its start,
    then stalling) are skipped and are no progress, and the frames after them keep that
    stream's own time. Then iteration stops cleanly with a warning; every frame yielded before
    stays yielded. Frame indices and timestamps keep increasing across reconnects (the outage
    time is added). `close()` ends a backoff wait at once.
    """

    def __init__(
        self,
        url: str,
        sampler: Sampler,
        policy: ReconnectPolicy,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
    ):
        super().__init__()
        self.url, self.name = url, redact(url)  # the real URL only connects
        self._sampler, self._policy = sampler, policy
        self._timeout = (open_timeout_s, read_timeout_s)
        self._eof_is_end = url.split("?")[0].lower().endswith(".m3u8")
        if url.startswith("/dev/video") and not Path(url).exists():
            cameras = sorted(str(p) for p in Path("/dev").glob("video*"))
            raise SourceError(
                f"{self.name}: no such camera device ({', '.join(cameras) or 'no /dev/video* device'} "
                "here). Check the device number, that the camera is plugged in and, in a container, that the "
                "device is passed in (docker run --device). Not retried.")
        self._failed_tries = 0  # consecutive reconnect tries that brought no new frame
        self._refusal = ""  # why the last try was refused for good (a 404), for the message that ends the stream
        self._stopped = threading.Event()  # set by close(): ends a backoff wait at once
        container = self._connect(self._policy.max_attempts + 1)
        if container is None:
            raise SourceError(
                f"{self.name}: unreachable after {self._policy.max_attempts + 1} tries "
                f"({self._last_error}). Check the URL, the network and that the stream is running."
            )
        self._container = container
        self.info = unbounded_info(container, self.name)

    def _connect(self, attempts: int) -> av.container.InputContainer | None:
        self._last_error = ""
        for attempt in range(attempts):
            if attempt and self._stopped.wait(self._policy.delay(attempt - 1)):
                return None
            if self._closed:
                return None
            options = {"rtsp_transport": "tcp"} if self.url.startswith("rtsp") else {}
            fmt = "v4l2" if self.url.startswith("/dev/video") else None
            try:
                return av.open(self.url, mode="r", format=fmt, options=options, timeout=self._timeout)
            except av.error.HTTPUnauthorizedError as error:
                self._refusal = "401 Unauthorized (the login was refused)"
                raise SourceError(
                    f"{self.name}: the server refused the login (401 Unauthorized); give its user and password "
                    "in the URL (rtsp://USER:PASSWORD@HOST/PATH, http://USER:PASSWORD@HOST/PATH). Not retried."
                ) from error
            except av.error.HTTPForbiddenError as error:
                self._refusal = "403 Forbidden"
                raise SourceError(
                    f"{self.name}: the server forbids access (403 Forbidden); check the user and password in the "
                    "URL and that this account may read the stream. Not retried."
                ) from error
            except av.error.HTTPNotFoundError as error:
                self._refusal = "404 Not Found (the stream is gone)"
                raise SourceError(
                    f"{self.name}: the server has nothing at this address (404 Not Found); check the URL's path "
                    "and that the stream is running. Not retried."
                ) from error
            except (av.error.FFmpegError, OSError) as error:
                if self.url.startswith("/dev/video") and isinstance(error, (FileNotFoundError, PermissionError)):
                    what = "is gone" if isinstance(error, FileNotFoundError) else "cannot be opened (no permission)"
                    self._refusal = f"the device {what}"
                    raise SourceError(f"{self.name}: the camera device {what}; check that it is plugged in and that "
                                      "this user may read it (the video group). Not retried.") from error
                self._last_error = redact(str(error))
                logger.info("%s: connection try %d/%d failed: %s", self.name, attempt + 1, attempts, self._last_error)
        return None

    def _generate(self) -> Iterator[Frame]:
        index, last_t = 0, None
        interval = 1.0 / self.info.fps if self.info.fps else 0.04
        seen = _SeenFrames()
        rate = RateCheck(self.info, self.name, self.report)  # a claimed rate of none or 30,000 frames/s: fixed
        timeline: tuple[int, float] | None = None  # (raw pts, stream time) of the current connection's first frame
        container: av.container.InputContainer | None = self._container
        dropped_at: float | None = None
        while container is not None:
            new_frames, ended_cleanly, replay = False, False, False
            connection_timeline = None
            try:
                for frame in decode_packets(container, self.name, self.report):
                    if frame is None:
                        index += 1
                        continue
                    if frame.pts is None:  # a raw stream (H.264 over TCP) holds no times: one interval a frame
                        timestamp = 0.0 if last_t is None else last_t + interval
                    else:
                        digest = seen.digest(frame)
                        if seen.get(frame.pts) == digest:  # a reconnect sent frames already read: not progress
                            replay = True
                            continue
                        if connection_timeline is None:  # a replay continues its stream's own time
                            connection_timeline = timeline if (replay and timeline) else (
                                frame.pts,
                                0.0 if last_t is None else last_t + interval + time.monotonic() - (dropped_at or 0))
                            timeline = connection_timeline
                        first_pts, start_t = connection_timeline
                        timestamp = start_t + float((frame.pts - first_pts) * frame.time_base)
                        seen.add(frame.pts, digest)
                        if rate.add(timestamp) and self.info.fps:
                            interval = 1.0 / self.info.fps
                    new_frames = True
                    if last_t is None or timestamp > last_t:
                        if self._sampler.keep(index, timestamp):
                            yield Frame(image=upright(frame), index=index, timestamp=timestamp, source=self.name)
                        last_t = timestamp
                    index += 1
                ended_cleanly = True
            except (av.error.FFmpegError, OSError) as error:
                logger.info("%s: stream dropped after frame %d: %s", self.name, index - 1, redact(str(error)))
            finally:
                finite = container.duration is not None  # the demuxer knows its length: a file, not a feed
                container.close()
            if replay and not new_frames:
                logger.info("%s: the connection only sent frames already read", self.name)
            if self._closed or (ended_cleanly and self._eof_is_end):
                break
            if ended_cleanly and finite:
                logger.info("%s: ended: the whole file was read (%d frames)", self.name, index)
                break
            dropped_at = time.monotonic()
            container = self._reconnect(had_frames=new_frames)
        rate.finish()
        summarise_skips(self.name, self.report, "Frames are lost at drops or on a bad network.")

    def _reconnect(self, had_frames: bool) -> av.container.InputContainer | None:
        """Reconnect; the tries of connections that brought no new frame add up."""
        if had_frames:
            self._failed_tries = 0
        while self._failed_tries < self._policy.max_attempts:
            if self._stopped.wait(self._policy.delay(self._failed_tries)):
                return None
            self._failed_tries += 1
            try:
                container = self._connect(1)
            except SourceError:  # what no retry changes (a 404: the stream is gone): it ends here
                self.report.warn(f"{self.name}: stream ended: reconnecting, the server answered {self._refusal}; not "
                                 f"retried. {self.report.frames_yielded} frames were read and kept.")
                return None
            if container is not None:
                self.report.reconnects += 1
                logger.info("%s: reconnected (%d)", self.name, self.report.reconnects)
                return container
        self.report.warn(
            f"{self.name}: stream ended: no new frames after {self._policy.max_attempts} reconnect tries "
            f"({self._last_error or 'no data, or only frames already read'}); "
            f"{self.report.frames_yielded} frames were read and kept."
        )
        return None

    def close(self) -> None:
        self._stopped.set()
        if self._frames is None:  # never read: the first connection is still ours to close
            self._container.close()
        super().close()  # else the reader closes its connection (never closed under a running read)
