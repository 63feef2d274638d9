"""NVDEC's fallbacks, on the CPU: where it cannot run the CPU decodes the file (said once per process);
where one file cannot be decoded by it the CPU decodes that file; where it rejects a frame the CPU
decodes the rest. The GPU's own decoding is tested in test_gpu.py.

The "NVDEC" of these tests is PyAV's CPU decoder behind `open_nvdec` (no GPU here): what they check is
the reader's handling of NVDEC's answers, on a real H.264 video (DAVIS blackswan, 24 frames).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Self

import av
import numpy as np
import pytest
from video_fixtures import davis_frames, encode_audio_only, encode_video, truncate_file

from streamcosal.io import file, nvdec
from streamcosal.io.file import VideoFileSource
from streamcosal.io.frame import Frame, Sampler


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nvdec") / "blackswan.mp4"
    encode_video(davis_frames("blackswan", n=24), path, fps=10)
    return path


def read(path: Path, reader: str = "auto", stride: int = 1) -> tuple[list[Frame], VideoFileSource]:
    source = VideoFileSource(path, Sampler(None, stride), reader=reader)  # type: ignore[arg-type]
    with source:
        return list(source), source


def same_frames(a: list[Frame], b: list[Frame]) -> None:
    assert [f.index for f in a] == [f.index for f in b]
    assert np.allclose([f.timestamp for f in a], [f.timestamp for f in b], atol=1e-3)
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image), x.index


class Rejecting:
    """A container whose decoder rejects one packet (as NVDEC does with a stream it cannot decode)."""

    def __init__(self, path: Path, bad_packet: int):
        self.container, self.bad_packet = av.open(str(path)), bad_packet
        self.streams, self.format = self.container.streams, self.container.format

    def demux(self, stream: av.video.stream.VideoStream):
        for k, packet in enumerate(self.container.demux(stream)):
            yield RejectedPacket(packet) if k == self.bad_packet else packet

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()


class RejectedPacket:
    def __init__(self, packet: av.Packet):
        self.pts = packet.pts

    def decode(self) -> list:
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")


@pytest.fixture
def fresh_nvdec(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's NVDEC state unknown yet, as at start-up."""
    monkeypatch.setattr(nvdec, "_probed", False)


def test_without_a_cuda_device_files_are_decoded_on_the_cpu_and_that_is_said_once(
        clip: Path, fresh_nvdec: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    tries = []

    def no_device(*args: object, **kwargs: object) -> None:  # what opening a CUDA device raises without a GPU
        tries.append(args)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(nvdec, "nvdec_built", lambda: True)
    monkeypatch.setattr(nvdec, "HWAccel", no_device)
    cpu, _ = read(clip)
    with caplog.at_level(logging.WARNING, logger="streamcosal.io.nvdec"):
        first, source = read(clip, "nvdec")
        second, _ = read(clip, "nvdec", stride=3)
    same_frames(first, cpu)
    same_frames(second, cpu[::3])
    assert source.decoder == "cpu (NVDEC unavailable: no CUDA device could be opened ([Errno 1] Operation not permitted))"
    said = [r.getMessage() for r in caplog.records if "NVDEC unavailable" in r.getMessage()]
    assert len(said) == 1 and len(tries) == 1, (said, tries)
    assert not source.report.warnings


def test_an_ffmpeg_without_cuda_decodes_on_the_cpu(clip: Path, fresh_nvdec: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvdec, "hwdevices_available", lambda: ["vaapi"])
    frames, source = read(clip, "nvdec")
    same_frames(frames, read(clip)[0])
    assert source.decoder == "cpu (NVDEC unavailable: PyAV's FFmpeg has no CUDA support (its hardware devices: vaapi))"


def test_a_file_nvdec_cannot_decode_goes_to_the_cpu_and_nvdec_stays_on_for_the_next(
        clip: Path, tmp_path: Path, fresh_nvdec: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Where the device opens but one file cannot go to NVDEC (its codec has no NVDEC decoder, no stream
    of it has one, or it cannot be opened for it), that file is decoded on the CPU and said in its
    `decoder`; NVDEC is not given up for the files after it, and nothing is said process-wide."""
    monkeypatch.setattr(nvdec, "_probe", lambda: None)  # a CUDA device opened
    cpu, _ = read(clip)
    audio = tmp_path / "voice.mp4"
    encode_audio_only(audio)
    hwaccels = {  # what av.open gets for each file here, without a GPU
        "no decoder": lambda *args, **kwargs: None,  # opened by the CPU's decoder: its stream is not NVDEC's
        "cannot open": lambda *args, **kwargs: av.codec.hwaccel.HWAccel("cuda", allow_software_fallback=False),
    }
    decoders = {}
    with caplog.at_level(logging.WARNING, logger="streamcosal.io.nvdec"):
        for case, hwaccel in hwaccels.items():
            monkeypatch.setattr(nvdec, "HWAccel", hwaccel)
            frames, source = read(clip, "nvdec")
            same_frames(frames, cpu)
            decoders[case] = source.decoder
        with pytest.raises(nvdec.NvdecUnavailable, match="^no stream of it has an NVDEC decoder$"):
            nvdec.open_nvdec(str(audio))
    assert decoders == {"no decoder": "cpu (NVDEC unavailable: no NVDEC decoder for its codec (h264))",
                        "cannot open": "cpu (NVDEC unavailable: it could not be opened for NVDEC ([Errno 1] "
                                       "Operation not permitted))"}
    assert nvdec.device_problem() is None and not caplog.records


@pytest.mark.parametrize("bad_packet", [0, 9])
def test_a_frame_nvdec_rejects_and_every_one_after_it_are_decoded_on_the_cpu(
        clip: Path, bad_packet: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file, "open_nvdec", lambda name: Rejecting(Path(name), bad_packet))
    cpu, _ = read(clip, "pyav")
    frames, source = read(clip, "nvdec")
    same_frames(frames, cpu)  # every frame once, in order, as the CPU decodes it
    start = int(source.decoder.rsplit(" ", 1)[1]) if "then" in source.decoder else 0
    assert source.decoder == (f"nvdec, then the CPU from frame {start}" if start else "cpu")
    assert start <= bad_packet
    said = f"{clip}: NVDEC could not decode frame {start}: the CPU decodes the file from there (the frames before it came from NVDEC)"
    assert source.report.warnings == [said]
    assert source.report.bad_packets == 0, "the CPU decoded the packet NVDEC rejected: the file is not damaged"


def test_a_truncated_file_read_by_nvdec_is_reported_as_by_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cut = tmp_path / "cut.mp4"
    encode_video(davis_frames("blackswan", n=24), cut, fps=10, faststart=True)  # its index first: readable when cut
    truncate_file(cut, 0.6)
    monkeypatch.setattr(file, "open_nvdec", lambda name: av.open(name))
    cpu, by_cpu = read(cut, "pyav")
    frames, source = read(cut, "nvdec")
    same_frames(frames, cpu)
    assert source.report.truncated and source.report.warnings == by_cpu.report.warnings
