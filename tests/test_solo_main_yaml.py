"""solo-learn main's pretraining YAML as it is: keys it accepts and ignores, its defaults, .yml files,
unlabelled data; and no score computed on training images without saying so."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from unmix_ext.errors import CommandError
from unmix_ext.run import main
from unmix_ext.runner.builder import ignored_keys, solo_method_kwargs
from unmix_ext.runner.config import ConfigError, config_to_dict, load_config
from unmix_ext.runner.linear import _checkpoint_of, check_linear_overrides
from unmix_ext.runner.pipeline import HELD_OUT_SHARE, eval_split, load_split
from unmix_ext.runner.recipe import load_recipe, recipe_from_dict

pytestmark = pytest.mark.filterwarnings("ignore")

FIXTURES = Path(__file__).parent / "fixtures" / "solo_yaml"
# solo-learn main's files carry Hydra's own block; recipes here do not
HYDRA_BLOCK = {"hydra": {"output_subdir": None, "run": {"dir": "."}}}


def _solo_main_file(tmp_path: Path, body: dict, name: str = "method.yaml") -> Path:
    """A file in solo-learn main's layout (defaults list, group folders, hydra block) beside the fixture's groups."""
    for group in ("augmentations", "wandb"):
        if not (tmp_path / group).exists():
            shutil.copytree(FIXTURES / group, tmp_path / group)
    recipe = {"defaults": ["_self_", {"augmentations": "asymmetric.yaml"}, {"override hydra/hydra_logging": "disabled"}],
              **HYDRA_BLOCK, "data": {"dataset": "cifar10", "train_path": "./datasets"}, **body}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


# solo-learn main's cifar files that 1.0.2 reads, with the keys solo-learn accepts and ignores for them
IGNORED = [
    ("nnsiam", {"momentum": {"base_tau": 0.99, "final_tau": 1.0}}, ["momentum.base_tau", "momentum.final_tau"]),
    ("ressl", {"method_kwargs": {"base_tau_momentum": 0.5, "final_tau_momentum": 0.6, "momentum_classifier": None,
                                 "temperature_q": 0.1}},
     ["method_kwargs.base_tau_momentum", "method_kwargs.final_tau_momentum", "method_kwargs.momentum_classifier"]),
    ("simsiam", {"method_kwargs": {"temperature": 0.2, "pred_hidden_dim": 512}}, ["method_kwargs.temperature"]),
    ("byol", {"dali": {"encode_indexes_into_labels": True}, "augmentations_cfg": "a.yaml", "wandb_cfg": "w.yaml"},
     ["dali.encode_indexes_into_labels", "augmentations_cfg", "wandb_cfg"]),
]


@pytest.mark.parametrize("method, body, ignored", IGNORED, ids=[case[0] for case in IGNORED])
def test_keys_solo_learn_ignores_are_accepted_listed_and_left_out_of_the_build(tmp_path, method, body, ignored):
    cfg = load_recipe(_solo_main_file(tmp_path, {"method": method, **body}), ["unmix.enabled=true"])

    assert ignored_keys(cfg) == ignored
    kwargs = solo_method_kwargs(cfg, num_classes=10)
    built = {"nnsiam": lambda: "base_tau_momentum" not in kwargs,  # no momentum encoder to apply it to
             # solo-learn main reads momentum.*, not these copies; the method's defaults stand
             "ressl": lambda: (kwargs["base_tau_momentum"], kwargs["final_tau_momentum"], kwargs["temperature_q"])
             == (0.99, 1.0, 0.1),
             "simsiam": lambda: "temperature" not in kwargs and kwargs["pred_hidden_dim"] == 512,
             "byol": lambda: "encode_indexes_into_labels" not in kwargs}
    assert built[method]()


def test_a_method_argument_no_method_takes_is_still_a_typo(tmp_path):
    with pytest.raises(ConfigError, match=r"^method_kwargs.temperatur: not an argument of simsiam_unmix"):
        load_recipe(_solo_main_file(tmp_path, {"method": "simsiam", "method_kwargs": {"temperatur": 0.2}}),
                    ["unmix.enabled=true"])


def test_solo_learn_main_defaults_apply_to_its_files_only(tmp_path):
    main_format = load_config(_solo_main_file(tmp_path, {"method": "byol"}))
    ours = tmp_path / "ours.yaml"
    ours.write_text(yaml.safe_dump({"method": "byol", "data": {"dataset": "cifar10"}}))
    recipe = load_config(ours)

    assert main_format.scheduler.warmup_start_lr == 3e-5 and recipe.scheduler.warmup_start_lr == 0.003
    assert (main_format.checkpoint.enabled, main_format.auto_resume.enabled) == (False, False)
    assert main_format.wandb.project == "solo-learn" and recipe.wandb.project == "unmix-ext"
    # what the file says wins over both
    assert load_config(_solo_main_file(tmp_path, {"method": "byol", "scheduler": {"warmup_start_lr": 0.1}},
                                       "set.yaml")).scheduler.warmup_start_lr == 0.1


def test_a_yml_file_composes_as_its_yaml_twin(tmp_path):
    body = {"method": "byol", "optimizer": {"lr": 0.7}}
    as_yaml = load_config(_solo_main_file(tmp_path / "a", body))
    yml = _solo_main_file(tmp_path / "b", body).rename(tmp_path / "b" / "method.yml")

    from_yml = load_config(yml, ["optimizer.lr=0.5"])  # overrides and group folders work as for .yaml

    assert config_to_dict(from_yml) == {**config_to_dict(as_yaml), "optimizer": {**config_to_dict(as_yaml)["optimizer"],
                                                                                 "lr": 0.5}}
    assert len(from_yml.augmentations) == 2 and from_yml.scheduler.warmup_start_lr == 3e-5


@pytest.mark.parametrize("method", ["vibcreg", "supcon", "mocov3", "all4one", "mae"])
def test_a_method_newer_than_1_0_2_loads_since_unmix_ext_adds_it(method):
    backbone = {"name": "vit_small"} if method == "mae" else {"name": "resnet18"}
    cfg = recipe_from_dict({"method": method, "backbone": backbone, "data": {"dataset": "cifar10"}})
    assert cfg.method == method


# --- unlabelled data and where scores come from


def _images(folder: Path, count: int, value: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def _folder_recipe(root: Path, **data) -> dict:
    return {"method": "simclr", "data": {"dataset": "custom", "train_path": str(root), "num_workers": 0, **data},
            "augmentations": [{"crop_size": 8, "num_crops": 2}]}


@pytest.mark.parametrize("layout", ["imgs", "imgs/train"])
def test_a_folder_without_val_images_holds_out_a_stated_share(tmp_path, layout):
    for name in ("a", "b"):
        _images(tmp_path / layout / name, 20, value=ord(name))
    cfg = recipe_from_dict(_folder_recipe(tmp_path / "imgs"))
    pretrain, val = load_split(cfg, "pretrain", None), load_split(cfg, "val", None)
    train = load_split(cfg, "train", None)

    assert eval_split(cfg) == "held_out"
    assert len(val) == round(HELD_OUT_SHARE * 40) and len(pretrain) == len(train) == 40 - len(val)
    assert sorted(val.targets) == [0, 0, 1, 1]  # class-balanced
    assert not set(val._items) & set(pretrain._items)  # never scored on an image it pretrained on
    assert eval_split(recipe_from_dict(_folder_recipe(tmp_path / "imgs", val_path=str(tmp_path / "imgs")))) == \
        "val_path"
    assert eval_split(recipe_from_dict({"method": "simclr", "data": {"dataset": "cifar10"}})) == "dataset"


def test_unlabelled_folder_pretrains_and_reports_no_scores(tmp_path, capsys):
    _images(tmp_path / "imgs", 16)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**_folder_recipe(tmp_path / "imgs", no_labels=True), "method": "simsiam",
                                      "method_kwargs": {"temperature": 0.2, "proj_hidden_dim": 16,
                                                        "proj_output_dim": 16, "pred_hidden_dim": 16},
                                      "optimizer": {"name": "sgd", "batch_size": 4}}))

    status = main([str(recipe), "scale=smoke", "unmix.enabled=true", f"checkpoint.dir={tmp_path / 'runs'}"])

    out, err = capsys.readouterr()
    assert status == 0, err[-2000:]
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert results["global_step"] > 0 and results["metrics"] == {}
    assert (results["eval_split"], results["no_labels"]) == (None, True)
    assert results["ignored_keys"] == ["method_kwargs.temperature"]
    assert out.count("notice: simsiam_unmix does not use method_kwargs.temperature") == 1
    assert "scored on    none: data.no_labels is true" in out


def test_unlabelled_data_needs_a_folder_dataset():
    with pytest.raises(ConfigError, match=r"^data.no_labels: true is for a folder of images"):
        recipe_from_dict({"method": "simclr", "data": {"dataset": "cifar10", "no_labels": True}})


# --- the linear command applies every key it is given, or refuses it


@pytest.mark.parametrize("override, hint", [("optimizer.lr=0.3", "eval.linear.lr"),
                                            ("max_epochs=100", "eval.linear.max_epochs"),
                                            ("scheduler.name=step", "eval.linear.scheduler"),
                                            ("method_kwargs.temperature=0.1", None)])
def test_linear_refuses_a_key_it_would_not_apply(override, hint):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}: not read by the linear protocol") as err:
        check_linear_overrides(["eval.linear.lr=0.2", "data.num_workers=0", override])
    assert (hint in str(err.value)) if hint else "the linear protocol's is" not in str(err.value)
    check_linear_overrides(["eval.linear.max_epochs=3", "scale=smoke", "data.val_path=x"])  # these it applies


def test_linear_takes_a_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    with pytest.raises(CommandError, match="holds no config.yaml"):
        _checkpoint_of(run_dir)
    (run_dir / "config.yaml").write_text("{}")
    with pytest.raises(CommandError, match="has no checkpoint"):
        _checkpoint_of(run_dir)
    (run_dir / "checkpoints" / "epoch=0-step=1.ckpt").write_bytes(b"x")
    assert _checkpoint_of(run_dir) == run_dir.resolve() / "checkpoints" / "epoch=0-step=1.ckpt"
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert _checkpoint_of(run_dir) == run_dir.resolve() / "checkpoints" / "last.ckpt"
