"""Training: config checks, loss goes down with a frozen backbone, exact resume, NaN stop."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA  # noqa: E402

from streamcosal.model import gicd_loss
from streamcosal.training import loop as training
from streamcosal.training.config import ConfigError, TrainConfig, load_config
from streamcosal.training.jigsaw import Augmentation, GroupSampler
from streamcosal.training.loader import loader_workers
from streamcosal.training import step
from streamcosal.training.loop import TrainingError, build_model, train
from streamcosal.training.manifest import Manifest, build_manifest

PICKS = {  # group -> (set, source group, images)
    "Cat": ("pascal_coseg", "Cat", 3), "Horse": ("pascal_coseg", "Horse", 3), "Sofa": ("pascal_coseg", "Sofa", 2),
    "blackswan": ("davis2016", "blackswan", 2), "goat": ("davis2016", "goat", 2),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset 'tiny' of real images and masks (symlinks) under a data root."""
    if not (DATA / "pascal_coseg").is_dir():
        pytest.fail(f"real test data not found at {DATA}: put the shared data beside the checkout (../shared/data)")
    root = tmp_path_factory.mktemp("data")
    for group, (set_name, source, n) in PICKS.items():
        for image in sorted((DATA / set_name / "images" / source).glob("*.jpg"))[:n]:
            for kind, src in (("images", image), ("masks", DATA / set_name / "masks" / source / f"{image.stem}.png")):
                dst = root / "tiny" / kind / group / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src)
    return root


def write_config(path: Path, data_root: Path, *, epochs: int = 2, extra: str = "", model: str = "") -> Path:
    path.write_text(f"""
name = "tiny"
[model]
input_size = 64
{model}
[data]
root = "{data_root}"
train_sets = ["tiny"]
manifest = "manifest.parquet"
[validation]
groups = ["tiny/Sofa"]
videos = ["tiny/blackswan", "tiny/goat"]
max_frames = 1
[optim]
lr = 1e-3
[train]
out_dir = "run"
epochs = {epochs}
steps_per_epoch = 1
max_images = 3
threads = 2
{extra}
""")
    return path


def test_config_rejects_unknown_keys_and_bad_values(tmp_path: Path, tiny: Path) -> None:
    cfg = write_config(tmp_path / "a.toml", tiny, extra="learning_rate = 1.0")
    with pytest.raises(ConfigError, match=r"a\.toml: unknown key 'learning_rate' in \[train\]"):
        load_config(cfg)
    cfg = write_config(tmp_path / "b.toml", tiny, extra='precision = "fp8"')
    with pytest.raises(ConfigError, match=r"\[train\] precision: Input should be 'auto', 'fp32', 'bf16' or 'fp16' \(got 'fp8'\)"):
        load_config(cfg)
    cfg = write_config(tmp_path / "b2.toml", tiny, extra="seed = 1.5")
    with pytest.raises(ConfigError, match=r"\[train\] seed: Input should be a valid integer"):
        load_config(cfg)
    config = load_config(write_config(tmp_path / "c.toml", tiny))
    assert config.train.out_dir == tmp_path / "run" and config.augment.jigsaw_prob == 0.75


