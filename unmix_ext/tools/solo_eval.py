"""solo-learn's offline evaluations, ``main_knn.py`` and ``main_umap.py``, on its checkpoints and on our runs.

Each takes solo-learn's flags as its ``scripts/knn/*.sh`` and ``scripts/umap/*.sh`` pass them
(``--dataset``, ``--train_data_path``, ``--val_data_path``, ``--batch_size``, ``--num_workers``,
``--pretrained_checkpoint_dir``; kNN also ``--k``, ``--temperature``, ``--feature_type``,
``--distance_function``). ``--pretrained_checkpoint_dir`` is a folder of solo-learn's layout
(``args.json`` and a ``.ckpt``: what solo-learn's ``Checkpointer`` and ``export --format solo``
write) or one of our run directories (``config.yaml``, ``checkpoints/``), whose recipe also
gives the data when the flags leave it out.

- kNN scores every combination of ``k`` x ``temperature`` x ``feature_type`` x ``distance``
  (the temperature only weighs cosine votes, so a euclidean row has none), with the one kNN
  of this project, :func:`unmix_ext.knn.weighted_knn_scores`, on the ``backbone`` features
  or the ``projector`` output (the checkpoint's projector, rebuilt from its weights);
  it prints the grid as a table and writes it to ``knn.md`` and ``knn.json``.
- UMAP (``umap-learn``, as solo-learn's) embeds the backbone features of each split in 2-D
  and writes ``umap_train.png`` and ``umap_val.png``, one colour per class.

Both write into ``--output_dir`` (default: the checkpoint folder or run directory) and print
what they wrote. The images are prepared as for the runner's evaluation (resize to the crop
side, or resize and centre-crop for images of varying size; the dataset's normalisation, or
``--mean``/``--std``). ``--scale smoke`` keeps at most ``EVAL_IMAGES`` images per split and
crops at most ``CROP`` px, as a smoke run does.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from unmix_ext.errors import CommandError
from unmix_ext.knn import topk_accuracy, weighted_knn_scores
from unmix_ext.runner.checkpoints import ARGS_FILE, read_backbone, solo_args
from unmix_ext.runner.config import Config, ConfigError, config_from_dict, config_to_dict
from unmix_ext.runner.evaluate import extract_features
from unmix_ext.runner.files import atomic_write, atomic_write_text, read_checkpoint
from unmix_ext.runner.linear import probe_method, solo_split_folders
from unmix_ext.runner.pipeline import eval_loader, eval_transform, load_split
from unmix_ext.runner.rundir import RunDir, newest_checkpoint_in
from unmix_ext.runner.smoke import CROP, EVAL_IMAGES, WORKERS
from unmix_ext.runner.solo_format import LINEAR_YAML, args_json_recipe, by_column, find, linear_lr, recipe_from

#: the datasets solo-learn's evaluation scripts name (``custom``: an ImageFolder)
SOLO_DATASETS = ("cifar10", "cifar100", "stl10", "imagenet", "imagenet100", "custom")
FEATURE_TYPES = ("backbone", "projector")
DISTANCES = ("euclidean", "cosine")
#: solo-learn's data formats: ``dali`` reads the same folders (here with the CPU reader); h5 files are not read here
DATA_FORMATS = ("image_folder", "dali", "h5")
KNN_TABLE, KNN_JSON = "knn.md", "knn.json"
UMAP_PLOT = "umap_{split}.png"


class EvaluationError(CommandError):
    """A checkpoint folder, a flag or the data that solo-learn's evaluation commands cannot use; one line."""


@dataclass(frozen=True)
class Pretrained:
    """A ``--pretrained_checkpoint_dir``: its checkpoint, solo-learn's ``args.json`` or our run's recipe."""

    folder: Path
    checkpoint: Path
    args: dict[str, Any] | None
    run_dir: RunDir | None


