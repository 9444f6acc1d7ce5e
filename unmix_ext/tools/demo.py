"""``python -m unmix_ext.demo``: SimCLR with and without Un-Mix on Fashion-MNIST, in minutes on a CPU.

What ``make demo`` runs. In order:

1. :func:`ensure_fashion_mnist` makes sure the data is there: the files of
   Debian's ``dataset-fashion-mnist`` package (the loader's default root);
   else, as root on a Debian-like system, that package is installed with
   apt-get; else torchvision's downloader fetches the files into
   ``data/fashion_mnist``; else the demo stops with one line saying how to
   get them;
2. the two recipes ``recipes/demo/simclr.yaml`` and
   ``recipes/demo/simclr_unmix.yaml`` (the same run with ``unmix.enabled``;
   ``--long``: their ``*_long.yaml`` versions) pretrain through
   :func:`unmix_ext.runner.run.run` with each of ``--seeds`` seeds (2 by default:
   the recipe's seed, then the next ones), validating the online classifier
   and kNN every epoch; with ``--reuse``, a seed whose run already finished
   with the same config is scored from its checkpoint, not trained again;
3. each frozen backbone is scored with the features of all 60,000 training
   images: the weighted kNN (k=200, temperature 0.1) and a linear probe
   (softmax regression fitted by L-BFGS on the standardised features, no
   augmentation); so are two references: the untrained backbone each seed
   starts from, and the raw pixels (the normalised grey image, flattened);
4. a table (mean +- std over seeds per row) is printed and written to
   ``<out>/demo.md`` with a note computed from its numbers (does each run
   beat both references; is the Un-Mix minus base difference within the seed
   spread), every seed's scores, curves and timings to ``<out>/demo.json``,
   and ``<out>/demo.png`` shows accuracy per epoch (every seed thin, the mean
   thick, the references as lines) next to real Mixup and CutMix images, as
   the network is fed them.

Every score is top-1 in percent on Fashion-MNIST's official test split (the
10,000 t10k images), which the runner validates on.

Example::

    python -m unmix_ext.demo                 # 2 seeds, about 11 minutes on 2 CPU cores with bf16 instructions
    python -m unmix_ext.demo --seeds 5       # the table's spread over 5 seeds
    python -m unmix_ext.demo --long          # the longer budget of recipes/demo/*_long.yaml
    python -m unmix_ext.demo --seeds 3 --reuse   # after the first: trains only the third seed
"""
from __future__ import annotations

import copy
import csv
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import unmix_ext.methods  # noqa: F401  (patches solo-learn, registers the Un-Mix variants)
from unmix_ext.mixing import UnMix
from unmix_ext.recipes import ROOT as RECIPES_ROOT
from unmix_ext.runner.builder import build_method
from unmix_ext.runner.config import Config, ConfigError, config_hash
from unmix_ext.runner.data import FASHION_MNIST_ROOT, DataError, build_dataset
from unmix_ext.runner.evaluate import extract_features, knn_accuracy_of_features
from unmix_ext.runner.linear import load_backbone
from unmix_ext.runner.pipeline import (
    IndexedDataset, eval_loader, eval_transform, load_split, pretrain_collate, pretrain_transform,
)
from unmix_ext.runner.recipe import load_recipe
from unmix_ext.runner.run import as_run, run
from unmix_ext.runner.rundir import RunDir, saved_results
from unmix_ext.runner.trainer import device_plan, emulated_bf16_notice