def test_impossible_values_and_missing_inputs_are_refused_before_any_work(tmp_path: Path, tiny: Path) -> None:
    from typer.testing import CliRunner

    from streamcosal.cli import app

    text = write_config(tmp_path / "c.toml", tiny).read_text()
    (tmp_path / "file").write_text("not a folder")
    cases = {
        "lr": (text.replace("lr = 1e-3", "lr = -1"), r"lr\.toml: \[optim\] lr: Input should be greater than 0 \(got -1\)"),
        "bb": (text.replace("input_size = 64", 'input_size = 64\nbackbone = "resnet9"'),
               r"\[model\] backbone: unknown backbone 'resnet9'; known: vgg16, efficientnet_lite0"),
        "key": (text.replace("threads = 2", "sead = 2"), r"key\.toml: unknown key 'sead' in \[train\]"),
        "share": (text.replace("input_size = 64", "input_size = 64\nembedding_share = 1.5"),
                  r"\[model\] embedding_share: Input should be less than or equal to 1 \(got 1\.5\)"),
        "gate": (text.replace("input_size = 64", "input_size = 64\nprototype_gate = -0.5"),
                 r"\[model\] prototype_gate: Input should be greater than or equal to 0 \(got -0\.5\)"),
        "group": (text.replace("tiny/Sofa", "tiny/Sofas"), r"\[validation\] group 'tiny/Sofas' not found"),
        "set": (text.replace('train_sets = ["tiny"]', 'train_sets = ["tiny", "voc"]'), r"\[data\] train_sets: 'voc' not found under"),
        "out": (text.replace('out_dir = "run"', 'out_dir = "file"'), r"\[train\] out_dir .*file is a file, not a folder"),
        "seed": (text.replace("threads = 2", "seed = -1"), r"\[train\] seed: Input should be greater than or equal to 0"),
        "sizes": (text.replace("lr = 1e-3", "lr = 1e-3\n[augment]\nsizes = [4096]"),
                  r"\[augment\] sizes: sizes \[4096\] are larger than 1024"),
        "name": (text.replace('name = "tiny"', 'name = "a/b"'), r"'name': 'a/b' names files and checkpoint versions"),
        "mdir": (text.replace('manifest = "manifest.parquet"', 'manifest = "mdir"'), r"\[data\] manifest .*mdir is a folder"),
        "device": (text.replace("threads = 2", 'threads = 2\ndevice = "cuda:7"'),
                   r"device\.toml: \[train\] device 'cuda:7' was asked for but"),
        "precision": (text.replace("threads = 2", 'threads = 2\nprecision = "fp16"'),
                      r"precision\.toml: \[train\] fp16 runs on GPUs only"),
    }
    (tmp_path / "mdir").mkdir()
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ConfigError, match=r"binary\.toml is not valid TOML \(not UTF-8 text\)"):
        train(tmp_path / "binary.toml")
    for name, (body, match) in cases.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(body)
        with pytest.raises(ConfigError, match=match):
            train(path)
        result = CliRunner().invoke(app, ["train", str(path)])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert re.search(match, " ".join(result.output.split())), result.output  # table names survive rich
    assert not (tmp_path / "manifest.parquet").exists(), "nothing is built before the checks"


def test_what_fails_after_the_checks_is_one_line_naming_the_file(tmp_path: Path, tiny: Path) -> None:
    """A damaged training state on --resume, every group held out, an out_dir that cannot be made: one line
    each from the CLI, naming the file or key and what to do."""
    from typer.testing import CliRunner

    from streamcosal.cli import app

    text = write_config(tmp_path / "c.toml", tiny).read_text()
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "run").mkdir()
    cases = {
        "empty state": ("", b"", r"cannot resume: .*state\.pt is damaged or not a training state \(EOFError"),
        "random state": ("", bytes(range(256)) * 4, r"cannot resume: .*state\.pt is damaged or not a training state"),
        "all held out": (text.replace('groups = ["tiny/Sofa"]', 'groups = ["tiny/Sofa", "tiny/Cat", "tiny/Horse"]'),
                         None, r"held out for \[validation\]"),
        "out under a file": (text.replace('out_dir = "run"', 'out_dir = "file/run"'), None,
                             r"\[train\] out_dir .*file/run cannot be made \(Not a directory\)"),
        "manifest under a file": (text.replace('manifest = "manifest.parquet"', 'manifest = "file/m.parquet"'), None,
                                  r"\[data\] manifest .*file/m\.parquet: .*file is a file, not a folder"),
    }
    for name, (body, state, match) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.toml"
        path.write_text(body or text)
        if state is not None:
            (tmp_path / "run" / "state.pt").write_bytes(state)
        result = CliRunner().invoke(app, ["train", str(path), "--resume"])
        assert result.exit_code == 1 and "Traceback" not in result.output and "Aborted" not in result.output, name
        assert re.search(match, " ".join(result.output.split())), (name, result.output)


def test_a_damaged_image_stops_training_in_one_line_naming_it(tmp_path: Path, tiny: Path) -> None:
    """A truncated photo among the data: a 40-line traceback before; one line naming it and --resume now."""
    from typer.testing import CliRunner

    from streamcosal.cli import app

    shutil.copytree(tiny, tmp_path / "data", symlinks=True)
    damaged = sorted((tmp_path / "data" / "tiny" / "images" / "Sofa").iterdir())[0]
    whole = damaged.resolve().read_bytes()
    damaged.unlink()
    damaged.write_bytes(whole[:300])
    result = CliRunner().invoke(app, ["train", str(write_config(tmp_path / "c.toml", tmp_path / "data"))])
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"{damaged}: " in output and "replace or remove that file, then run the same command with --resume" in output


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROOT_CONFIGS = sorted(p for p in CONFIGS.glob("*.toml") if p.name != "base.toml")  # base.toml is no run