def find_pretrained(folder: str | Path) -> Pretrained:
    """The checkpoint of a solo-learn folder (``args.json`` + ``*.ckpt``; the newest if several) or of our run
    directory (its ``checkpoints/last.ckpt``, else its newest); raises EvaluationError naming the folder."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise EvaluationError(f"--pretrained_checkpoint_dir: {folder} is not a folder")
    run_dir = RunDir(folder) if RunDir(folder).config.is_file() else None
    if run_dir is not None:
        checkpoint = run_dir.final_checkpoint()
        if checkpoint is None:
            raise EvaluationError(f"--pretrained_checkpoint_dir: run directory {folder} has no checkpoint in "
                                  f"{run_dir.checkpoints}")
        return Pretrained(folder, checkpoint, None, run_dir)
    checkpoint = newest_checkpoint_in(folder)
    if checkpoint is None or not (folder / ARGS_FILE).is_file():
        missing = ".ckpt" if checkpoint is None else ARGS_FILE
        raise EvaluationError(f"--pretrained_checkpoint_dir: {folder} holds no {missing}; "
                              f"give a folder solo-learn wrote ({ARGS_FILE} and a .ckpt), one written by "
                              "python -m unmix_ext.export --format solo, or a run directory of python -m unmix_ext.run")
    return Pretrained(folder, checkpoint, solo_args(checkpoint), None)


def data_config(pretrained: Pretrained, *, dataset: str | None, train_data_path: str | None,
                val_data_path: str | None, data_format: str, data_fraction: float, num_workers: int,
                mean: Sequence[float] | None, std: Sequence[float] | None, scale: str) -> tuple[Config, int | None]:
    """The config that reads the evaluation data (flags first, then our run's recipe), and the per-split image limit."""
    if scale not in ("full", "smoke"):
        raise EvaluationError(f"--scale: {scale!r} is not one of full, smoke")
    if data_format not in DATA_FORMATS:
        raise EvaluationError(f"--data_format: {data_format!r} is not one of {', '.join(DATA_FORMATS)}")
    if data_format == "h5":
        raise EvaluationError("--data_format: h5 files are not read here; give the image folders (image_folder)")
    if pretrained.run_dir is not None:
        from omegaconf import OmegaConf

        recipe = OmegaConf.to_container(OmegaConf.load(pretrained.run_dir.config))
        recipe["augmentations"] = recipe["augmentations"][:1]
    else:
        recipe = {"method": args_json_recipe(pretrained.args or {}).get("method") or "unknown", "augmentations": [{}]}
    data = recipe.setdefault("data", {})
    if dataset is not None and dataset != data.get("dataset"):
        # another dataset: its own crop side and normalisation, not the run's
        recipe["augmentations"] = [{}]
        data.update(dataset=dataset, train_path=None, val_path=None)
    if data.get("dataset") is None:
        raise EvaluationError(f"--dataset: required for a solo-learn checkpoint folder; one of {', '.join(SOLO_DATASETS)}")
    for key, value in (("train_path", train_data_path), ("val_path", val_data_path)):
        if value is not None:
            data[key] = str(value)
    if data.get("train_path") is None and pretrained.run_dir is None:
        raise EvaluationError("--train_data_path: required for a solo-learn checkpoint folder")
    data.update(solo_split_folders(data))
    data.update(format="image_folder", num_workers=num_workers, fraction=data_fraction)
    group = recipe["augmentations"][0]
    if mean is not None:
        group["mean"] = list(mean)
    if std is not None:
        group["std"] = list(std)
    cfg = config_from_dict(recipe)
    train_root = Path(cfg.data.train_path or ".")
    if cfg.data.dataset == "image_folder" and cfg.data.val_path is None and not (train_root / "val").is_dir():
        # one class folder would serve both splits: a score of the training images read as a validation score
        raise EvaluationError(f"--val_data_path: required here; {train_root} holds no val/ split, so the validation "
                              "images would be the training images")
    limit = None
    if scale == "smoke":
        cfg.data.num_workers = min(cfg.data.num_workers, WORKERS)
        cfg.augmentations[0].crop_size = min(cfg.augmentations[0].crop_size, CROP)
        limit = EVAL_IMAGES
    return cfg, limit


def rebuilt_projector(state_dict: dict[str, torch.Tensor], source: Path) -> nn.Module:
    """The checkpoint's ``projector`` (solo-learn's: Linear and BatchNorm1d layers, ReLU between), rebuilt from its
    weights: position ``i`` of the Sequential holds ``projector.<i>.*``; a position without weights is a ReLU."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.startswith("projector."):
            index, _, leaf = key[len("projector."):].partition(".")
            if not index.isdigit() or "." in leaf:
                raise EvaluationError(f"--feature_type projector: {source} has a projector of another shape than "
                                      f"solo-learn's Linear/BatchNorm layers ({key}); use --feature_type backbone")
            layers.setdefault(int(index), {})[leaf] = value
    if not layers:
        raise EvaluationError(f"--feature_type projector: {source} holds no projector; use --feature_type backbone")
    modules: list[nn.Module] = []
    for index in range(max(layers) + 1):
        weights = layers.get(index)
        if weights is None:
            modules.append(nn.ReLU())
        elif "running_mean" in weights:
            modules.append(nn.BatchNorm1d(len(weights["running_mean"]), affine="weight" in weights))
        else:
            out_features, in_features = weights["weight"].shape
            modules.append(nn.Linear(in_features, out_features, bias="bias" in weights))
    projector = nn.Sequential(*modules)
    projector.load_state_dict({f"{i}.{leaf}": v for i, w in layers.items() for leaf, v in w.items()}, strict=True)
    return projector.eval()


@dataclass
class Features:
    """Features of one split per feature type, (N, D) each, and its targets (N,)."""

    by_type: dict[str, torch.Tensor]
    targets: torch.Tensor


def _features(backbone: nn.Module, projector: nn.Module | None, cfg: Config, split: str, limit: int | None,
              batch_size: int, device: torch.device) -> Features:
    dataset = load_split(cfg, split, eval_transform(cfg), limit)
    feats, targets = extract_features(backbone, eval_loader(dataset, cfg, batch_size), device)
    broken = int((~torch.isfinite(feats)).any(dim=1).sum())
    if broken:
        raise EvaluationError(f"--pretrained_checkpoint_dir: the backbone gives NaN or infinite features for {broken} "
                              f"of {len(feats)} {split} images; its weights are not those of a finished training")
    by_type = {"backbone": feats}
    if projector is not None:
        with torch.inference_mode():
            by_type["projector"] = projector.to(device)(feats)
    return Features(by_type, targets)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_choices(flag: str, values: Sequence[str], allowed: Sequence[str]) -> None:
    for value in values:
        if value not in allowed:
            raise EvaluationError(f"{flag}: {value!r} is not one of {', '.join(allowed)}")


def _prepare(pretrained_checkpoint_dir: str, feature_types: Sequence[str], **data: Any):
    pretrained = find_pretrained(pretrained_checkpoint_dir)
    cfg, limit = data_config(pretrained, **data)
    checkpoint = read_checkpoint(pretrained.checkpoint, "give a .ckpt that solo-learn or python -m unmix_ext.run wrote")
    backbone = read_backbone(pretrained.checkpoint, "online", checkpoint).network()
    projector = rebuilt_projector(checkpoint["state_dict"], pretrained.checkpoint) if "projector" in feature_types \
        else None
    return pretrained, cfg, limit, backbone, projector


def knn_grid(train: Features, val: Features, *, ks: Sequence[int], temperatures: Sequence[float],
             feature_types: Sequence[str], distances: Sequence[str], classes: int) -> list[dict[str, Any]]:
    """One row per combination, in solo-learn's order (feature type, k, distance, temperature); accuracies in percent.

    A euclidean row's ``temperature`` is None: only cosine votes are weighed by it.
    """
    rows = []
    for feature_type in feature_types:
        for k in ks:
            for distance in distances:
                for temperature in (temperatures if distance == "cosine" else [None]):
                    scores = weighted_knn_scores(
                        train.by_type[feature_type], train.targets, val.by_type[feature_type], num_classes=classes,
                        k=k, temperature=temperature if temperature is not None else 1.0, distance=distance)
                    top1, top5 = topk_accuracy(scores, val.targets, ks=(1, 5))
                    rows.append({"feature_type": feature_type, "k": k, "distance": distance,
                                 "temperature": temperature, "acc1": top1, "acc5": top5})
    return rows


def knn_table(rows: list[dict[str, Any]]) -> str:
    """The grid as a markdown table."""
    lines = ["| feature_type | k | distance | temperature | acc@1 (%) | acc@5 (%) |", "|---|---:|---|---:|---:|---:|"]
    for row in rows:
        temperature = "-" if row["temperature"] is None else f"{row['temperature']:g}"
        lines.append(f"| {row['feature_type']} | {row['k']} | {row['distance']} | {temperature} | "
                     f"{row['acc1']:.2f} | {row['acc5']:.2f} |")
    return "\n".join(lines) + "\n"


def main_knn(pretrained_checkpoint_dir: str, k: Sequence[int], temperature: Sequence[float],
             feature_type: Sequence[str], distance_function: Sequence[str], batch_size: int,
             output_dir: str | None = None, **data: Any) -> list[dict[str, Any]]:
    """What ``python -m unmix_ext.main_knn`` does: the whole kNN grid, printed and written; returns its rows."""
    _check_choices("--feature_type", feature_type, FEATURE_TYPES)
    _check_choices("--distance_function", distance_function, DISTANCES)
    if any(value <= 0 or not math.isfinite(value) for value in temperature):
        raise EvaluationError(f"--temperature: every value must be a number > 0, got {list(temperature)}")
    if data.pop("no_labels", False):
        raise EvaluationError("--no_labels: the kNN votes with the training images' labels; give labelled data")
    pretrained, cfg, limit, backbone, projector = _prepare(pretrained_checkpoint_dir, feature_type, **data)
    device = _device()
    train = _features(backbone, projector, cfg, "train", limit, batch_size, device)
    val = _features(backbone, projector, cfg, "val", limit, batch_size, device)
    classes = max(int(train.targets.max()), int(val.targets.max())) + 1
    rows = knn_grid(train, val, ks=k, temperatures=temperature, feature_types=feature_type,
                    distances=distance_function, classes=classes)
    out = Path(output_dir) if output_dir is not None else pretrained.folder
    table = knn_table(rows)
    header = (f"kNN of {pretrained.checkpoint} on {cfg.data.dataset}: {len(train.targets)} training and "
              f"{len(val.targets)} validation images\n\n")
    atomic_write_text(out / KNN_TABLE, header + table)
    record = {"checkpoint": str(pretrained.checkpoint), "dataset": cfg.data.dataset, "data": config_to_dict(cfg)["data"],
              "train_images": len(train.targets), "val_images": len(val.targets), "rows": rows}
    atomic_write_text(out / KNN_JSON, json.dumps(record, indent=2) + "\n")
    print(header + table + f"\nwrote {out / KNN_TABLE} and {out / KNN_JSON}")
    return rows


def _umap_png(features: torch.Tensor, targets: torch.Tensor, title: str, path: Path, seed: int) -> Path:
    """A 2-D UMAP of ``features`` (N, D), one colour per class of ``targets`` (N,), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import umap

    points = features.float().cpu().numpy()
    # UMAP's neighbourhood must be smaller than the number of points (a smoke run has few)
    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, len(points) - 1)), random_state=seed)
    embedding = reducer.fit_transform(points)
    labels = targets.cpu().numpy()
    figure, axes = plt.subplots(figsize=(9, 9))
    classes = int(labels.max()) + 1 if len(labels) else 1
    # one distinct colour per class where a qualitative map has enough; a continuous one beyond
    palette = next(((name, size) for name, size in (("tab10", 10), ("tab20", 20)) if classes <= size), ("turbo", classes))
    scatter = axes.scatter(embedding[:, 0], embedding[:, 1], c=labels, cmap=palette[0], vmin=0, vmax=palette[1] - 1,
                           s=6, alpha=0.7)
    if len(set(labels.tolist())) <= 20:
        axes.legend(*scatter.legend_elements(), title="class", loc="best", fontsize="small")
    axes.set(title=title, xticks=[], yticks=[])
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=100, bbox_inches="tight"))
    plt.close(figure)
    return path


