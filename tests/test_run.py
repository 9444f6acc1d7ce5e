"""The runner: a recipe trains, evaluates and is recorded; runs resume; mistakes are one line."""
from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from unmix_ext.runner.builder import solo_method_kwargs, ssl_methods
from unmix_ext.runner.config import ConfigError, config_hash, load_config
from unmix_ext.runner.fake_data import write_fake_dataset
from unmix_ext.runner.files import atomic_write
from unmix_ext.run import main
from unmix_ext.runner import run as run_module
from unmix_ext.runner import trainer
from unmix_ext.runner.run import as_run, run, run_recipe
from unmix_ext.runner.rundir import RunDir
from unmix_ext.runner.smoke import effective
from unmix_ext.runner.trainer import AtomicCheckpointIO

pytestmark = pytest.mark.filterwarnings("ignore")

REPO = Path(__file__).resolve().parents[1]

# a recipe as a solo-learn user writes it (solo-learn's Hydra layout)
SOLO_STYLE = {
    "name": "simclr-cifar10",
    "method": "simclr",
    "backbone": {"name": "resnet18"},
    "method_kwargs": {"proj_hidden_dim": 2048, "proj_output_dim": 256, "temperature": 0.2},
    "data": {"dataset": "cifar10", "train_path": "absent", "num_workers": 4},
    "augmentations": [{"crop_size": 32, "num_crops": 2, "rrc": {"crop_min_scale": 0.08}, "solarization": {"prob": 0.1}}],
    "optimizer": {"name": "lars", "batch_size": 256, "lr": 0.4, "classifier_lr": 0.1, "weight_decay": 1.0e-5,
                  "kwargs": {"eta": 0.02, "exclude_bias_n_norm": True}},
    "scheduler": {"name": "warmup_cosine", "warmup_epochs": 10},
    "max_epochs": 1000,
    "precision": 16,
}

# the smallest smoke run: 4-image batches of 8-pixel crops, a small head, no loader processes
TINY = [
    "scale=smoke", "optimizer.batch_size=4", "augmentations.0.crop_size=8", "data.num_workers=0",
    "method_kwargs.proj_hidden_dim=32", "method_kwargs.proj_output_dim=16",
]
NO_EVAL = ["eval.knn.enabled=false", "eval.linear.enabled=false"]


