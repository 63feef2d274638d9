"""NVDEC: video files decoded by the GPU's video engine, through the FFmpeg that PyAV ships
(``av.open(..., hwaccel=HWAccel("cuda"))``; PyAV's wheels are built with CUDA device support), each
frame copied back to the host.

Whether NVDEC can run is known only by trying: the FFmpeg build must list CUDA
(:func:`nvdec_built`), a CUDA device must open (it does not without an NVIDIA driver and GPU: the
open fails), and the codec must have an NVDEC decoder (H.264, HEVC, VP9, AV1...; not MJPEG). The
hardware decoder is asked for without FFmpeg's silent software fallback, so frames that arrive came
from NVDEC; a file it cannot decode raises instead, and the reader decodes it on the CPU
(:class:`streamcosal.io.file.VideoFileSource`). A device that cannot be opened is said once per
process and not tried again.
"""

from __future__ import annotations

import logging
import threading

import av
from av.codec.hwaccel import HWAccel, hwdevices_available

from streamcosal.io.decode import video_stream

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_unavailable: str | None = None  # why NVDEC cannot run in this process, once known


class NvdecUnavailable(RuntimeError):
    """NVDEC cannot decode this file here; the message says why."""


def nvdec_built() -> bool:
    """Whether PyAV's FFmpeg can open CUDA devices (its hardware decoding for NVIDIA GPUs)."""
    return "cuda" in hwdevices_available()


def open_nvdec(path: str) -> av.container.InputContainer:
    """``path`` opened for decoding by NVDEC (frames copied to the host), or :class:`NvdecUnavailable`
    with the reason: no CUDA in PyAV's FFmpeg, no CUDA device (said once per process, then not tried
    again), or no NVDEC decoder for the file's codec."""
    global _unavailable
    with _lock:
        reason = _unavailable
    if reason is None and not nvdec_built():
        reason = f"PyAV's FFmpeg has no CUDA support (its hardware devices: {', '.join(hwdevices_available()) or 'none'})"
    if reason is None:
        try:
            container = av.open(path, mode="r", hwaccel=HWAccel("cuda", allow_software_fallback=False))
        except (OSError, av.error.FFmpegError, RuntimeError) as error:
            reason = f"no CUDA device could be opened ({error})"
        else:
            stream = video_stream(container)
            if stream is not None and stream.codec_context.is_hwaccel():
                return container
            container.close()
            codec = stream.codec_context.name if stream is not None else "none"
            raise NvdecUnavailable(f"NVDEC has no decoder for its codec ({codec})")
    with _lock:
        first = _unavailable is None
        _unavailable = reason
    if first:
        logger.warning("NVDEC unavailable: %s; video files are decoded on the CPU", reason)
    raise NvdecUnavailable(reason)
