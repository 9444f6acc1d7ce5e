"""Long runs lose nothing and fail in one line: exact resume, NaN guard, DDP on CPU, bad inputs, determinism.

Runs here are tiny full-scale recipes on fake CIFAR-10 (10 images, one 8-image batch of
8-pixel crops per epoch, so an epoch is one optimizer step and a checkpoint). They run in
this process (``run``/``main``), in a forked child where a process must die, and in two
fresh processes for DDP.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import multiprocessing
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from unmix_ext.runner import data as data_module
from unmix_ext.runner.builder import ssl_methods
from unmix_ext.runner.config import load_config
from unmix_ext.runner.fake_data import write_fake_dataset
from unmix_ext.runner.guard import LossNotFiniteError, NanGuard
from unmix_ext.run import main
from unmix_ext.runner.run import run
from unmix_ext.runner.rundir import RunDir

pytestmark = pytest.mark.filterwarnings("ignore")

REPO = Path(__file__).resolve().parents[1]

RECIPE = {
    "method": "simclr_unmix",
    "backbone": {"name": "resnet18"},
    "method_kwargs": {"proj_hidden_dim": 32, "proj_output_dim": 16},
    "data": {"dataset": "cifar10", "num_workers": 0},
    "augmentations": [{"crop_size": 8, "num_crops": 2}],
    "optimizer": {"name": "lars", "batch_size": 8, "lr": 0.3, "classifier_lr": 0.1, "weight_decay": 1.0e-5,
                  "kwargs": {"eta": 0.02}},
    "scheduler": {"name": "warmup_cosine", "warmup_epochs": 1},
    "max_epochs": 3,
    "precision": "32-true",
    "eval": {"knn": {"enabled": False}, "linear": {"enabled": False}},
}
# what each method needs beyond RECIPE to fit a batch of 8
METHOD_KWARGS = {"mocov2_unmix": ["method_kwargs.queue_size=32"]}
PARTS = ("unmix/base_loss", "unmix/mix_loss", "unmix/lam", "unmix/global")


@pytest.fixture(autouse=True)
def _restore_torch_flags():
    # deterministic=true makes Lightning switch torch's global flag on; later tests expect it as it was
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    """Fake CIFAR-10 in its release format: 10 training and 10 test images of 32x32."""
    return write_fake_dataset("cifar10", tmp_path_factory.mktemp("cifar") / "cifar10", num_per_class=1)


def write_recipe(folder: Path, train_path: Path, dataset: str = "cifar10", name: str = "recipe.yaml",
                 **edits) -> Path:
    """RECIPE on ``train_path``, checkpoints under ``folder/runs``; ``edits`` replace top-level keys."""
    recipe = json.loads(json.dumps(RECIPE))
    recipe["data"].update(dataset=dataset, train_path=str(train_path))
    recipe["checkpoint"] = {"dir": str(folder / "runs")}
    path = folder / name
    path.write_text(yaml.safe_dump({**recipe, **edits}))
    return path


def load(recipe: Path, *overrides: str):
    return load_config(recipe, overrides, known_methods=ssl_methods())


def checkpoint_files(run_dir: Path) -> list[str]:
    return sorted(path.name for path in (run_dir / "checkpoints").iterdir())


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and err.endswith(lines[0] + "\n"), err[-3000:]
    return lines[0]


def assert_no_results(folder: Path) -> None:
    assert not list(folder.rglob("results.json")) and not list(folder.rglob(".*.partial-*"))


# ---------------------------------------------------------------------------
# 1. exact resume


def _die_while_saving(cfg, step: int) -> None:
    """Runs ``cfg``; SIGKILLs itself halfway through writing the checkpoint of global step ``step``."""
    save = torch.save

    def dying_save(obj, file, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("global_step") == step:
            file.write(b"PK\x03\x04 half a checkpoint")
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return save(obj, file, *args, **kwargs)

    torch.save = dying_save
    run(cfg)


def _logged_steps(run_dir: Path, version: int) -> dict[int, torch.Tensor]:
    """``{global step: float32 [base loss, mix loss, lam, global]}`` from a run's CSV log."""
    path = run_dir / "logs" / "pretrain" / f"version_{version}" / "metrics.csv"
    rows = [row for row in csv.DictReader(path.open()) if row.get(PARTS[0])]
    return {int(row["step"]): torch.tensor([float(row[key]) for key in PARTS]) for row in rows}