def write_recipe(folder: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    """``recipe`` as YAML in ``folder``; a relative data.train_path is taken inside ``folder``."""
    recipe = json.loads(json.dumps(recipe))
    recipe["data"]["train_path"] = str(folder / recipe["data"]["train_path"])
    recipe.setdefault("checkpoint", {})["dir"] = str(folder / "runs")
    path = folder / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def _subprocess_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("WANDB_MODE", None)
    return env


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One tiny smoke run of the solo-style recipe with Un-Mix turned on and wandb on (offline).

    Returns (recipe path, loaded config, results).
    """
    folder = tmp_path_factory.mktemp("smoke")
    recipe = write_recipe(folder, SOLO_STYLE)
    overrides = [*TINY, "unmix.enabled=true", "unmix.alpha=0.5", "wandb.enabled=true", "eval.linear.max_epochs=1"]
    cfg = load_config(recipe, overrides, known_methods=ssl_methods())
    return recipe, cfg, run(cfg, recipe)


def test_run_trains_evaluates_and_records(smoke_run):
    recipe, cfg, results = smoke_run
    run_dir = Path(results["run_dir"])

    ran = as_run(cfg).cfg  # the identity is the config as it ran: shrunk, paths absolute
    assert run_dir == RunDir.of(ran).path and run_dir.name.endswith(config_hash(ran))
    assert json.loads((run_dir / "results.json").read_text()) == json.loads(json.dumps(results))
    assert results["recipe"] == str(recipe) and results["recipe_hash"] == config_hash(ran)
    assert (results["seed"], results["scale"], results["smoke"]) == (5, "smoke", True)
    metrics = results["metrics"]
    for key in ("knn_top1", "knn_top5", "linear_top1", "linear_top5", "val_acc1", "val_knn_acc1"):
        assert math.isfinite(metrics[key]) and 0 <= metrics[key] <= 100, key
    # 2 smoke epochs of 4 batches of 4 images
    assert (results["epochs"], results["global_step"], results["start_global_step"]) == (2, 8, 0)
    assert results["pretrain_images_per_s"] > 0 and results["wall_time_s"] > results["pretrain_seconds"] > 0
    assert {"torch", "pytorch-lightning", "solo-learn"} <= set(results["versions"])
    checkpoint = torch.load(results["checkpoint"], map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 8
    # what the shrink changed, from what to what; the fake CIFAR-10 is in its release format
    changes = results["smoke_changes"]
    assert changes["max_epochs"] == {"from": 1000, "to": 2}
    assert changes["precision"] == {"from": "16-mixed", "to": "32-true"} or torch.cuda.is_available()
    fake_root = Path(changes["data.train_path"]["to"])
    assert (fake_root / "cifar-10-batches-py" / "data_batch_1").is_file()
    assert "optimizer.batch_size" not in changes  # 4 is already below the smoke batch
    assert results["smoke_limits"]["pretrain"] == 16
    # logs: CSV with the learning rate, wandb offline
    metrics_csv = next((run_dir / "logs" / "pretrain").glob("version_*/metrics.csv")).read_text()
    columns = metrics_csv.split("\n")[0].split(",")
    assert any(column.startswith("lr-") and column.endswith("/encoder") for column in columns)
    assert list((run_dir / "wandb").glob("offline-run-*"))


def test_saved_config_is_the_config_that_ran_and_shrinks_no_further(smoke_run):
    _, cfg, results = smoke_run
    saved = load_config(Path(results["run_dir"]) / "config.yaml", known_methods=ssl_methods())
    shrunk = effective(cfg).cfg

    assert saved.data.train_path == results["smoke_changes"]["data.train_path"]["to"]
    assert (saved.max_epochs, saved.precision, saved.optimizer.batch_size) == (
        shrunk.max_epochs, shrunk.precision, shrunk.optimizer.batch_size
    )
    assert effective(saved).changes == {}


def test_the_saved_config_names_its_own_run_directory(smoke_run):
    _, _, results = smoke_run
    saved = load_config(Path(results["run_dir"]) / "config.yaml", known_methods=ssl_methods())
    assert RunDir.of(as_run(saved).cfg).path == Path(results["run_dir"])
    assert config_hash(as_run(saved).cfg) == results["recipe_hash"]


def test_run_dir_config_yaml_continues_that_run_at_full_scale(tmp_path, monkeypatch, capsys):
    # a relative data path, as a user writes it: the saved config.yaml holds it absolute, and must still
    # name the same run directory (its hash was once taken on the relative path)
    write_fake_dataset("cifar10", tmp_path / "cifar", num_per_class=1)
    recipe = dict(SOLO_STYLE, data={"dataset": "cifar10", "train_path": "cifar", "num_workers": 0},
                  max_epochs=1, checkpoint={"dir": "runs"})
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    tiny = [*TINY[1:], *NO_EVAL, "accelerator=cpu", "precision=32-true"]
    first = run_recipe("recipe.yaml", tiny)
    again = run_recipe(str(Path(first["run_dir"]) / "config.yaml"))

    assert again["run_dir"] == first["run_dir"] and again["recipe_hash"] == first["recipe_hash"]
    assert again["resumed_from"] is not None and again["start_global_step"] == first["global_step"]
    assert [path.name for path in (tmp_path / "runs").iterdir()] == [Path(first["run_dir"]).name]


def test_run_dir_config_yaml_continues_that_run_at_smoke_scale(smoke_run, capsys):
    _, _, results = smoke_run
    runs = Path(results["run_dir"]).parent
    before = sorted(path.name for path in runs.iterdir())
    again = run_recipe(str(Path(results["run_dir"]) / "config.yaml"))

    assert again["run_dir"] == results["run_dir"] and again["resumed_from"] is not None
    assert sorted(path.name for path in runs.iterdir()) == before  # no sibling run directory


def test_smoke_says_in_one_line_what_it_changes_before_training(tmp_path, capsys):
    write_fake_dataset("cifar10", tmp_path / "cifar", num_per_class=1)
    recipe = write_recipe(tmp_path, {**SOLO_STYLE, "data": {"dataset": "cifar10", "train_path": "cifar"}})
    cfg = load_config(recipe, [*TINY, *NO_EVAL, "backbone.kwargs.cifar=true", "max_epochs=1"])
    run(cfg, recipe)

    printed = capsys.readouterr().out.splitlines()
    notice, = [line for line in printed if line.startswith("scale=smoke changes ")]
    assert "backbone.kwargs.cifar True->False" in notice  # a key the user set, changed: named up front
    assert printed.index(notice) < next(i for i, line in enumerate(printed) if line.startswith("unmix_ext run:"))


def test_linear_command_on_a_run_checkpoint(smoke_run):
    _, _, results = smoke_run
    done = subprocess.run(
        [sys.executable, "-m", "unmix_ext.linear", results["checkpoint"], "eval.linear.max_epochs=1"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=_subprocess_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads((Path(results["run_dir"]) / "linear.json").read_text())
    assert math.isfinite(written["linear_top1"]) and 0 <= written["linear_top1"] <= 100
    assert f"linear_top1 {written['linear_top1']:.2f}" in done.stdout


@pytest.mark.parametrize("damage", ["truncated", "foreign", "hostile"])
def test_linear_command_on_a_damaged_checkpoint_is_one_line(smoke_run, damage, capsys, hostile_checkpoint):
    from unmix_ext.linear import main as linear_main

    _, _, results = smoke_run
    good = Path(results["checkpoint"])
    bad = good.with_name(f"{damage}.ckpt")  # next to the run's own checkpoints: only the file is wrong
    try:
        if damage == "truncated":
            bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        elif damage == "foreign":
            torch.save({"encoder.weight": torch.zeros(2)}, bad)  # a plain state_dict, not a Lightning checkpoint
        else:
            hostile_checkpoint.write(bad)
        assert linear_main([str(bad)]) == 2
    finally:
        bad.unlink()
    err = capsys.readouterr().err
    reason = {"truncated": "cannot be read (not a PyTorch checkpoint archive, or truncated)",
              "foreign": "is not a Lightning checkpoint", "hostile": hostile_checkpoint.refusal}[damage]
    assert err.count("\n") == 1 and err.startswith(f"error: checkpoint: {bad.resolve()} {reason}"), err
    assert not hostile_checkpoint.victim.exists()


# a run's config.yaml damaged or edited since the run saved it
SAVED_CONFIG_DAMAGE = {
    "a list": ("- 1\n- 2\n", "primary config 'config' must be a DictConfig"),
    "nested 100,000 deep": ("x: " + "[" * 100_000 + "]" * 100_000 + "\n", "nests deeper than the YAML parser"),
    "not UTF-8": ("\udcff\udcfe", "can't decode byte"),
    "a number for a name": ("method: 5\ndata: {dataset: cifar10}\nname: [1]\n", "name: expected a string"),
}


@pytest.mark.parametrize("content, reason", SAVED_CONFIG_DAMAGE.values(), ids=SAVED_CONFIG_DAMAGE.keys())
def test_linear_command_on_a_run_with_a_damaged_config_is_one_line(tmp_path, capsys, content, reason):
    from unmix_ext.linear import main as linear_main

    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"never read: the saved recipe is read first")
    config = tmp_path / "run" / "config.yaml"
    config.write_bytes(content.encode("utf-8", "surrogateescape"))

    assert linear_main([str(checkpoint)]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {config}: ") and reason in err, err


def test_unmix_enabled_runs_the_variant(smoke_run):
    _, cfg, results = smoke_run

    variant = ssl_methods()["simclr_unmix"]
    assert cfg.method == "simclr" and results["method"] == "simclr_unmix"
    assert results["model_class"] == f"{variant.__module__}.{variant.__qualname__}"
    kwargs = solo_method_kwargs(effective(cfg).cfg, num_classes=10)
    assert (kwargs["unmix_alpha"], kwargs["unmix_prob"], kwargs["unmix_view"], kwargs["unmix_seed"]) == (0.5, 0.5, 0, 5)


def test_recipe_maps_onto_solo_arguments(tmp_path):
    multicrop = [*SOLO_STYLE["augmentations"], {"crop_size": 16, "num_crops": 4}]
    recipe = write_recipe(tmp_path, {**SOLO_STYLE, "augmentations": multicrop})
    cfg = load_config(recipe, ["method_kwargs.knn_k=7"])

    kwargs = solo_method_kwargs(cfg, num_classes=10, world_size=2)

    assert (kwargs["optimizer"], kwargs["lars"], kwargs["eta_lars"], kwargs["exclude_bias_n_norm"]) == (
        "sgd", True, 0.02, True)
    # solo-learn's rule: lr and classifier_lr are per 256 images, scaled by the batch of all processes
    assert kwargs["lr"] == pytest.approx(0.4 * 256 * 2 / 256) and kwargs["classifier_lr"] == pytest.approx(0.2)
    assert kwargs["extra_optimizer_args"] == {"momentum": 0.9}
    assert (kwargs["num_large_crops"], kwargs["num_small_crops"]) == (2, 4)
    assert kwargs["backbone_args"] == {"cifar": True, "zero_init_residual": False}
    assert (kwargs["temperature"], kwargs["knn_eval"], kwargs["knn_k"]) == (0.2, True, 7)
    assert not any(key.startswith("unmix_") for key in kwargs)

    # Hydra's override grammar: a mapping merges into the recipe's, ~ deletes a key
    adamw = load_config(recipe, ["optimizer.name=adamw", "~optimizer.kwargs.eta", "~optimizer.kwargs.exclude_bias_n_norm",
                                 "optimizer.kwargs={betas: [0.9, 0.95]}"])
    kwargs = solo_method_kwargs(adamw, num_classes=10, world_size=1)
    assert kwargs["extra_optimizer_args"] == {"betas": [0.9, 0.95]} and kwargs["lr"] == pytest.approx(0.4)


def test_smoke_shrinks_an_imagenet_resnet50_recipe(tmp_path):
    recipe = {
        **SOLO_STYLE,
        "method": "mocov2plus",
        "backbone": {"name": "resnet50"},
        "method_kwargs": {"queue_size": 65536},
        "data": {"dataset": "imagenet", "train_path": "absent", "num_workers": 8},
        "augmentations": [{"crop_size": 224, "num_crops": 2}, {"crop_size": 96, "num_crops": 2}],
        "devices": 8,
        "eval": {"linear": {"max_epochs": 100, "batch_size": 256}},
    }
    cfg = load_config(write_recipe(tmp_path, recipe), ["scale=smoke"])

    smoke = effective(cfg)

    changed = smoke.changes
    assert changed["backbone.name"] == {"from": "resnet50", "to": "resnet18"}
    assert changed["backbone.kwargs.cifar"]["to"] is False
    assert changed["augmentations.0.crop_size"]["to"] == 32 and changed["augmentations.1.crop_size"]["to"] == 14
    assert changed["method_kwargs.queue_size"] == {"from": 65536, "to": 4 * 32}
    assert changed["optimizer.batch_size"]["to"] == 32 and changed["devices"] == {"from": 8, "to": 1}
    assert changed["eval.linear.max_epochs"]["to"] == 2 and changed["data.num_workers"]["to"] == 2
    assert (Path(smoke.cfg.data.train_path) / "train").is_dir() and (Path(smoke.cfg.data.train_path) / "val").is_dir()
    assert cfg.backbone.name == "resnet50"  # the loaded recipe is left as it was
    assert effective(smoke.cfg).changes == {}


def test_smoke_caps_solo_defaults_the_recipe_left_out(tmp_path):
    cfg = load_config(write_recipe(tmp_path, {**SOLO_STYLE, "method": "wmse", "method_kwargs": {}}), ["scale=smoke"])

    changed = effective(cfg).changes

    # solo-learn's W-MSE defaults: whitening chunks of 256 rows, 128-d projections
    assert changed["method_kwargs.whitening_size"] == {"from": 256, "to": 32}
    assert changed["method_kwargs.proj_output_dim"] == {"from": 128, "to": 16}


def _newest_checkpoint_step(checkpoints: Path) -> tuple[Path, int]:
    newest = max((path for path in checkpoints.glob("*.ckpt") if not path.is_symlink()),
                 key=lambda path: path.stat().st_mtime_ns)
    return newest, torch.load(newest, map_location="cpu", weights_only=True)["global_step"]


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    write_fake_dataset("cifar10", tmp_path / "cifar", num_per_class=1)  # 10 images: 2 batches of 4
    recipe = write_recipe(tmp_path, {**SOLO_STYLE, "data": {"dataset": "cifar10", "train_path": "cifar"}})
    command = [sys.executable, "-m", "unmix_ext.run", str(recipe), *TINY[1:], *NO_EVAL,
               "max_epochs=4", "precision=32"]
    checkpoints = RunDir.of(load_config(recipe, command[4:])).path / "checkpoints"

    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=_subprocess_env())
    try:
        deadline = time.time() + 240
        while not list(checkpoints.glob("epoch=*.ckpt")) and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    assert first.returncode == -signal.SIGKILL, "the first run ended before it could be killed"
    newest, step = _newest_checkpoint_step(checkpoints)
    assert step > 0 and not (checkpoints.parent / "results.json").exists()

    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=_subprocess_env())

    assert second.returncode == 0, second.stderr[-3000:]
    assert f"global step {step}\n" in second.stdout
    results = json.loads((checkpoints.parent / "results.json").read_text())
    assert results["start_global_step"] == step and results["resumed_from"] == str(newest)
    assert (results["epochs"], results["global_step"]) == (4, 4 * 2)


BAD = [
    # (what is wrong, recipe edits, overrides, the key the message must name)
    ("unknown method", {}, ["method=simclrr"], "method"),
    ("unknown top-level key", {"epochs": 10}, [], "epochs"),
    ("negative lr", {}, ["optimizer.lr=-1"], "optimizer.lr"),
    ("unmix alpha 0", {}, ["unmix.alpha=0"], "unmix.alpha"),
    ("unmix prob 2", {}, ["unmix.prob=2"], "unmix.prob"),
    ("missing train_path", {}, ["data.train_path=/nonexistent/cifar"], "data.train_path"),
    ("no train_path at all", {}, ["data.train_path=null"], "data.train_path"),
    ("format not readable", {}, ["data.format=h5"], "data.format"),
    ("batch of one", {}, ["optimizer.batch_size=1"], "optimizer.batch_size"),
    ("more devices than the machine", {}, [f"devices={(torch.cuda.device_count() or os.cpu_count()) + 1}"],
     "devices"),
    ("unknown precision", {}, ["precision=17"], "precision"),
    ("typo in a nested key", {"optimizer": {"lrr": 0.1}}, [], "optimizer.lrr"),
    ("text for a number", {}, ["optimizer.weight_decay=abc"], "optimizer.weight_decay"),
    ("typo in a method argument", {}, ["method_kwargs.temperatur=0.2"], "method_kwargs.temperatur"),
    ("runner key in method_kwargs", {}, ["method_kwargs.lr=0.1"], "method_kwargs.lr"),
    ("LARS setting for SGD", {}, ["optimizer.name=sgd"], "optimizer.kwargs.eta"),
    ("unknown backbone", {}, ["backbone.name=resnet34"], "backbone.name"),
    ("unknown timm backbone", {}, ["backbone.name=timm/resnet19"], "backbone.name"),
    ("small crops for a two-view loss", {"method": "mocov2plus", "augmentations": [
        {"crop_size": 32, "num_crops": 2}, {"crop_size": 16, "num_crops": 2}]}, [], "augmentations.1"),
    ("large crops after small ones",
     {"augmentations": [{"crop_size": 32}, {"crop_size": 16}, {"crop_size": 32}]}, [], "augmentations.2"),
    ("fewer images than a batch", {}, [], "data.train_path"),
    ("one crop for a two-view method", {"augmentations": [{"crop_size": 32, "num_crops": 1}]}, [], "augmentations"),
    ("unknown backbone at smoke scale", {}, ["backbone.name=resnet19", "scale=smoke"], "backbone.name"),
    ("Un-Mix on MAE", {}, ["method=mae_unmix", "scale=smoke"], "method"),
    ("MAE on a ResNet", {}, ["method=mae", "scale=smoke"], "backbone.name"),
    ("an augmentation 1.0.2 lacks", {}, ["augmentations.0.equalization.prob=0.2"], "augmentations.0.equalization.prob"),
    ("no random resized crop", {}, ["augmentations.0.rrc.enabled=false"], "augmentations.0.rrc.enabled"),
    ("GPU asked of a machine without one", {}, ["accelerator=gpu"] if not torch.cuda.is_available() else
     ["accelerator=tpu"], "accelerator"),
    ("dali at full scale", {}, ["data.format=dali"], "data.format"),
    ("unlabelled images", {}, ["data.no_labels=true"], "data.no_labels"),
    # sizes the dataset cannot fill, refused as written rather than shrunk by scale=smoke
    ("crop larger than the images at smoke scale", {}, ["augmentations.0.crop_size=100000", "scale=smoke"],
     "augmentations.0.crop_size"),
    ("batch larger than the dataset at smoke scale", {}, ["optimizer.batch_size=50001", "scale=smoke"],
     "optimizer.batch_size"),
    ("Un-Mix suffix twice", {}, ["method=simclr_unmix_unmix"], "method"),
    ("a name longer than a file name", {}, ["name=" + "x" * 5000], "name"),
]


@pytest.mark.parametrize("edits, overrides, key", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_config_is_one_line_naming_the_key(tmp_path, capsys, edits, overrides, key):
    write_fake_dataset("cifar10", tmp_path / "cifar", num_per_class=1)
    recipe = {**SOLO_STYLE, "data": {"dataset": "cifar10", "train_path": "cifar"}, **edits}
    if "optimizer" in edits:
        recipe["optimizer"] = {**SOLO_STYLE["optimizer"], **edits["optimizer"]}

    status = main([str(write_recipe(tmp_path, recipe)), *overrides])

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"error: {key}:") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("results.json"))


def test_missing_path_error_names_the_path(tmp_path, capsys):
    recipe = write_recipe(tmp_path, SOLO_STYLE)

    assert main([str(recipe)]) == 2
    assert str(tmp_path / "absent") in capsys.readouterr().err


def test_checkpoint_write_is_atomic(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, target)
    with pytest.raises(RuntimeError):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2, "bad": Unpicklable()}, target)

    assert torch.load(target, weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    # a partial file left by a killed writer is never taken for a checkpoint
    (target.parent / ".epoch=3-step=9.ckpt.partial-123").write_bytes(b"half")
    assert RunDir(tmp_path).newest_checkpoint() == target
    atomic_write(tmp_path / "x.json", lambda file: file.write(b"{}"))
    assert (tmp_path / "x.json").read_bytes() == b"{}"


def test_device_indices_need_gpus(tmp_path):
    cfg = load_config(write_recipe(tmp_path, SOLO_STYLE), ["devices=[0]"])
    if torch.cuda.is_available():
        pytest.skip("a GPU machine accepts device index 0")
    with pytest.raises(ConfigError, match=r"^devices: "):
        run(cfg)


# --------------------------------------------------------------------------- bf16 on a CPU without it

def test_the_bf16_check_reads_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or platform.machine() != "x86_64":
        pytest.skip("the CPU's flags are read from Linux's /proc/cpuinfo on x86")
    flags = {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for flag in line.split()}
    assert trainer.cpu_has_bf16_instructions() == ("avx512_bf16" in flags)


@pytest.mark.parametrize("precision, accelerator, native, warned", [
    ("bf16-mixed", "cpu", False, True),
    ("bf16-true", "cpu", False, True),
    ("bf16-mixed", "cpu", True, False),
    ("32-true", "cpu", False, False),
    ("bf16-mixed", "gpu", False, False),
])
def test_bf16_on_a_cpu_that_emulates_it_is_one_warning_line(precision, accelerator, native, warned, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(trainer, "cpu_has_bf16_instructions", lambda: native)
    cfg = load_config(write_recipe(tmp_path, SOLO_STYLE), [f"precision={precision}"])
    notice = trainer.emulated_bf16_notice(cfg, trainer.DevicePlan(accelerator, "auto", 1))
    if not warned:
        assert notice is None
        return
    assert "\n" not in notice and f"precision {precision}" in notice and "precision=32-true" in notice


def test_run_prints_the_bf16_warning_before_it_reads_the_data(tmp_path, monkeypatch, capsys):
    class DataReached(Exception):
        pass

    def load_split(*args, **kwargs):
        raise DataReached

    monkeypatch.setattr(trainer, "cpu_has_bf16_instructions", lambda: False)
    monkeypatch.setattr(run_module, "load_split", load_split)
    cfg = load_config(write_recipe(tmp_path, SOLO_STYLE), ["precision=bf16-mixed", "accelerator=cpu"])
    with pytest.raises(DataReached):
        run(cfg)
    assert capsys.readouterr().out.splitlines() == [trainer.emulated_bf16_notice(cfg, trainer.device_plan(cfg))]
