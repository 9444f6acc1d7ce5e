"""``python -m unmix_ext.demo``: SimCLR with and without Un-Mix on Fashion-MNIST, in minutes on a CPU.

What ``make demo`` runs. In order:

1. :func:`ensure_fashion_mnist` makes sure the data is there: the files of
   Debian's ``dataset-fashion-mnist`` package (the loader's default root);
   else, as root on a Debian-like system, that package is installed with
   apt-get; else torchvision's downloader fetches the files into
   ``data/fashion_mnist``; else the demo stops with one line saying how to
   get them;
2. the two recipes ``recipes/demo/simclr.yaml`` and
   ``recipes/demo/simclr_unmix.yaml`` (the same run with ``unmix.enabled``)
   pretrain through :func:`unmix_ext.runner.run.run`, validating the online
   classifier and kNN every epoch;
3. each frozen backbone (and, for reference, the untrained backbone both runs
   start from) is scored with the features of all 60,000 training images: the
   weighted kNN (k=200, temperature 0.1) and a linear probe (softmax
   regression fitted by L-BFGS on the standardised features, no augmentation);
4. a table is printed and written to ``<out>/demo.md``, and ``<out>/demo.png``
   shows accuracy per epoch next to real Mixup and CutMix images, as the
   network is fed them.

Every score is top-1 in percent on Fashion-MNIST's official test split (the
10,000 t10k images), which the runner validates on.

Example::

    python -m unmix_ext.demo                 # about ten minutes on 2 CPU cores
    python -m unmix_ext.demo --epochs 1      # shorter, for a first look
"""
from __future__ import annotations

import copy
import csv
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from tqdm import tqdm

import unmix_ext.methods  # noqa: F401  (patches solo-learn, registers the Un-Mix variants)
from unmix_ext.recipes import ROOT as RECIPES_ROOT
from unmix_ext.runner.builder import build_method, ssl_methods
from unmix_ext.runner.config import Config, load_config
from unmix_ext.runner.data import FASHION_MNIST_ROOT, DataError, LabelledDataset, build_dataset
from unmix_ext.runner.evaluate import extract_features, knn_accuracy_of_features
from unmix_ext.runner.linear import load_backbone
from unmix_ext.mixing import UnMix
from unmix_ext.runner.pipeline import eval_loader, eval_transform, load_split, pretrain_transform
from unmix_ext.runner.run import run
from unmix_ext.runner.rundir import RunDir

RECIPES = (RECIPES_ROOT / "demo" / "simclr.yaml", RECIPES_ROOT / "demo" / "simclr_unmix.yaml")
#: where torchvision's downloader puts the files when the Debian package cannot be had (from the working directory)
DOWNLOAD_ROOT = Path("data") / "fashion_mnist"
APT_PACKAGE = "dataset-fashion-mnist"
IDX_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
#: pairs shown per mixing mode (Mixup, CutMix) in the figure
MIX_PAIRS = 3
UNTRAINED = "untrained backbone"
#: Fashion-MNIST's classes
CLASSES = 10
#: the demo's linear probe: full-batch L-BFGS iterations and L2 penalty (per weight, on standardised features)
LINEAR_STEPS = 100
LINEAR_WEIGHT_DECAY = 1e-4
TABLE_TITLE = "Fashion-MNIST, top-1 (%) on the official test split (10,000 images); a small CPU budget, not a reproduction"
#: how to read the table, printed under it
TABLE_NOTE = (
    "Chance is 10%. Both runs train end to end on real images, and their accuracy climbs epoch after epoch "
    "(demo.png). The table does not say what Un-Mix gains: that takes hundreds of epochs (the paper's tables). "
    "Nor does a few CPU minutes of SimCLR beat the untrained network: on Fashion-MNIST random convolutional "
    "features are already strong (kNN on raw pixels reaches about 85%, Zalando's Fashion-MNIST benchmark), "
    "and self-supervised features pass them only after much longer training."
)


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
    return load_config(recipe, overrides, known_methods=ssl_methods())


