"""Helpers that write small, real test videos with PyAV (reused by other test modules).

All videos are H.264 (libx264) in MP4 unless told otherwise. Frames come from a folder of
images (e.g. DAVIS JPEGs) or from a list of (H, W, 3) uint8 RGB arrays.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np
from conftest import DATA

DAVIS_IMAGES = DATA / "davis2016" / "images"


def load_frames(
    frames_dir: str | Path, max_frames: int | None = None, size: tuple[int, int] | None = None
) -> list[np.ndarray]:
    """Read sorted images of a folder as RGB arrays (H, W, 3) uint8, optionally resized.

    size: (width, height) to resize to (keep it even for yuv420p).
    """
    paths = sorted(p for p in Path(frames_dir).iterdir() if p.suffix.lower() in {".jpg", ".png"})
    if max_frames is not None:
        paths = paths[:max_frames]
    frames = []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read test image {p}")
        if size is not None:
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames


def davis_frames(video: str = "blackswan", n: int = 24, size: tuple[int, int] = (160, 96)) -> list[np.ndarray]:
    """n consecutive DAVIS frames of `video`, downscaled to size=(width, height) for fast tests."""
    return load_frames(DAVIS_IMAGES / video, max_frames=n, size=size)


def _as_frames(frames_dir_or_list: str | Path | Sequence[np.ndarray], max_frames: int | None) -> list[np.ndarray]:
    if isinstance(frames_dir_or_list, (str, Path)):
        return load_frames(frames_dir_or_list, max_frames=max_frames)
    frames = list(frames_dir_or_list)
    return frames[:max_frames] if max_frames is not None else frames


def encode_video(
    frames_dir_or_list: str | Path | Sequence[np.ndarray],
    path: str | Path,
    fps: int = 24,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    max_frames: int | None = None,
    rotate: int | None = None,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    container_format: str | None = None,
    faststart: bool = False,
) -> list[float]:
    """Encode frames into a real video file with PyAV; return the written timestamps (seconds).

    frames_dir_or_list: a folder of images or a list of (H, W, 3) uint8 RGB arrays.
    rotate: display rotation in degrees counter-clockwise (0/90/180/270), stored as the
        stream's display matrix: a player shows np.rot90(frame, rotate // 90).
    pts / time_base: explicit per-frame presentation timestamps (for VFR); default 1/fps steps.
    container_format: e.g. "mpegts"; default from the file extension.
    faststart: put the MP4 index (moov) first, so a truncated copy still opens.
    """
    frames = _as_frames(frames_dir_or_list, max_frames)
    if not frames:
        raise ValueError("encode_video needs at least one frame")
    height, width = frames[0].shape[:2]
    if time_base is None:
        time_base = Fraction(1, fps) if pts is None else Fraction(1, 1000)
    if pts is None:
        pts = [round(i / fps / time_base) for i in range(len(frames))]
    if len(pts) != len(frames):
        raise ValueError(f"{len(pts)} pts for {len(frames)} frames")
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format=container_format, options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if codec == "libx264":
            # No B-frames: exact pts round-trip and streamable output; fast for tests.
            stream.options = {"bf": "0", "preset": "ultrafast", "g": str(max(1, fps))}
        if rotate:
            stream.set_display_rotation(rotate)
        for image, p in zip(frames, pts):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = int(p), time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return [float(p * time_base) for p in pts]


def encode_vfr_video(
    frames: Sequence[np.ndarray], path: str | Path, durations_ms: Sequence[int] | None = None
) -> list[float]:
    """Encode a variable-frame-rate mp4: frame i lasts durations_ms[i % len] milliseconds.

    Returns the written timestamps in seconds (first is 0).
    """
    durations_ms = list(durations_ms or [20, 60, 40, 100])
    pts, t = [], 0
    for i in range(len(frames)):
        pts.append(t)
        t += durations_ms[i % len(durations_ms)]
    return encode_video(frames, path, fps=25, pts=pts, time_base=Fraction(1, 1000))


def _picture_stream(container: av.container.OutputContainer, cover: bool) -> av.video.stream.VideoStream:
    """A 64x64 MJPEG video stream for one picture; ``cover``: marked as cover art (attached_pic)."""
    stream = container.add_stream("mjpeg", rate=1)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuvj420p"
    if cover:
        stream.disposition = av.stream.Disposition.attached_pic
    return stream


def _mux_picture(container: av.container.OutputContainer, stream: av.video.stream.VideoStream) -> None:
    """Its one grey picture, once every stream of the container is added."""
    for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def encode_picture_then_video(frames: Sequence[np.ndarray], path: str | Path, fps: int = 24) -> None:
    """An MKV whose first video stream is one MJPEG picture and whose second is ``frames`` as H.264 (a
    thumbnail stream before the video)."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        picture = _picture_stream(container, cover=False)
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"bf": "0", "preset": "ultrafast"}
        _mux_picture(container, picture)
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def encode_audio_only(path: str | Path, seconds: float = 1.0, rate: int = 16000, cover: bool = False) -> None:
    """Write a file holding only an AAC audio stream (no video), e.g. `x.mp4`; ``cover``: with cover
    art (a picture stream marked attached_pic, as music files carry)."""
    with av.open(str(path), mode="w") as container:
        picture = _picture_stream(container, cover=True) if cover else None
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        if picture is not None:
            _mux_picture(container, picture)
        n = int(seconds * rate)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        chunk = 1024
        for start in range(0, n, chunk):
            samples = tone[start : start + chunk][None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def truncate_file(path: str | Path, keep_fraction: float) -> None:
    """Cut a file to keep_fraction of its bytes (simulates an interrupted download/recording)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])


def corrupt_middle(path: str | Path, start_fraction: float = 0.45, length: int = 4000, seed: int = 0) -> None:
    """Overwrite `length` bytes from start_fraction of the file with random bytes."""
    data = bytearray(Path(path).read_bytes())
    start = int(len(data) * start_fraction)
    rng = np.random.default_rng(seed)
    data[start : start + length] = rng.integers(0, 256, size=min(length, len(data) - start), dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))
