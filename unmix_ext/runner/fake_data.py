"""Small datasets written in the exact on-disk format of the real ones.

Tests and ``scale: smoke`` runs use them where the real files cannot be had.
Each writer takes the images to write, so a test can plant a known pixel
and read it back; :func:`write_fake_dataset` fills them with
:func:`class_pattern_images`, whose classes differ in colour and stripe
direction (plus noise), so a short run has something to learn.

Example::

    root = write_fake_dataset("stl10", tmp_path, num_per_class=4)
    dataset = build_dataset("stl10", root, "pretrain")   # unmix_ext.runner.data
"""

from __future__ import annotations

import colorsys
import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from unmix_ext.runner.data import IMAGENET100_CLASS_LIST, dataset_spec

#: images of one split: uint8 array (N, H, W, C) with C in {1, 3}, and labels (N,), or None if unlabeled
Split = tuple[np.ndarray, "np.ndarray | None"]

_DEFAULT_NUM_PER_CLASS = 8
_DEFAULT_MAX_CLASSES = 10
_FOLDER_IMAGE_SIZE = 32


def class_pattern_images(
    labels: np.ndarray, size: int, num_classes: int, channels: int = 3, seed: int = 0
) -> np.ndarray:
    """Images whose class shows in their colour and stripe direction.

    Args:
        labels: int array (N,), class of each image, in [0, num_classes).
        size: side in pixels.
        num_classes: number of classes (spreads hues and directions evenly).
        channels: 3 for RGB, 1 for grey (the class sets the brightness).
        seed: seed of the noise.

    Returns:
        uint8 array (N, size, size, channels).
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    share = labels / max(num_classes, 1)
    if channels == 3:
        colour = np.array([colorsys.hsv_to_rgb(h, 0.8, 0.9) for h in share]).reshape(-1, 1, 1, 3)
    else:
        colour = (0.25 + 0.7 * share).reshape(-1, 1, 1, 1)
    angle = np.pi * share.reshape(-1, 1, 1)
    y, x = np.mgrid[0:size, 0:size] / size
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * (x * np.cos(angle) + y * np.sin(angle)))
    pixels = 255 * colour * (0.55 + 0.45 * stripes[..., None]) + rng.normal(0, 12, (len(labels), size, size, channels))
    return np.clip(pixels, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# CIFAR pickles


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote the CIFAR release.

    Text and raw bytes become Python 2 ``str`` (SHORT_BINSTRING / BINSTRING),
    so ``pickle.load(f, encoding="bytes")`` gives keys like ``b'data'`` and
    ``encoding="latin1"`` gives ``'data'``, exactly as with the real files;
    numpy functions are named from ``numpy.core`` as numpy 1 named them.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: str | bytes) -> None:
        if isinstance(obj, str):
            if not obj.isascii():
                self.save_str(obj)
                return
            raw = obj.encode("ascii")
        else:
            raw = obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", "") or ""
        if not module.startswith("numpy._core"):
            super().save_global(obj, name)
            return
        legacy = "numpy.core" + module[len("numpy._core") :]
        self.write(pickle.GLOBAL + f"{legacy}\n{name or obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)


def _dump_py2(path: Path, obj: Any) -> None:
    with open(path, "wb") as file:
        _Py2Pickler(file, protocol=2).dump(obj)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    # (N, 32, 32, 3) -> (N, 3072): the red, green then blue plane, each row-major
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def write_cifar10(root: Path, splits: dict[str, Split], class_names: Sequence[str]) -> Path:
    """Writes ``root/cifar-10-batches-py``: ``splits["train"]`` spread over data_batch_1..5, ``splits["test"]``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = splits["train"]
    chunks = np.array_split(np.arange(len(images)), 5)
    batches = [(f"data_batch_{i + 1}", f"training batch {i + 1} of 5", rows) for i, rows in enumerate(chunks)]
    test_images, test_labels = splits["test"]
    all_splits = [(name, title, images[rows], labels[rows]) for name, title, rows in batches]
    all_splits.append(("test_batch", "testing batch 1 of 1", test_images, test_labels))
    for name, title, batch_images, batch_labels in all_splits:
        entry = {
            "batch_label": title,
            "labels": [int(label) for label in batch_labels],
            "data": _cifar_rows(batch_images),
            "filenames": [f"fake_{name}_{i}.png" for i in range(len(batch_images))],
        }
        _dump_py2(folder / name, entry)
    meta = {"num_cases_per_batch": len(chunks[0]), "label_names": list(class_names), "num_vis": 3072}
    _dump_py2(folder / "batches.meta", meta)
    return root


