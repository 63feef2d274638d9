"""The records of a run: its settings (`PipelineConfig`), what happened to each source (`SourceRun`)
and to the whole run (`RunReport`, saved as out/runs/<run_id>.json), and the run id.

They sit beneath the pipeline, the sink and the metrics, which all fill them."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamcosal.io.stream import ReconnectPolicy
from streamcosal.params import DropPolicy, RunParams
from streamcosal.storage.files import atomic_write
from streamcosal.storage.results import check_run_id

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


Status = Literal["pending", "running", "done", "partial", "failed", "interrupted"]


@dataclass
class LiveSummary:
    """A live source's numbers for the run report (latencies over the whole run, seconds)."""

    policy: str
    received: int
    processed: int
    dropped: int
    reconnects: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_max_s: float | None
    max_latency_s: float | None = None  # the latency target its windows were sized for (None: policy all)


class SourceSettings(BaseModel):
    """A source's own settings where they differ from the run's (None: the run's), e.g. a camera of a camera
    file (:mod:`streamcosal.run.cameras`): its group, drop policy, latency target and sampling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str | None = None  # default: a group per source (`groups.default_groups`)
    drop_policy: DropPolicy | None = None
    max_latency: float | None = Field(None, gt=0)  # a group's cameras share windows: the group takes its smallest
    stride: int | None = Field(None, ge=1)  # replaces the run's fps too
    fps: float | None = Field(None, gt=0)  # replaces the run's stride too


def gpu_default(asked: bool | None, device: torch.device) -> bool:
    """A setting of :class:`PipelineConfig` that is on by default where the engine runs on a GPU
    (``postprocess_on_device``, ``prepare_in_threads``): ``asked``, or (None) whether ``device`` is not the CPU."""
    return device.type != "cpu" if asked is None else asked


class PipelineConfig(RunParams):
    """Settings of a run: the run parameters (:class:`~streamcosal.params.RunParams`, checked when
    the config is made) and what the caller of a run decides; the defaults are usable."""

    store_path: Path | None = None  # default: out/consensus.npz
    flush_every_s: float = Field(10.0, gt=0)  # flush sooner than flush_every rows, so readers see a slow stream's results
    prefetch_windows: int = Field(2, ge=1)  # windows decoded ahead of the engine (files)
    live_buffer: int = Field(32, ge=1)  # live sources: frames a reader keeps for the engine
    log_every_s: float = Field(30.0, gt=0)  # live sources: a status line (counts, rate, latency) this often
    stall_warning_s: float = Field(30.0, gt=0)  # live sources: warn when a camera sends no frame for this long
    reconnect: ReconnectPolicy | None = None  # live streams (default ReconnectPolicy())
    run_id: str | None = None  # default: UTC time + random suffix; checked when the config is made
    show_progress: bool = False  # rich progress bar on stderr
    # masks made on the engine's device, batched per window (streamcosal.inference.postprocess); None: when
    # the engine runs on a GPU (on a CPU OpenCV's per-frame path is faster)
    postprocess_on_device: bool | None = None
    # groups of files running at once (`parallel_groups`) segment their windows together, in one engine call
    # (streamcosal.run.batches); None: when the engine runs on a GPU (on a CPU a larger batch is slower)
    batch_groups: bool | None = None
    # each window's frames resized for the engine in the run's host threads (`ResultSink.pool`), not the group's
    # prefetch thread alone; None: when the engine runs on a GPU (on a CPU the engine's threads use every core)
    prepare_in_threads: bool | None = None
    # keep the rows earlier runs wrote for a source this run redoes (default: the new ones replace them)
    keep_history: bool = False
    # sources' own settings, by the source's name in the report (`SourceRun.source`: no password)
    per_source: dict[str, SourceSettings] = Field(default_factory=dict)

    def for_source(self, name: str) -> PipelineConfig:
        """The settings of the source named ``name`` (`SourceRun.source`): the run's, with its own in their place."""
        own = self.per_source[name].model_dump(exclude_none=True, exclude={"group"}) if name in self.per_source else {}
        sampling = {"stride": 1} if "fps" in own else {"fps": None} if "stride" in own else {}
        return self.model_copy(update={**sampling, **own}) if own else self

    def group_latency(self, names: Iterable[str]) -> float | None:
        """The latency target the shared windows of a group of the sources named ``names`` keep to: the
        smallest of theirs (:meth:`for_source`); None (no target) when one of them drops nothing (``all``)."""
        own = [self.for_source(name) for name in names]
        return None if any(o.drop_policy == "all" for o in own) else min(o.max_latency for o in own)

    def sampling(self, name: str) -> dict[str, Any]:
        """``stride`` and ``fps`` of the source named ``name`` (:meth:`for_source`), as keywords."""
        own = self.for_source(name)
        return {"stride": own.stride, "fps": own.fps}

    @field_validator("run_id")
    @classmethod
    def _file_name(cls, run_id: str | None) -> str | None:
        return None if run_id is None else check_run_id(run_id)