def _final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same(ours, theirs, where: str = "checkpoint") -> None:
    """Nested checkpoint contents equal: tensors within float tolerance, everything else exactly."""
    if torch.is_tensor(ours):
        torch.testing.assert_close(ours, theirs, msg=where)
    elif isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), where
        for key in ours:
            assert_same(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, where


# (method, loader processes): one run of each family shape, with and without loader processes
@pytest.mark.parametrize("method, workers", [("simclr_unmix", 1), ("mocov2_unmix", 0)])
def test_run_killed_while_checkpointing_resumes_exactly(tmp_path, cifar, method, workers):
    recipe = write_recipe(tmp_path, cifar)
    overrides = [f"method={method}", *METHOD_KWARGS.get(method, []), "max_epochs=4", "deterministic=true",
                 f"data.num_workers={workers}"]
    reference = run(load(recipe, *overrides, f"checkpoint.dir={tmp_path / 'reference'}"))
    cfg = load(recipe, *overrides, f"checkpoint.dir={tmp_path / 'killed'}")
    run_dir = RunDir.of(cfg).path

    child = multiprocessing.get_context("fork").Process(target=_die_while_saving, args=(cfg, 3))
    child.start()
    child.join(timeout=300)
    if child.is_alive():
        child.kill()

    assert child.exitcode == -signal.SIGKILL
    files = checkpoint_files(run_dir)
    assert [name for name in files if name.startswith(".")] == [f".epoch=2-step=3.ckpt.partial-{child.pid}"]
    good = RunDir(run_dir).newest_checkpoint()
    assert torch.load(good, map_location="cpu", weights_only=True)["global_step"] == 2
    assert not (run_dir / "results.json").exists()

    resumed = run(cfg)

    assert (resumed["start_global_step"], resumed["global_step"]) == (2, reference["global_step"]) == (2, 4)
    assert resumed["resumed_from"] == str(good)
    # the loss curve after the restart is the uninterrupted run's: same lam, mode, base and mixture losses
    after = _logged_steps(run_dir, version=1)
    before = _logged_steps(Path(reference["run_dir"]), version=0)
    assert sorted(after) == [2, 3]
    torch.testing.assert_close({step: before[step] for step in after}, after)
    # and so is everything it ends with: weights, momentum encoder, queue, optimizer, scheduler, generators
    ours, theirs = _final_state(run_dir), _final_state(Path(reference["run_dir"]))
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch"):
        assert_same(ours[key], theirs[key], key)
    for callback in ("ResumeState", "NanGuard"):
        assert_same(ours["callbacks"][callback], theirs["callbacks"][callback], callback)


# ---------------------------------------------------------------------------
# 2. NaN guard


class _Line(pl.LightningModule):
    """y = w.x on 4 fixed points, SGD with momentum and weight decay; the loss is NaN at ``bad_steps``."""

    def __init__(self, bad_steps: set[int]) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.bad_steps = bad_steps
        self.weights: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * float("nan") if self.global_step in self.bad_steps else loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.weights.append(self.layer.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)


def _fit_line(bad_steps: set[int], guard: NanGuard) -> _Line:
    torch.manual_seed(0)
    model = _Line(bad_steps)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[guard])
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(4, 3)), batch_size=4))
    return model


def test_nan_guard_skips_a_bad_step_without_moving_weights_or_momentum():
    guard = NanGuard(max_skipped_steps=1)
    model = _fit_line({2}, guard)

    weights = model.weights
    assert guard.skipped == [2] and len(weights) == 4
    assert torch.equal(weights[2], weights[1])  # no gradient, no weight decay, no momentum carried over
    assert not torch.equal(weights[3], weights[2]) and all(torch.isfinite(w).all() for w in weights)