def write_cifar100(root: Path, splits: dict[str, Split], class_names: Sequence[str]) -> Path:
    """Writes ``root/cifar-100-python`` with ``train``, ``test`` and ``meta`` (coarse label = fine // 5)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):
        images, labels = splits[name]
        entry = {
            "filenames": [f"fake_{name}_{i}.png" for i in range(len(images))],
            "batch_label": f"{name}ing batch 1 of 1",
            "fine_labels": [int(label) for label in labels],
            "coarse_labels": [int(label) // 5 for label in labels],
            "data": _cifar_rows(images),
        }
        _dump_py2(folder / name, entry)
    coarse = [f"superclass_{i}" for i in range((len(class_names) + 4) // 5)]
    _dump_py2(folder / "meta", {"fine_label_names": list(class_names), "coarse_label_names": coarse})
    return root


# ---------------------------------------------------------------------------
# STL-10 binaries


def _stl_bytes(images: np.ndarray) -> bytes:
    # (N, 96, 96, 3) [row, column, channel] -> per image, per channel, column-major
    return np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes()


def write_stl10(root: Path, splits: dict[str, Split], class_names: Sequence[str]) -> Path:
    """Writes ``root/stl10_binary``: train/test ``_X.bin`` and ``_y.bin`` (labels from 1), ``unlabeled_X.bin``."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):
        images, labels = splits[name]
        (folder / f"{name}_X.bin").write_bytes(_stl_bytes(images))
        (folder / f"{name}_y.bin").write_bytes((np.asarray(labels) + 1).astype(np.uint8).tobytes())
    (folder / "unlabeled_X.bin").write_bytes(_stl_bytes(splits["unlabeled"][0]))
    (folder / "class_names.txt").write_text("".join(f"{name}\n" for name in class_names))
    # ten folds of training indices, one line each, as the release has
    folds = np.array_split(np.random.default_rng(0).permutation(len(splits["train"][0])), 10)
    (folder / "fold_indices.txt").write_text("".join(" ".join(map(str, fold)) + " \n" for fold in folds))
    return root


# ---------------------------------------------------------------------------
# Fashion-MNIST IDX files


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Writes a uint8 array as an IDX file (big-endian header), gzipped when ``compress``; returns its path."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload, mtime=0))
    else:
        path.write_bytes(payload)
    return path


def write_fashion_mnist(
    root: Path, splits: dict[str, Split], class_names: Sequence[str], compress: bool = True
) -> Path:
    """Writes the four IDX files into ``root`` (gzipped, as upstream ships them, unless ``compress=False``)."""
    root.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = splits[split]
        write_idx(root / f"{prefix}-images-idx3-ubyte", images[..., 0], compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return root


# ---------------------------------------------------------------------------
# JPEG trees


def _save_jpeg(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)


def write_image_folder(root: Path, splits: dict[str, Split], class_names: Sequence[str]) -> Path:
    """Writes ImageNet's layout: ``root/<split>/<class>/<class>_<k>.JPEG`` for splits "train" and "val"."""
    for split in ("train", "val"):
        images, labels = splits[split]
        for k, (pixels, label) in enumerate(zip(images, labels)):
            name = class_names[label]
            _save_jpeg(root / split / name / f"{name}_{k}.JPEG", pixels)
    return root


def write_imagenet100(root: Path, splits: dict[str, Split], class_names: Sequence[str]) -> Path:
    """As :func:`write_image_folder`, plus the class list naming every class written."""
    write_image_folder(root, splits, class_names)
    (root / IMAGENET100_CLASS_LIST).write_text("".join(f"{name}\n" for name in class_names))
    return root


def write_tiny_imagenet(root: Path, splits: dict[str, Split], class_names: Sequence[str]) -> Path:
    """Writes ``root/tiny-imagenet-200`` as released: wnids, words, train with boxes, val with annotations."""
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(f"{name}\n" for name in class_names))
    (base / "words.txt").write_text("".join(f"{name}\tfake class {i}\n" for i, name in enumerate(class_names)))
    images, labels = splits["train"]
    boxes: dict[str, list[str]] = {name: [] for name in class_names}
    for k, (pixels, label) in enumerate(zip(images, labels)):
        name = class_names[label]
        file_name = f"{name}_{k}.JPEG"
        _save_jpeg(base / "train" / name / "images" / file_name, pixels)
        boxes[name].append(f"{file_name}\t0\t0\t{pixels.shape[1] - 1}\t{pixels.shape[0] - 1}\n")
    for name, lines in boxes.items():
        (base / "train" / name / f"{name}_boxes.txt").write_text("".join(lines))
    images, labels = splits["val"]
    annotations = []
    for k, (pixels, label) in enumerate(zip(images, labels)):
        _save_jpeg(base / "val" / "images" / f"val_{k}.JPEG", pixels)
        annotations.append(f"val_{k}.JPEG\t{class_names[label]}\t0\t0\t{pixels.shape[1] - 1}\t{pixels.shape[0] - 1}\n")
    (base / "val" / "val_annotations.txt").write_text("".join(annotations))
    return root