def _features(backbone: torch.nn.Module, dataset: LabelledDataset, cfg: Config, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    loader = eval_loader(dataset, cfg, cfg.eval.linear.batch_size)
    return extract_features(backbone, tqdm(loader, desc=f"features of the {what}", leave=False))


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


def score_backbone(cfg: Config, backbone: torch.nn.Module) -> dict[str, float]:
    """kNN and linear top-1 (percent) on the test split, with every training image, whatever ``data.fraction``.

    Returns:
        ``{"knn_top1": float, "linear_top1": float}``.
    """
    full = copy.deepcopy(cfg)
    full.data.fraction = 1.0
    transform = eval_transform(cfg)
    train_features, train_targets = _features(backbone, load_split(full, "train", transform), cfg, "training images")
    test_features, test_targets = _features(backbone, load_split(cfg, "val", transform), cfg, "test images")
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
    dataset = load_split(cfg, "train", pretrain_transform(cfg))
    generator = torch.Generator().manual_seed(cfg.seed)
    picks = torch.randperm(len(dataset), generator=generator)[:count].tolist()
    views = torch.stack([dataset[i][0][0] for i in picks])
    group = cfg.augmentations[0]
    mean, std = torch.tensor(group.mean).view(1, 3, 1, 1), torch.tensor(group.std).view(1, 3, 1, 1)
    return (views * std + mean).clamp(0, 1)  # mixing commutes with this per-channel affine map


def plot_demo(histories: dict[str, dict[str, list[float]]], examples: Sequence[MixExample], path: Path,
              final_knn: dict[str, float] | None = None) -> Path:
    """Writes the demo figure: accuracy per epoch (left) and mixed images with their lam (right).

    Args:
        histories: per run label, :func:`read_history`'s dict.
        examples: from :func:`mix_examples`, shown one pair per row.
        path: the PNG to write (folders created).
        final_knn: per label, a kNN top-1 drawn as a horizontal line (the untrained backbone's) or a
            marker after the last epoch (a trained run's).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = max(1, len(examples))
    figure = plt.figure(figsize=(10, max(4.5, 1.0 * rows)))
    grid = figure.add_gridspec(rows, 5, width_ratios=[3.2, 0.1, 0.6, 0.6, 0.6])
    curves = figure.add_subplot(grid[:, 0])
    colors = {}
    for label, history in histories.items():
        line, = curves.plot(history["epoch"], history["val_knn_acc1"], marker="o", label=f"{label}: online kNN")
        colors[label] = line.get_color()
        curves.plot(history["epoch"], history["val_acc1"], linestyle="--", color=line.get_color(),
                    label=f"{label}: online linear")
    for label, value in (final_knn or {}).items():
        if label in histories and histories[label]["epoch"]:
            last = histories[label]["epoch"][-1]
            curves.plot([last + 0.15], [value], marker="*", markersize=12, linestyle="none", color=colors[label],
                        label=f"{label}: kNN, 60k bank ({value:.1f})")
        else:
            curves.axhline(value, color="grey", linestyle=":", label=f"{label}: kNN, 60k bank ({value:.1f})")
    curves.set_xlabel("epoch")
    curves.set_ylabel("top-1 on the 10k test images (%)")
    curves.set_title("Fashion-MNIST, accuracy per epoch", fontsize=10)
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.legend(fontsize=7, loc="best")
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


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table: method, kNN top-1, linear top-1 (percent), pretraining seconds, images/s."""
    lines = [
        "| method | kNN top-1 (%) | linear top-1 (%) | pretrain time (s) | images/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {_number(row.get('knn_top1'))} | {_number(row.get('linear_top1'))} "
            f"| {_number(row.get('pretrain_seconds'), 0)} | {_number(row.get('images_per_s'), 0)} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def demo(epochs: int | None = None, out: Path = Path("results")) -> list[dict[str, Any]]:
    """Runs the demo (see the module docstring); returns the table's rows, the untrained backbone's last.

    Raises:
        DataError: Fashion-MNIST cannot be had; ConfigError: a recipe or ``epochs`` is wrong.
    """
    overrides = ensure_fashion_mnist()
    if epochs is not None:
        overrides.append(f"max_epochs={epochs}")
    configs = [demo_config(recipe, overrides) for recipe in RECIPES]  # both checked before the first trains
    rows, histories, knn = [], {}, {}
    for recipe, cfg in zip(RECIPES, configs):
        print(f"== unmix_ext.demo: {cfg.name} (recipes/{recipe.relative_to(RECIPES_ROOT)})", flush=True)
        results = run(cfg, recipe)
        label = results["method"]
        scores = score_backbone(cfg, load_backbone(cfg, Path(results["checkpoint"]), CLASSES))
        knn[label] = scores["knn_top1"]
        histories[label] = read_history(Path(results["run_dir"]))
        rows.append({"method": label, **scores, "pretrain_seconds": results["pretrain_seconds"],
                     "images_per_s": results["pretrain_images_per_s"]})
    base = configs[0]
    print(f"== unmix_ext.demo: {UNTRAINED}, for reference", flush=True)
    scores = score_backbone(base, untrained_backbone(base))
    knn[UNTRAINED] = scores["knn_top1"]
    rows.append({"method": f"{UNTRAINED} (reference)", **scores})
    examples = mix_examples(real_views(base, 4 * MIX_PAIRS), torch.Generator().manual_seed(base.seed))
    figure = plot_demo(histories, examples, out / "demo.png", final_knn=knn)
    table = render_table(rows)
    (out / "demo.md").write_text(f"{TABLE_TITLE}\n\n{table}\n\n{TABLE_NOTE}\n")
    print(f"\n{TABLE_TITLE}\n{table}\n\n{TABLE_NOTE}\n\nwritten: {figure} and {out / 'demo.md'}")
    return rows