def main_umap(pretrained_checkpoint_dir: str, batch_size: int, output_dir: str | None = None,
              **data: Any) -> list[Path]:
    """What ``python -m unmix_ext.main_umap`` does: a UMAP of the backbone features of each split; the PNGs written."""
    data.pop("no_labels", False)  # unlabelled images are drawn in one colour
    pretrained, cfg, limit, backbone, _ = _prepare(pretrained_checkpoint_dir, (), **data)
    out = Path(output_dir) if output_dir is not None else pretrained.folder
    written = []
    for split in ("train", "val"):
        features = _features(backbone, None, cfg, split, limit, batch_size, _device())
        title = f"UMAP of {pretrained.checkpoint.name} ({cfg.data.dataset}, {split}, {len(features.targets)} images)"
        written.append(_umap_png(features.by_type["backbone"], features.targets, title,
                                 out / UMAP_PLOT.format(split=split), cfg.seed))
        print(f"wrote {written[-1]}")
    return written


# ---- main_linear: solo-learn's linear YAML ------------------------------------------------------------------------

#: the keys of solo-learn main's linear YAML (``scripts/linear/<dataset>/<method>.yaml`` and the defaults its
#: ``solo/args/linear.py`` adds), by section; ``scale`` is ours
LINEAR_YAML_KEYS = {
    "": {"name", "pretrained_feature_extractor", "pretrain_method", "backbone", "data", "optimizer", "scheduler",
         "checkpoint", "auto_resume", "wandb", "max_epochs", "devices", "accelerator", "strategy", "precision",
         "sync_batchnorm", "num_nodes", "finetune", "mixup", "cutmix", "label_smoothing", "auto_augment", "seed",
         "performance", "resume_from_checkpoint", "accumulate_grad_batches", "dali", "scale"},
    "backbone": {"name", "kwargs"},
    "data": {"dataset", "train_path", "val_path", "format", "num_workers", "fraction", "augmentations"},
    "data.augmentations": {"crop_size", "mean", "std"},
    "optimizer": {"name", "batch_size", "lr", "weight_decay", "kwargs", "exclude_bias_n_norm_wd", "layer_decay"},
    "scheduler": {"name", "lr_decay_steps", "min_lr", "warmup_start_lr", "warmup_epochs", "interval"},
    "checkpoint": {"enabled", "dir", "frequency", "keep_prev"},
    "auto_resume": {"enabled", "max_hours"},
    "wandb": {"enabled", "entity", "project", "offline"},
    "performance": {"disable_channel_last"},
}
#: what solo-learn's linear evaluation can do that the probe here cannot: key -> the value it must keep
LINEAR_NOT_HERE = {"auto_augment": False, "optimizer.layer_decay": 0.0, "optimizer.name": "sgd",
                   "resume_from_checkpoint": None}