def test_nan_guard_stops_past_its_budget():
    with pytest.raises(LossNotFiniteError, match=r"^loss: not finite at global step 3 \(epoch 3\), after 1 "
                                                 r"skipped step\(s\): loss nan; .*no checkpoint was written yet"):
        _fit_line({1, 3}, NanGuard(max_skipped_steps=1))
    with pytest.raises(ValueError, match="max_skipped_steps"):
        NanGuard(max_skipped_steps=-1)


def _nan_mixture_at(monkeypatch, method: str, step: int) -> None:
    cls = ssl_methods()[method]
    mixture_loss = cls.mixture_loss

    def poisoned(self, *args, **kwargs):
        loss = mixture_loss(self, *args, **kwargs)
        return loss * float("nan") if self.global_step == step else loss

    monkeypatch.setattr(cls, "mixture_loss", poisoned)


def test_nan_loss_stops_the_run_naming_step_parts_and_kept_checkpoint(tmp_path, cifar, capsys, monkeypatch):
    recipe = write_recipe(tmp_path, cifar)
    _nan_mixture_at(monkeypatch, "simclr_unmix", step=2)

    assert main([str(recipe)]) == 2

    line = one_error_line(capsys)
    run_dir = RunDir.of(load(recipe)).path
    kept = run_dir / "checkpoints" / "epoch=1-step=2.ckpt"
    assert line.startswith("error: loss: not finite at global step 2 (epoch 2): loss nan (base ")
    assert ", mix nan); training stopped, the last good checkpoint " f"{kept} is kept" in line
    assert "nan_guard.max_skipped_steps=N" in line
    assert torch.load(kept, map_location="cpu", weights_only=True)["global_step"] == 2
    assert_no_results(tmp_path)

    # following the advice resumes from the kept checkpoint, in the same run directory
    with pytest.warns(UserWarning, match=r"global step 2: loss nan .*step skipped"):
        results = run(load(recipe, "nan_guard.max_skipped_steps=1"))
    assert Path(results["run_dir"]) == run_dir
    assert (results["start_global_step"], results["skipped_steps"], results["global_step"]) == (2, [2], 3)


