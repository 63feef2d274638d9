"""The training configuration: pydantic models read from a TOML file (``tomllib``) and its bases.

Every table and key is checked (``extra="forbid"``, strict types, ranges): an unknown key, a missing
required key, a wrong type or an impossible value is a :class:`ConfigError` naming the file, the
table and the key. Relative paths are relative to the folder of the TOML file that holds them.

    base = "base.toml"   (optional) the config this one overrides, relative to this file's folder
    name                 (optional) the run's name; the file's name without .toml by default
    [model]      backbone, use_gim, use_arm, input_size, embedding_share, prototype_gate, init
    [data]       root, train_sets, regroup_sets, min_confidence, min_group_size, manifest,
                 all_masks_as_distractors
    [validation] groups, videos, max_images, max_frames
    [augment]    jigsaw_prob, copy_paste_prob, copy_paste_native, hflip, crop_scale, colour, sizes
    [optim]      lr, beta1, beta2, lr_drop_at, lr_drop_factor
    [train]      seed, epochs, steps_per_epoch, max_images, threads, device, precision, out_dir, log_every

A config with a ``base`` is read on top of it: tables merge key by key, and a key the config sets
(a list included) replaces the base's. A base may have a base of its own. Two keys name one run and
are never taken from a base: ``name`` and ``[train] out_dir`` (two configs sharing a base would
otherwise share an output folder).
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from streamcosal.model import BACKBONES
from streamcosal.params import Precision
from streamcosal.training.jigsaw import Augmentation


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """A path relative to the config file's folder (absolute paths are kept)."""
    return (info.context["base"] / value).resolve() if info.context else value.resolve()