LINEAR_RESULTS = "results.json"


def _ignored_keys(raw: dict[str, Any]) -> dict[str, str]:
    """The keys ``raw`` sets that the probe does not use, each with why (the rows of :data:`LINEAR_YAML` without a
    recipe key)."""
    return {row.solo: row.note for row in LINEAR_YAML if row.recipe is None and find(raw, row.solo) is not None}


def _check_linear_keys(raw: dict[str, Any]) -> None:
    import difflib

    def walk(section: dict[str, Any], path: str) -> None:
        allowed = LINEAR_YAML_KEYS[path]
        for key, value in section.items():
            full = f"{path}.{key}" if path else key
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f"did you mean {close[0]}?" if close else f"allowed: {', '.join(sorted(allowed))}"
                raise EvaluationError(f"{full}: not a key of solo-learn's linear config; {hint}")
            if full in LINEAR_YAML_KEYS and isinstance(value, dict):
                walk(value, full)

    walk(raw, "")
    for key, kept in LINEAR_NOT_HERE.items():
        value = find(raw, key)
        if value is not None and value != kept:
            raise EvaluationError(f"{key}: {value!r} is not done by this linear probe (SGD with momentum, "
                                  f"solo-learn's classification augmentation); remove it or set it to {kept!r}")


def linear_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """Our recipe for solo-learn's linear config ``raw``, read through :data:`LINEAR_YAML`: its data, probe
    settings (``eval.linear``, the lr scaled by ``batch_size * devices * num_nodes / 256`` as solo-learn scales it)
    and Lightning keys."""
    recipe = recipe_from(LINEAR_YAML, raw)
    recipe["method"] = probe_method(recipe.get("method"))
    recipe["data"] = solo_split_folders(recipe.get("data", {}))
    recipe.setdefault("augmentations", [{}])
    recipe["eval"]["knn"] = {"enabled": False}  # the probe scores the linear classifier only
    linear = recipe["eval"]["linear"]
    linear["lr"] = linear_lr(linear["lr"], linear["batch_size"], raw.get("devices", 1), raw.get("num_nodes", 1))
    return recipe


