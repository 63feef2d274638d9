"""A camera file: every camera of a site in one YAML file, each with its URL, group, drop policy and
latency target, and the run's settings beside them.

    cameras = load_cameras("cameras.yaml")            # CameraFileError: one line per problem, naming the camera
    config = cameras.pipeline_config(run_id="r1")     # the run's settings, each camera's own (`per_source`)
    run_pipeline(cameras.sources(), cameras.out_folder(None), engine, config)

The file (docs/cameras.md)::

    out: results                     # optional: where the results go (relative: to this file's folder)
    model: {device: cpu}             # optional: the engine options (EngineSpec)
    metrics: {port: 9108, host: 127.0.0.1}
    defaults: {window: 8, drop_policy: latest, max_latency: 1.0, duration: 3600}   # RunParams
    cameras:
      front_door:
        url: rtsp://viewer:${FRONT_DOOR_PASSWORD}@192.168.1.20/stream1
        group: entrance                # default: the camera's name (a group of its own)
        drop_policy: latest            # default: defaults' (latest)
        max_latency: 0.5               # seconds; default: defaults' (1.0)
      yard: {url: rtsp://192.168.1.21/live, drop_policy: stride, fps: 5, enabled: true}

A key the file does not know, a camera given twice, a URL that cannot be a camera (a scheme that is
not a stream's, no host, a file that does not exist) or a ``${NAME}`` that is not set is refused before
anything runs, with the file, the line and the camera. ``${NAME}`` in a URL is replaced by the
environment variable NAME, so the file need not hold a password; a password is shown as ``***``
wherever a camera is named (:func:`~streamcosal.io.redact.redact`): messages, rows, reports, metrics.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from streamcosal.io.frame import SourceError
from streamcosal.io.open import local_source
from streamcosal.io.redact import redact
from streamcosal.io.stream import STREAM_PREFIXES, is_stream
from streamcosal.params import DropPolicy, EngineSpec, RunParams
from streamcosal.run.records import PipelineConfig, SourceSettings
from streamcosal.run.yamllines import YamlFileError, parse_with_lines

SCHEMES = tuple(prefix.removesuffix("://") for prefix in STREAM_PREFIXES)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RUN_WIDE = {"live": "every camera of a camera file is read live; leave out live",
            "metrics_port": "give it as metrics: {port: ...}", "metrics_host": "give it as metrics: {host: ...}"}


class CameraFileError(ValueError):
    """What is wrong with a camera file: one line per problem, each naming the file, the line and the camera."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Camera(BaseModel):
    """One camera of a camera file; what it leaves out is the file's ``defaults``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="false: the camera is left out of the run (its URL is not checked).")
    url: str = Field(repr=False, description=(
        "rtsp://, rtsps://, rtmp://, http(s)://, udp://, tcp://, srt://, rtp://, /dev/videoN, or a video file or "
        "pipe (a path or file://; relative to the camera file's folder) played as a camera; ${NAME}: the "
        "environment variable NAME."))
    group: str | None = Field(None, min_length=1, description=(
        "Cameras of one group segment the object common to all of them (default: the camera's name)."))
    drop_policy: DropPolicy | None = Field(None, description="latest, stride or all (default: defaults').")
    max_latency: float | None = Field(None, gt=0, description=(
        "Seconds a frame may wait and be processed (default: defaults'); a group's cameras share its windows, "
        "so a group keeps the smallest of its cameras'."))
    stride: int | None = Field(None, ge=1, description="Process every N-th frame (default: defaults').")
    fps: float | None = Field(None, gt=0, description="Process about F frames per second (default: defaults').")

    @field_validator("url")
    @classmethod
    def _usable(cls, url: str, info: ValidationInfo) -> str:
        if info.data.get("enabled", True):
            context = info.context or {}
            resolve_url(url, context.get("folder", Path.cwd()), context.get("env"))
        return url

    @model_validator(mode="after")
    def _one_sampling(self) -> Camera:
        if self.fps is not None and self.stride is not None:
            raise ValueError("give either fps or stride, not both")
        return self

    def settings(self, name: str) -> SourceSettings:
        """The camera's own settings for the run (its group: ``name`` unless it says one)."""
        return SourceSettings(group=self.group or name, drop_policy=self.drop_policy, max_latency=self.max_latency,
                              stride=self.stride, fps=self.fps)