RECIPES = (RECIPES_ROOT / "demo" / "simclr.yaml", RECIPES_ROOT / "demo" / "simclr_unmix.yaml")
#: ``--long``: the same two runs with a longer budget
LONG_RECIPES = (RECIPES_ROOT / "demo" / "simclr_long.yaml", RECIPES_ROOT / "demo" / "simclr_unmix_long.yaml")
#: where torchvision's downloader puts the files when the Debian package cannot be had (from the working directory)
DOWNLOAD_ROOT = Path("data") / "fashion_mnist"
APT_PACKAGE = "dataset-fashion-mnist"
IDX_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
#: pairs shown per mixing mode (Mixup, CutMix) in the figure
MIX_PAIRS = 3
UNTRAINED = "untrained backbone"
RAW_PIXELS = "raw pixels"
#: the suffix of a reference row's method
REFERENCE = " (reference)"
#: seeds per recipe unless ``--seeds`` says otherwise
DEFAULT_SEEDS = 2
#: the table's scores, and their names in the note
METRICS = ("knn_top1", "linear_top1")
METRIC_NAMES = {"knn_top1": "kNN", "linear_top1": "linear probe"}
#: Fashion-MNIST's classes
CLASSES = 10
#: the demo's linear probe: full-batch L-BFGS iterations and L2 penalty (per weight, on standardised features)
LINEAR_STEPS = 100
LINEAR_WEIGHT_DECAY = 1e-4
#: Fashion-MNIST's training images: the scoring bank, and what ``data.fraction`` takes a share of
TRAIN_IMAGES = 60_000
#: :func:`estimated_minutes_in_32_true`'s measurements, on 2-core AMD EPYC hosts on 2026-12-01/02: trained in
#: 32-true on one with AVX2 only, the demo ran about 3.5 times slower than in bf16 on one with AVX512-BF16 (the
#: default of then: simclr 207 against 733 images/s, simclr_unmix 136 against 495); everything but the training
#: (each run's start and per-epoch validation, the scoring, the figure) took 8 min 10 s there for 4 runs and the
#: references, 98 s a part
SLOWDOWN_32_TRUE = 3.5
OTHER_SECONDS_32_TRUE = 98.0
#: each demo run's training speed in 32-true on a 2-core AVX2-only host, images/s, by recipe name. The long
#: recipes' were measured there (make demo LONG=1). The default's (2026-12-06) were not: on the bf16 host with
#: torch held to AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2) it trained at 351 / 247 images/s and
#: the long recipes at 332 / 221, which the AVX2 host ran at 266 / 197; scaled by that host's 0.85 of it
IMAGES_PER_S_32_TRUE = {"demo-simclr": 300.0, "demo-simclr_unmix": 210.0,
                        "demo-simclr-long": 266.0, "demo-simclr_unmix-long": 197.0}
TABLE_TITLE = "Fashion-MNIST, top-1 (%) on the official test split (10,000 images); a small CPU budget, not a reproduction"
# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #


def has_fashion_mnist(root: Path) -> bool:
    """Whether ``root`` holds the four IDX files (plain or .gz), directly or in torchvision's ``FashionMNIST/raw``."""
    folders = (root, root / "FashionMNIST" / "raw")
    return all(any((f / n).is_file() or (f / f"{n}.gz").is_file() for f in folders) for n in IDX_FILES)


