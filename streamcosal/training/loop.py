"""Training GICD's decoder (paper section 3.4): frozen backbone and classifier, soft IoU, jigsaws.

``train(config_path, resume=False)`` runs one TOML config (:mod:`streamcosal.training.config`):

- Only the decoder learns. The backbone (and its classifier head, which GIM differentiates) is
  frozen and stays in ``eval()`` mode, so its BatchNorm statistics never change.
- Each step takes one group, at most ``max_images`` of it, augmented and jigsawed
  (:class:`streamcosal.training.jigsaw.GroupSampler`), and minimises ``gicd_loss`` (soft IoU on the four side
  outputs, summed over the images). Adam; the lr drops by ``lr_drop_factor`` after ``lr_drop_at``
  of the steps.
- After every epoch: validation on held-out groups (maxF, S-measure, MAE with pysodmetrics), a
  metrics row in ``<out_dir>/metrics.parquet``, and the full training state in
  ``<out_dir>/state.pt`` (decoder, optimizer, RNG, epoch, best score; written then renamed), so a
  killed run loses at most one epoch and ``resume=True`` continues exactly. The best epoch on
  validation (mean of the held-out groups' maxF and the composites' maxF) is exported as
  ``<out_dir>/best.pt`` in our checkpoint format, and every epoch as ``<out_dir>/last.pt`` (the run's
  last epoch: what a run without validation ships, and what its held-out twin is scored by).

Backbone features are not cached: on the 2-core AVX2 CPU this was written on, the frozen
EfficientNet-Lite0 and GIM take about 5% of a step (0.5 s of 9-12 s for 10 images at 224, one
thread); the decoder's forward and backward take the rest, and caching would freeze the
augmentation. See ``reports/training/README.md``.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streamcosal.inference.device import resolve_device
from streamcosal.inference.precision import resolve_precision
from streamcosal.io.datasets import load_dataset
from streamcosal.model import GICD, WeightsError, build_backbone, save_checkpoint
from streamcosal.model.checkpoint import atomic_torch_save, read_checkpoint
from streamcosal.storage.parquet_files import write_atomic
from streamcosal.training.config import ConfigError, TrainConfig, load_config
from streamcosal.training.jigsaw import GroupSampler
from streamcosal.training.loader import loader_workers, run_batches
from streamcosal.training.manifest import GroupingRule, Manifest, ManifestItem, build_manifest, file_hash
from streamcosal.training.step import grad_scaler, train_step, training_precision
from streamcosal.training.validation import (
    VAL_KINDS,
    VAL_METRICS,
    held_out_samples,
    model_predictor,
    score,
    validation_set,
)

console = Console(stderr=True)
class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, a run in the way, a mismatched resume); the message says why."""


@dataclass
class TrainResult:
    """What a run left: the exported best checkpoint, the training state, the metrics table."""

    name: str
    best_checkpoint: Path
    state: Path
    metrics: Path
    epochs_done: int
    steps_done: int
    best_epoch: int
    best_score: float
    best_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


