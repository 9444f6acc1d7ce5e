"""solo-learn 1.0.2's command line: a bash script of its ``bash_files/pretrain/`` written for GPUs runs
here with only its first line changed and Un-Mix on by ``--method <name>_unmix``; each flag becomes
the recipe key that means the same."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from unmix_ext.runner.builder import ssl_methods
from unmix_ext.runner.config import config_from_dict, load_config
from unmix_ext.main_pretrain import main as main_pretrain
from unmix_ext.tools.main_pretrain import to_recipe

pytestmark = pytest.mark.filterwarnings("ignore")

SOLO_BASH = Path(__file__).parent / "fixtures" / "solo_bash" / "byol.sh"


def _script_flags(script: Path, dataset: str = "cifar10") -> list[str]:
    """The flags of a solo-learn 1.0.2 bash script (after its first line), as bash would pass them."""
    lines = script.read_text().replace("$1", dataset).splitlines()
    return shlex.split(" ".join(line.rstrip("\\") for line in lines[1:]))


def _with(flags: list[str], flag: str, value: str) -> list[str]:
    flags = list(flags)
    flags[flags.index(flag) + 1] = value
    return flags


def test_solo_bash_script_trains_at_smoke_scale_with_unmix(tmp_path, capsys):
    flags = _with(_script_flags(SOLO_BASH), "--method", "byol_unmix")
    status = main_pretrain([*flags, "--scale", "smoke", "--checkpoint_dir", str(tmp_path), "--num_workers", "0"])

    assert status == 0, capsys.readouterr().err[-2000:]
    run_dir = next(tmp_path.glob("byol-cifar10-*"))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == "byol_unmix" and results["global_step"] > 0
    changes = results["smoke_changes"]
    assert changes["devices"] == {"from": [0, 1], "to": 1} and changes["strategy"] == {"from": "ddp", "to": "auto"}
    assert changes["sync_batchnorm"] == {"from": True, "to": False}
    # the run directory's config.yaml is a recipe: the YAML path runs it again
    saved = load_config(run_dir / "config.yaml", known_methods=ssl_methods())
    assert saved.momentum.base_tau == 0.98 and saved.wandb.entity == "my-team" and saved.unmix.enabled


def test_every_flag_of_a_solo_bash_script_is_translated(tmp_path):
    cfg = config_from_dict(to_recipe(_script_flags(SOLO_BASH)), known_methods=ssl_methods())
    assert (cfg.accelerator, cfg.devices, cfg.strategy, cfg.sync_batchnorm, cfg.precision) == (
        "gpu", [0, 1], "ddp", True, "16-mixed")
    assert (cfg.backbone.name, cfg.data.dataset, cfg.data.num_workers) == ("resnet18", "cifar10", 4)
    assert cfg.data.train_path == "datasets/cifar10/train" and cfg.data.val_path == "datasets/cifar10/val"
    assert cfg.max_epochs == 1000 and cfg.name == "byol-cifar10"
    assert cfg.optimizer.name == "lars" and cfg.optimizer.kwargs == {"eta": 0.02, "clip_lr": True,
                                                                       "exclude_bias_n_norm": True}
    # 1.0.2 scales lr by batch x GPUs / 256 but leaves classifier_lr as given: the recipe's rule then agrees
    assert (cfg.optimizer.lr, cfg.optimizer.batch_size) == (1.0, 128)
    assert cfg.optimizer.classifier_lr * 128 * 2 / 256 == pytest.approx(0.1)
    assert (cfg.optimizer.weight_decay, cfg.scheduler.name) == (1e-5, "warmup_cosine")
    assert cfg.scheduler.interval == "epoch"  # 1.0.2 had no other
    assert [g.gaussian_blur.prob for g in cfg.augmentations] == [1.0, 0.1]
    assert [g.solarization.prob for g in cfg.augmentations] == [0.0, 0.2]
    assert [g.num_crops for g in cfg.augmentations] == [1, 1]
    assert [g.color_jitter.saturation for g in cfg.augmentations] == [0.2, 0.2]
    assert (cfg.wandb.enabled, cfg.wandb.project, cfg.wandb.entity) == (True, "solo-learn", "my-team")
    assert cfg.checkpoint.enabled is True and cfg.auto_resume.enabled is False
    assert cfg.momentum == type(cfg.momentum)(base_tau=0.98, final_tau=1.0, classifier=True)
    assert cfg.method_kwargs == {"proj_output_dim": 32, "proj_hidden_dim": 64, "pred_hidden_dim": 64,
                                 "knn_eval": False, "knn_k": 20}
    assert (cfg.eval.knn.enabled, cfg.eval.linear.enabled, cfg.seed) == (False, False, 5)


@pytest.mark.parametrize("extra, starts", [
    (["--auto_umap"], "--auto_umap: "),
    (["--mean", "0.5", "0.5", "0.5"], "--mean: solo-learn 1.0.2 reads it for --dataset custom only"),
    (["--size", "64"], "--size: solo-learn 1.0.2 crops cifar10 at its own side"),
    (["--num_crops", "3"], "--num_crops: 2 augmentation pipelines give one crop each, got 3"),
    (["--no_such_flag", "1"], "command line: unrecognized arguments: --no_such_flag"),
    (["--method", "mae_unmix"], "--method: mae has no Un-Mix variant"),
    (["--method", "simclrr"], "--method: unknown method 'simclrr'; did you mean simclr"),
])
def test_bad_flag_is_one_line(capsys, extra, starts):
    assert main_pretrain([*_script_flags(SOLO_BASH), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {starts}") and err.count("\n") == 1, err
