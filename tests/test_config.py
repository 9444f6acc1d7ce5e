"""Recipe loading: solo-learn's Hydra layout (defaults lists, group folders), types, overrides, hash and
one-line errors."""

import json

import pytest
import yaml

from unmix_ext.runner.data import DATASETS
from unmix_ext.runner.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_hash,
    config_to_dict,
    load_config,
    resolved_method,
    validate,
)

KNOWN = ("simclr", "simclr_unmix", "byol", "swav", "swav_unmix", "mocov2plus", "mocov2plus_unmix")

FULL = {
    "name": "simclr-cifar10",
    "method": "simclr",
    "backbone": {"name": "resnet18", "kwargs": {"zero_init_residual": True}},
    "method_kwargs": {"proj_hidden_dim": 2048, "proj_output_dim": 256, "temperature": 0.2},
    "data": {
        "dataset": "cifar10",
        "train_path": "./datasets",
        "val_path": "./datasets",
        "format": "image_folder",
        "num_workers": 2,
        "fraction": 0.5,
        "download": True,
    },
    "augmentations": [
        {
            "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1},
            "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1},
            "grayscale": {"prob": 0.2},
            "gaussian_blur": {"prob": 0.0},
            "solarization": {"enabled": True, "prob": 0.1},
            "equalization": {"prob": 0.0},
            "horizontal_flip": {"prob": 0.5},
            "crop_size": 32,
            "num_crops": 2,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
        }
    ],
    "momentum": {"base_tau": 0.99, "final_tau": 1.0, "classifier": True},
    "optimizer": {
        "name": "lars",
        "batch_size": 256,
        "lr": 1,
        "classifier_lr": 0.1,
        "weight_decay": 1.0e-5,
        "kwargs": {"eta": 0.02},
    },
    "scheduler": {"name": "step", "warmup_epochs": 0, "warmup_start_lr": 0, "min_lr": 0, "lr_decay_steps": [50, 80]},
    "checkpoint": {"enabled": True, "dir": "ckpt", "frequency": 5, "keep_prev": True},
    "auto_resume": {"enabled": True, "max_hours": 12},
    "wandb": {"enabled": True, "project": "p", "entity": "team", "offline": False},
    "max_epochs": 100,
    "max_steps": 1000,
    "accelerator": "gpu",
    "devices": [0, 1],
    "num_nodes": 1,
    "strategy": "ddp",
    "precision": 16,
    "sync_batchnorm": True,
    "accumulate_grad_batches": 2,
    "seed": 7,
    "scale": "smoke",
    "eval": {
        "linear": {
            "enabled": True,
            "max_epochs": 90,
            "lr": 0.2,
            "batch_size": 512,
            "scheduler": "cosine",
            "lr_decay_steps": None,
            "weight_decay": 0,
        },
        "knn": {"enabled": False, "k": 20, "temperature": 0.07},
    },
    "unmix": {
        "enabled": True,
        "alpha": 0.5,
        "prob": 0.3,
        "per_sample": True,
        "lam": 0.7,
        "view": 1,
        "symmetric": False,
        "target_side": "online",
    },
}

MINIMAL = {"method": "simclr", "data": {"dataset": "cifar10"}}