def training_groups(config: TrainConfig, backbone: Any) -> tuple[dict[str, list[ManifestItem]], list[ManifestItem], list[str]]:
    """Training groups from the manifest (built and saved on first use) minus the validation split.

    Returns (group -> items, extra items, notes). Held-out groups and videos are removed, and so is
    every training image whose file content equals a held-out image (a photo filed under two groups).
    With ``[data] all_masks_as_distractors``, every other image with a mask in the training sets
    that is in no group (SOD's images the grouping dropped, say) comes back as an extra item: a
    jigsaw partner, distractor or background for the groups, never a group of its own.
    """
    data = config.data
    wanted = {"train_sets": sorted(data.train_sets), "regroup_sets": sorted(set(data.regroup_sets) & set(data.train_sets)),
              "min_confidence": data.min_confidence, "min_group_size": data.min_group_size}
    if data.manifest.is_file():
        try:
            manifest = Manifest.read(data.manifest)
        except ValueError as err:
            raise ConfigError(f"{config.source}: [data] manifest: {err}; delete it to group the data again, or set "
                              "[data] manifest to another file") from None
        if manifest.built_from != wanted:
            raise ConfigError(
                f"{config.source}: the manifest {data.manifest} was built from "
                f"{manifest.built_from or 'unrecorded data (an older streamcosal)'}, but [data] asks for {wanted}: "
                "delete the manifest to group the data again, or set [data] manifest to another file")
        roots = tuple(os.path.join(os.path.realpath(data.root / name), "") for name in data.train_sets)
        folders = {f: os.path.join(os.path.realpath(f), "") for f in {i.image.parent for i in manifest.items}}
        stray = next((i.image for i in manifest.items if not folders[i.image.parent].startswith(roots)), None)
        if stray is not None:
            raise ConfigError(f"{config.source}: the manifest {data.manifest} lists {stray}, which is in none of "
                              f"[data] train_sets under [data] root {data.root}: it was built from other data; delete "
                              "it to group this data, or set [data] manifest to another file")
    else:
        rule = GroupingRule(data.min_confidence, data.min_group_size)
        manifest = Manifest([], [])
        for set_name in data.train_sets:
            manifest = manifest + build_manifest(data.root / set_name, regroup=set_name in data.regroup_sets,
                                                 rule=rule, backbone=backbone)
        manifest.built_from = wanted
        manifest.write(data.manifest)
    held = set(config.validation.groups) | set(config.validation.videos)
    held_hashes = {file_hash(image) for key in held for image, _ in held_out_samples(config, key)}
    groups: dict[str, list[ManifestItem]] = {}
    duplicates = []
    for name, items in manifest.groups().items():
        if name in held:
            continue
        kept = [item for item in items if file_hash(item.image) not in held_hashes]
        duplicates += [f"{name}/{item.image.name}" for item in items if item not in kept]
        if len(kept) >= 2:
            groups[name] = kept
    notes = [*manifest.warnings]
    if duplicates:
        notes.append(f"{len(duplicates)} training image(s) equal a held-out image and were removed: "
                     f"{', '.join(duplicates[:5])}{' ...' if len(duplicates) > 5 else ''}")
    extra: list[ManifestItem] = []
    if data.all_masks_as_distractors:
        grouped = {item.image.resolve() for items in groups.values() for item in items}
        for set_name in data.train_sets:
            dataset = load_dataset(data.root / set_name, layout="ours")
            for sample in dataset.samples():
                key = f"{dataset.name}/{sample.group}"
                if (sample.mask is None or key in held or Path(sample.image).resolve() in grouped
                        or file_hash(sample.image) in held_hashes):
                    continue
                extra.append(ManifestItem(sample.image, sample.mask, key))  # type: ignore[arg-type]
        notes.append(f"{len(extra)} image(s) with masks in no training group serve as jigsaw partners, "
                     "distractors and backgrounds")
    return groups, extra, notes


def build_model(config: TrainConfig) -> GICD:
    """GICD with the config's backbone (ImageNet weights, frozen) and a fresh decoder, or the
    decoder of ``[model] init`` when the config names one."""
    m = config.model
    model = GICD(build_backbone(m.backbone), use_gim=m.use_gim, use_arm=m.use_arm, embedding_share=m.embedding_share,
                 prototype_gate=m.prototype_gate)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    if m.init is not None:
        try:
            state = read_checkpoint(m.init)
        except WeightsError as err:
            raise TrainingError(f"{config.source}: [model] init: {err} (train the stage it starts from first)") from err
        given = {"backbone": m.backbone, "use_gim": m.use_gim, "use_arm": m.use_arm}
        differ = {k: state[k] for k, v in given.items() if state[k] != v}
        if differ:
            raise TrainingError(f"{config.source}: [model] init {m.init} was trained with "
                                f"{', '.join(f'{k} = {v!r}' for k, v in differ.items())}; this config has "
                                f"{', '.join(f'{k} = {given[k]!r}' for k in differ)}: init from a checkpoint of the same model")
        model.decoder.load_state_dict(state["decoder"], strict=True)
    return model


