"""Run parameters, declared once: what a run does (:class:`RunParams`) and which model runs it
(:class:`EngineSpec`; :func:`streamcosal.inference.engine.engine_for` builds it).

The CLI takes its option defaults and help from these models, the jobs build from them, and the
Prefect flows take them as parameters (Prefect validates flow parameters with pydantic and shows a
model as a form in its UI)::

    params = RunParams(window=4, mode="global")          # checked here: window >= 1, ...
    engine = engine_for(EngineSpec(weights="best.pt"))   # one engine per spec and process
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamcosal.io.endpoints import broker_url, webhook_url
from streamcosal.io.redact import redact

Mode = Literal["auto", "global", "streaming"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
"""What runs the network's arithmetic; ``auto`` resolves per device (:mod:`streamcosal.inference.precision`)."""
Upsampling = Literal["guided", "bilinear"]
"""How maps reach each frame's size (:mod:`streamcosal.inference.guided`)."""
DropPolicy = Literal["latest", "stride", "all"]
Decoder = Literal["auto", "cpu", "nvdec"]
"""What decodes video files (:mod:`streamcosal.io.nvdec`)."""
MIN_INPUT_SIZE = 128
"""The smallest input size (S x S) that works: below it the backbone's 1/32-scale features are 3x3 or smaller,
the consensus no longer names the object and the maps come out empty. Measured with both embedded models on 8
frames each of DAVIS blackswan, goat and car-roundabout at 854x480 (mean IoU of 0.5-masks, top class of the
consensus; Lite2 default): 32 and 64 px give empty masks (IoU 0.00, wrong class: "American alligator" for the
swan at 64); 96 px misses whole frames (the swan's class "beaver", frames with IoU 0); 128 px is the first size
with the right class ("black swan") and every frame found (IoU 0.67 / 0.68 / 0.89; 0.80 / 0.74 / 0.94 at 224;
Lite0 the same way: empty at 32-64, frames missed at 96, 0.38 / 0.56 / 0.67 at 128)."""
LIVE_ONLY = frozenset({"live", "drop_policy", "max_latency", "duration", "metrics_port", "metrics_host"})
DELIVERY = frozenset({"webhook", "mqtt", "event_snapshots", "event_clips"})
"""Where events are sent (docs/delivery.md): they change no result, so no archive unit's key either."""
MAX_QUERY_FRAMES = 256
"""The most frames a search's query video is sampled at: they are decoded and held at once (256 4K frames: 6 GB)."""
CPU_WINDOW = 8
"""The default window on a CPU, where a larger engine call is not faster (docs/speed.md)."""
GPU_WINDOW = 32
"""The default window for files on a GPU: a group of 8 kept the default engine at 545-596 frames/s on an H200, 64
at 3,440. Live runs keep `CPU_WINDOW`: a window waits for its frames."""