@pytest.mark.parametrize("path", ROOT_CONFIGS, ids=lambda p: p.name)
def test_committed_configs_load(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.stem and config.train.out_dir.name == config.name
    assert tomllib.loads(path.read_text()).get("base"), "every committed config overrides base.toml or another one"
    if config.model.init is not None:  # a later stage starts from an earlier run's best or last epoch
        assert config.model.init.name in ("best.pt", "last.pt") and config.model.init.parent != config.train.out_dir


LITE2_ALL_MS = {  # configs/lite2_all_ms.toml written out flat, as the default model's last stage read it on 2026-11-28
    "name": "lite2_all_ms",
    "model": {"backbone": "efficientnet_lite2", "use_gim": True, "use_arm": True, "input_size": 224,
              "init": "../reports/training/lite2_all/best.pt"},
    "data": {"root": "../../shared/data",
             "train_sets": ["pascal_coseg", "oxford_pets", "davis2016", "weizmann_horse", "sod"],
             "regroup_sets": ["sod"], "min_confidence": 0.3, "min_group_size": 4,
             "manifest": "../reports/training/manifest.parquet", "all_masks_as_distractors": True},
    "validation": {"groups": [], "videos": []},
    "augment": {"copy_paste_prob": 0.5, "copy_paste_native": 0.5, "jigsaw_prob": 0.75, "hflip": True,
                "crop_scale": 0.6, "colour": 0.25, "sizes": [224, 256, 288]},
    "optim": {"lr": 1e-4, "beta1": 0.9, "beta2": 0.99, "lr_drop_at": 0.8, "lr_drop_factor": 0.1},
    "train": {"out_dir": "../reports/training/lite2_all_ms", "seed": 1, "epochs": 8, "steps_per_epoch": 100,
              "max_images": 8, "threads": 1, "device": "cpu", "precision": "auto", "log_every": 10},
}


def flat_config(raw: dict, source: Path) -> TrainConfig:
    """A flat config's values, its relative paths resolved against configs/ (as the committed configs')."""
    return TrainConfig.model_validate({**raw, "source": source.resolve()}, context={"base": CONFIGS})


def test_shipped_configs_read_over_their_bases_equal_the_flat_files() -> None:
    # the default's last stage, read over lite2_ms.toml, lite2_ft.toml, lite2_cp.toml and base.toml
    path = CONFIGS / "lite2_all_ms.toml"
    assert load_config(path) == flat_config(LITE2_ALL_MS, path)
    # each embedded model ships a flat copy of the config it was trained with
    weights = Path(__file__).resolve().parents[1] / "streamcosal" / "weights"
    for config, copy in (("lite2_all_ms", "gicd_lite2"), ("lite0_stage2", "gicd_lite0")):
        path = CONFIGS / f"{config}.toml"
        assert load_config(path) == flat_config(tomllib.loads((weights / f"{copy}.toml").read_text()), path), copy


def test_config_base_merges_tables_and_keeps_paths_relative_to_their_file(tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.toml").write_text("""
name = "not inherited"
[data]
root = "data"
train_sets = ["a", "b"]
manifest = "manifest.parquet"
[optim]
lr = 1e-3
beta1 = 0.8
[train]
out_dir = "not inherited"
epochs = 3
""")
    run = tmp_path / "runs" / "fine.toml"
    run.parent.mkdir()
    run.write_text('base = "../shared/base.toml"\n[data]\ntrain_sets = ["c"]\n[optim]\nlr = 1e-4\n')
    missing = r"fine\.toml: \[train\] out_dir: a required key is missing \(read over .*shared/base\.toml\)"
    with pytest.raises(ConfigError, match=missing):  # what names a run is never inherited
        load_config(run)
    run.write_text(run.read_text() + '[train]\nout_dir = "out"\n')
    config = load_config(run)
    assert config.name == "fine" and config.train.out_dir == tmp_path / "runs" / "out" and config.train.epochs == 3
    shared = tmp_path / "shared"
    assert (config.data.root, config.data.manifest) == (shared / "data", shared / "manifest.parquet")
    assert config.data.train_sets == ["c"] and (config.optim.lr, config.optim.beta1) == (1e-4, 0.8)


def test_config_with_a_missing_or_circular_base_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('base = "gone.toml"\n')
    with pytest.raises(ConfigError, match=r"a\.toml: base 'gone\.toml' not found"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "a.toml").write_text('base = "b.toml"\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\n')
    with pytest.raises(ConfigError, match=r"b\.toml: circular base: .*a\.toml -> .*b\.toml -> .*a\.toml"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text("base = 1\n")
    with pytest.raises(ConfigError, match=r"b\.toml: 'base' must be the path of a TOML file"):
        load_config(tmp_path / "a.toml")


def test_few_steps_lower_the_loss_and_keep_the_backbone_frozen(tmp_path: Path, tiny: Path) -> None:
    torch.manual_seed(0)
    config = load_config(write_config(tmp_path / "c.toml", tiny))
    model = build_model(config)
    bn_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    sampler = GroupSampler(build_manifest(tiny / "tiny").groups(), size=64, max_images=3,
                           augment=Augmentation(jigsaw_prob=0.0, hflip=False, crop_scale=1.0, colour=0.0), seed=0)
    x, y = sampler.batch("tiny/Cat", 0, 0)
    x = (x - 0.5) / 0.5
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model.train()
    assert model.decoder.training and not model.backbone.training
    losses = []
    for _ in range(5):
        loss = gicd_loss(model(x).side_maps, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.97 and max(losses[1:]) < losses[0], losses
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, bn_before[k]), f"backbone tensor {k} changed"


def decoder_of(state: Path) -> dict[str, torch.Tensor]:
    return torch.load(state, weights_only=True)["decoder"]


def test_resume_equals_uninterrupted(tmp_path: Path, tiny: Path) -> None:
    whole = train(write_config((tmp_path / "a").mkdir() or tmp_path / "a" / "c.toml", tiny))
    assert whole.epochs_done == 2 and whole.best_checkpoint.is_file() and whole.metrics.is_file()
    cfg = write_config((tmp_path / "b").mkdir() or tmp_path / "b" / "c.toml", tiny)
    first = train(cfg, stop_after=1)
    assert first.epochs_done == 1
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg)
    changed = tmp_path / "b" / "changed.toml"
    changed.write_text(cfg.read_text().replace("lr = 1e-3", "lr = 2e-3"))
    with pytest.raises(TrainingError, match=r"the config's \[optim\] lr = 0\.001 -> 0\.002 differ from the run's"):
        train(changed, resume=True)
    (tmp_path / "b").rename(tmp_path / "moved")  # the project folder moved: its relative paths name the same files
    cfg = tmp_path / "moved" / "c.toml"
    saved = tmp_path / "moved" / "run" / "state.pt"
    # a state written before a config key existed (here: copy_paste_native) still resumes at its default
    state = torch.load(saved, weights_only=True)
    del state["config"]["augment"]["copy_paste_native"]
    torch.save(state, saved)
    resumed = train(cfg, resume=True)
    assert resumed.epochs_done == 2
    a, b = decoder_of(whole.state), decoder_of(resumed.state)
    for k in a:
        assert torch.equal(a[k], b[k]), f"decoder tensor {k} differs after resume"
    assert [r["loss"] for r in whole.history] == [r["loss"] for r in resumed.history]
    last = torch.load(resumed.state.parent / "last.pt", weights_only=True)  # the last epoch, as a checkpoint
    assert last["extra"]["epoch"] == 2 and all(torch.equal(last["decoder"][k], b[k]) for k in b)
    import pyarrow.parquet as pq
    table = pq.read_table(resumed.metrics).to_pydict()
    assert table["epoch"] == [1, 2] and {"groups_maxF", "composites_S", "frames_MAE", "images_per_s"} <= set(table)
    assert np.isfinite(resumed.best_score)


def test_batches_made_by_worker_processes_train_the_same_decoder(tmp_path: Path, tiny: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    here = train(write_config((tmp_path / "a").mkdir() or tmp_path / "a" / "c.toml", tiny,
                              extra="loader_workers = 0"))
    ahead = train(write_config((tmp_path / "b").mkdir() or tmp_path / "b" / "c.toml", tiny,
                               extra="loader_workers = 2"))
    said = capsys.readouterr().err
    assert "batches: made in the training process" in said and "batches: made ahead by 2 worker processes" in said
    assert [r["loss"] for r in here.history] == [r["loss"] for r in ahead.history]
    a, b = decoder_of(here.state), decoder_of(ahead.state)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_auto_precision_measured_leaves_no_trace_and_a_resumed_run_keeps_it(
        tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config((tmp_path / "a").mkdir() or tmp_path / "a" / "c.toml", tiny)
    first = train(cfg, stop_after=1, measure_precision=True)  # as on a GPU: each candidate timed on the first batch
    said = re.search(r"precision: (\w+) \(auto: the fastest measured here, (.*) a step's pass\)", capsys.readouterr().err)
    assert said, "the run says which precision it measured fastest"
    chosen = said.group(1)
    assert "fp32" in said.group(2) and torch.load(first.state, weights_only=True)["precision"] == chosen
    monkeypatch.setattr(step, "fastest_training_precision", lambda *a: pytest.fail("a resumed run measured again"))
    resumed = train(cfg, resume=True, measure_precision=True)
    assert f"precision: {chosen} (auto: as the run started)" in capsys.readouterr().err
    fixed = train(write_config((tmp_path / "b").mkdir() or tmp_path / "b" / "c.toml", tiny,
                               extra=f'precision = "{chosen}"'))
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in fixed.history]
    a, b = decoder_of(resumed.state), decoder_of(fixed.state)
    assert all(torch.equal(a[k], b[k]) for k in a), "measuring changed what was trained"


def test_loader_workers_default_to_none_on_a_cpu_and_to_the_cores_for_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert loader_workers(None, torch.device("cpu")) == 0
    assert loader_workers(None, torch.device("cuda")) == 8
    assert loader_workers(3, torch.device("cpu")) == 3
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert loader_workers(None, torch.device("cuda")) == 1


def test_init_starts_the_decoder_from_a_checkpoint_of_the_same_model(tmp_path: Path, tiny: Path) -> None:
    first = train(write_config((tmp_path / "a").mkdir() or tmp_path / "a" / "c.toml", tiny, epochs=1))
    config = load_config(write_config(tmp_path / "b.toml", tiny, model=f'init = "{first.best_checkpoint}"'))
    assert config.model.init == first.best_checkpoint
    saved = torch.load(first.best_checkpoint, weights_only=True)["decoder"]
    decoder = build_model(config).decoder.state_dict()
    assert all(torch.equal(decoder[k], v) for k, v in saved.items())
    fresh = build_model(load_config(write_config(tmp_path / "c.toml", tiny))).decoder.state_dict()
    assert not all(torch.equal(fresh[k], v) for k, v in saved.items())
    # the embedding share has no parameters: the config's applies to a decoder trained without it
    shared = load_config(write_config(tmp_path / "s.toml", tiny, model=f'embedding_share = 0.4\ninit = "{first.best_checkpoint}"'))
    assert build_model(shared).embedding_share == 0.4 and build_model(config).embedding_share == 0.0
    gated = load_config(write_config(tmp_path / "g.toml", tiny, model=f'prototype_gate = 0.5\ninit = "{first.best_checkpoint}"'))
    assert build_model(gated).prototype_gate == 0.5 and build_model(config).prototype_gate == 0.0
    other = load_config(write_config(tmp_path / "d.toml", tiny, model=f'use_gim = false\ninit = "{first.best_checkpoint}"'))
    with pytest.raises(TrainingError, match=r"d\.toml: \[model\] init .*best\.pt was trained with use_gim = True"):
        build_model(other)
    missing = load_config(write_config(tmp_path / "e.toml", tiny, model='init = "stage1/best.pt"'))
    with pytest.raises(TrainingError, match=r"e\.toml: \[model\] init: checkpoint not found: .*stage1/best\.pt"):
        build_model(missing)


def test_nan_loss_stops_naming_epoch_step_group(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path / "c.toml", tiny)
    monkeypatch.setattr(step, "gicd_loss", lambda side, target: side[-1].sum() * float("nan"))
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 1, step 1 \(global step 1\), group 'tiny/"):
        train(cfg)


def test_nan_validation_never_claims_a_best_checkpoint(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path / "c.toml", tiny, epochs=1)
    monkeypatch.setattr(training, "score", lambda predict, val: {"score": float("nan")})
    with pytest.raises(TrainingError, match=r"no epoch had a finite validation score, so no best checkpoint"):
        train(cfg)
    assert not (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "state.pt").is_file()
    assert not list((tmp_path / "run").glob(".*tmp")), "no temporary file is left behind"


def test_a_manifest_of_other_data_is_refused(tmp_path: Path, tiny: Path) -> None:
    text = write_config(tmp_path / "c.toml", tiny).read_text()
    config = load_config(tmp_path / "c.toml")
    groups, _, _ = training.training_groups(config, backbone=None)
    assert groups and (tmp_path / "manifest.parquet").is_file()
    other = tmp_path / "other.toml"
    other.write_text(text.replace("[data]", "[data]\nmin_group_size = 3"))
    with pytest.raises(ConfigError, match=r"manifest .*manifest\.parquet was built from .*'min_group_size': 4.* asks for .*'min_group_size': 3"):
        training.training_groups(load_config(other), backbone=None)
    legacy = Manifest.read(tmp_path / "manifest.parquet")
    legacy.built_from = {}
    legacy.write(tmp_path / "manifest.parquet")
    with pytest.raises(ConfigError, match=r"built from unrecorded data .*delete the manifest"):
        training.training_groups(config, backbone=None)
    # the same sets under another root: the manifest's files are not theirs (it trained on the old files, exit 0)
    legacy.built_from = Manifest.read(tmp_path / "manifest.parquet").built_from or {
        "train_sets": ["tiny"], "regroup_sets": [], "min_confidence": 0.3, "min_group_size": 4}
    shutil.copytree(tiny, tmp_path / "mine", symlinks=True)
    legacy.write(tmp_path / "manifest.parquet")
    mine = tmp_path / "mine.toml"
    mine.write_text(text.replace(f'root = "{tiny}"', f'root = "{tmp_path / "mine"}"'))
    with pytest.raises(ConfigError, match=r"manifest .*manifest\.parquet lists .*, which is in none of \[data\] "
                                          r"train_sets under \[data\] root .*mine: it was built from other data"):
        training.training_groups(load_config(mine), backbone=None)


def test_benchmark_measures_each_precision_and_writes_nothing(tmp_path: Path, tiny: Path) -> None:
    from typer.testing import CliRunner

    from streamcosal.cli import app
    from streamcosal.inference.precision import cpu_has_native_bf16

    cfg = write_config(tmp_path / "c.toml", tiny, extra="max_images = 2".replace("max_images", "log_every"))
    result = CliRunner().invoke(app, ["train", str(cfg), "--benchmark"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 3}
    assert {"fp32", "bf16"} <= {name.split()[0] for name in rows if name}, result.output
    chosen = "bf16" if cpu_has_native_bf16() else "fp32"
    assert f'auto" trains with {chosen}' in result.output
    assert not (tmp_path / "run").exists(), "a benchmark trains nothing and writes no run"


@pytest.mark.slow
def test_the_whole_schedule_chains_its_stages_in_one_command(tmp_path: Path) -> None:
    """reports/training/schedule.py --smoke: every stage of the shipped model's schedule trains (2
    steps) into OUT/<stage>, each from the previous stage's checkpoint in OUT, on the device given."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "reports" / "training" / "schedule.py"
    spec = importlib.util.spec_from_file_location("schedule", path)
    schedule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(schedule)
    schedule.main([str(tmp_path), "--device", "cpu", "--smoke"])
    for name in schedule.STAGES:
        state = torch.load(tmp_path / name / "last.pt", weights_only=True)
        config = state["extra"]["config"]
        assert config["train"]["device"] == "cpu" and config["train"]["out_dir"] == str(tmp_path / name)
        committed = load_config(schedule.CONFIGS / f"{name}.toml").model.init
        expected = None if committed is None else str(tmp_path / committed.parent.name / committed.name)
        assert config["model"]["init"] == expected, name
    assert state["backbone"] == "efficientnet_lite2"