class Metrics(BaseModel):
    """Where the run serves its live metrics (Prometheus text format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: int = Field(ge=0, le=65535, description="0: a free port, which the run prints.")
    host: str = Field("127.0.0.1", description="127.0.0.1 (this machine only), or e.g. 0.0.0.0.")


class CameraFile(BaseModel):
    """A camera file, checked (:func:`load_cameras`); paths in it are relative to its folder."""

    model_config = ConfigDict(extra="forbid")

    out: Path | None = Field(None, description="The results folder (the command line's or the flow's out wins).")
    model: EngineSpec | None = Field(None, description="The engine options (default: the embedded model).")
    metrics: Metrics | None = None
    defaults: RunParams = Field(default_factory=lambda: RunParams(live=True), description=(
        "The run's settings (the streamcosal video options, with underscores) and the cameras' defaults."))
    cameras: dict[str, Camera]
    _folder: Path = PrivateAttr(default_factory=Path.cwd)
    _env: Mapping[str, str] | None = PrivateAttr(None)

    @field_validator("defaults", mode="before")
    @classmethod
    def _live(cls, values: Any) -> Any:
        if values is None:  # "defaults:" and nothing under it
            return {"live": True}
        if isinstance(values, Mapping):
            for key, why in RUN_WIDE.items():
                if key in values:
                    raise ValueError(f"{key}: {why}")
            return {**values, "live": True}
        return values

    @field_validator("cameras", mode="before")
    @classmethod
    def _names(cls, cameras: Any) -> Any:
        if not cameras:
            raise ValueError("no camera: give at least one (NAME: {url: ...})")
        if isinstance(cameras, Mapping):
            for name in cameras:
                if isinstance(name, bool):  # YAML 1.1: yes, no, on, off, true, false (pydantic reports ValueErrors)
                    raise ValueError(  # noqa: TRY004
                        f"a camera named yes, no, on or off is read as {str(name).lower()}: quote its name ('yes': "
                        "{url: ...})")
                if not isinstance(name, str) or not _NAME.fullmatch(name):
                    raise ValueError(f"camera name {name!r}: use letters, digits, '_', '-' and '.' (it names the "
                                     "camera in messages and is its default group)")
        return cameras

    @field_validator("cameras")
    @classmethod
    def _some_enabled(cls, cameras: dict[str, Camera]) -> dict[str, Camera]:
        if not any(camera.enabled for camera in cameras.values()):
            raise ValueError("every camera is disabled (enabled: false): enable one")
        return cameras

    def enabled(self) -> Iterator[tuple[str, Camera]]:
        """(name, camera) of every enabled camera, in the file's order."""
        return ((name, camera) for name, camera in self.cameras.items() if camera.enabled)

    def sources(self) -> list[str]:
        """What the run connects to: each enabled camera's URL, ``${NAME}`` replaced, a path made absolute.
        Holds the passwords: give it to the run, never to a message (name a camera with `redact`)."""
        return [resolve_url(camera.url, self._folder, self._env) for _, camera in self.enabled()]

    def names(self) -> dict[str, str]:
        """Each enabled camera's name by its source's name in the results and the report (`redact`)."""
        return {redact(source): name for source, (name, _) in zip(self.sources(), self.enabled())}

    def per_source(self) -> dict[str, SourceSettings]:
        """Each enabled camera's own settings (group, drop policy, latency target, sampling), by its source's
        name in the report (`redact`: no password)."""
        return {redact(source): camera.settings(name) for source, (name, camera) in zip(self.sources(), self.enabled())}

    def params(self, base: RunParams | None = None) -> RunParams:
        """The run's parameters: ``base`` (a flow's ``params``; default the defaults) with what the file's
        ``defaults`` and ``metrics`` set in their place; every camera is read live."""
        values = (base or RunParams()).model_dump()
        own = self.defaults.model_dump(include=self.defaults.model_fields_set)
        if "fps" in own:
            values["stride"] = 1
        if "stride" in own:
            values["fps"] = None
        values.update(own, live=True)
        if self.metrics is not None:
            values.update(metrics_port=self.metrics.port, metrics_host=self.metrics.host)
        return RunParams(**values)

    def pipeline_config(self, base: RunParams | None = None, **run: Any) -> PipelineConfig:
        """The run's `PipelineConfig`: :meth:`params`, each camera's own settings, and the caller's (``run_id``...)."""
        return PipelineConfig(**self.params(base).model_dump(), per_source=self.per_source(), **run)

    def engine(self, base: EngineSpec | None = None) -> EngineSpec:
        """The model: ``base`` (default: the embedded one) with what the file's ``model`` sets in its place."""
        values = (base or EngineSpec()).model_dump()
        if self.model is not None:
            for key in self.model.model_fields_set:
                value = getattr(self.model, key)
                values[key] = self._folder / value if isinstance(value, Path) else value
        return EngineSpec(**values)

    def out_folder(self, out: str | Path | None) -> Path:
        """``out`` when given, else the file's ``out`` (relative to the file's folder)."""
        if out is not None:
            return Path(out)
        if self.out is None:
            raise CameraFileError([("no results folder: give one (--out, or the flow's out) or set out: in the "
                                   "camera file")])
        return self._folder / self.out


