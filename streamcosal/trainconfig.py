"""The training configuration: typed dataclasses read from one TOML file (``tomllib``).

Every table and key is checked: an unknown key, a missing required key or a wrong type is an error
naming the file, the table and the key. Relative paths are relative to the TOML file's folder.

    [model]      backbone, use_gim, use_arm, input_size, init
    [data]       root, train_sets, regroup_sets, min_confidence, min_group_size, manifest,
                 all_masks_as_distractors
    [validation] groups, videos, max_images, max_frames
    [augment]    jigsaw_prob, copy_paste_prob, hflip, crop_scale, colour
    [optim]      lr, beta1, beta2, lr_drop_at, lr_drop_factor
    [train]      seed, epochs, steps_per_epoch, max_images, threads, device, precision, out_dir, log_every
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .jigsaw import Augmentation


@dataclass
class ModelConfig:
    """The network: ``use_gim=False`` is the plain-FPN ablation, ``use_arm=False`` ungated skips.

    ``init``: start the decoder from this checkpoint of ours (fine-tuning, or a second stage of a
    schedule) instead of from scratch; its backbone, use_gim and use_arm must be the config's.
    """

    backbone: str = "efficientnet_lite0"
    use_gim: bool = True
    use_arm: bool = True
    input_size: int = 224
    init: Path | None = None


@dataclass
class DataConfig:
    """Training sets under ``root`` (``<root>/<set>``; absolute set paths allowed).

    ``regroup_sets`` are grouped by the backbone's ImageNet classifier (flat sets always are) under
    ``min_confidence`` / ``min_group_size`` (see :mod:`streamcosal.jigsaw`). The manifest is built
    once and reused: delete it to regroup. ``all_masks_as_distractors``: every image with a mask
    that is in no group (too small a class, too unsure a classifier) still serves as a jigsaw
    partner, distractor and background of the other groups' samples.
    """

    root: Path
    train_sets: list[str]
    manifest: Path
    regroup_sets: list[str] = field(default_factory=list)
    min_confidence: float = 0.3
    min_group_size: int = 4
    all_masks_as_distractors: bool = False


@dataclass
class ValidationConfig:
    """Held-out groups ``"<set>/<group>"`` scored as they are, and held-out videos scored as plain
    frames and as jigsaw composites with frames of the other held-out videos. Both are removed
    from training, and so is every training image with the same file content as a held-out one.
    ``max_images`` / ``max_frames`` (0 = all) take evenly spaced images of each, to bound the time
    of a validation."""

    groups: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    max_images: int = 0
    max_frames: int = 12


@dataclass
class OptimConfig:
    """Adam on the decoder; the lr is multiplied by ``lr_drop_factor`` after ``lr_drop_at`` of all steps."""

    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.99
    lr_drop_at: float = 0.5
    lr_drop_factor: float = 0.1


@dataclass
class RunConfig:
    """Schedule and machine. ``steps_per_epoch = 0``: one step per training group (the paper's
    epoch). ``threads = 0`` keeps torch's default. ``precision``: ``auto`` (bf16 on GPUs and CPUs with
    AVX512-BF16/AMX, fp32 elsewhere; :mod:`streamcosal.precision`), or fp32, bf16, fp16."""

    out_dir: Path
    seed: int = 0
    epochs: int = 100
    steps_per_epoch: int = 0
    max_images: int = 20
    threads: int = 0
    device: str = "cpu"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    log_every: int = 10


@dataclass
class TrainConfig:
    """One training run, as read from a TOML file (``source``)."""

    name: str
    model: ModelConfig
    data: DataConfig
    validation: ValidationConfig
    augment: Augmentation
    optim: OptimConfig
    train: RunConfig
    source: Path

    def to_dict(self) -> dict[str, Any]:
        """Plain values (paths as strings) for checkpoints and reports."""
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return plain({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in values.items()})


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "data": DataConfig, "validation": ValidationConfig,
    "augment": Augmentation, "optim": OptimConfig, "train": RunConfig,
}


class ConfigError(ValueError):
    """The TOML file does not describe a valid training run; the message names file, table and key."""


def load_config(path: Path) -> TrainConfig:
    """Read and check a training TOML file; relative paths resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    unknown = set(raw) - set(SECTIONS) - {"name"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s)/key(s) {sorted(unknown)}; known: name, {', '.join(SECTIONS)}")
    sections = {name: _section(path, name, cls, raw.get(name, {})) for name, cls in SECTIONS.items()}
    name = raw.get("name", path.stem)
    if not isinstance(name, str):
        raise ConfigError(f"{path}: 'name' must be a string")
    config = TrainConfig(name=name, source=path.resolve(), **sections)
    _check(config)
    return config


def _section(path: Path, name: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown} in [{name}]; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, f in fields.items():
        if key not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: [{name}] needs the key {key!r}")
            continue
        kwargs[key] = _convert(path, f"[{name}] {key}", hints[key], values[key])
    return cls(**kwargs)


def _convert(path: Path, where: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against a field's type; paths resolve against the config's folder."""
    origin = typing.get_origin(hint)
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {where} must be a path string, got {value!r}")
        return (path.parent / value).resolve()
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{path}: {where} must be one of {typing.get_args(hint)}, got {value!r}")
        return value
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: {where} must be a list, got {value!r}")
        return [_convert(path, where, inner, v) for v in value]
    if origin in (typing.Union, types.UnionType):
        # Optional[X] (TOML has no null: a present key is an X)
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) != 1:
            raise ConfigError(f"{path}: {where}: unsupported type {hint}")
        return _convert(path, where, inner[0], value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{path}: {where} must be {hint.__name__}, got {value!r}")
    return value


def _check(config: TrainConfig) -> None:
    """Values that type-check but cannot run."""
    src, t, v = config.source, config.train, config.validation
    problems = []
    if t.epochs < 1 or t.max_images < 1 or t.steps_per_epoch < 0 or t.threads < 0 or t.log_every < 1:
        problems.append("[train] epochs, max_images and log_every must be >= 1; steps_per_epoch and threads >= 0")
    for key in ("jigsaw_prob", "copy_paste_prob"):
        if not 0.0 <= getattr(config.augment, key) <= 1.0:
            problems.append(f"[augment] {key} must lie in [0, 1]")
    if not 0.0 < config.augment.crop_scale <= 1.0:
        problems.append("[augment] crop_scale must lie in (0, 1]")
    if not 0.0 <= config.optim.lr_drop_at <= 1.0:
        problems.append("[optim] lr_drop_at must lie in [0, 1] (a fraction of all steps)")
    if not config.data.train_sets:
        problems.append("[data] train_sets is empty")
    if len(v.videos) == 1:
        problems.append("[validation] videos needs 0 or at least 2 videos (composites pair frames of two videos)")
    for key in (*v.groups, *v.videos):
        if "/" not in key:
            problems.append(f"[validation] {key!r} must be '<set>/<group>'")
    if problems:
        raise ConfigError(f"{src}: " + "; ".join(problems))