class RunParams(BaseModel):
    """The parameters of a video/stream run that a user, a job or a flow sets; the defaults are usable.

    Every one of them changes the results except ``flush_every`` and the event deliveries (``DELIVERY``); the
    live settings (``LIVE_ONLY``: reading every source live, drop policy, latency target, duration, metrics
    endpoint) apply to live sources only, never to an archive's files (see :meth:`result_params`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = Field("auto", description="global (consensus over the whole video), streaming (running "
                                           "consensus) or auto (global for files, streaming for live input).")
    window: int | None = Field(None, ge=1, description=(
        "Frames segmented together, in one engine call (default: 32 for files on a GPU, else 8, or the step when "
        "it is larger; 14 DAVIS videos scored the same at 8 and 32, docs/speed.md)."))
    step: int | None = Field(None, ge=1, description="Streaming, one source: new frames per window (< window "
                                                     "overlaps); default window.")
    stride: int = Field(1, ge=1, description="Process every N-th frame.")
    fps: float | None = Field(None, gt=0, allow_inf_nan=False,
                              description="Process about F frames per second (instead of stride).")
    consensus_frames: int = Field(32, ge=1, description="Global: frames sampled over the whole video for its "
                                                        "consensus; streaming: the group size it is scaled to.")
    half_life: float = Field(30.0, gt=0, allow_inf_nan=False,
                             description="Streaming: seconds of stream time after which old evidence weighs half.")
    threshold: float = Field(0.5, gt=0, le=1, description="Mask = probability >= threshold, in (0, 1].")
    temporal_smoothing: bool = Field(False, description=(
        "Videos and cameras: each frame's map averaged 1-2-1 with its neighbours' in time, within its window (no "
        "added latency; image folders never): less flicker for slow objects and still cameras, but fast motion "
        "loses (14 DAVIS videos: mean IoU 0.654 -> 0.650; docs/video.md)."))
    overlay: bool = Field(False, description="Write H.264 overlay videos (PNGs and a contact sheet for image "
                                             "folders).")
    keep_prob_png: bool = Field(False, description="Store a small probability PNG per frame in the results.")
    event_threshold: float = Field(0.02, ge=0, le=1, description="Events: the object is present when its area "
                                                                 "fraction >= this.")
    event_min_duration: float = Field(0.5, ge=0, allow_inf_nan=False,
                                      description="Events: shorter intervals (seconds) are dropped.")
    event_max_gap: float = Field(0.5, ge=0, allow_inf_nan=False,
                                 description="Events: absences up to this long (seconds) are bridged.")
    webhook: list[str] = Field(default_factory=list, description=(
        "POST each event as JSON, with a JPEG snapshot of its peak frame, to this http(s) URL (repeat for several; "
        "USER:PASSWORD@ in it is sent as a Basic login and shown nowhere). Live sources' events go while they run, "
        "files' when each is done; retried with backoff; what did not arrive is listed at the end (docs/delivery.md)."))
    mqtt: list[str] = Field(default_factory=list, description=(
        "Publish each event (the same JSON, QoS 1) to the MQTT broker mqtt://[USER:PASSWORD@]HOST[:PORT][/PREFIX] "
        "(mqtts:// for TLS; repeat for several), topic PREFIX/<group>/<source>/events, PREFIX streamcosal by "
        "default."))
    event_snapshots: bool = Field(True, description="Delivered events carry a JPEG of their peak frame with the "
                                                    "overlay drawn.")
    event_clips: bool = Field(False, description="Delivered events also carry an MP4 clip of their frames with the "
                                                 "overlay drawn (the first 300).")
    flush_every: int = Field(256, ge=1, description="Result rows per Parquet file.")
    parallel_groups: int | None = Field(None, ge=1, description=(
        "Files: groups (one per video by default) processed at once, sharing the engine in turns: their decoding, "
        "frame preparation and writing overlap each other's and the engine's work. Default: 1 on a CPU (the engine "
        "uses every core), 4 on a GPU. Live groups always run at once."))
    decoder: Decoder = Field("auto", description=(
        "Video files: cpu (decord; PyAV where decord cannot), nvdec (the GPU's video decoder, through PyAV's FFmpeg) "
        "or auto (nvdec when the engine runs on a GPU and PyAV's FFmpeg has CUDA). Where NVDEC cannot run or fails on "
        "a file, that file is decoded on the CPU, said once; the run report names each file's decoder."))
    live: bool = Field(False, description=(
        "Read every source live, by its own thread at its own pace, with --drop-policy and --max-latency like a "
        "camera (streaming mode): a video file is released by its timestamps (a camera replaying the recording), "
        "a pipe (/dev/stdin, a FIFO) as its writer writes. Without it a file or pipe gives every frame, at the "
        "engine's pace."))
    drop_policy: DropPolicy = Field("latest", description=(
        "Live sources: latest (newest frames, older ones dropped; bounded latency), stride (every k-th frame, k "
        "adapted to the engine's rate) or all (no drop, windows of --window frames: latency grows by 1 - engine rate / "
        "camera fps seconds every second while the engine is slower than the camera)."))
    max_latency: float = Field(1.0, gt=0, le=3600, allow_inf_nan=False, description=(
        "Live sources, policies latest and stride: seconds a frame may wait and be processed; each window takes "
        "as many frames (1..window) as the measured engine time allows."))
    duration: float | None = Field(None, gt=0, le=1e9, allow_inf_nan=False, description=(
        "Live sources: stop after this many seconds (default: until they end, or Ctrl-C)."))
    metrics_port: int | None = Field(None, ge=0, le=65535, description=(
        "Serve live metrics (Prometheus text format) at http://HOST:PORT/metrics (HOST: --metrics-host; 0: a free "
        "port, which the run prints)."))
    metrics_host: str = Field("127.0.0.1", description=(
        "Address the metrics are served on: 127.0.0.1 (this machine only), or e.g. 0.0.0.0 for every interface."))

    @field_validator("webhook")
    @classmethod
    def _webhook_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            webhook_url(url)
        return urls

    @field_validator("mqtt", mode="before")
    @classmethod
    def _one_broker_or_several(cls, urls: Any) -> Any:
        return [] if urls is None else [urls] if isinstance(urls, str) else urls

    @field_validator("mqtt")
    @classmethod
    def _broker_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            broker_url(url)
        return urls

    @model_validator(mode="after")
    def _consistent(self) -> RunParams:
        if self.step is not None and self.window is not None and self.step > self.window:
            raise ValueError(f"step must be in 1..window ({self.window}), got {self.step}")
        if self.fps is not None and self.stride != 1:
            raise ValueError("give either fps or stride, not both")
        if self.live and self.mode == "global":
            raise ValueError("live sources are segmented as they come, against a running consensus: "
                             "live takes mode streaming (or auto), not global")
        if self.step is not None and self.mode == "global":
            raise ValueError("step sets the new frames of a streaming window; global mode segments windows of "
                             "window frames: leave step out, or use mode streaming")
        return self

    def result_params(self) -> dict[str, object]:
        """The parameters that change the results of files (what a resumable archive unit is keyed by):
        not ``flush_every``, ``parallel_groups`` or ``decoder``, nor the live settings, nor where events are delivered (``DELIVERY``); nor
        ``temporal_smoothing`` when off, so that the units of archives made before it existed keep their keys. The
        device's default window is keyed as `CPU_WINDOW`, as those archives' units are."""
        params = self.model_dump(exclude={"flush_every", "parallel_groups", "decoder", *LIVE_ONLY, *DELIVERY})
        if not params["temporal_smoothing"]:
            del params["temporal_smoothing"]
        if params["window"] is None:  # the device's default, keyed as archives made before it were: like the device
            params["window"] = CPU_WINDOW  # and the precision it changes the maps a little, so units count on either
        return params


class EngineSpec(BaseModel):
    """Which model runs, and where: the CLI's engine options, a job's and a flow's parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: Path | None = Field(None, description="A streamcosal checkpoint (default: the embedded model).")
    official: Path | None = Field(None, description=(
        "The authors' gicd_ginet.pth (VGG-16 GICD, published with their code: github.com/zzhanghub/gicd); "
        "replaces weights."))
    vgg16: Path | None = Field(None, description=(
        "torchvision's ImageNet VGG-16 weights, vgg16-397923af.pth (VGG16_Weights.IMAGENET1K_V1; for official)."))
    precision: Precision = Field("auto", description="auto (bf16 where the CPU/GPU has it natively, else fp32 "
                                                     "on CPUs, fp16 on GPUs), fp32, bf16 or fp16 (GPUs).")
    device: str = Field("auto", description="auto, cpu or cuda.")
    input_size: int | None = Field(None, ge=MIN_INPUT_SIZE, le=1024, multiple_of=32, description=(
        "Frames are resized to SxS for the network (default: the checkpoint's sizes; the embedded Lite2 runs "
        "each group at 224 to 288, the largest its median frame's short side is 1.4 times larger than; "
        "docs/accuracy.md). A size given here is the only one; 128 to 1024, a multiple of 32."))
    upsampling: Upsampling | None = Field(None, description=(
        "How maps reach each frame's size: guided (a guided filter puts their edges on the frame's; 15-25 ms "
        "a 854x480 frame) or bilinear (as the paper; default: the checkpoint's, guided for the embedded default, "
        "bilinear for the embedded Lite0 and --official; docs/accuracy.md)."))
    flip: bool = Field(False, description="Also segment each group mirrored and average each map with its mirrored "
                                          "twin's (test-time flip): twice the compute for slightly better maps.")
    embedding_share: float | None = Field(None, ge=0.0, le=1.0, description=(
        "GIM's share of the embedding consensus, 0 to 1 (0: GIM as in the paper; default: the checkpoint's, 0.4 "
        "for the embedded default, 0 for --official; docs/architecture.md)."))
    prototype_gate: float | None = Field(None, ge=0.0, le=1.0, description=(
        "Exponent of the object-prototype gate on each map, 0 to 1 (0: off, as in the paper; default: the "
        "checkpoint's, 0.5 for the embedded models, 0 for --official; docs/architecture.md)."))
    compile: bool = Field(False, description=(
        "torch.compile the network (weights frozen): the default model ran 15-23% faster in bf16 on 2 Zen4 "
        "cores, after 10-17 s of compiling per new group shape (about 25 s on a cold cache); pays on long "
        "videos. Falls back to running uncompiled, with a warning, where compiling fails."))

    @field_validator("input_size", mode="before")
    @classmethod
    def _usable_input_size(cls, size: object) -> object:
        if isinstance(size, int) and not isinstance(size, bool) and size % 32 == 0 and size < MIN_INPUT_SIZE:
            raise ValueError(f"input_size {size} is too small: below {MIN_INPUT_SIZE} px the backbone's consensus "
                             "no longer names the object and the maps miss it (empty at 32 and 64 px); use "
                             f"{MIN_INPUT_SIZE} or more (default: the checkpoint's sizes, 224-288 for the embedded "
                             "model)")
        return size

    def identity(self) -> str:
        """What results depend on in the model: backbone, version, the checkpoint's hash (two
        untrained "dev" checkpoints differ), and a fixed input size other than the checkpoint's sizes and the
        test-time flip and an upsampling, embedding share or prototype gate other than the checkpoint's when asked for
        (so that the default's identity is as before they existed).
        Archive units and the nightly history are keyed by it; precision, device and compile are not part of it."""
        from streamcosal.inference.weights import default_weights_path
        from streamcosal.model.checkpoint import read_checkpoint

        if self.official is not None:
            suffix = self._inference_suffix((224, 224), "bilinear", 0.0, 0.0)
            return f"gicd-vgg16-official {hash_file(self.official)[:12]}{suffix}"
        path = self.weights if self.weights is not None else default_weights_path()
        meta = read_checkpoint(path)
        suffix = self._inference_suffix((meta["input_size"], meta["max_input_size"]), meta["upsampling"],
                                        float(meta["embedding_share"]), float(meta["prototype_gate"]))
        return f"gicd-{meta['backbone']} {meta['version']} {hash_file(path)[:12]}{suffix}"

    def _inference_suffix(self, native_sizes: tuple[int, int], native_upsampling: str, native_share: float,
                          native_gate: float) -> str:
        fixed = self.input_size is not None and (self.input_size, self.input_size) != native_sizes
        size = f" {self.input_size}px" if fixed else ""
        upsampling = f" {self.upsampling}" if self.upsampling not in (None, native_upsampling) else ""
        share = f" share{self.embedding_share:g}" if self.embedding_share not in (None, native_share) else ""
        gate = f" gate{self.prototype_gate:g}" if self.prototype_gate not in (None, native_gate) else ""
        return size + (" flip" if self.flip else "") + upsampling + share + gate


def hash_file(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def explain(error: ValidationError) -> str:
    """A pydantic error in one line per problem: ``window: Input should be greater than or equal to 1 (got 0)``."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{where + ': ' if where else ''}{message}" +
                     (f" (got {redact(repr(problem['input']))})" if where else ""))
    return "; ".join(lines)