def resolve_url(url: str, folder: Path, env: Mapping[str, str] | None = None) -> str:
    """``url`` with each ``${NAME}`` replaced by the environment's NAME (``env``: default ``os.environ``), a
    ``file://`` URL or a relative path made an absolute path (relative to ``folder``).

    Raises:
        ValueError: a variable not set, a scheme that is not a stream's, a stream URL without a host, or a
            file that does not exist; the message names the URL as written, its password as ``***``.
    """
    shown = redact(url.strip())
    text = _substituted(url, os.environ if env is None else env).strip()
    if "${" in text:
        raise ValueError(f"{shown}: a variable is written ${{NAME}}, NAME of letters, digits and '_'")
    if not text:
        raise ValueError("empty: give a stream URL, /dev/videoN or a video file")
    scheme = _SCHEME.match(text)
    if is_stream(text):
        parts = urlsplit(text)
        if text.startswith("/dev/video") or parts.hostname or (parts.scheme.lower() == "udp" and parts.port):
            return text
        raise ValueError(f"{shown}: no host: write {parts.scheme}://HOST[:PORT]/PATH")
    if scheme is not None and scheme.group(1).lower() != "file" and len(scheme.group(1)) > 1:  # not C:\...
        raise ValueError(f"{shown}: unsupported scheme {scheme.group(1)!r}: a camera is "
                         f"{', '.join(s + '://' for s in SCHEMES)}, /dev/videoN, or a video file (a path or file://)")
    try:
        path = Path(local_source(text))
    except SourceError as error:
        raise ValueError(redact(str(error))) from None
    path = Path(os.path.normpath(path if path.is_absolute() else folder / path))  # ../rec.mp4: /data/rec.mp4
    if not path.exists():
        raise ValueError(f"{shown}: no such file {path}" + ("" if Path(text).is_absolute() else
                                                          " (a relative path is relative to the camera file's folder)"))
    if path.is_dir():
        raise ValueError(f"{shown}: {path} is a folder: a camera is a stream, /dev/videoN or a video file")
    return str(path)


def load_cameras(path: str | Path, env: Mapping[str, str] | None = None) -> CameraFile:
    """Read and check the camera file at ``path`` (``${NAME}`` from ``env``, default ``os.environ``).

    Raises:
        CameraFileError: the file is missing, empty or not YAML, a key is unknown or given twice, a camera
            is given twice, a value is wrong, a URL cannot be a camera: one line each, naming the file,
            the line and the camera, and what to do.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CameraFileError([f"{path}: no such camera file; check the path"]) from None
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise CameraFileError([f"{path}: cannot be read ({why})"]) from None
    try:
        data, lines = parse_with_lines(path, text)
    except YamlFileError as error:
        raise CameraFileError(str(error).splitlines()) from None
    if not isinstance(data, dict):
        raise CameraFileError([(f"{path}: should be a mapping with cameras: (name: {{url: ...}} lines); see "
                               "examples/cameras.yaml")])
    _fill_variables(path, data, lines, os.environ if env is None else env)
    folder = path.absolute().parent
    try:
        cameras = CameraFile.model_validate(data, context={"folder": folder, "env": env})
    except ValidationError as error:
        raise CameraFileError([_problem(path, lines, problem) for problem in error.errors()]) from None
    cameras._folder, cameras._env = folder, env
    seen: dict[str, str] = {}
    for (name, camera), source in zip(cameras.enabled(), cameras.sources()):
        first = seen.setdefault(redact(source) if is_stream(source) else os.path.realpath(source), name)
        if first != name:
            line = lines.get(("cameras", name, "url"), lines.get(("cameras", name)))
            raise CameraFileError([(f"{path}:{line}: camera {name!r}: the same source as camera {first!r} "
                                   f"({redact(source)}): give each camera once, or disable one")])
    return cameras


def _substituted(text: str, env: Mapping[str, str]) -> str:
    """``text`` with each ``${NAME}`` replaced by ``env``'s NAME; a ValueError naming the ones not set."""
    unset = [name for name in _VARIABLE.findall(text) if name not in env]
    if unset:
        raise ValueError(f"{', '.join('${' + name + '}' for name in unset)} not set in the environment: export "
                         f"{unset[0]}=... where the run starts (or write the value in the file)")
    return _VARIABLE.sub(lambda match: env[match.group(1)], text)


