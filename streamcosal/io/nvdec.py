"""NVDEC: video files decoded by the GPU's video engine, through the FFmpeg that PyAV ships
(``av.open(..., hwaccel=HWAccel("cuda"))``; PyAV's wheels are built with CUDA device support), each
frame copied back to the host.

Whether NVDEC can run is known only by trying. Once per process, a CUDA device is opened for
decoding (:func:`device_problem`): it fails where PyAV's FFmpeg lacks CUDA (:func:`nvdec_built`) or
where there is no NVIDIA driver and GPU; that is said once and not tried again. Then each file: its
video codec must have an NVDEC decoder (H.264, HEVC, VP9, AV1...). The hardware decoder is asked for
without FFmpeg's silent software fallback, so frames that arrive came from NVDEC; a file it cannot
decode raises instead, and the reader decodes that file on the CPU
(:class:`streamcosal.io.file.VideoFileSource`), the files after it still going to NVDEC.
NVDEC decodes on the first GPU (FFmpeg's default CUDA device), whichever the engine runs on.
"""

from __future__ import annotations

import logging
import threading

import av
from av.codec.hwaccel import HWAccel, hwdevices_available

from streamcosal.io.decode import video_stream

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_probed = False
_problem: str | None = None  # why no CUDA device can decode in this process, once probed


class NvdecUnavailable(RuntimeError):
    """NVDEC cannot decode this file here; the message says why."""


def nvdec_built() -> bool:
    """Whether PyAV's FFmpeg can open CUDA devices (its hardware decoding for NVIDIA GPUs)."""
    return "cuda" in hwdevices_available()


def device_problem() -> str | None:
    """Why NVDEC cannot run in this process (no CUDA in PyAV's FFmpeg, no CUDA device), or None where a
    CUDA device opened for decoding. Found out on the first call, by opening one, and said then."""
    global _probed, _problem
    with _lock:
        if not _probed:
            _problem, _probed = _probe(), True
            if _problem is not None:
                logger.warning("NVDEC unavailable: %s; video files are decoded on the CPU", _problem)
        return _problem


def _probe() -> str | None:
    if not nvdec_built():
        return f"PyAV's FFmpeg has no CUDA support (its hardware devices: {', '.join(hwdevices_available()) or 'none'})"
    try:  # the device context every av.open(..., hwaccel=...) creates, made (and freed) once here
        HWAccel("cuda").create(av.Codec("h264", "r"))
    except (av.error.FFmpegError, OSError, NotImplementedError) as error:
        return f"no CUDA device could be opened ({error})"
    return None


def open_nvdec(path: str) -> av.container.InputContainer:
    """``path`` opened for decoding by NVDEC (frames copied to the host), or :class:`NvdecUnavailable`
    with the reason: the process's (:func:`device_problem`) or this file's (it cannot be opened, or its
    video codec has no NVDEC decoder)."""
    reason = device_problem()
    if reason is not None:
        raise NvdecUnavailable(reason)
    try:
        container = av.open(path, mode="r", hwaccel=HWAccel("cuda", allow_software_fallback=False))
    except (av.error.FFmpegError, OSError) as error:
        raise NvdecUnavailable(f"it could not be opened for NVDEC ({error})") from None
    except RuntimeError:  # PyAV: "Hardware accelerated decode requested but no stream is compatible"
        raise NvdecUnavailable("no stream of it has an NVDEC decoder") from None
    stream = video_stream(container)
    if stream is not None and stream.codec_context.is_hwaccel:
        return container
    container.close()
    codec = stream.codec_context.name if stream is not None else "none"
    raise NvdecUnavailable(f"no NVDEC decoder for its codec ({codec})")