@dataclass
class SourceRun:
    """What happened to one source."""

    source: str
    group: str
    status: Status = "pending"
    mode: str = ""
    input_size: int | None = None  # the engine's input size for the group (`CoSalEngine.size_for`)
    frames: int = 0  # results written
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    last_frame_index: int | None = None
    error: str | None = None
    transient: bool = False  # failed on what trying again may fix (`is_transient`), not on the source
    warnings: list[str] = field(default_factory=list)
    overlay: str | None = None
    live: LiveSummary | None = None  # live sources: counts, drops and latency
    decoder: str = ""  # what decoded its frames (`FrameSource.decoder`), once it was read


def is_transient(error: BaseException) -> bool:
    """Whether trying again may help: out of memory (the host's or the GPU's), a full disk or another I/O
    error; not a source that cannot be read, a missing file, bad parameters, nor any other error of
    torch or CUDA (an illegal memory access breaks the process's GPU context for good: only a new
    process runs again)."""
    torch = sys.modules.get("torch")  # not imported: the error cannot be torch's
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, (OSError, MemoryError)) and not isinstance(error, FileNotFoundError)


@dataclass
class UndeliveredEvent:
    """An event a delivery target did not get (`streamcosal.run.delivery`), and why."""

    event: str  # `EventRecord.id`: <run_id>:<source key>:<start frame>
    source: str
    group: str
    start_time: float
    reason: str  # the last error (no password)


@dataclass
class DeliveryOutcome:
    """What one delivery target (a webhook, an MQTT broker) got of the run's events."""

    target: str  # its URL, password redacted
    delivered: int = 0
    undelivered: list[UndeliveredEvent] = field(default_factory=list)


@dataclass
class RunReport:
    """What a run did; saved as out/runs/<run_id>.json."""

    run_id: str
    out: str
    model: str
    started: str  # UTC, ISO 8601
    cwd: str = ""  # the folder the run started in: relative sources are read from there (the viewer does)
    precision: str = ""  # what ran (fp32, bf16, fp16): "auto" resolved for the device
    device: str = ""
    seconds: float = 0.0  # wall time of the whole run
    engine_seconds: float = 0.0  # time spent in the engine (classifier passes and segmentation)
    frames: int = 0  # results written
    events: int = 0
    interrupted: str | None = None  # "SIGINT" or "SIGTERM" when the run was stopped; "StopRun": by an observer
    sources: list[SourceRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what could not be saved at the end (a full disk)
    notes: list[str] = field(default_factory=list)  # what the run did besides its sources (duplicates, killed runs)
    deliveries: list[DeliveryOutcome] = field(default_factory=list)  # per --webhook/--mqtt target
    callback_errors: list[str] = field(default_factory=list)  # observers' callbacks that raised (`run.observers`)
    # group -> the 3 most probable ImageNet classes of its consensus at the end, (name, probability):
    # the object the model took as the group's common one (none for a model without GIM)
    consensus: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 all done (also when an observer stopped it, or events were not delivered); 1 a source failed or lost
        frames, results could not be saved, or a callback raised; 130 (SIGINT) / 143 (SIGTERM) stopped."""
        if self.interrupted in ("SIGINT", "SIGTERM"):
            return 130 if self.interrupted == "SIGINT" else 143
        failed = self.errors or self.callback_errors or any(s.status in ("failed", "partial") for s in self.sources)
        return 1 if failed else 0

    def save(self, path: Path) -> None:
        """Write the report as JSON, atomically."""
        data = {**asdict(self), "frames_per_s": self.frames_per_s, "exit_code": self.exit_code}
        with atomic_write(path, "w") as f:
            json.dump(data, f, indent=2, default=str)