def _write(path, data):
    """Write ``data`` as YAML (a string is written as it is) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _merged(base, over):
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _error(call, *args, **kwargs):
    """The message of the ConfigError ``call`` raises, checked to be one line."""
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- #
# Valid recipes
# --------------------------------------------------------------------------- #


def test_full_recipe_loads_with_types(tmp_path):
    cfg = load_config(_write(tmp_path / "full.yaml", FULL), known_methods=KNOWN)
    assert isinstance(cfg, Config)
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)
    assert cfg.optimizer.weight_decay == pytest.approx(1e-5)
    assert cfg.optimizer.kwargs == {"eta": 0.02}
    group = cfg.augmentations[0]
    assert group.rrc.crop_max_scale == 1.0 and isinstance(group.rrc.crop_max_scale, float)
    assert group.solarization.prob == 0.1 and group.color_jitter.saturation == 0.2
    assert group.mean == [0.5, 0.5, 0.5]  # given values win over the dataset's
    assert cfg.momentum.base_tau == 0.99 and cfg.momentum.classifier is True
    assert cfg.scheduler.lr_decay_steps == [50, 80]
    assert cfg.precision == "16-mixed"  # Lightning 1 int mapped to the Lightning 2 name
    assert cfg.devices == [0, 1] and cfg.max_steps == 1000 and cfg.strategy == "ddp"
    assert cfg.eval.linear.scheduler == "cosine" and cfg.eval.knn.k == 20
    assert cfg.unmix.lam == 0.7 and cfg.unmix.view == 1 and cfg.unmix.target_side == "online"
    assert cfg.name == "simclr-cifar10" and cfg.scale == "smoke" and cfg.auto_resume.max_hours == 12.0
    assert cfg.sync_batchnorm is True and cfg.accumulate_grad_batches == 2 and cfg.accelerator == "gpu"
    assert cfg.wandb.entity == "team" and cfg.checkpoint.keep_prev is True
    assert resolved_method(cfg) == "simclr_unmix"


def test_defaults_filled(tmp_path):
    cfg = load_config(_write(tmp_path / "min.yaml", {"method": "byol", "data": {"dataset": "stl10"}}))
    (group,) = cfg.augmentations  # solo-learn's STL-10 normalisation, at the native 96 px
    assert group.mean == [0.4914, 0.4823, 0.4466] and group.std == [0.247, 0.243, 0.261] and group.crop_size == 96
    assert group.num_crops == 2 and group.rrc.crop_min_scale == 0.08 and group.horizontal_flip.prob == 0.5
    assert cfg.momentum.base_tau is None and cfg.auto_resume.enabled is True and cfg.sync_batchnorm is False
    assert cfg.unmix.enabled is False and cfg.unmix.alpha == 1.0 and cfg.unmix.prob == 0.5
    assert cfg.unmix.lam is None and cfg.unmix.view == 0 and cfg.unmix.target_side == "both"
    assert cfg.wandb.offline is True and cfg.wandb.enabled is False
    assert cfg.eval.knn.k == 200 and cfg.eval.knn.temperature == 0.1
    assert cfg.max_steps == -1 and cfg.precision == "32-true" and cfg.scale == "full"
    assert cfg.scheduler.interval == "step"  # solo-learn 1.0.6+'s default
    assert cfg.data.download is False and cfg.data.fraction == 1.0
    assert cfg.name == "byol-stl10"
    assert resolved_method(cfg) == "byol"


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_dataset_has_valid_defaults(dataset):
    cfg = config_from_dict({"method": "simclr", "data": {"dataset": dataset}})
    mean, std = DATASETS[dataset].stats
    (group,) = cfg.augmentations
    assert group.mean == list(mean) and group.std == list(std) and len(mean) == len(std) == 3
    assert all(0 < s < 1 for s in (*mean, *std))
    assert group.crop_size == (DATASETS[dataset].image_size or 224)


def test_solo_learns_custom_dataset_is_an_image_folder():
    cfg = config_from_dict({"method": "simclr", "data": {"dataset": "custom", "train_path": "x"}})
    assert cfg.data.dataset == "image_folder" and cfg.augmentations[0].crop_size == 224


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    cfg = load_config(_write(tmp_path / "r.yaml", "method: simclr\ndata: {dataset: cifar10}\noptimizer: {lr: 1e-3}\n"))
    assert cfg.optimizer.lr == pytest.approx(1e-3)


# --------------------------------------------------------------------------- #
# Hydra composition: defaults lists and group folders, as solo-learn writes them
# --------------------------------------------------------------------------- #

SOLO_HEADER = """defaults:
  - _self_
  - augmentations: asymmetric.yaml
  - wandb: private.yaml
  - override hydra/hydra_logging: disabled
  - override hydra/job_logging: disabled

hydra:
  output_subdir: null
  run:
    dir: .
"""
ASYMMETRIC = """- rrc: {enabled: True, crop_min_scale: 0.08, crop_max_scale: 1.0}
  color_jitter: {prob: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1}
  grayscale: {prob: 0.2}
  gaussian_blur: {prob: 1.0}
  solarization: {prob: 0.0}
  equalization: {prob: 0.0}
  horizontal_flip: {prob: 0.5}
  crop_size: 32
  num_crops: 1
- rrc: {enabled: True, crop_min_scale: 0.08, crop_max_scale: 1.0}
  color_jitter: {prob: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1}
  grayscale: {prob: 0.2}
  gaussian_blur: {prob: 0.1}
  solarization: {prob: 0.2}
  equalization: {prob: 0.0}
  horizontal_flip: {prob: 0.5}
  crop_size: 32
  num_crops: 1