def _fill_variables(path: Path, data: dict[str, Any], lines: dict[tuple[str, ...], int], env: Mapping[str, str]) -> None:
    """``${NAME}`` replaced in ``out`` (``~`` expanded too), ``defaults.webhook`` and ``defaults.mqtt``, as in
    a camera's URL (which is filled where it connects, keeping its password out of the checked file)."""
    def filled(text: Any, keys: tuple[str, ...]) -> Any:
        if not isinstance(text, str):
            return text  # the check says what is wrong with it
        try:
            return _substituted(text, env)
        except ValueError as error:
            raise CameraFileError([f"{path}:{lines.get(keys)}: {'.'.join(keys)}: {error}"]) from None

    if "out" in data:
        out = filled(data["out"], ("out",))
        data["out"] = os.path.expanduser(out) if isinstance(out, str) else out
    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        for key in ("webhook", "mqtt"):  # one URL, or a list of them
            urls = defaults.get(key)
            if isinstance(urls, (str, list)):
                defaults[key] = ([filled(url, ("defaults", key)) for url in urls] if isinstance(urls, list) else
                                 filled(urls, ("defaults", key)))


def _problem(path: Path, lines: dict[tuple[str, ...], int], problem: Mapping[str, Any]) -> str:
    """One pydantic problem as ``FILE:LINE: camera 'NAME': KEY: what``."""
    loc = tuple(str(part) for part in problem["loc"])
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    camera = len(loc) >= 2 and loc[0] == "cameras"
    who, keys = (f"camera {loc[1]!r}: ", loc[2:]) if camera else ("", loc)
    key = ".".join(keys)
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "extra_forbidden":
        known = _known(loc)
        close = difflib.get_close_matches(keys[-1], known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        owner = "a camera" if camera else ".".join(keys[:-1]) or "the file"
        inside = f"{'.'.join(keys[:-1])}: " if len(keys) > 1 else ""
        message = f"{inside}unknown key {keys[-1]!r} ({hint}{owner} takes {', '.join(known)})"
    elif problem["type"] == "missing":
        message = f"{key} is missing" + (" (the camera's stream URL, device or video file)" if key == "url" else "")
    elif problem["type"] in ("model_type", "dict_type"):
        listed = loc == ("cameras",) and isinstance(problem.get("input"), list)
        message = ("cameras: is a list; name each camera instead, its settings under its name (porch: {url: "
                   "rtsp://..., group: entrance})" if listed else
                   f"{key or 'each camera'}: should be a mapping of keys (key: value lines)")
    else:
        shown = problem.get("input")
        got = f" (got {redact(repr(shown))})" if keys and keys[-1] != "url" and isinstance(shown, (int, float, str)) else ""
        message = f"{key}: {message}{got}" if key and not message.startswith(f"{key}:") else message
    return f"{path}{f':{line}' if line else ''}: {who}{message}"


def _known(loc: tuple[str, ...]) -> list[str]:
    """The keys the mapping at ``loc`` (a key's path) takes."""
    model: type[BaseModel] = CameraFile
    if loc[0] == "cameras" and len(loc) > 2:
        model = Camera
    elif loc[0] in ("defaults", "metrics", "model") and len(loc) > 1:
        model = {"defaults": RunParams, "metrics": Metrics, "model": EngineSpec}[loc[0]]
    keys = [key for key in model.model_fields if not (model is RunParams and key in RUN_WIDE)]
    return sorted(keys, key=lambda key: key != "url")  # a camera's url first
