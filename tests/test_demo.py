"""``make demo`` (``python -m unmix_ext.demo``) without training: recipes, data set-up, history, table, figure."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from unmix_ext.tools import demo
from unmix_ext.runner.builder import ssl_methods
from unmix_ext.runner.config import config_to_dict, resolved_method
from unmix_ext.runner.data import FASHION_MNIST_ROOT, DataError
from unmix_ext.runner.pipeline import load_split
from unmix_ext.runner.run import check_runtime

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_idx_files(root: Path, gz: bool = True) -> None:
    """Empty stand-ins for the four IDX files: enough for the presence check, not for reading."""
    root.mkdir(parents=True, exist_ok=True)
    for name in demo.IDX_FILES:
        (root / (f"{name}.gz" if gz else name)).write_bytes(b"")


@pytest.fixture
def machine(monkeypatch):
    """A machine whose apt, privileges and network the test sets; records every command and download."""
    state = {"debian": False, "root": False, "commands": [], "downloads": [], "apt_knows": True,
             "on_install": None, "on_download": None}

    def system(command):
        state["commands"].append(command)
        if command[:2] == ["apt-cache", "show"]:
            return 0 if state["apt_knows"] else 100
        if command[:2] == ["apt-get", "install"] and state["on_install"]:
            state["on_install"]()
        return 0

    def download(root):
        state["downloads"].append(root)
        if state["on_download"] is None:
            raise DataError("download: fetching Fashion-MNIST failed (offline)")
        state["on_download"](root)

    monkeypatch.setattr(demo, "_is_debian", lambda: state["debian"])
    monkeypatch.setattr(demo, "_is_root", lambda: state["root"])
    monkeypatch.setattr(demo, "_system", system)
    monkeypatch.setattr(demo, "_download", download)
    return state


# --------------------------------------------------------------------------- recipes


@pytest.fixture(scope="module")
def recipes():
    return [demo.demo_config(path, []) for path in demo.RECIPES]


def test_demo_recipes_load_validate_and_differ_only_by_unmix(recipes):
    base, unmix = recipes
    for cfg in recipes:
        check_runtime(cfg)
        assert cfg.data.dataset == "fashion_mnist" and cfg.data.train_path is None  # the Debian package's root
        assert cfg.backbone.kwargs == {"cifar": False}
        assert cfg.checkpoint.dir == "runs/demo"  # from the working directory, as every relative path
    assert (resolved_method(base), resolved_method(unmix)) == ("simclr", "simclr_unmix")
    same = {**config_to_dict(unmix), "name": base.name, "unmix": dataclasses.asdict(base.unmix)}
    assert same == config_to_dict(base)  # same seed, data, budget and evaluation


def test_demo_recipes_keep_the_online_knn_and_leave_offline_scores_to_the_demo(recipes):
    from unmix_ext.runner.builder import solo_method_kwargs

    for cfg in recipes:
        assert solo_method_kwargs(cfg, num_classes=10)["knn_eval"]  # the curves need it
        assert not (cfg.eval.linear.enabled or cfg.eval.knn.enabled)  # the demo scores with all of train
        assert (cfg.eval.knn.k, cfg.eval.knn.temperature) == (200, 0.1)


def test_epochs_override_reaches_both_runs():
    for path in demo.RECIPES:
        assert demo.demo_config(path, ["max_epochs=1"]).max_epochs == 1


@pytest.mark.skipif(not demo.has_fashion_mnist(FASHION_MNIST_ROOT), reason="Fashion-MNIST is not installed")
def test_the_runner_validates_on_the_official_test_split(recipes):
    val = load_split(recipes[0], "val", None)
    assert len(val) == 10_000  # t10k; the train files hold 60,000
    assert len(load_split(recipes[0], "train", None)) == 6_000  # data.fraction of the 60,000


# --------------------------------------------------------------------------- data


def test_files_already_there_run_nothing(tmp_path, machine):
    _write_idx_files(tmp_path / "debian")
    machine.update(debian=True, root=True)
    assert demo.ensure_fashion_mnist(tmp_path / "debian", tmp_path / "data") == []
    assert machine["commands"] == [] and machine["downloads"] == []


def test_a_torchvision_copy_is_found_in_its_raw_folder(tmp_path, machine):
    _write_idx_files(tmp_path / "data" / "FashionMNIST" / "raw", gz=False)
    assert demo.ensure_fashion_mnist(tmp_path / "debian", tmp_path / "data") == [
        f"data.train_path={tmp_path / 'data'}"
    ]
    assert machine["commands"] == [] and machine["downloads"] == []


def test_absent_as_root_on_debian_installs_the_package(tmp_path, machine):
    machine.update(debian=True, root=True, apt_knows=False, on_install=lambda: _write_idx_files(tmp_path / "debian"))
    assert demo.ensure_fashion_mnist(tmp_path / "debian", tmp_path / "data") == []
    assert machine["commands"] == [
        ["apt-cache", "show", "dataset-fashion-mnist"],
        ["apt-get", "update"],  # the package was unknown to apt
        ["apt-get", "install", "-y", "dataset-fashion-mnist"],
    ]
    assert machine["downloads"] == []


def test_absent_not_root_online_downloads(tmp_path, machine):
    machine.update(debian=True, on_download=_write_idx_files)
    assert demo.ensure_fashion_mnist(tmp_path / "debian", tmp_path / "data") == [
        f"data.train_path={tmp_path / 'data'}"
    ]
    assert machine["commands"] == []  # apt needs root
    assert machine["downloads"] == [tmp_path / "data"]


def test_absent_not_root_offline_says_how_to_get_it_in_one_line(tmp_path, machine):
    machine.update(debian=True)
    with pytest.raises(DataError) as caught:
        demo.ensure_fashion_mnist(tmp_path / "debian", tmp_path / "data")
    message = str(caught.value)
    assert "\n" not in message
    assert "sudo apt-get install dataset-fashion-mnist" in message and str(tmp_path / "data") in message
    assert machine["commands"] == []


def test_main_reports_missing_data_as_one_error_line(tmp_path, monkeypatch, capsys):
    def missing():
        raise DataError("data: Fashion-MNIST is missing")

    monkeypatch.setattr(demo, "ensure_fashion_mnist", missing)
    from unmix_ext.demo import main

    assert main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: data: Fashion-MNIST is missing\n"


# --------------------------------------------------------------------------- history, table, figure


def _write_metrics(path: Path, rows: list[dict]) -> None:
    keys = ["epoch", "step", "train_nce_loss_step", "val_acc1", "val_knn_acc1"]
    path.parent.mkdir(parents=True)
    lines = [",".join(keys)] + [",".join(str(row.get(key, "")) for key in keys) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def test_history_reads_the_validation_rows_of_the_newest_log(tmp_path):
    logs = tmp_path / "logs" / "pretrain"
    _write_metrics(logs / "version_2" / "metrics.csv", [{"epoch": 0, "val_acc1": 1.0, "val_knn_acc1": 1.0}])
    _write_metrics(logs / "version_10" / "metrics.csv", [
        {"epoch": 0, "step": 5, "train_nce_loss_step": 4.2},
        {"epoch": 0, "step": 5, "val_acc1": 50.0, "val_knn_acc1": 60.0},
        {"epoch": 1, "step": 10, "val_acc1": 55.0, "val_knn_acc1": 65.5},
    ])
    assert demo.read_history(tmp_path) == {"epoch": [1, 2], "val_knn_acc1": [60.0, 65.5], "val_acc1": [50.0, 55.0]}
    with pytest.raises(DataError, match="metrics.csv"):
        demo.read_history(tmp_path / "absent")


def test_mix_examples_are_real_mixtures_with_their_lam():
    images = torch.rand(4 * demo.MIX_PAIRS, 3, 12, 12)
    examples = demo.mix_examples(images, torch.Generator().manual_seed(0))
    assert [e.mode for e in examples] == ["global"] * demo.MIX_PAIRS + ["region"] * demo.MIX_PAIRS
    for i, e in enumerate(examples):
        assert torch.equal(e.first, images[2 * i]) and torch.equal(e.second, images[2 * i + 1])
        assert 0.0 <= e.lam <= 1.0
        if e.mode == "global":
            torch.testing.assert_close(e.mixed, e.lam * e.first + (1 - e.lam) * e.second)
        else:
            from_first = (e.mixed == e.first).all(dim=0)
            assert torch.equal(e.mixed, torch.where(from_first, e.first, e.second))
            assert from_first.float().mean().item() == pytest.approx(e.lam)
    with pytest.raises(ValueError, match="images: need at least"):
        demo.mix_examples(images[:3], torch.Generator())


def test_linear_probe_separates_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(10, 16, generator=generator)
    train_targets, test_targets = torch.arange(500) % 10, torch.arange(200) % 10
    train = centres[train_targets] + torch.randn(500, 16, generator=generator)
    test = centres[test_targets] + torch.randn(200, 16, generator=generator)
    assert demo.linear_probe_top1(train, train_targets, test, test_targets) > 95.0
    shuffled = train_targets[torch.randperm(500, generator=generator)]  # labels unrelated to the features
    assert demo.linear_probe_top1(train, shuffled, test, test_targets) < 40.0


def test_plot_and_table_from_fake_runs(tmp_path):
    histories = {
        "simclr": {"epoch": [1, 2, 3], "val_knn_acc1": [60.0, 65.0, 70.0], "val_acc1": [50.0, 55.0, 60.0]},
        "simclr_unmix": {"epoch": [1, 2, 3], "val_knn_acc1": [59.0, 66.0, 71.0], "val_acc1": [49.0, 56.0, 61.0]},
    }
    examples = demo.mix_examples(torch.rand(4 * demo.MIX_PAIRS, 3, 28, 28), torch.Generator().manual_seed(1))
    knn = {"simclr": 72.0, "simclr_unmix": 73.0, demo.UNTRAINED: 74.0}
    path = demo.plot_demo(histories, examples, tmp_path / "out" / "demo.png", final_knn=knn)
    assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 10_000

    table = demo.render_table([
        {"method": "simclr", "knn_top1": 72.04, "linear_top1": 60.54, "pretrain_seconds": 100.4, "images_per_s": 250.6},
        {"method": "untrained backbone (reference)", "knn_top1": 74.0},
    ]).splitlines()
    assert table[0] == "| method | kNN top-1 (%) | linear top-1 (%) | pretrain time (s) | images/s |"
    assert table[2] == "| simclr | 72.0 | 60.5 | 100 | 251 |"
    assert table[3] == "| untrained backbone (reference) | 74.0 | - | - | - |"


def test_demo_runs_both_recipes_and_writes_table_and_figure(tmp_path, monkeypatch, capsys):
    """The orchestration, with training and evaluation stubbed: what reaches the runner, what comes out."""
    ran = []

    def fake_run(cfg, recipe):
        run_dir = tmp_path / cfg.name
        _write_metrics(run_dir / "logs" / "pretrain" / "version_0" / "metrics.csv",
                       [{"epoch": 0, "val_acc1": 50.0, "val_knn_acc1": 60.0}])
        ran.append((cfg.name, cfg.max_epochs, resolved_method(cfg)))
        return {"method": resolved_method(cfg), "checkpoint": str(run_dir / "last.ckpt"), "run_dir": str(run_dir),
                "metrics": {}, "pretrain_seconds": 10.0, "pretrain_images_per_s": 100.0}

    scores = iter([{"knn_top1": v, "linear_top1": v - 9} for v in (70.0, 71.0, 74.0)])
    monkeypatch.setattr(demo, "ensure_fashion_mnist", lambda: [])
    monkeypatch.setattr(demo, "run", fake_run)
    monkeypatch.setattr(demo, "load_backbone", lambda cfg, checkpoint, classes: checkpoint)
    monkeypatch.setattr(demo, "untrained_backbone", lambda cfg: "untrained")
    monkeypatch.setattr(demo, "score_backbone", lambda cfg, backbone: next(scores))
    monkeypatch.setattr(demo, "real_views", lambda cfg, count: torch.rand(count, 3, 28, 28))

    rows = demo.demo(epochs=2, out=tmp_path / "out")
    assert ran == [("demo-simclr", 2, "simclr"), ("demo-simclr_unmix", 2, "simclr_unmix")]
    assert [(r["method"], r["knn_top1"], r.get("linear_top1")) for r in rows] == [
        ("simclr", 70.0, 61.0), ("simclr_unmix", 71.0, 62.0), ("untrained backbone (reference)", 74.0, 65.0),
    ]
    assert (tmp_path / "out" / "demo.png").read_bytes()[:8] == PNG_SIGNATURE
    table = (tmp_path / "out" / "demo.md").read_text()
    assert "| simclr_unmix | 71.0 | 62.0 | 10 | 100 |" in table and "official test split" in table
    printed = capsys.readouterr().out
    assert table.split("\n\n")[1] in printed and demo.TABLE_NOTE in printed and demo.TABLE_NOTE in table


def test_scores_use_every_training_image_whatever_the_fraction(tmp_path):
    from unmix_ext.runner.fake_data import write_fake_dataset

    root = write_fake_dataset("fashion_mnist", tmp_path / "fmnist", num_per_class=6)  # 60 train, 30 test images
    cfg = demo.demo_config(demo.RECIPES[0], [f"data.train_path={root}", "data.num_workers=0", "data.fraction=0.5",
                                             "eval.knn.k=5"])
    seen = []

    class Pixels(torch.nn.Module):  # a "backbone" that counts the images it embeds
        def forward(self, images):
            seen.append(len(images))
            return images.flatten(1)

    scores = demo.score_backbone(cfg, Pixels())
    assert sum(seen) == 60 + 30
    assert set(scores) == {"knn_top1", "linear_top1"} and all(0 <= v <= 100 for v in scores.values())