def check_inputs(config: TrainConfig) -> None:
    """What can be checked before any work: the data sets, the held-out groups, the output folder."""
    missing = [name for name in config.data.train_sets if not (config.data.root / name).is_dir()]
    if missing:
        raise ConfigError(f"{config.source}: [data] train_sets: {', '.join(map(repr, missing))} not found under "
                          f"{config.data.root} (sets there: {', '.join(sorted(p.name for p in config.data.root.iterdir() if p.is_dir())) if config.data.root.is_dir() else 'none, the folder does not exist'})")
    for key in (*config.validation.groups, *config.validation.videos):
        held_out_samples(config, key)
    if config.data.manifest.is_dir():
        raise ConfigError(f"{config.source}: [data] manifest {config.data.manifest} is a folder: give the manifest a "
                          "file's path (it is written there on first use)")
    blocking = next((p for p in config.data.manifest.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"{config.source}: [data] manifest {config.data.manifest}: {blocking} is a file, not a "
                          "folder: give the manifest a path in a folder")
    out = config.train.out_dir
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{config.source}: [train] out_dir {out} is a file, not a folder: "
                          "set out_dir to a folder (it is created if missing)")


def checked_config(config_path: Path | TrainConfig) -> tuple[TrainConfig, torch.device]:
    """The checked config (a TOML file, or one read and changed already) and its device; torch's
    threads set as the config says."""
    config = config_path if isinstance(config_path, TrainConfig) else load_config(Path(config_path))
    check_inputs(config)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    try:  # an impossible device or precision stops the run before any work
        device = resolve_device(config.train.device)
        resolve_precision(config.train.precision, device)
    except ValueError as err:
        raise ConfigError(f"{config.source}: [train] {err}") from None
    return config, device


def model_and_data(config: TrainConfig, device: torch.device) -> tuple[GICD, GroupSampler, list[str]]:
    """The seeded model on ``device``, the sampler of its training groups, and the data notes."""
    torch.manual_seed(config.train.seed)
    model = build_model(config).to(device)
    groups, extra, notes = training_groups(config, model.backbone)
    share = config.augment.instance_groups
    if share > 0:
        notes.append(f"instance groups: {share:.0%} of the steps show one of the {len(extra)} objects in no training "
                     "group, pasted onto other photos" if extra else
                     f"[augment] instance_groups = {share:g} has no object to draw: every masked image is in a training "
                     "group (set [data] all_masks_as_distractors = true, or add a set); the groups train alone")
    try:
        sampler = GroupSampler(groups, size=config.model.input_size, max_images=config.train.max_images,
                               augment=config.augment, seed=config.train.seed, extra=extra)
    except ValueError as err:
        held = len(config.validation.groups) + len(config.validation.videos)
        raise ConfigError(f"{config.source}: {err}" + (f" ({held} group(s) are held out for [validation])"
                                                         if held else "")) from None
    return model, sampler, notes