ConfigPath = Annotated[Path, Field(strict=False), AfterValidator(_resolve)]
"""A path string in the TOML file, resolved against the file's folder."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelConfig(_Section):
    """The network: ``use_gim=False`` is the plain-FPN ablation, ``use_arm=False`` ungated skips.

    ``init``: start the decoder from this checkpoint of ours (fine-tuning, or a second stage of a
    schedule) instead of from scratch; its backbone, use_gim and use_arm must be the config's.
    ``embedding_share``: GIM's share of embedding-consensus weights (0 = the paper's GIM; see
    ``model.gim.gradient_induced_weights``), used in training and validation and kept in the checkpoints.
    ``prototype_gate``: the exponent of the object-prototype gate on the final maps (0 = off, as in
    the paper; see ``model.prototype``), used in validation and kept in the checkpoints; training's
    loss is on the decoder's own side outputs, which it does not change.
    """

    backbone: str = "efficientnet_lite0"
    use_gim: bool = True
    use_arm: bool = True
    input_size: int = Field(224, ge=32, le=1024, multiple_of=32)
    embedding_share: float = Field(0.0, ge=0.0, le=1.0)
    prototype_gate: float = Field(0.0, ge=0.0, le=1.0)
    init: ConfigPath | None = None

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        if value not in BACKBONES:
            raise ValueError(f"unknown backbone {value!r}; known: {', '.join(BACKBONES)}")
        return value


class DataConfig(_Section):
    """Training sets under ``root`` (``<root>/<set>``; absolute set paths allowed).

    ``regroup_sets`` are grouped by the backbone's ImageNet classifier (flat sets always are) under
    ``min_confidence`` / ``min_group_size`` (see :mod:`streamcosal.training.jigsaw`). The manifest is built
    once and reused; it records what it was built from, and a manifest of other sets or another rule
    is refused (delete it to regroup). ``all_masks_as_distractors``: every image with a mask that is
    in no group (too small a class, too unsure a classifier) still serves as a jigsaw partner,
    distractor and background of the other groups' samples.
    """

    root: ConfigPath
    train_sets: list[str] = Field(min_length=1)
    manifest: ConfigPath
    regroup_sets: list[str] = []
    min_confidence: float = Field(0.3, ge=0.0, le=1.0)
    min_group_size: int = Field(4, ge=2)
    all_masks_as_distractors: bool = False


class ValidationConfig(_Section):
    """Held-out groups ``"<set>/<group>"`` scored as they are, and held-out videos scored as plain
    frames and as jigsaw composites with frames of the other held-out videos. Both are removed
    from training, and so is every training image with the same file content as a held-out one.
    ``max_images`` / ``max_frames`` (0 = all) take evenly spaced images of each, to bound the time
    of a validation."""

    groups: list[Annotated[str, Field(pattern=r"^[^/]+/.+$")]] = []
    videos: list[Annotated[str, Field(pattern=r"^[^/]+/.+$")]] = []
    max_images: int = Field(0, ge=0)
    max_frames: int = Field(12, ge=0)

    @field_validator("videos")
    @classmethod
    def _pairs(cls, value: list[str]) -> list[str]:
        if len(value) == 1:
            raise ValueError("needs 0 or at least 2 videos (composites pair frames of two videos)")
        return value


class OptimConfig(_Section):
    """Adam on the decoder; the lr is multiplied by ``lr_drop_factor`` after ``lr_drop_at`` of all steps."""

    lr: float = Field(1e-4, gt=0.0, le=1.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.99, ge=0.0, lt=1.0)
    lr_drop_at: float = Field(0.5, ge=0.0, le=1.0)
    lr_drop_factor: float = Field(0.1, gt=0.0, le=1.0)


class RunConfig(_Section):
    """Schedule and machine. ``steps_per_epoch = 0``: one step per training group (the paper's
    epoch). ``threads = 0`` keeps torch's default. ``precision``: ``auto`` (bf16 on GPUs and CPUs with
    AVX512-BF16/AMX, fp32 elsewhere; :mod:`streamcosal.inference.precision`), or fp32, bf16, fp16.
    ``loader_workers``: processes making the batches ahead of the loop; by default none on a CPU
    and one per core but one (at most 8) for a GPU (:mod:`streamcosal.training.loader`)."""

    out_dir: ConfigPath
    seed: int = Field(0, ge=0, lt=2**32)
    epochs: int = Field(100, ge=1)
    steps_per_epoch: int = Field(0, ge=0)
    max_images: int = Field(20, ge=1)
    threads: int = Field(0, ge=0)
    device: Literal["cpu", "cuda", "auto"] | Annotated[str, Field(pattern=r"^cuda:\d+$")] = "cpu"
    precision: Precision = "auto"
    log_every: int = Field(10, ge=1)
    loader_workers: int | None = Field(None, ge=0)


class TrainConfig(_Section):
    """One training run, as read from a TOML file (``source``)."""

    name: str

    @field_validator("name")
    @classmethod
    def _file_name(cls, name: str) -> str:
        if not re.fullmatch(r"[\w.-]+", name):
            raise ValueError(f"{name!r} names files and checkpoint versions: use letters, digits, '.', '_' and '-'")
        return name
    model: ModelConfig = ModelConfig()
    data: DataConfig
    validation: ValidationConfig = ValidationConfig()
    augment: Augmentation = Augmentation()
    optim: OptimConfig = OptimConfig()
    train: RunConfig
    source: Annotated[Path, Field(strict=False)]

    def to_dict(self) -> dict[str, Any]:
        """Plain values (paths as strings) for checkpoints and reports."""
        return self.model_dump(mode="json")


class ConfigError(ValueError):
    """The TOML file does not describe a valid training run; the message names file, table and key."""


def load_config(path: Path) -> TrainConfig:
    """Read and check a training TOML file, merged over its ``base`` chain (see the module's docstring)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder: give a training config (TOML), e.g. configs/lite0.toml")
    if not path.is_file():
        raise ConfigError(f"training config not found: {path}")
    raw, bases = _read(path)
    raw["name"] = raw.get("name", path.stem)
    read_with = f" (read over {', '.join(str(b) for b in bases)})" if bases else ""
    try:
        return TrainConfig.model_validate({**raw, "source": path.resolve()}, context={"base": path.parent})
    except ValidationError as err:
        raise ConfigError(f"{path}: " + "; ".join(_describe(e) for e in err.errors()) + read_with) from None


@cache
def _path_keys() -> tuple[tuple[str, str], ...]:
    """(table, key) of every path field (``ConfigPath``) of the TOML tables."""
    keys = []
    for table, field in TrainConfig.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            keys += [(table, key) for key, sub in section.model_fields.items()
                     if any(getattr(m, "func", None) is _resolve for m in sub.metadata)
                     or ConfigPath in get_args(sub.annotation)]
    return tuple(keys)


def _read(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[Path]]:
    """The TOML file's tables merged over its bases', with every relative path joined to the folder
    of the file that holds it; and the bases read, nearest first. ``chain``: the files reading it."""
    if path.resolve() in chain:
        names = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"{chain[-1]}: circular base: {names}")
    try:
        raw = tomllib.loads(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid TOML (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    if "source" in raw:
        raise ConfigError(f"{path}: unknown key 'source' (it is set to the file itself)")
    for table, key in _path_keys():
        section = raw.get(table)
        if isinstance(section, dict) and isinstance(section.get(key), str):
            section[key] = str(path.absolute().parent / section[key])
    base = raw.pop("base", None)
    if base is None:
        return raw, []
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be the path of a TOML file relative to {path.parent} (got {base!r})")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(f"{path}: base {base!r} not found ({base_path})")
    inherited, bases = _read(base_path, (*chain, path.resolve()))
    inherited.pop("name", None)  # what names a run is never inherited
    if isinstance(inherited.get("train"), dict):
        inherited["train"].pop("out_dir", None)
    return _merge(inherited, raw), [base_path, *bases]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: tables merge key by key, any other value (a list too) replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: Any) -> str:
    """One pydantic error as '[table] key: what is wrong (got value)'."""
    loc = [str(part) for part in error["loc"]]
    where = f"[{loc[0]}] {'.'.join(loc[1:])}".strip() if len(loc) > 1 else f"'{loc[0]}'" if loc else "the file"
    kind = error["type"]
    if kind == "extra_forbidden":
        table = f" in [{loc[0]}]" if len(loc) > 1 else ""
        return f"unknown key {loc[-1]!r}{table}"
    if kind == "missing":
        return f"{where}: a required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message} (got {error['input']!r})"