"""


def _solo_recipe(tmp_path, body="method: byol\ndata: {dataset: cifar10}\nmax_epochs: 3\n"):
    _write(tmp_path / "augmentations" / "asymmetric.yaml", ASYMMETRIC)
    _write(tmp_path / "augmentations" / "symmetric.yaml", "- {crop_size: 32, num_crops: 2}\n")
    _write(tmp_path / "wandb" / "private.yaml", "enabled: True\nentity: None\nproject: solo-learn\n")
    return _write(tmp_path / "byol.yaml", SOLO_HEADER + body)


def test_solo_learn_defaults_list_and_group_folders(tmp_path):
    cfg = load_config(_solo_recipe(tmp_path))
    assert [g.solarization.prob for g in cfg.augmentations] == [0.0, 0.2]  # the group file's list, in order
    assert [g.num_crops for g in cfg.augmentations] == [1, 1]
    assert cfg.wandb.enabled is True and cfg.wandb.project == "solo-learn"  # wandb/private.yaml, under wandb
    assert cfg.max_epochs == 3


def test_self_first_lets_the_groups_win_and_self_last_lets_the_file_win(tmp_path):
    body = "method: byol\ndata: {dataset: cifar10}\nwandb: {project: mine}\n"
    assert load_config(_solo_recipe(tmp_path, body)).wandb.project == "solo-learn"  # _self_ first, as solo-learn
    path = tmp_path / "byol.yaml"
    path.write_text(path.read_text().replace("  - _self_\n", "").replace("job_logging: disabled\n",
                                                                           "job_logging: disabled\n  - _self_\n"))
    assert load_config(path).wandb.project == "mine"


def test_group_option_chosen_by_an_override(tmp_path):
    cfg = load_config(_solo_recipe(tmp_path), ["augmentations=symmetric"])
    assert [g.num_crops for g in cfg.augmentations] == [2]


def test_defaults_name_other_files_of_the_folder(tmp_path):
    _write(tmp_path / "_base.yaml", {**MINIMAL, "seed": 1, "max_epochs": 10, "optimizer": {"lr": 0.2}})
    _write(tmp_path / "row.yaml", "defaults:\n  - _base\n  - _self_\nseed: 3\n")
    _write(tmp_path / "sub" / "_other.yaml", {**MINIMAL, "max_epochs": 7})
    cfg = load_config(tmp_path / "row.yaml")
    assert (cfg.seed, cfg.max_epochs, cfg.optimizer.lr) == (3, 10, 0.2)
    _write(tmp_path / "top.yaml", "defaults:\n  - sub/_other@_here_\n  - _self_\nseed: 4\n")
    assert (load_config(tmp_path / "top.yaml").max_epochs, load_config(tmp_path / "top.yaml").seed) == (7, 4)


def test_missing_group_option_names_the_available_ones(tmp_path):
    message = _error(load_config, _solo_recipe(tmp_path), ["augmentations=nope"])
    assert "augmentations/nope" in message and "asymmetric" in message and "symmetric" in message


def test_missing_recipe_file(tmp_path):
    message = _error(load_config, tmp_path / "absent.yaml")
    assert message.startswith("recipe: file not found") and "absent.yaml" in message


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.yaml", "method: simclr\ndata:\n  dataset: cifar10\n  x: [1, 2\n")
    message = _error(load_config, path)
    assert message.startswith(f"{path}:") and "line 4" in message


# --------------------------------------------------------------------------- #
# Overrides
# --------------------------------------------------------------------------- #


def test_dotted_overrides(tmp_path):
    path = _write(tmp_path / "r.yaml", FULL)
    cfg = load_config(
        path,
        [
            "unmix.alpha=0.5",
            "optimizer.lr=1e-3",
            "scale=full",
            "augmentations.0.crop_size=28",
            "checkpoint.enabled=false",
            "unmix.lam=null",
            "devices=[2, 3]",
            "method_kwargs.temperature=0.5",
            "backbone.kwargs.extra.depth=3",  # free mappings grow new keys
            "precision=bf16",
            "augmentations.0.solarization.prob=0.3",
        ],
    )
    assert cfg.augmentations[0].solarization.prob == 0.3
    assert cfg.unmix.alpha == 0.5 and cfg.optimizer.lr == pytest.approx(1e-3)
    assert cfg.scale == "full" and cfg.augmentations[0].crop_size == 28
    assert cfg.checkpoint.enabled is False and cfg.unmix.lam is None and cfg.devices == [2, 3]
    assert cfg.method_kwargs["temperature"] == 0.5 and cfg.backbone.kwargs["extra"] == {"depth": 3}
    assert cfg.precision == "bf16-mixed"


def test_override_creates_a_section_absent_from_the_recipe(tmp_path):
    cfg = load_config(_write(tmp_path / "r.yaml", MINIMAL), ["unmix.enabled=true", "wandb.project=x"])
    assert resolved_method(cfg) == "simclr_unmix" and cfg.wandb.project == "x"


@pytest.mark.parametrize(
    "override, starts",
    [
        ("optimizer.lr", "override 'optimizer.lr': expected key=value"),
        ("optimizer.lrr=1", "optimizer.lrr: unknown key; did you mean optimizer.lr?"),
        ("augmentations.0.color_jitter.brightnes=1",
         "augmentations.0.color_jitter.brightnes: unknown key; did you mean augmentations.0.color_jitter.brightness?"),
        ("max_epoch=3", "max_epoch: unknown top-level key; did you mean max_epochs?"),
        ("augmentations.4.crop_size=32", "{path}: Error merging override ++augmentations.4.crop_size=32"),
        ("augmentations.first.crop_size=32", "{path}: "),
        ("scale.level=1", "scale: expected a string"),
        ("optimizer.lr=[oops", "{path}: "),
        ("optimizer.lr=abc", "optimizer.lr: expected a number, got 'abc'"),
        ("optimizer.lr=inf", "optimizer.lr: expected a finite number, got inf"),
    ],
)
def test_bad_override(tmp_path, override, starts):
    path = _write(tmp_path / "r.yaml", FULL)
    message = _error(load_config, path, [override])
    assert message.startswith(starts.format(path=path))


# --------------------------------------------------------------------------- #
# Errors in a recipe
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "change, starts",
    [
        ({"max_epoch": 10}, "max_epoch: unknown top-level key; did you mean max_epochs?"),
        ({"optimizer": {"lrr": 0.1}}, "optimizer.lrr: unknown key; did you mean optimizer.lr?"),
        ({"augmentations": [{"crop_siz": 32}]}, "augmentations.0.crop_siz: unknown key; did you mean"),
        ({"augmentations": [{"rrc": {"min_scale": 0.2}}]}, "augmentations.0.rrc.min_scale: unknown key; did you mean"),
        ({"augmentations": [{"solarization": {"enabled": False, "prob": 0.2}}]},
         "augmentations.0.solarization.enabled: false, but augmentations.0.solarization.prob is 0.2"),
        ({"augmentations": {"crop_size": 32}}, "augmentations: expected a list"),
        ({"auto_umap": {"enabled": True}}, "auto_umap: solo-learn 1.0.2's AutoUMAP is not wired in"),
        ({"momentum": {"base_tau": 2}}, "momentum.base_tau: must be in [0, 1], got 2"),
        ({"auto_resume": True}, "auto_resume: expected a mapping"),
        ({"accelerator": "tpu"}, "accelerator: expected one of auto, cpu, gpu, cuda"),
        ({"optimizer": {"lr": "abc"}}, "optimizer.lr: expected a number, got 'abc'"),
        ({"optimizer": {"batch_size": 8.5}}, "optimizer.batch_size: expected an integer"),
        ({"unmix": {"enabled": "yes please"}}, "unmix.enabled: expected true or false"),
        ({"optimizer": 3}, "optimizer: expected a mapping"),
        ({"augmentations": [{"mean": [0.5, "x", 0.5]}]}, "augmentations.0.mean.1: expected a number"),
        ({"optimizer": {"lr": -1}}, "optimizer.lr: must be > 0, got -1"),
        ({"optimizer": {"batch_size": 1}}, "optimizer.batch_size: must be >= 2, got 1"),
        ({"unmix": {"alpha": 0}}, "unmix.alpha: must be > 0, got 0"),
        ({"unmix": {"prob": 2}}, "unmix.prob: must be in [0, 1], got 2"),
        ({"unmix": {"lam": 1.5}}, "unmix.lam: must be in [0, 1], got 1.5"),
        ({"unmix": {"view": 2}}, "unmix.view: expected one of 0, 1, got 2"),
        ({"unmix": {"target_side": "x"}}, "unmix.target_side: expected one of both, online, got 'x'"),
        ({"max_epochs": 0}, "max_epochs: must be >= 1, got 0"),
        ({"max_steps": 0}, "max_steps: must be -1 (no limit) or >= 1"),
        ({"data": {"fraction": 0}}, "data.fraction: must be in (0, 1], or -1 (all images), got 0"),
        ({"data": {"dataset": "cifar"}}, "data.dataset: expected one of"),
        ({"precision": "fp8"}, "precision: expected one of"),
        ({"precision": 8}, "precision: expected one of"),
        ({"optimizer": {"name": "adagrad"}}, "optimizer.name: expected one of sgd, lars, adam, adamw, got 'adagrad'"),
        ({"scheduler": {"name": "poly"}}, "scheduler.name: expected one of"),
        ({"scheduler": {"name": "step", "lr_decay_steps": None}}, "scheduler.lr_decay_steps: required"),
        ({"scheduler": {"lr_decay_steps": [80, 50]}}, "scheduler.lr_decay_steps: must be"),
        ({"scheduler": {"interval": "batch"}}, "scheduler.interval: expected one of step, epoch, got 'batch'"),
        ({"eval": {"knn": {"temperature": 0}}}, "eval.knn.temperature: must be > 0"),
        ({"eval": {"linear": {"scheduler": "step", "lr_decay_steps": []}}}, "eval.linear.lr_decay_steps: "),
        ({"augmentations": [{"rrc": {"crop_min_scale": 0.9, "crop_max_scale": 0.5}}]},
         "augmentations.0.rrc.crop_min_scale: must be <="),
        ({"augmentations": [{"std": [0.2, 0.0, 0.2]}]}, "augmentations.0.std: must be"),
        ({"augmentations": [{"mean": [0.5], "std": [0.2, 0.2, 0.2]}]}, "augmentations.0.mean: must have"),
        ({"augmentations": []}, "augmentations: must list at least one crop group"),
        ({"devices": 0}, "devices: must be a count >= 1"),
        ({"devices": "gpu"}, "devices: must be 'auto'"),
        ({"strategy": "dp"}, "strategy: expected one of"),
        ({"scale": "tiny"}, "scale: expected one of full, smoke"),
        ({"method": "simclr_unmix", "unmix": {"enabled": False}}, "unmix.enabled: false contradicts method"),
    ],
)
def test_recipe_error_names_key_path(tmp_path, change, starts):
    message = _error(load_config, _write(tmp_path / "r.yaml", _merged(FULL, change)), known_methods=KNOWN)
    assert message.startswith(starts)


@pytest.mark.parametrize(
    "data, starts",
    [
        ({"data": {"dataset": "cifar10"}}, "method: missing required key"),
        ({"method": "simclr"}, "data.dataset: missing required key; one of cifar10"),
    ],
)
def test_missing_required_key(data, starts):
    assert _error(config_from_dict, data).startswith(starts)


def test_unknown_method_suggests_known_names(tmp_path):
    path = _write(tmp_path / "r.yaml", {**MINIMAL, "method": "simclrr"})
    message = _error(load_config, path, known_methods=KNOWN)
    assert message.startswith("method: unknown method 'simclrr'") and "simclr" in message.split(";")[1]
    load_config(path)  # without a known set the name is not checked here


def test_method_without_unmix_variant_is_reported_with_resolved_name():
    message = _error(config_from_dict, {**MINIMAL, "method": "byol", "unmix": {"enabled": True}}, KNOWN)
    assert message.startswith("method: unknown method 'byol_unmix'")


def test_validate_catches_values_edited_after_loading():
    cfg = config_from_dict(MINIMAL)
    cfg.optimizer.batch_size = 1
    assert _error(validate, cfg).startswith("optimizer.batch_size: must be >= 2")


# --------------------------------------------------------------------------- #
# Method resolution and hash
# --------------------------------------------------------------------------- #


def test_unmix_enabled_resolves_to_variant(tmp_path):
    cfg = load_config(_write(tmp_path / "r.yaml", MINIMAL), ["unmix.enabled=true"], known_methods=KNOWN)
    assert resolved_method(cfg) == "simclr_unmix"


def test_unmix_suffix_in_method_enables_unmix_and_hashes_the_same():
    suffixed = config_from_dict({"method": "swav_unmix", "data": {"dataset": "cifar10"}}, KNOWN)
    flagged = config_from_dict({"method": "swav", "data": {"dataset": "cifar10"}, "unmix": {"enabled": True}})
    assert suffixed.unmix.enabled is True and resolved_method(suffixed) == "swav_unmix"
    assert config_hash(suffixed) == config_hash(flagged)


def test_config_hash_ignores_key_order_and_tracks_values(tmp_path):
    forward = load_config(_write(tmp_path / "a.yaml", FULL))
    backward = load_config(_write(tmp_path / "b.yaml", dict(reversed(list(FULL.items())))))
    assert config_hash(forward) == config_hash(backward)
    assert len(config_hash(forward)) == 12 and int(config_hash(forward), 16) >= 0
    changed = load_config(tmp_path / "a.yaml", ["unmix.alpha=0.25"])
    assert config_hash(changed) != config_hash(forward)


@pytest.mark.parametrize("override", ["nan_guard.max_skipped_steps=3", "auto_resume.enabled=false", "wandb.enabled=false",
                                      "checkpoint.frequency=2", "checkpoint.dir=elsewhere"])
def test_config_hash_ignores_how_a_run_is_looked_after(tmp_path, override):
    # the NaN guard's error tells the user to rerun with nan_guard.max_skipped_steps=N: that rerun must find
    # (and resume from) the same run directory, not start again in a new one
    cfg = load_config(_write(tmp_path / "a.yaml", FULL))
    rerun = load_config(tmp_path / "a.yaml", [override])
    assert rerun != cfg and config_hash(rerun) == config_hash(cfg)


def test_resolved_dict_round_trips():
    cfg = config_from_dict(FULL)
    as_dict = config_to_dict(cfg)
    json.dumps(as_dict)  # plain data, ready for results.json
    again = config_from_dict(as_dict)
    assert again == cfg and config_hash(again) == config_hash(cfg)


# --------------------------------------------------------------------------- #
# Hostile recipes: each one line, within seconds (issue 24)
# --------------------------------------------------------------------------- #


def _alias_bomb(levels: int = 9) -> str:
    """A "billion laughs": 9 ** levels strings written in a few lines of nested YAML aliases."""
    lines = ["method: simclr", "data: {dataset: cifar10}", 'method_kwargs:', '  l0: &l0 ["lol", "lol", "lol", "lol", '
             '"lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias bomb": (_alias_bomb(), "{path}: its aliases expand to more than 100,000 values (nested anchors)"),
    "nested 100,000 deep": ("method: simclr\nx: " + "[" * 100_000 + "]" * 100_000 + "\n",
                            "{path}: nests deeper than the YAML parser can follow"),
    "defaults list including itself": ("defaults:\n  - r\n  - _self_\nmethod: simclr\n",
                                       "{path}: defaults: the list includes its own file again"),
    "missing environment variable": ("method: simclr\ndata: {dataset: cifar10}\nname: ${oc.env:UNMIX_NO_SUCH_VAR}\n",
                                     "name: cannot resolve its interpolation (KeyError raised while resolving "
                                     "interpolation: \"Environment variable 'UNMIX_NO_SUCH_VAR' not found\")"),
    "key interpolating itself": ("method: simclr\ndata: {dataset: cifar10}\noptimizer: {lr: '${optimizer.lr}'}\n",
                                 "optimizer.lr: cannot resolve its interpolation (Recursive interpolation detected)"),
    "5,000-character name": ("method: simclr\ndata: {dataset: cifar10}\nname: " + "x" * 5000 + "\n",
                             "name: must be at most 200 bytes (it names the run directory), got 'xxxx"),
    "Un-Mix suffix twice": ("method: simclr_unmix_unmix\ndata: {dataset: cifar10}\n",
                            "method: unknown method 'simclr_unmix_unmix'; did you mean simclr_unmix?"),
}


@pytest.mark.parametrize("text, expected", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_recipe_is_one_line(tmp_path, text, expected):
    path = _write(tmp_path / "r.yaml", text)
    message = _error(load_config, path, known_methods=KNOWN)
    assert message.startswith(expected.format(path=path)), message