def _in_linear_terms(err: ConfigError) -> ConfigError:
    """``err`` (one line, ``<recipe key>: ...``) naming first the linear YAML's key that :data:`LINEAR_YAML` reads
    into that recipe key, where there is one."""
    key, sep, rest = str(err).partition(": ")
    solo = by_column(LINEAR_YAML, "recipe", "solo").get(key)
    return ConfigError(f"{solo} ({key} here): {rest}") if solo and sep else err


def _quoted_path(override: str) -> str:
    """``pretrained_feature_extractor=<path>`` quoted for Hydra when the path holds ``=`` (solo-learn names its
    checkpoints ``...-ep=99.ckpt``, which Hydra's grammar would refuse unquoted)."""
    key, _, value = override.partition("=")
    if key.lstrip("+") == "pretrained_feature_extractor" and "=" in value and value[:1] not in "'\"":
        return f"{key}='{value}'"
    return override


def _linear_yaml(target: str | None, config_path: str | None, config_name: str | None) -> Path:
    if config_name is not None:
        name = config_name if config_name.endswith((".yaml", ".yml")) else f"{config_name}.yaml"
        return Path(config_path or ".") / name
    if target is None:
        raise EvaluationError("config: give the linear YAML, as --config-path DIR --config-name NAME or as a path")
    return Path(target)