def train(config_path: Path | TrainConfig, resume: bool = False, *, stop_after: int | None = None,
          measure_precision: bool | None = None) -> TrainResult:
    """Train the decoder of one config (a TOML file or a :class:`TrainConfig`); ``resume``
    continues from ``<out_dir>/state.pt``.

    ``stop_after``: leave after this many epochs of this call (as if killed after a checkpoint;
    for time-boxed runs and tests). ``measure_precision``: whether ``auto`` measures which precision
    trains fastest (by default on a GPU; :mod:`streamcosal.training.step`).
    """
    if stop_after is not None and stop_after < 1:
        raise TrainingError(f"stop_after {stop_after}: give a number of epochs of at least 1, or none to train them all")
    config, device = checked_config(config_path)
    t = config.train
    out = t.out_dir
    state_path, best_path, metrics_path = out / "state.pt", out / "best.pt", out / "metrics.parquet"
    last_path = out / "last.pt"
    if state_path.exists() and not resume:
        raise TrainingError(f"{out} already holds a run ({state_path}): pass --resume (a flow's resume=true) to "
                            "continue it, or set [train] out_dir to another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrainingError(f"{config.source}: [train] out_dir {out} cannot be made ({err.strerror or err}): set it to "
                            "a folder you can write") from None
    model, sampler, notes = model_and_data(config, device)
    groups = sampler.groups
    for note in notes:
        console.print(f"[yellow]data:[/yellow] {escape(note)}")
    val = validation_set(config)
    steps = t.steps_per_epoch or len(groups)
    drop_step = max(1, round(config.optim.lr_drop_at * t.epochs * steps))  # a run of one step starts at lr
    o = config.optim
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
    start, best_score, best_epoch, history, started = 0, -math.inf, 0, [], None
    if resume and state_path.exists():
        start, best_score, best_epoch, history, started = _restore(state_path, config, model, optimizer)
        console.print(f"resuming {escape(config.name)} after epoch {start} (best {best_score:.4f} at epoch {best_epoch})")
    elif resume:
        console.print(f"[yellow]nothing to resume in {escape(str(out))}: starting from scratch[/yellow]")
    precision, said = training_precision(t.precision, device, measure_precision, started, model,
                                         lambda: sampler.batch(sampler.epoch_groups(start, steps)[0], start, 0))
    scaler = grad_scaler(precision, device)
    workers = loader_workers(t.loader_workers, device)
    console.print(f"precision: {said}", soft_wrap=True)
    console.print("batches: " + (f"made ahead by {workers} worker processes" if workers else "made in the training process"))
    console.print(f"{escape(config.name)}: {len(groups)} training groups, {sum(map(len, groups.values()))} images; "
                  f"{t.epochs} epochs x {steps} steps; validation: {len(val)} groups")
    end = t.epochs if stop_after is None else min(t.epochs, start + stop_after)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        task = progress.add_task(escape(config.name), total=t.epochs * steps, completed=start * steps)
        batches = run_batches(sampler, steps, start, end, workers, pin_memory=device.type == "cuda")
        for epoch in range(start, end):
            model.train()
            losses, images, seconds = [], 0, 0.0
            for step, group in enumerate(sampler.epoch_groups(epoch, steps)):
                global_step = epoch * steps + step
                lr = o.lr * (o.lr_drop_factor if global_step >= drop_step else 1.0)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                tic = time.perf_counter()
                x, y = next(batches)
                loss = train_step(model, optimizer, x, y, precision, scaler)
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"{config.source}: loss is {loss} at epoch {epoch + 1}, step {step + 1} "
                        f"(global step {global_step + 1}), group {group!r}: check that group's images and "
                        f"masks or lower [optim] lr; the last good state is {state_path}")
                seconds += time.perf_counter() - tic
                losses.append(loss / x.shape[0])
                images += x.shape[0]
                speed = images / seconds
                progress.update(task, advance=1, description=f"{escape(config.name)} e{epoch + 1} loss {losses[-1]:.3f} "
                                                             f"{speed:.2f} img/s")
                if (global_step + 1) % t.log_every == 0 and not console.is_terminal:
                    recent = np.mean(losses[-t.log_every:])
                    console.print(f"epoch {epoch + 1} step {step + 1}/{steps} loss/img {recent:.4f} "
                                  f"lr {lr:.1e} {speed:.2f} img/s")
            model.eval()
            tic = time.perf_counter()
            metrics = score(model_predictor(model, device), val) if val else {"score": float("nan")}
            row = {"epoch": epoch + 1, "step": (epoch + 1) * steps, "loss": float(np.mean(losses)), "lr": lr,
                   "images_per_s": images / seconds, "val_seconds": time.perf_counter() - tic, **metrics}
            history.append(row)
            if math.isnan(metrics["score"]) and val:
                console.print(f"[yellow]epoch {epoch + 1}: the validation score is NaN (the maps hold NaN or a "
                              "held-out part is empty): this epoch cannot be ranked and is not kept as best[/yellow]")
            improved = not val or metrics["score"] > best_score
            export = {"input_size": config.model.input_size, "max_input_size": max(config.augment.sizes, default=0),
                      "version": f"{package_version('streamcosal')}+{config.name}.e{epoch + 1}",
                      "extra": {"config": config.to_dict(), "val": metrics, "epoch": epoch + 1, "step": (epoch + 1) * steps}}
            if improved:
                best_score, best_epoch = metrics["score"], epoch + 1
                save_checkpoint(model, best_path, **export)
            save_checkpoint(model, last_path, **export)
            _save_state(state_path, config, model, optimizer, epoch + 1, best_score, best_epoch, history, precision)
            _write_metrics(metrics_path, history)
            console.print(f"epoch {epoch + 1}/{t.epochs}: loss/img {row['loss']:.4f}, {row['images_per_s']:.2f} img/s, "
                          + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + (" (best)" if improved else ""))
    if not best_path.is_file() and math.isfinite(best_score):
        raise TrainingError(f"{best_path} is missing (epoch {best_epoch}, score {best_score:.4f}, wrote it; deleted "
                            f"since?): {last_path} holds the last epoch's weights, or train again into another out_dir")
    if not best_path.is_file():
        raise TrainingError(f"{config.source}: no epoch had a finite validation score, so no best checkpoint "
                            f"was written; the run's last state is {state_path} and its metrics {metrics_path}")
    best_metrics = next((r for r in history if r["epoch"] == best_epoch), {})
    return TrainResult(config.name, best_path, state_path, metrics_path, end, end * steps, best_epoch,
                       best_score, {k: v for k, v in best_metrics.items() if k in _metric_keys()}, history)