def test_nan_guard_option_skips_and_records_the_step(tmp_path, cifar, monkeypatch):
    recipe = write_recipe(tmp_path, cifar)
    _nan_mixture_at(monkeypatch, "simclr_unmix", step=1)

    with pytest.warns(UserWarning, match=r"global step 1: loss nan .*step skipped \(1 of nan_guard"):
        results = run(load(recipe, "nan_guard.max_skipped_steps=1"))

    assert results["skipped_steps"] == [1] and results["global_step"] == 3
    weights = torch.load(results["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(value).all() for value in weights.values() if value.is_floating_point())
    assert json.loads((Path(results["run_dir"]) / "results.json").read_text())["skipped_steps"] == [1]


# ---------------------------------------------------------------------------
# 3. two processes on one machine (gloo on CPU, Lightning's DDP strategy)

# runs each recipe with `python -m unmix_ext.run`'s main(), recording every Un-Mix draw and the
# trained model of this process; Lightning starts rank 1 by running this script again
DDP_DRIVER = '''
import sys
from pathlib import Path

import torch
from pytorch_lightning.utilities import rank_zero_only

import unmix_ext.runner.run as runner
from unmix_ext import mixing
from unmix_ext.run import main

out, recipes = Path(sys.argv[1]), sys.argv[2:]
draws, models = [], []
mix, build = mixing.UnMix.__call__, runner.build_method


def recorded(self, images, generator=None):
    result = mix(self, images, generator)
    draws.append((images.shape[0], float(result.lam), result.mode))
    return result


def built(*args, **kwargs):
    models.append(build(*args, **kwargs))
    return models[-1]


mixing.UnMix.__call__, runner.build_method = recorded, built
for recipe in recipes:
    draws.clear()
    models.clear()
    status = main([recipe])
    torch.save({"status": status, "draws": list(draws), "state": models[0].state_dict()},
               out / f"{Path(recipe).stem}-rank{rank_zero_only.rank}.pt")
'''


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two processes need two CPU cores")
def test_two_processes_mix_their_own_batches_and_rank_zero_records(tmp_path):
    cifar = write_fake_dataset("cifar10", tmp_path / "cifar10", num_per_class=2)  # 20 images: 10 per process
    optimizer = {**RECIPE["optimizer"], "batch_size": 4}
    queue = {**RECIPE["method_kwargs"], "queue_size": 64}
    recipes = {
        method: write_recipe(tmp_path, cifar, name=f"{method}.yaml", method=method, devices=2, max_epochs=1,
                             optimizer=optimizer, **extra)
        for method, extra in (("simclr_unmix", {}), ("mocov2_unmix", {"method_kwargs": queue}))
    }
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WANDB_MODE", None)

    done = subprocess.run([sys.executable, str(driver), str(tmp_path), *map(str, recipes.values())],
                          cwd=REPO, capture_output=True, text=True, timeout=400, env=env)

    assert done.returncode == 0, done.stderr[-3000:]
    for method, recipe in recipes.items():
        ranks = [torch.load(tmp_path / f"{method}-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
        assert [rank["status"] for rank in ranks] == [0, 0]
        # each process mixed its own 4 images at each of the 2 steps, with its own draws
        for rank in ranks:
            assert [n for n, _, _ in rank["draws"]] == [4] * 2
        assert [lam for _, lam, _ in ranks[0]["draws"]] != [lam for _, lam, _ in ranks[1]["draws"]]
        # gradients were averaged and gathered keys queued alike: the processes end identical
        torch.testing.assert_close(ranks[0]["state"], ranks[1]["state"])
        if method == "mocov2_unmix":  # 2 steps x 2 processes x 4 keys entered the queue
            assert int(ranks[0]["state"]["queue_ptr"]) == 16
        run_dir = RunDir.of(load(recipe)).path
        results = json.loads((run_dir / "results.json").read_text())
        assert (results["world_size"], results["global_step"], results["method"]) == (2, 2, method)
        assert checkpoint_files(run_dir) == ["epoch=0-step=2.ckpt", "last.ckpt"]
        # every process's random generators, gathered into the checkpoint, are data too
        saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert len(saved["callbacks"]["ResumeState"]["random"]) == 2
    assert len(list((tmp_path / "runs").rglob("results.json"))) == 2  # one per run, from rank 0


# ---------------------------------------------------------------------------
# 4. bad input: one line naming the thing and what to do, and no results file


def _image_folder(root: Path, broken: dict[str, bytes] | None = None, empty_class: bool = False) -> Path:
    """A 2-class image folder of 6 training images per class; ``broken`` files join the first class."""
    write_fake_dataset("image_folder", root, num_per_class=6, num_classes=2)
    first = sorted((root / "train").iterdir())[0]
    for name, content in (broken or {}).items():
        (first / name).write_bytes(content)
    if empty_class:
        (root / "train" / "zz_empty").mkdir()
    return root


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


TRUNCATED = {"truncated.png": _png_bytes()[:60], "garbage.png": b"not an image at all"}


BAD = {
    "corrupt image (folder read up front)": "corrupt",
    "empty dataset": "empty",
    "class folder without images": "empty_class",
    "recipe path that does not exist": "no_recipe",
    "read-only output directory": "read_only",
    "crop larger than the images": "big_crop",
    "corrupted checkpoint file": "bad_checkpoint",
    "checkpoint whose pickle runs code": "hostile_checkpoint",
}


@pytest.mark.parametrize("case", list(BAD.values()), ids=list(BAD))
def test_bad_input_is_one_line(tmp_path, cifar, capsys, monkeypatch, hostile_checkpoint, case):
    recipe = write_recipe(tmp_path, cifar)
    args = [str(recipe)]
    if case == "corrupt":
        root = _image_folder(tmp_path / "folder", TRUNCATED)
        recipe = write_recipe(tmp_path, root, dataset="image_folder")
        broken = sorted((root / "train").iterdir())[0] / "garbage.png"
        expected = f"error: data.train_path: {broken} cannot be read as an image ("
        needle = "on_corrupt='skip'"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        recipe = write_recipe(tmp_path, tmp_path / "empty", dataset="image_folder")
        expected, needle = f"error: data.train_path: {tmp_path / 'empty'} holds no images", "ImageFolder layout"
    elif case == "empty_class":
        root = _image_folder(tmp_path / "folder", empty_class=True)
        recipe = write_recipe(tmp_path, root, dataset="image_folder")
        expected = f"error: data.train_path: class folder {root / 'train' / 'zz_empty'} has no image files"
        needle = "ImageFolder layout"
    elif case == "no_recipe":
        args = [str(tmp_path / "missing.yaml")]
        expected, needle = f"error: recipe: file not found: {tmp_path / 'missing.yaml'}", ""
    elif case == "read_only":
        out = tmp_path / "runs"
        out.mkdir()
        out.chmod(0o555)
        if os.geteuid() == 0:  # root writes through permission bits: answer as a read-only mount would
            def refuse(*_args, **_kwargs):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))

            monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
        expected, needle = f"error: checkpoint.dir: cannot write to {out} (", "choose another checkpoint.dir"
    elif case == "big_crop":
        args.append("augmentations.0.crop_size=64")
        expected = "error: augmentations.0.crop_size: 64 px is larger than the 32x32 images of cifar10"
        needle = "use a crop_size <= 32"
    else:  # the newest checkpoint of the run directory, which a rerun resumes from
        newest = RunDir.of(load(recipe)).path / "checkpoints" / "epoch=0-step=1.ckpt"
        newest.parent.mkdir(parents=True)
        if case == "bad_checkpoint":
            newest.write_bytes(b"PK\x03\x04 cut short by a crash")
            expected = f"error: checkpoint: {newest} cannot be read ("
        else:
            hostile_checkpoint.write(newest)
            expected = f"error: checkpoint: {newest} {hostile_checkpoint.refusal}move {newest} away"
        needle = "or set auto_resume.enabled=false"

    try:
        assert main(args) == 2
    finally:
        if case == "read_only":
            (tmp_path / "runs").chmod(0o755)

    line = one_error_line(capsys)
    assert line.startswith(expected) and needle in line, line
    assert_no_results(tmp_path)
    assert not hostile_checkpoint.victim.exists()


@pytest.mark.parametrize("scale", ["full", "smoke"])
def test_corrupt_images_skipped_by_option_with_a_count(tmp_path, scale):
    root = _image_folder(tmp_path / "folder", TRUNCATED)
    recipe = write_recipe(tmp_path, root, dataset="image_folder")

    with pytest.warns(UserWarning, match=r"data.train_path: skipped 2 unreadable image file\(s\)"):
        results = run(load(recipe, "data.on_corrupt=skip", "max_epochs=1", f"scale={scale}"))

    assert results["global_step"] == 1


def test_corrupt_image_met_in_a_loader_process_is_one_line(tmp_path, capsys, monkeypatch):
    # a large dataset is checked as it is read, in the DataLoader's worker processes
    monkeypatch.setattr(data_module, "VERIFY_UPFRONT_MAX", 0)
    root = _image_folder(tmp_path / "folder", {"truncated.png": TRUNCATED["truncated.png"]})
    recipe = write_recipe(tmp_path, root, dataset="image_folder")

    # one batch of all 13 files, so the broken one is read
    assert main([str(recipe), "data.num_workers=1", "max_epochs=1", "optimizer.batch_size=13"]) == 2

    line = one_error_line(capsys)
    broken = sorted((root / "train").iterdir())[0] / "truncated.png"
    assert line.startswith(f"error: data.train_path: {broken} cannot be read as an image"), line
    assert "Traceback" not in line and "worker" not in line
    assert_no_results(tmp_path)


def test_checkpoint_of_another_method_is_refused(tmp_path, cifar, capsys):
    recipe = write_recipe(tmp_path, cifar)
    other = run(load(recipe, "method=mocov2_unmix", "method_kwargs.queue_size=32", "max_epochs=1"))
    foreign = torch.load(other["checkpoint"], map_location="cpu", weights_only=True)
    checkpoints = RunDir.of(load(recipe)).path / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(foreign, checkpoints / "epoch=0-step=1.ckpt")

    assert main([str(recipe)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: checkpoint: {checkpoints / 'epoch=0-step=1.ckpt'} was written by method "
                           "mocov2_unmix, this recipe trains simclr_unmix; move "), line

    del foreign["callbacks"]  # a checkpoint from elsewhere: its weights tell
    torch.save(foreign, checkpoints / "epoch=0-step=1.ckpt")
    assert main([str(recipe)]) == 2
    line = one_error_line(capsys)
    assert " does not fit simclr_unmix: " in line and "written for another method, backbone or head" in line
    assert not (checkpoints.parent / "results.json").exists()


def test_lightning_reads_the_resumed_checkpoint_as_data_whatever_the_environment(tmp_path, cifar, monkeypatch,
                                                                                  hostile_checkpoint):
    # check_resumable refuses a hostile file before Lightning opens it; here Lightning's own read is on its own,
    # where torch's default (weights_only unless TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says otherwise) would unpickle it
    recipe = write_recipe(tmp_path, cifar)
    checkpoints = RunDir.of(load(recipe)).path / "checkpoints"
    checkpoints.mkdir(parents=True)
    hostile_checkpoint.write(checkpoints / "epoch=0-step=1.ckpt")
    monkeypatch.setattr("unmix_ext.runner.run.check_resumable", lambda *args: None)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

    with pytest.raises(pickle.UnpicklingError, match="io.open"):
        run(load(recipe))
    assert not hostile_checkpoint.victim.exists()


def assert_full_disk_at_step_two(line: str, checkpoints: Path) -> None:
    """``line`` reports the full disk that stopped the checkpoint of step 2; step 1's is kept, alone."""
    assert re.fullmatch(
        rf"error: checkpoint.dir: writing {re.escape(str(checkpoints / 'epoch=1-step=2.ckpt'))} failed \(No space "
        rf"left on device; [\d.]+ MB free\); the last complete checkpoint "
        rf"{re.escape(str(checkpoints / 'epoch=0-step=1.ckpt'))} is kept; free space there or choose another "
        "checkpoint.dir, then rerun", line), line
    assert checkpoint_files(checkpoints.parent) == ["epoch=0-step=1.ckpt", "last.ckpt"]


def test_full_disk_while_checkpointing_keeps_the_last_checkpoint(tmp_path, cifar, capsys, monkeypatch):
    recipe = write_recipe(tmp_path, cifar)
    save = torch.save

    def full_disk_at_step_two(obj, file, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("global_step") == 2:
            file.write(b"PK\x03\x04 the first bytes")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_at_step_two)

    assert main([str(recipe)]) == 2

    checkpoints = RunDir.of(load(recipe)).path / "checkpoints"
    assert_full_disk_at_step_two(one_error_line(capsys), checkpoints)
    assert_no_results(tmp_path)


# ---------------------------------------------------------------------------
# 5. determinism


def test_same_seed_and_config_give_identical_results(tmp_path, cifar):
    recipe = write_recipe(tmp_path, cifar)
    overrides = ["max_epochs=2", "eval.knn.enabled=true", "eval.knn.k=5", "eval.linear.enabled=true",
                 "eval.linear.max_epochs=1", "eval.linear.batch_size=8"]

    first, second = (run(load(recipe, *overrides, f"checkpoint.dir={tmp_path / name}")) for name in "ab")

    assert {"knn_top1", "linear_top1", "val_acc1"} <= set(first["metrics"])
    assert first["metrics"] == second["metrics"]
    # accuracies on 10 images are coarse: the weights they come from are identical too
    weights = [torch.load(r["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
               for r in (first, second)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


# ---------------------------------------------------------------------------
# 6. faults a cluster user meets (issue 24): resumes, preemption signals, two runs, a full disk


def test_last_checkpoint_holds_the_final_state_after_any_number_of_resumes(tmp_path, cifar, monkeypatch):
    recipe = write_recipe(tmp_path, cifar)
    for step in (1, 2):  # stopped after epoch 0, resumed, stopped after epoch 1
        with monkeypatch.context() as patch:
            _nan_mixture_at(patch, "simclr_unmix", step=step)
            assert main([str(recipe)]) == 2
    import unmix_ext.runner.run as runner

    built = []
    build = runner.build_method
    monkeypatch.setattr(runner, "build_method", lambda *args, **kwargs: built.append(build(*args, **kwargs))
                        or built[-1])

    results = run(load(recipe))

    run_dir = Path(results["run_dir"])
    last = run_dir / "checkpoints" / "last.ckpt"
    # one last.ckpt, no last-v1.ckpt beside it (Lightning keeps the checkpoints a run resumed from)
    assert [name for name in checkpoint_files(run_dir) if name.startswith("last")] == ["last.ckpt"]
    assert (results["start_global_step"], results["global_step"], results["checkpoint"]) == (2, 3, str(last))
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3
    assert_same(saved["state_dict"], built[0].state_dict(), "state_dict")


# `python -m unmix_ext.run` whose training steps take a while, so that a signal lands mid-run
SLOW_RUN = '''
import sys, time
from unmix_ext.runner.trainer import RunProgress
from unmix_ext.run import main

end = RunProgress.on_train_batch_end
RunProgress.on_train_batch_end = lambda self, *args: (time.sleep(0.5), end(self, *args))[1]
sys.exit(main(sys.argv[1:]))
'''


def _start_slow_run(recipe: Path, *overrides: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WANDB_MODE", None)
    # its own process group, which a scheduler signals as a whole
    return subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(recipe), *overrides], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(condition, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition(), f"never happened; the run ended with {process.poll()}"


# (signal, sent to the whole process group?, loader processes)
@pytest.mark.parametrize("signum, group, workers", [(signal.SIGTERM, True, 1), (signal.SIGUSR1, False, 0)],
                         ids=["SIGTERM to the group, with a loader process", "SIGUSR1 to the main process"])
def test_preemption_signal_stops_in_one_line_keeping_the_checkpoint(tmp_path, cifar, signum, group, workers):
    recipe = write_recipe(tmp_path, cifar)
    overrides = ["max_epochs=4", f"data.num_workers={workers}"]
    checkpoints = RunDir.of(load(recipe, *overrides)).path / "checkpoints"
    kept = checkpoints / "epoch=0-step=1.ckpt"
    process = _start_slow_run(recipe, *overrides)
    try:
        _wait_for(kept.exists, process)
        os.killpg(process.pid, signum) if group else process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "DataLoader worker" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert err.endswith(lines[0] + "\n") and len(lines) == 1, err[-3000:]
    assert re.fullmatch(rf"error: preempted: {signal.Signals(signum).name} received at global step \d \(epoch \d\); "
                        rf"training stopped, the last complete checkpoint {re.escape(str(kept))} is kept and the "
                        "same command resumes from it", lines[0]), lines[0]
    assert_no_results(tmp_path)

    resumed = run(load(recipe, *overrides))  # the rerun a scheduler's requeue makes

    assert (resumed["start_global_step"], resumed["global_step"]) == (1, 4)
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 4


def test_second_run_on_a_live_run_directory_stops_and_a_dead_holders_lock_is_taken_over(tmp_path, cifar, capsys):
    recipe = write_recipe(tmp_path, cifar)
    run_dir = RunDir.of(load(recipe, "max_epochs=4"))
    first = _start_slow_run(recipe, "max_epochs=4")
    try:
        _wait_for((run_dir.checkpoints / "epoch=0-step=1.ckpt").exists, first)

        assert main([str(recipe), "max_epochs=4"]) == 2  # this process, while the first one trains

        line = one_error_line(capsys)
        assert re.fullmatch(
            rf"error: run directory: {re.escape(str(run_dir.path))} is in use by another run \(PID {first.pid} on "
            rf"{re.escape(socket.gethostname())} since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC\); wait for it to end or "
            r"stop it \(a rerun of the same command then resumes its checkpoint\)", line), line
        assert first.poll() is None  # the live run goes on, its files untouched
        assert not run_dir.results.exists() and (run_dir.checkpoints / "epoch=0-step=1.ckpt").exists()
    finally:
        first.kill()  # dies holding the lock
        first.communicate()

    results = run(load(recipe, "max_epochs=4"))

    assert (f"unmix_ext: run directory: {run_dir.path} was held by PID {first.pid} on {socket.gethostname()} since "
            in capsys.readouterr().out)
    assert results["start_global_step"] >= 1 and results["global_step"] == 4
    assert not run_dir.lock_holder.exists()  # released at the end
    assert main([str(recipe), "max_epochs=4"]) == 0  # and free for the next run


def test_full_disk_before_training_is_one_line(tmp_path, cifar, capsys, monkeypatch):
    import unmix_ext.runner.run as runner

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runner, "atomic_write_text", full_disk)
    recipe = write_recipe(tmp_path, cifar)

    assert main([str(recipe)]) == 2

    config = RunDir.of(load(recipe)).config
    assert re.fullmatch(rf"error: checkpoint.dir: writing {re.escape(str(config))} failed \(No space left on device; "
                        r"[\d.]+ MB free\); free space there or choose another checkpoint.dir, then rerun",
                        one_error_line(capsys))


@pytest.fixture
def small_disk(tmp_path):
    """A 130 MB tmpfs (one checkpoint of RECIPE's network is 90 MB: the second does not fit); needs root."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=130m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (the injected ENOSPC test above covers the message)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_one_line_naming_the_free_space_and_a_rerun_resumes(tmp_path, cifar, capsys, small_disk):
    recipe = write_recipe(tmp_path, cifar)
    overrides = [f"checkpoint.dir={small_disk}", "max_epochs=2"]

    assert main([str(recipe), *overrides]) == 2

    checkpoints = RunDir.of(load(recipe, *overrides)).checkpoints
    assert_full_disk_at_step_two(one_error_line(capsys), checkpoints)
    assert_no_results(small_disk)

    # with room again, the same command resumes from the kept checkpoint
    subprocess.run(["mount", "-o", "remount,size=250m", str(small_disk)], check=True)
    results = run(load(recipe, *overrides))
    assert (results["start_global_step"], results["global_step"]) == (1, 2)


def test_sigusr1_under_slurm_requeues_through_lightning_and_stops(tmp_path, cifar, capsys, monkeypatch):
    # a SLURM job's environment, and an `scontrol` that records what it was asked
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "pretrain", "SLURM_JOB_ID": "4242",
                       "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)
    import unmix_ext.runner.trainer as trainer_module

    end = trainer_module.RunProgress.on_train_batch_end

    def signalled_at_step_two(self, trainer, *args):
        end(self, trainer, *args)
        if trainer.global_step == 2:  # as SLURM does, --signal=USR1@90 before the time limit
            os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(trainer_module.RunProgress, "on_train_batch_end", signalled_at_step_two)
    recipe = write_recipe(tmp_path, cifar)
    before = signal.getsignal(signal.SIGUSR1)

    assert main([str(recipe)]) == 128 + signal.SIGUSR1

    run_dir = RunDir.of(load(recipe))
    line = one_error_line(capsys)
    assert line.startswith("error: preempted: SIGUSR1 received at global step 2 (epoch 1); training stopped, the "
                           f"last complete checkpoint {run_dir.checkpoints / 'epoch=0-step=1.ckpt'} is kept"), line
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"  # Lightning's requeue ran after ours
    hpc = torch.load(run_dir.path / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)  # in the run dir
    assert hpc["global_step"] == 2
    assert signal.getsignal(signal.SIGUSR1) == before  # handlers restored
    assert_no_results(tmp_path)