def main_linear(target: str | None = None, config_path: str | None = None, config_name: str | None = None,
                overrides: Sequence[str] = ()) -> dict[str, Any]:
    """What ``python -m unmix_ext.main_linear`` does: solo-learn's linear evaluation of its config's
    ``pretrained_feature_extractor``; writes and returns the run's ``results.json``."""
    import hashlib

    from omegaconf import OmegaConf
    from pytorch_lightning.utilities import rank_zero_only

    from unmix_ext.runner.checkpoints import CIFAR_DATASETS
    from unmix_ext.runner.config import compose
    from unmix_ext.runner.linear import linear_protocol, linear_train_transform
    from unmix_ext.runner.smoke import effective
    from unmix_ext.runner.trainer import device_plan

    if target is not None and "=" in target:  # with --config-name, the first override reads as the target
        target, overrides = None, [target, *overrides]
    path = _linear_yaml(target, config_path, config_name)
    overrides = [_quoted_path(text) for text in overrides]
    raw = OmegaConf.to_container(compose(path, overrides), resolve=True)
    raw.pop("hydra", None)
    _check_linear_keys(raw)
    extractor = raw.get("pretrained_feature_extractor")
    if not extractor or str(extractor) == "None" or not Path(str(extractor)).is_file():
        raise EvaluationError(f"pretrained_feature_extractor: {extractor!r} is not a checkpoint file; give "
                              "pretrained_feature_extractor=PATH.ckpt")
    checkpoint = Path(str(extractor))
    try:
        smoke = effective(config_from_dict(linear_recipe(raw)))
    except ConfigError as err:
        raise _in_linear_terms(err) from None
    cfg = smoke.cfg
    backbone = read_backbone(checkpoint, "online")
    named = (raw.get("backbone") or {}).get("name")
    if named is not None and named != backbone.encoder:
        raise EvaluationError(f"backbone.name: {named!r}, but {checkpoint} holds a {backbone.encoder} "
                              f"(from {backbone.source})")
    solo_dataset = (raw.get("data") or {}).get("dataset")
    if backbone.is_resnet and (solo_dataset in CIFAR_DATASETS) != backbone.cifar_stem:
        raise EvaluationError(
            f"data.dataset: solo-learn gives a ResNet the CIFAR stem exactly for cifar10 and cifar100, and "
            f"{checkpoint} holds {'a CIFAR' if backbone.cifar_stem else 'an ImageNet'}-stem {backbone.encoder}; "
            f"{solo_dataset!r} would not load its conv1")
    wanted = backbone.untrained().state_dict().keys()
    expected, loaded = len(wanted), len(wanted & backbone.state_dict.keys())
    if loaded < expected:
        raise EvaluationError(f"pretrained_feature_extractor: {checkpoint} fills {loaded} of the {expected} backbone "
                              "tensors; a probe on a partly random network would score nothing of the pretraining")
    network = backbone.network()  # strict: no tensor of another shape or name either
    digest = hashlib.sha256(f"{cfg.name}|{checkpoint.resolve()}|{sorted(overrides)}".encode()).hexdigest()[:12]
    run_dir = RunDir(Path(cfg.checkpoint.dir).resolve() / "linear" / f"{cfg.name}-{digest}")
    plan = device_plan(cfg)
    train = load_split(cfg, "train", linear_train_transform(cfg), smoke.limits.get("train"))
    val = load_split(cfg, "val", eval_transform(cfg), smoke.limits.get("val"))
    ignored = _ignored_keys(raw)
    if ignored and rank_zero_only.rank == 0:
        print(f"main_linear: solo-learn keys accepted and not used by this probe: {', '.join(ignored)} "
              f"(results.json: ignored_keys says why)")
    results = {"config": str(path.resolve()), "overrides": list(overrides), "ignored_keys": ignored,
               "pretrained_feature_extractor": str(checkpoint.resolve()), "backbone": backbone.encoder,
               "backbone_source": backbone.source, "backbone_tensors_loaded": loaded,
               "backbone_tensors_expected": expected, "linear_lr": cfg.eval.linear.lr,
               "smoke_changes": smoke.changes}
    results.update(linear_protocol(cfg, network, train, val, plan, run_dir))
    if rank_zero_only.rank == 0:
        atomic_write_text(run_dir.path / LINEAR_RESULTS, json.dumps(results, indent=2) + "\n")
        print(f"linear_top1 {results['linear_top1']:.2f}  linear_top5 {results['linear_top5']:.2f}  "
              f"({loaded}/{expected} backbone tensors of {checkpoint}); wrote {run_dir.path / LINEAR_RESULTS}")
    return results