def _metric_keys() -> set[str]:
    return {f"{k}_{m}" for k in VAL_KINDS for m in VAL_METRICS} | {"score"}


def _save_state(path: Path, config: TrainConfig, model: GICD, optimizer: torch.optim.Optimizer, epoch: int,
                best_score: float, best_epoch: int, history: list[dict[str, Any]], precision: str) -> None:
    """Everything ``resume`` needs, written to a temporary file then renamed."""
    atomic_torch_save({
        "decoder": {k: v.detach().cpu().clone() for k, v in model.decoder.state_dict().items()},
        "optimizer": optimizer.state_dict(), "epoch": epoch, "best_score": best_score, "best_epoch": best_epoch,
        "history": history, "torch_rng": torch.get_rng_state(), "config": config.to_dict(), "precision": precision,
    }, path)


def _restore(path: Path, config: TrainConfig, model: GICD,
             optimizer: torch.optim.Optimizer) -> tuple[int, float, int, list[dict[str, Any]], str | None]:
    """Load a training state; the config must be the one the run started with. Returns the epochs done,
    the best score and epoch, the history, and the precision it trained in (None in states from before
    it was kept)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = TrainConfig.model_validate(state["config"]).to_dict()  # keys added since take their defaults
    except (EOFError, OSError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError, ValidationError) as err:
        raise TrainingError(f"cannot resume: {path} is damaged or not a training state ({type(err).__name__}; a "
                            "run killed while writing it?): delete it to train again from the start, or train into "
                            "another out_dir") from None
    now = config.to_dict()
    bases = (os.path.dirname(saved["source"]), os.path.dirname(now["source"]))
    changed = [key for table in now if table != "source" for key in _differences(saved.get(table), now[table], bases,
                                                                                 f"[{table}]")]
    if changed:
        raise TrainingError(f"cannot resume {path}: the config's {', '.join(changed[:4])} differ from the run's; "
                            "restore them or train into another out_dir")
    model.decoder.load_state_dict(state["decoder"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return state["epoch"], state["best_score"], state["best_epoch"], state["history"], state.get("precision")


def _differences(saved: Any, now: Any, bases: tuple[str, str], where: str) -> list[str]:
    """The keys (``[table] key = run's -> now``) where a resumed run's config differs from the one it started
    with. A path is the same where it names the same place, or the same place relative to its config file
    (a project folder moved or copied whole, its data inside it or beside it)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = sorted(saved.keys() | now.keys())
        return [d for k in keys for d in _differences(saved.get(k), now.get(k), bases,
                                                      f"{where} {k}" if "]" in where else f"{where}.{k}")]
    if saved == now or (isinstance(saved, str) and isinstance(now, str) and os.path.isabs(saved) and os.path.isabs(now)
                        and os.path.relpath(saved, bases[0]) == os.path.relpath(now, bases[1])):
        return []
    return [f"{where} = {saved!r} -> {now!r}"]


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """One row per epoch (epoch, step, loss, lr, images_per_s, val_seconds, val metrics), atomically."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    write_atomic(pa.table({k: [row.get(k) for row in history] for k in keys}), path)
