"""The default model's whole training schedule, in one command, on any device.

    python reports/training/schedule.py OUT [--device cuda] [--threads N] [--smoke]

Trains, in order, each stage of configs/ into OUT/<name>/ (metrics.parquet, best.pt, last.pt, the
log on stdout):

    lite2_cp      from scratch: EfficientNet-Lite2, copy-paste + jigsaw, validation held out
    lite2_ft      from lite2_cp: copy-paste both ways            (held out)
    lite2_ms      from lite2_ft: multi-scale, 224/256/288         (held out: the default's twin)
    lite2_all     from lite2_cp: lite2_ft's recipe on every group
    lite2_all_ms  from lite2_all: multi-scale on every group      (its last.pt: the default's decoder)

Each stage starts from the previous stage's checkpoint in OUT (the file its config names, best.pt
or last.pt), with the config's data, schedule and seed; only ``[train] device``, ``threads`` and
``out_dir`` change. ``precision = "auto"`` runs bf16 on a GPU that has it. On a 2-core AMD EPYC Zen3
(AVX2, fp32) the stages trained at 1.5-5 images/s (2026-11-28): about 7 hours, estimated, for the
35,200 images (20,800 for the default's own chain) one stage after another; the schedule has not
been timed on a GPU. ``--smoke`` runs every stage for 2 steps of 2 images and validates on 2 images per group: it
checks the chain end to end in about a minute (tests/test_training.py runs it).

To ship its result: copy OUT/lite2_all_ms/last.pt over streamcosal/weights/gicd_lite2.pt after
setting its version and its inference settings (embedding_share 0.4, prototype_gate 0.5,
max_input_size 288, guided upsampling; reports/training/README.md), and score OUT/lite2_ms/last.pt
with ``ablation.py`` first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamcosal.training.config import TrainConfig, load_config
from streamcosal.training.loop import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STAGES = ("lite2_cp", "lite2_ft", "lite2_ms", "lite2_all", "lite2_all_ms")


def stage_config(name: str, out: Path, device: str, threads: int, smoke: bool) -> TrainConfig:
    """configs/<name>.toml trained into out/<name>, from the stage before it in ``out``."""
    config = load_config(CONFIGS / f"{name}.toml")
    train_update: dict[str, object] = {"out_dir": out / name, "device": device, "threads": threads}
    model_update: dict[str, object] = {}
    if config.model.init is not None:
        model_update["init"] = out / config.model.init.parent.name / config.model.init.name
    updates: dict[str, object] = {}
    if smoke:
        train_update.update(epochs=1, steps_per_epoch=2, max_images=2)
        updates["validation"] = config.validation.model_copy(update={"max_images": 2, "max_frames": 2})
    updates["train"] = config.train.model_copy(update=train_update)
    updates["model"] = config.model.model_copy(update=model_update)
    return config.model_copy(update=updates)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the runs (one sub-folder per stage)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--smoke", action="store_true", help="2 steps of 2 images per stage: check the chain")
    args = parser.parse_args(argv)
    for name in STAGES:
        config = stage_config(name, args.out.resolve(), args.device, args.threads, args.smoke)
        result = train(config)
        print(f"{name}: {result.epochs_done} epochs, best epoch {result.best_epoch} -> {result.best_checkpoint}",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