def _is_debian() -> bool:
    return Path("/etc/debian_version").is_file()


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _system(command: list[str]) -> int:
    """Runs ``command`` with its output on the terminal; its exit status."""
    print("unmix_ext.demo: $ " + " ".join(command), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        return subprocess.run(command, env=env, check=False).returncode
    except OSError:  # apt-get missing after all
        return 127


def _apt_install() -> None:
    """Installs the Debian package, updating the package lists first when apt does not know it."""
    if _system(["apt-cache", "show", APT_PACKAGE]) != 0:
        _system(["apt-get", "update"])
    _system(["apt-get", "install", "-y", APT_PACKAGE])


def _download(root: Path) -> None:
    """torchvision's downloader into ``root``; raises DataError when it fails (offline, for one)."""
    build_dataset("fashion_mnist", root, "val", download=True, root_key="data.train_path")


def ensure_fashion_mnist(root: Path = FASHION_MNIST_ROOT, download_root: Path = DOWNLOAD_ROOT) -> list[str]:
    """Makes Fashion-MNIST readable; returns the recipe overrides that point the demo at it.

    Tries, in order: the files in ``root`` (Debian's package; no override); a
    copy already in ``download_root``; ``apt-get install dataset-fashion-mnist``
    on a Debian-like system when run as root; torchvision's downloader into
    ``download_root``.

    Raises:
        DataError: one line saying what failed and how to get the files.
    """
    if has_fashion_mnist(root):
        return []
    local = [f"data.train_path={download_root}"]
    if has_fashion_mnist(download_root):
        return local
    if not _is_debian():
        apt = "not a Debian-like system, so no apt-get"
    elif not _is_root():
        apt = "apt-get install needs root"
    else:
        _apt_install()
        if has_fashion_mnist(root):
            return []
        apt = f"apt-get install {APT_PACKAGE} did not provide the files"
    print(f"unmix_ext.demo: downloading Fashion-MNIST into {download_root}", flush=True)
    try:
        _download(download_root)
    except DataError as err:
        download = f"the download failed ({err})"
    else:
        if has_fashion_mnist(download_root):
            return local
        download = "the download left no files"
    raise DataError(
        f"data: Fashion-MNIST is neither in {root} nor in {download_root} ({apt}; {download}); "
        f"install it with `sudo apt-get install {APT_PACKAGE}`, or put the four IDX files ({IDX_FILES[0]}.gz, ...) "
        f"from https://github.com/zalandoresearch/fashion-mnist into {download_root}, then run `make demo` again"
    )


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #


def demo_config(recipe: Path, overrides: Sequence[str]) -> Config:
    """A demo recipe with ``overrides``."""
    return load_recipe(recipe, overrides)


def precision_overrides(cfg: Config) -> list[str]:
    """``["precision=32-true"]`` where ``cfg``'s bf16 would be emulated on this CPU (see
    :func:`unmix_ext.runner.trainer.cpu_has_bf16_instructions`), else ``[]``: the demo's budget is a
    few minutes on whichever CPU runs it, and emulated bf16 is about 20 times slower than fp32.
    :func:`thirty_two_bit_line` says so, with how long it will take."""
    return [] if emulated_bf16_notice(cfg, device_plan(cfg)) is None else ["precision=32-true"]


def estimated_minutes_in_32_true(runs: Sequence[Config]) -> float:
    """The demo's wall time (minutes) in 32-true on 2 cores without bf16 instructions, estimated for ``runs``,
    the configs it will train (demo recipes, named in :data:`IMAGES_PER_S_32_TRUE`): each run's images
    (``data.fraction`` of the training images, ``max_epochs`` times) at its recipe's speed there, plus
    :data:`OTHER_SECONDS_32_TRUE` per run and once for the references."""
    seconds = OTHER_SECONDS_32_TRUE
    for cfg in runs:
        images = round(TRAIN_IMAGES * cfg.data.fraction) * cfg.max_epochs
        seconds += images / IMAGES_PER_S_32_TRUE[cfg.name] + OTHER_SECONDS_32_TRUE
    return seconds / 60


def thirty_two_bit_line(cfg: Config, runs: Sequence[Config]) -> str:
    """The one line printed before the demo starts where :func:`precision_overrides` moved it to 32-true:
    the runner's notice (``cfg`` asks for bf16), the switch, and :func:`estimated_minutes_in_32_true` of ``runs``."""
    notice = emulated_bf16_notice(cfg, device_plan(cfg)) or f"unmix_ext: precision {cfg.precision}"
    minutes = estimated_minutes_in_32_true(runs)
    return (f"{notice}; the demo trains and scores in 32-true, which takes about {minutes:.0f} minutes on 2 cores "
            f"for its {len(runs)} run(s) (estimated: this CPU kind trained the demo {SLOWDOWN_32_TRUE:g} times "
            "slower than one with bf16 instructions)")


@dataclass(frozen=True)
class ScoringSet:
    """What every frozen backbone is scored on, decoded once per demo.

    ``train_images`` (60000, 3, S, S) and ``test_images`` (10000, 3, S, S): float32, as the eval
    transform gives them, channels-last (the CPU's convolutions run about 40% faster in that layout);
    ``train_targets`` and ``test_targets``: (N,) class indices.
    """

    train_images: torch.Tensor
    train_targets: torch.Tensor
    test_images: torch.Tensor
    test_targets: torch.Tensor


def scoring_set(cfg: Config) -> ScoringSet:
    """Every training image, whatever ``data.fraction``, and the test split of ``cfg``'s dataset."""
    full = copy.deepcopy(cfg)
    full.data.fraction = 1.0
    transform = eval_transform(cfg)
    tensors = []
    for split_cfg, split in ((full, "train"), (cfg, "val")):
        batches = list(eval_loader(load_split(split_cfg, split, transform), cfg, cfg.eval.linear.batch_size))
        tensors += [torch.cat([images for images, _ in batches]).contiguous(memory_format=torch.channels_last),
                    torch.cat([targets for _, targets in batches])]
    return ScoringSet(*tensors)


def _features(backbone: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
              cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) float32 and targets (N,) of images (N, 3, S, S); in bfloat16 autocast when the recipe trains in it."""
    size = cfg.eval.linear.batch_size
    backbone.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision.startswith("bf16")):
        return extract_features(backbone, zip(images.split(size), targets.split(size)))


def linear_probe_top1(train_features: torch.Tensor, train_targets: torch.Tensor, test_features: torch.Tensor,
                      test_targets: torch.Tensor, *, steps: int = LINEAR_STEPS,
                      weight_decay: float = LINEAR_WEIGHT_DECAY) -> float:
    """Top-1 (percent) of a softmax regression fitted on frozen features, full batch with L-BFGS.

    Args:
        train_features, test_features: (N, D) and (M, D), standardised here with the training statistics.
        train_targets, test_targets: (N,) and (M,) class indices in [0, CLASSES).
        steps: L-BFGS iterations; weight_decay: L2 penalty on the weights (not the bias).
    """
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6  # dead units have std 0
    # new tensors: autograd may not save the inference-mode tensors extract_features returns
    train, test = (train_features - mean) / std, (test_features - mean) / std
    train_targets = train_targets.clone()
    classifier = torch.nn.Linear(train.shape[1], CLASSES)
    for parameter in classifier.parameters():  # the problem is convex: a fixed start makes the score repeatable
        torch.nn.init.zeros_(parameter)
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=steps, history_size=20,
                                  line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(classifier(train), train_targets) + weight_decay * classifier.weight.square().sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    with torch.no_grad():
        return (classifier(test).argmax(1) == test_targets).float().mean().item() * 100.0


def score_backbone(cfg: Config, data: ScoringSet, backbone: torch.nn.Module) -> dict[str, float]:
    """kNN (``cfg.eval.knn``'s k and temperature) and linear top-1 (percent) of ``backbone`` on ``data``.

    Returns:
        ``{"knn_top1": float, "linear_top1": float}``.
    """
    train_features, train_targets = _features(backbone, data.train_images, data.train_targets, cfg)
    test_features, test_targets = _features(backbone, data.test_images, data.test_targets, cfg)
    knn = knn_accuracy_of_features(train_features, train_targets, test_features, test_targets,
                                   num_classes=CLASSES, k=cfg.eval.knn.k, temperature=cfg.eval.knn.temperature)
    return {
        "knn_top1": knn["knn_top1"],
        "linear_top1": linear_probe_top1(train_features, train_targets, test_features, test_targets),
    }


def untrained_backbone(cfg: Config) -> torch.nn.Module:
    """The backbone every run starts from: built after seeding with ``cfg.seed``, as the runner does."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return build_method(cfg, CLASSES).encoder


def finished_run(cfg: Config) -> dict[str, Any] | None:
    """The results of a finished run of exactly ``cfg`` in its run directory (:meth:`RunDir.of`), else None.

    Finished: its :func:`saved_results` carry ``cfg``'s config hash (recipe, overrides, seed) and a last
    checkpoint is beside them. Only the config is compared: code changed since is not detected.
    ``checkpoint`` and ``run_dir`` are where they are now, wherever the run was trained.
    """
    cfg = as_run(cfg).cfg  # the config the run directory is named after
    run_dir = RunDir.of(cfg)
    results = saved_results(cfg)
    if results is None or results.get("recipe_hash") != config_hash(cfg) or not run_dir.last_checkpoint.is_file():
        return None
    return {**results, "checkpoint": str(run_dir.last_checkpoint), "run_dir": str(run_dir.path)}


def read_history(run_dir: Path) -> dict[str, list[float]]:
    """Per-epoch online validation accuracies of a run's newest pretraining log.

    Returns:
        ``{"epoch": [...], "val_knn_acc1": [...], "val_acc1": [...]}``, percent, epochs counted from 1.
    """
    log = RunDir(run_dir).metrics_log("pretrain")
    if log is None:
        raise DataError(f"run_dir: no logs/pretrain/version_*/metrics.csv under {run_dir}")
    history: dict[str, list[float]] = {"epoch": [], "val_knn_acc1": [], "val_acc1": []}
    with log.open(newline="") as file:
        for row in csv.DictReader(file):
            if row.get("val_acc1"):  # the validation rows; training rows leave it empty
                history["epoch"].append(int(row["epoch"]) + 1)
                history["val_acc1"].append(float(row["val_acc1"]))
                history["val_knn_acc1"].append(float(row.get("val_knn_acc1") or "nan"))
    return history


# --------------------------------------------------------------------------- #
# Figure and table
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class MixExample:
    """One mixed pair: images (3, H, W) in [0, 1], the mode ("global" or "region") and lam, the share of ``first``."""

    first: torch.Tensor
    second: torch.Tensor
    mixed: torch.Tensor
    mode: str
    lam: float


def mix_examples(images: torch.Tensor, generator: torch.Generator, pairs: int = MIX_PAIRS) -> list[MixExample]:
    """``pairs`` Mixup then ``pairs`` CutMix examples, each drawn as Un-Mix draws its mixture.

    Args:
        images: (N, 3, H, W) in [0, 1] with N >= 4 * pairs: image 2i is mixed with image 2i + 1.
        generator: CPU generator of the draws (lam, box).
    """
    if images.shape[0] < 4 * pairs:
        raise ValueError(f"images: need at least {4 * pairs} images for {pairs} pairs per mode, got {images.shape[0]}")
    examples = []
    for m, (mode, prob) in enumerate((("global", 1.0), ("region", 0.0))):  # prob: chance of the global mode
        unmix = UnMix(alpha=1.0, prob=prob)
        for i in range(m * pairs, (m + 1) * pairs):
            pair = images[2 * i: 2 * i + 2]
            mix = unmix(pair, generator)  # a batch of 2: each image's partner in the reversed batch is the other
            examples.append(MixExample(pair[0], pair[1], mix.images[0], mode, float(mix.lam)))
    return examples


def real_views(cfg: Config, count: int) -> torch.Tensor:
    """The first augmented view of ``count`` training images, as the network gets it but in [0, 1]: (count, 3, S, S)."""
    dataset = IndexedDataset(load_split(cfg, "train", pretrain_transform(cfg)))
    generator = torch.Generator().manual_seed(cfg.seed)
    picks = torch.randperm(len(dataset), generator=generator)[:count].tolist()
    views = pretrain_collate(cfg)([dataset[i] for i in picks])[1][0]  # the pretraining loader's batch, first crop
    group = cfg.augmentations[0]
    mean, std = torch.tensor(group.mean).view(1, 3, 1, 1), torch.tensor(group.std).view(1, 3, 1, 1)
    return (views * std + mean).clamp(0, 1)  # mixing commutes with this per-channel affine map


class GreyPixels(torch.nn.Module):
    """The raw-pixel reference's "backbone": normalised grey images (B, 3, S, S) -> (B, S * S), nothing learned.

    The loader repeats a grey image's one channel three times; one copy gives the kNN the same
    cosine similarities with a third of the features.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, 0].flatten(1)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of ``values`` (std 0.0 for a single value)."""
    if not values:
        raise ValueError("values: need at least one value")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method (in order of first appearance) from per-seed records.

    Args:
        runs: dicts with ``method``, ``seed``, ``knn_top1`` and ``linear_top1`` (and, for trained
            methods, ``pretrain_seconds`` and ``images_per_s``).

    Returns:
        per method ``{"method", "seeds": [...], "knn_top1": (mean, std), "linear_top1": (mean, std),
        "pretrain_seconds": mean or None, "images_per_s": mean or None}``.
    """
    rows: dict[str, list[dict[str, Any]]] = {}
    for record in runs:
        rows.setdefault(record["method"], []).append(record)
    summary = []
    for method, records in rows.items():
        row: dict[str, Any] = {"method": method, "seeds": [r["seed"] for r in records]}
        for metric in METRICS:
            row[metric] = mean_std([r[metric] for r in records])
        for key in ("pretrain_seconds", "images_per_s"):
            values = [r[key] for r in records if r.get(key) is not None]
            row[key] = mean_std(values)[0] if values else None
        summary.append(row)
    return summary


def _is_reference(method: str) -> bool:
    return method.endswith(REFERENCE)


def table_note(summary: Sequence[dict[str, Any]]) -> str:
    """How to read the table, computed from its numbers (:func:`summarize`'s rows).

    Says, per trained method, which references its mean beats on both scores (and by how much)
    and which it does not, and, per Un-Mix method, whether its difference to the base method (the first trained
    row) is within the seed spread: ``|mean difference| <= the larger of the two standard deviations``.
    """
    trained = [row for row in summary if not _is_reference(row["method"])]
    references = [row for row in summary if _is_reference(row["method"])]
    seeds = len(trained[0]["seeds"]) if trained else 0
    sentences = [f"Chance is 10%; means +- standard deviations over {seeds} seed(s)."]
    for row in trained:
        margins = {(ref["method"], metric): row[metric][0] - ref[metric][0] for ref in references for metric in METRICS}
        if not margins:
            continue
        if all(value > 0 for value in margins.values()):
            sentences.append(f"{row['method']} beats every reference on kNN and linear probe, "
                             f"by {min(margins.values()):.1f} points or more.")
            continue
        clauses = []
        for ref in references:
            name = ref["method"]
            won = [metric for metric in METRICS if margins[name, metric] > 0]
            lost = [f"{METRIC_NAMES[metric]} ({margins[name, metric]:+.1f})" for metric in METRICS if metric not in won]
            if not lost:
                clauses.append(f"beats {name} on both, by {min(margins[name, m] for m in METRICS):.1f} points or more")
            elif not won:
                clauses.append(f"does not beat {name} on " + " or ".join(lost))
            else:
                clauses.append(f"beats {name} on " + " and ".join(
                    f"{METRIC_NAMES[m]} ({margins[name, m]:+.1f})" for m in won) + " but not on " + " and ".join(lost))
        sentences.append(f"{row['method']} " + "; ".join(clauses) + ".")
    base = trained[0] if trained else None
    for row in trained[1:]:
        parts = []
        for metric in METRICS:
            difference = row[metric][0] - base[metric][0]
            spread = max(row[metric][1], base[metric][1])
            if seeds < 2:
                verdict = "one seed, so no spread to compare with"
            elif abs(difference) <= spread:
                verdict = f"within the seed spread ({spread:.1f})"
            else:
                verdict = f"outside the seed spread ({spread:.1f})"
            parts.append(f"{METRIC_NAMES[metric]} {difference:+.1f}, {verdict}")
        sentences.append(f"{row['method']} minus {base['method']}: " + "; ".join(parts) + ".")
    if len(trained) > 1:
        sentences.append("A few CPU minutes do not measure what Un-Mix gains in the paper (hundreds of epochs).")
    return " ".join(sentences)


def plot_demo(runs: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]], examples: Sequence[MixExample],
              path: Path) -> Path:
    """Writes the demo figure: accuracy per epoch (left) and mixed images with their lam (right).

    Args:
        runs: per-seed records; a trained one has ``history`` (:func:`read_history`'s dict), drawn thin,
            and its method's mean over seeds thick; its final kNN (60k bank) is a star after the last epoch.
        summary: :func:`summarize`'s rows; each reference's mean kNN is a horizontal line.
        examples: from :func:`mix_examples`, shown one pair per row.
        path: the PNG to write (folders created).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = max(1, len(examples))
    figure = plt.figure(figsize=(11, max(5.0, 1.0 * rows)))
    grid = figure.add_gridspec(rows, 5, width_ratios=[3.6, 0.1, 0.6, 0.6, 0.6])
    curves = figure.add_subplot(grid[:, 0])
    for m, row in enumerate(r for r in summary if not _is_reference(r["method"])):
        color = f"C{m}"
        histories = [r["history"] for r in runs if r["method"] == row["method"] and r.get("history")]
        for history in histories:
            curves.plot(history["epoch"], history["val_knn_acc1"], color=color, linewidth=0.8, alpha=0.5)
        if histories:
            epochs = min(len(h["epoch"]) for h in histories)
            mean = [sum(h["val_knn_acc1"][e] for h in histories) / len(histories) for e in range(epochs)]
            curves.plot(histories[0]["epoch"][:epochs], mean, color=color, linewidth=2.5, marker="o",
                        label=f"{row['method']}: online kNN (bank: this epoch's augmented views)")
            last = histories[0]["epoch"][epochs - 1] + 0.1
            curves.plot([last], [row["knn_top1"][0]], marker="*", markersize=13, linestyle="none", color=color,
                        label=f"{row['method']}: kNN, 60k bank ({row['knn_top1'][0]:.1f})")
    for style, row in zip((":", "--", "-."), (r for r in summary if _is_reference(r["method"]))):
        curves.axhline(row["knn_top1"][0], color="black", linestyle=style, linewidth=1.2,
                       label=f"{row['method']}: kNN, 60k bank ({row['knn_top1'][0]:.1f})")
    curves.set_xlabel("epoch")
    curves.set_ylabel("top-1 on the 10k test images (%)")
    curves.set_title("Fashion-MNIST: every seed (thin) and their mean (thick)", fontsize=10)
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.legend(fontsize=7, loc="lower right")
    curves.grid(alpha=0.3)
    names = {"global": "Mixup", "region": "CutMix"}
    for row, example in enumerate(examples):
        titles = ("image", "partner") if row == 0 else ("", "")  # column heads, once
        for col, (image, title) in enumerate((
            (example.first, titles[0]), (example.second, titles[1]),
            (example.mixed, f"{names.get(example.mode, example.mode)} lam={example.lam:.2f}"),
        )):
            axes = figure.add_subplot(grid[row, 2 + col])
            axes.imshow(image.permute(1, 2, 0).numpy(), vmin=0, vmax=1)
            axes.set_title(title, fontsize=7)
            axes.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mean_std(value: tuple[float, float], seeds: int) -> str:
    return f"{value[0]:.1f} +- {value[1]:.1f}" if seeds > 1 else f"{value[0]:.1f}"


def render_table(summary: Sequence[dict[str, Any]]) -> str:
    """A markdown table of :func:`summarize`'s rows: kNN and linear top-1 (percent, mean +- std over
    seeds; one value for a row of one seed), mean pretraining seconds and images/s."""
    lines = [
        "| method | seeds | kNN top-1 (%) | linear top-1 (%) | pretrain time (s) | images/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        n = len(row["seeds"])
        lines.append(
            f"| {row['method']} | {n} | {_mean_std(row['knn_top1'], n)} | {_mean_std(row['linear_top1'], n)} "
            f"| {_number(row.get('pretrain_seconds'), 0)} | {_number(row.get('images_per_s'), 0)} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def _scored(cfg: Config, data: ScoringSet, backbone: torch.nn.Module, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with :func:`score_backbone`'s scores and the seconds they took (``eval_seconds``)."""
    started = time.time()
    return {**record, **score_backbone(cfg, data, backbone), "eval_seconds": time.time() - started}


def demo(epochs: int | None = None, out: Path = Path("results"), seeds: int = DEFAULT_SEEDS,
         long: bool = False, reuse: bool = False) -> list[dict[str, Any]]:
    """Runs the demo (see the module docstring); returns :func:`summarize`'s rows, the references last.

    Args:
        epochs: overrides the recipes' ``max_epochs``.
        seeds: every recipe trains with seeds ``seed, seed + 1, ...`` (the recipe's seed first).
        long: train :data:`LONG_RECIPES` instead of :data:`RECIPES`.
        reuse: score the runs already finished with the same config (:func:`finished_run`) instead of
            training them again; each record's ``reused`` says which were.

    Raises:
        DataError: Fashion-MNIST cannot be had; ConfigError: a recipe, ``epochs`` or ``seeds`` is wrong.
    """
    for key, value in (("seeds", seeds), ("epochs", epochs)):
        if value is not None and value < 1:  # before the data is fetched: one line, not argparse's usage
            raise ConfigError(f"{key}: must be >= 1, got {value}")
    recipes = LONG_RECIPES if long else RECIPES
    overrides = ensure_fashion_mnist()
    if epochs is not None:
        overrides.append(f"max_epochs={epochs}")
    first_cfg = demo_config(recipes[0], overrides)
    in_32_true = precision_overrides(first_cfg)
    overrides += in_32_true
    first = first_cfg.seed
    seed_list = [first + i for i in range(seeds)]
    # every configuration checked before the first trains
    configs = [[demo_config(recipe, [*overrides, f"seed={seed}"]) for seed in seed_list] for recipe in recipes]
    if in_32_true:
        to_train = [cfg for per_seed in configs for cfg in per_seed if not (reuse and finished_run(cfg))]
        print(thirty_two_bit_line(first_cfg, to_train), flush=True)
    base = configs[0][0]
    data = scoring_set(base)
    runs: list[dict[str, Any]] = []
    for recipe, per_seed in zip(recipes, configs):
        for cfg in per_seed:
            heading = f"== unmix_ext.demo: {cfg.name}, seed {cfg.seed} (recipes/{recipe.relative_to(RECIPES_ROOT)})"
            finished = finished_run(cfg) if reuse else None
            if finished is None:
                print(heading, flush=True)
                results = run(cfg, recipe)
            else:
                print(f"{heading}: reusing the finished run in {finished['run_dir']}", flush=True)
                results = finished
            record = {"method": results["method"], "seed": cfg.seed, "reused": finished is not None,
                      "pretrain_seconds": results["pretrain_seconds"],
                      "images_per_s": results["pretrain_images_per_s"],
                      "history": read_history(Path(results["run_dir"]))}
            runs.append(_scored(cfg, data, load_backbone(cfg, Path(results["checkpoint"]), CLASSES), record))
    print(f"== unmix_ext.demo: {UNTRAINED} and {RAW_PIXELS}, for reference", flush=True)
    for cfg in configs[0]:
        runs.append(_scored(cfg, data, untrained_backbone(cfg), {"method": f"{UNTRAINED}{REFERENCE}", "seed": cfg.seed}))
    runs.append(_scored(base, data, GreyPixels(), {"method": f"{RAW_PIXELS}{REFERENCE}", "seed": None}))
    summary = summarize(runs)
    note = table_note(summary)
    examples = mix_examples(real_views(base, 4 * MIX_PAIRS), torch.Generator().manual_seed(base.seed))
    figure = plot_demo(runs, summary, examples, out / "demo.png")
    table = render_table(summary)
    (out / "demo.md").write_text(f"{TABLE_TITLE}\n\n{table}\n\n{note}\n")
    (out / "demo.json").write_text(json.dumps(
        {"title": TABLE_TITLE, "seeds": seed_list, "recipes": [f"recipes/{r.relative_to(RECIPES_ROOT)}" for r in recipes],
         "overrides": overrides, "runs": runs, "summary": summary,
         "note": note}, indent=2) + "\n")
    print(f"\n{TABLE_TITLE}\n{table}\n\n{note}\n\nwritten: {figure}, {out / 'demo.md'} and {out / 'demo.json'}")
    return summary