# ---------------------------------------------------------------------------
# one call per dataset


@dataclass(frozen=True)
class _FakeFormat:
    writer: Callable[[Path, dict[str, Split], Sequence[str]], Path]
    splits: tuple[str, ...]  # labelled splits; "unlabeled" is drawn without labels
    channels: int
    fixed_size: bool  # the format itself fixes the image side
    wnid_names: bool  # class names look like ImageNet's wnids


_FORMATS: dict[str, _FakeFormat] = {
    "cifar10": _FakeFormat(write_cifar10, ("train", "test"), 3, True, False),
    "cifar100": _FakeFormat(write_cifar100, ("train", "test"), 3, True, False),
    "stl10": _FakeFormat(write_stl10, ("train", "test", "unlabeled"), 3, True, False),
    "fashion_mnist": _FakeFormat(write_fashion_mnist, ("train", "test"), 1, True, False),
    "tiny_imagenet": _FakeFormat(write_tiny_imagenet, ("train", "val"), 3, False, True),
    "imagenet": _FakeFormat(write_image_folder, ("train", "val"), 3, False, True),
    "imagenet100": _FakeFormat(write_imagenet100, ("train", "val"), 3, False, True),
    "image_folder": _FakeFormat(write_image_folder, ("train", "val"), 3, False, False),
}


def write_fake_dataset(
    name: str,
    root: str | Path,
    num_per_class: int = _DEFAULT_NUM_PER_CLASS,
    num_classes: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Writes a small dataset in the real on-disk format of ``name``.

    Args:
        name: a key of ``unmix_ext.runner.data.DATASETS``.
        root: directory to write into (created); pass it as ``root`` to ``build_dataset``.
        num_per_class: training images per class; the test/val split gets half as
            many (at least 1), STL-10's unlabeled split as many per class as val.
        num_classes: classes written; default the dataset's own, capped at 10.
        image_size: side in pixels; only folder datasets accept a size other
            than their native one (default native, or 32 where it varies).
        seed: seed of the images and of the unlabeled images' hidden classes.

    Returns:
        ``root`` as a Path.
    """
    spec = dataset_spec(name)
    fmt = _FORMATS[name]
    native = spec.image_size or _FOLDER_IMAGE_SIZE
    size = native if image_size is None else image_size
    if fmt.fixed_size and size != native:
        raise ValueError(f"image_size: {name} files hold {native}x{native} images; got {image_size}")
    limit = spec.num_classes or _DEFAULT_MAX_CLASSES
    num_classes = min(limit, _DEFAULT_MAX_CLASSES) if num_classes is None else num_classes
    if not 1 <= num_classes <= limit:
        raise ValueError(f"num_classes: must be in [1, {limit}] for {name}; got {num_classes}")
    if num_per_class < 1:
        raise ValueError(f"num_per_class: must be at least 1; got {num_per_class}")
    class_names = [f"n{i:08d}" if fmt.wnid_names else f"class_{i:03d}" for i in range(num_classes)]
    rng = np.random.default_rng(seed)
    splits: dict[str, Split] = {}
    for index, split in enumerate(fmt.splits):
        per_class = num_per_class if split == "train" else max(1, num_per_class // 2)
        labels = np.repeat(np.arange(num_classes), per_class)
        rng.shuffle(labels)
        images = class_pattern_images(labels, size, num_classes, fmt.channels, seed=seed + index)
        splits[split] = (images, None if split == "unlabeled" else labels.astype(np.uint8))
    root = Path(root)
    return fmt.writer(root, splits, class_names)

