"""Image datasets read from their standard on-disk formats.

Nothing here downloads unless the caller passes ``download=True``; every
loader reads the files exactly as the dataset's release (or torchvision's
downloader) lays them out:

============== =================================================================
name           what ``root`` must hold
============== =================================================================
cifar10        ``cifar-10-batches-py/``: pickled ``data_batch_1..5``,
               ``test_batch``, ``batches.meta``
cifar100       ``cifar-100-python/``: pickled ``train``, ``test``, ``meta``
stl10          ``stl10_binary/``: ``train_X.bin``, ``train_y.bin``,
               ``test_X.bin``, ``test_y.bin``, ``unlabeled_X.bin``
tiny_imagenet  ``tiny-imagenet-200/``: ``wnids.txt``,
               ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG``,
               ``val/val_annotations.txt``
imagenet       ``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``
imagenet100    as imagenet, plus a class list (one wnid per line)
fashion_mnist  the four IDX files, plain or gzipped, in ``root`` or in
               ``root/FashionMNIST/raw/`` (torchvision's download folder)
image_folder   ``train/<class>/*`` and ``val/<class>/*``, or one folder
============== =================================================================

For cifar*, stl10 and tiny_imagenet, ``root`` may also be the named folder
itself (e.g. ``.../cifar-10-batches-py``).

Every dataset yields ``(image, target)``: ``image`` a PIL image in mode RGB
(Fashion-MNIST's 28x28 greyscale is converted to RGB by repeating the grey
value, since the pretraining pipelines expect 3 channels; ``rgb=False`` keeps
mode ``L``), or whatever ``transform`` makes of it; ``target`` an int class
index, -1 for an unlabeled image (STL-10's unlabeled split, a folder of images
without class folders).

Splits: ``train``, ``val`` (the official test or validation set) and
``pretrain`` (train, plus the unlabeled images for STL-10).

Corrupt or truncated files in folder datasets (``on_corrupt``): a folder
dataset of at most :data:`VERIFY_UPFRONT_MAX` images (after ``fraction``) is
decoded in full when it is built (hidden files and folders, such as macOS's
``._x.JPEG``, are never read), so ``"skip"`` drops the unreadable files
with one warning (their count and the first one) and ``"error"`` names the
first one. A larger dataset (ImageNet) is checked lazily, as each image is
read: ``"error"`` raises naming the file, ``"skip"`` serves the next readable
image in its place, warns once per process with the first path, and lists the
skipped paths in ``dataset.skipped``. ``verify="upfront"`` or ``"lazy"``
forces either behaviour. Images whose shorter side is below ``min_size`` are
an error in both modes.

Every error is one line, a :class:`DataError` (a ``ValueError``; missing
paths are :class:`DataNotFoundError`, also a ``FileNotFoundError``), naming
the argument or config key (``root_key``) and the path and layout expected.

Example::

    ds = build_dataset("cifar10", "/data", "train", fraction=0.1, root_key="data.train_path")
    image, target = ds[0]          # PIL.Image 32x32 RGB, int in [0, 10)
    DATASETS["cifar10"].image_size  # 32, the native side in pixels

What torchvision already reads is read by its classes (``CIFAR10``/``CIFAR100``,
``STL10``, ``FashionMNIST``, and ``DatasetFolder``'s file listing); what is here
is what they lack: a CIFAR unpickler that refuses code, STL-10 memory-mapped,
Debian's gzipped Fashion-MNIST folder, Tiny ImageNet's val annotations,
ImageNet-100's class list, decoding restricted to :data:`IMAGE_FORMATS`,
skipping corrupt files, and one-line errors.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import math
import numbers
import os
import pickle
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from unmix_ext.errors import CommandError

SPLITS = ("train", "val", "pretrain")
#: the file extensions torchvision's ImageFolder reads (matched ignoring case)
IMAGE_EXTENSIONS = IMG_EXTENSIONS
#: the only decoders PIL may pick for those files: left to guess from the content, it also reads PostScript
#: (EPS), whose loader runs Ghostscript on what the file says, so a "photo" could be a program
IMAGE_FORMATS = tuple(sorted({Image.registered_extensions()[extension] for extension in IMAGE_EXTENSIONS}))
#: what a folder dataset does with an unreadable image file
ON_CORRUPT = ("error", "skip")
VERIFY_MODES = ("auto", "upfront", "lazy")
#: folder datasets up to this many images are decoded in full when built
VERIFY_UPFRONT_MAX = 10_000
#: default class list of imagenet100, relative to its root
IMAGENET100_CLASS_LIST = "imagenet100.txt"
#: where Debian's dataset-fashion-mnist package installs the IDX files
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")

# what PIL raises on a file that is truncated, corrupt or not an image
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class DataError(CommandError):
    """A dataset argument, directory or file is wrong.

    The message is always one line: it names the argument or config key, the
    path, and what was expected there.
    """


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset root or one of its expected files does not exist."""


class CorruptImageError(DataError):
    """An image file cannot be decoded (truncated, corrupt, or not an image)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------
# dataset objects


class LabelledDataset(Dataset):
    """``(image, target)`` pairs read from disk.

    Attributes:
        targets: int64 array (N,), class index per sample, -1 if unlabeled.
        classes: class names; ``targets`` index into them.
        source: the directory the samples were read from (for messages).
        transform: callable applied to each PIL image, or None.
    """

    def __init__(self, items: np.ndarray, targets: Sequence[int], classes: Sequence[str], source: Path) -> None:
        self._items = items
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = list(classes)
        self.source = source
        self.transform: Callable[[Image.Image], Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, target = self._read(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, target

    def select(self, indices: np.ndarray) -> None:
        """Keeps only the samples at ``indices`` (int array), in that order."""
        self._items = self._items[indices]
        self.targets = self.targets[indices]

    def check(self, min_size: int | None) -> None:
        """Checks the images before use; raises :class:`DataError`."""
        raise NotImplementedError

    def _read(self, index: int) -> tuple[Image.Image, int]:
        raise NotImplementedError


class ArrayDataset(LabelledDataset):
    """Images held in uint8 arrays by a torchvision dataset (CIFAR, STL-10, Fashion-MNIST).

    ``base[j]`` is torchvision's ``(PIL image, target)``; item i of this dataset
    is ``base[items[i]]``, ``items`` an int64 array (N,), so ``select`` never
    copies images.
    """

    def __init__(
        self, base: Dataset, targets: Sequence[int], classes: Sequence[str], source: Path, image_size: int
    ) -> None:
        super().__init__(np.arange(len(targets), dtype=np.int64), targets, classes, source)
        self.base = base
        self._image_size = image_size

    def check(self, min_size: int | None) -> None:
        if min_size is not None and self._image_size < min_size:
            size = self._image_size
            raise DataError(
                f"min_size: images in {self.source} are {size}x{size} pixels, smaller than min_size={min_size}"
            )

    def _read(self, index: int) -> tuple[Image.Image, int]:
        image, _ = self.base[int(self._items[index])]
        return image, int(self.targets[index])


#: PIL's modes of single-channel images of more than 8 bits per pixel: 16-bit integers, 32-bit integers
#: (which PIL also uses for 16-bit PNGs), 32-bit floats
_HIGH_BIT_DEPTH = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 16, "F": 32}


def _decode(path: str) -> Image.Image:
    with Image.open(path, formats=IMAGE_FORMATS) as image:
        image.load()  # decode now, so a truncated file fails here and not in a transform
        return _to_8_bits(image).convert("RGB")


def _to_8_bits(image: Image.Image) -> Image.Image:
    """A 16-bit greyscale image scaled to 8 bits (``convert`` would clip every value above 255 to white).

    Raises:
        ValueError: a 32-bit float image, whose range is unknown.
    """
    bits = _HIGH_BIT_DEPTH.get(image.mode)
    if bits is None:
        return image
    if bits != 16:
        raise ValueError(f"a {bits}-bit float image (mode {image.mode}), whose range is unknown; convert it to 8 or "
                         "16-bit integers")
    values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
    return Image.fromarray(np.rint(values / 257).astype(np.uint8), mode="L")


class FileDataset(LabelledDataset):
    """One image file per sample (Tiny ImageNet, ImageNet, image folders).

    See the module docstring for ``on_corrupt`` and ``verify``. ``skipped``
    lists the unreadable files left out so far.
    """

    def __init__(
        self,
        paths: Sequence[str],
        targets: Sequence[int],
        classes: Sequence[str],
        source: Path,
        key: str,
        on_corrupt: str = "error",
        verify: str = "auto",
    ) -> None:
        if on_corrupt not in ON_CORRUPT:
            raise DataError(f"on_corrupt: must be one of {', '.join(map(repr, ON_CORRUPT))}; got {on_corrupt!r}")
        if verify not in VERIFY_MODES:
            raise DataError(f"verify: must be one of {', '.join(map(repr, VERIFY_MODES))}; got {verify!r}")
        super().__init__(np.array(paths, dtype=object), targets, classes, source)
        self.key = key
        self.on_corrupt = on_corrupt
        self.verify = verify
        self.min_size: int | None = None
        self.skipped: list[str] = []
        self._first_reason = ""
        self._warned = False

    def check(self, min_size: int | None) -> None:
        self.min_size = min_size
        if self.verify == "upfront" or (self.verify == "auto" and len(self) <= VERIFY_UPFRONT_MAX):
            self._verify_all()

    def _verify_all(self) -> None:
        readable = [index for index, path in enumerate(self._items) if self._load(path) is not None]
        if self.skipped:
            self._warned = True
            warnings.warn(
                f"{self.key}: skipped {len(self.skipped)} unreadable image file(s) under {self.source}; "
                f"first: {self.skipped[0]} ({self._first_reason})",
                stacklevel=4,
            )
        if not readable:
            raise DataError(f"{self.key}: every image under {self.source} is unreadable; first: {self.skipped[0]}")
        self.select(np.array(readable, dtype=np.int64))

    def _read(self, index: int) -> tuple[Image.Image, int]:
        # with on_corrupt="skip", an unreadable file is replaced by the next readable one
        for offset in range(len(self)):
            current = (index + offset) % len(self)
            image = self._load(self._items[current])
            if image is not None:
                return image, int(self.targets[current])
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"{self.key}: skipping unreadable image {self.skipped[0]} ({self._first_reason}); later ones "
                    "in this process are skipped without a warning and listed in dataset.skipped",
                    stacklevel=3,
                )
        raise DataError(f"{self.key}: every image under {self.source} is unreadable; first: {self.skipped[0]}")

    def _load(self, path: str) -> Image.Image | None:
        """The RGB image at ``path``; None if unreadable and on_corrupt="skip" (then it joins ``skipped``)."""
        try:
            image = _decode(path)
        except _UNREADABLE as exc:
            if self.on_corrupt == "error":
                raise self._corrupt(path, exc) from None
            if not self.skipped:
                self._first_reason = _first_line(exc)
            if path not in self.skipped:
                self.skipped.append(path)
            return None
        self._check_size(path, image)
        return image

    def _corrupt(self, path: str, exc: BaseException) -> CorruptImageError:
        return CorruptImageError(
            f"{self.key}: {path} cannot be read as an image ({_first_line(exc)}); "
            "delete it or pass on_corrupt='skip' (data.on_corrupt: skip in a recipe)"
        )

    def _check_size(self, path: str, image: Image.Image) -> None:
        if self.min_size is not None and min(image.size) < self.min_size:
            width, height = image.size
            raise DataError(f"min_size: {path} is {width}x{height} pixels, smaller than min_size={self.min_size}")


# ---------------------------------------------------------------------------
# registry


#: ImageNet's per-channel mean and std (on [0, 1] pixels), the stats of every dataset that has no others
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: the crop side of a dataset whose images vary in size (ImageNet's), in pixels
VARYING_SIZE_CROP = 224


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is and where its files are.

    Attributes:
        title: name used in messages, e.g. "CIFAR-10".
        layout: the expected files, with ``{root}`` for the root directory.
        num_classes: classes of the real dataset.
        image_size: native side in pixels; None where it varies per image.
        pretrain_images: images in the official release's ``pretrain`` split; None where it varies.
        load: ``load(site, split, **options) -> LabelledDataset``.
        options: dataset-specific keyword options that ``load`` accepts.
        download: ``download(root)`` fetching the files, or None.
        default_root: used when the caller gives no root, or None.
        stats: per-RGB-channel ``(mean, std)`` on [0, 1] pixels, the normalisation a recipe
            gets when its augmentation group sets none.
    """

    title: str
    layout: str
    num_classes: int
    image_size: int | None
    load: Callable[..., LabelledDataset]
    options: tuple[str, ...] = ()
    download: Callable[[Path], None] | None = None
    default_root: Path | None = None
    stats: tuple[tuple[float, float, float], tuple[float, float, float]] = IMAGENET_STATS
    pretrain_images: int | None = None

    @property
    def crop_size(self) -> int:
        """The crop side a recipe gets when it sets none: the native side, or ImageNet's 224."""
        return self.image_size or VARYING_SIZE_CROP


DATASETS: dict[str, DatasetSpec] = {}


@dataclass(frozen=True)
class _Site:
    """The root being read, its config key and its spec: what errors need."""

    root: Path
    key: str
    spec: DatasetSpec

    def fail(self, problem: str, error: type[DataError] = DataError) -> DataError:
        layout = self.spec.layout.format(root=self.root)
        hint = " (or pass download=True)" if error is DataNotFoundError and self.spec.download is not None else ""
        return error(f"{self.key}: {problem}; expected {self.spec.title} {layout}{hint}")

    def require(self, path: Path) -> Path:
        if not path.exists():
            raise self.fail(f"{self.root} has no {path.relative_to(self.root)}", DataNotFoundError)
        return path


def _base(root: Path, folder: str) -> Path:
    """The release's top folder: ``root/folder``, or root itself when it is that folder."""
    return root if root.name == folder else root / folder


def _torchvision_download(class_name: str, **kwargs: Any) -> Callable[[Path], None]:
    def download(root: Path) -> None:
        # looked up at call time, so the downloader can be replaced in tests
        getattr(torchvision.datasets, class_name)(str(root), download=True, **kwargs)

    return download


def _unknown_name(name: str) -> DataError:
    known = ", ".join(DATASETS)
    close = difflib.get_close_matches(str(name), DATASETS, n=1)
    suggestion = f"; did you mean {close[0]!r}?" if close else ""
    return DataError(f"dataset: unknown name {name!r}; known: {known}{suggestion}")


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; raises :class:`DataError` naming the closest known name."""
    if name not in DATASETS:
        raise _unknown_name(name)
    return DATASETS[name]


# ---------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (the python pickles, as torchvision downloads them)


class _CifarUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings and numpy arrays only: the files are data, never code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR file never does")
        return super().find_class(module, name)


def _text(value: str | bytes) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _unpickle(site: _Site, path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            # latin1: the release was pickled by Python 2, whose str holds the raw image bytes
            entry = _CifarUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise site.fail(f"{path} is not a readable CIFAR pickle ({_first_line(exc)})") from None
    if not isinstance(entry, dict):
        raise site.fail(f"{path} holds a {type(entry).__name__}, not a dict")
    return {_text(key): value for key, value in entry.items()}


def _entry_field(site: _Site, entry: dict[str, Any], key: str, path: Path) -> Any:
    if key not in entry:
        raise site.fail(f"{path} has no {key!r} entry (it has {', '.join(sorted(entry))})")
    return entry[key]


def _check_labels(site: _Site, labels: np.ndarray, num_classes: int, path: Path) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise site.fail(f"{path} has labels in [{labels.min()}, {labels.max()}], outside [0, {num_classes})")


class _Cifar10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 (file names, keys, ``__getitem__``) with the pickles read by :class:`_CifarUnpickler`.

    torchvision's ``__init__`` reads them with ``pickle.load``, which runs whatever
    code a hostile file names, and demands the release's md5 sums, which no
    re-packed or fake copy has; so ``__init__`` is ours, with one-line errors.
    ``data``: uint8 array (N, 32, 32, 3); ``targets``: list of N ints.
    """

    #: the batch key of the labels that ``meta["key"]`` names
    labels_key = "labels"

    def __init__(self, site: _Site, train: bool) -> None:
        folder = _base(site.root, self.base_folder)
        torchvision.datasets.VisionDataset.__init__(self, str(folder.parent))
        self.train = train
        meta_path = site.require(folder / self.meta["filename"])
        names = _entry_field(site, _unpickle(site, meta_path), self.meta["key"], meta_path)
        self.classes = [_text(name) for name in names]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        batches, labels = [], []
        for name, _md5 in self.train_list if train else self.test_list:
            path = site.require(folder / name)
            entry = _unpickle(site, path)
            data = np.asarray(_entry_field(site, entry, "data", path), dtype=np.uint8)
            batch_labels = np.asarray(_entry_field(site, entry, self.labels_key, path), dtype=np.int64)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch_labels) != len(data):
                raise site.fail(
                    f"{path} holds data of shape {data.shape} and {len(batch_labels)} labels; "
                    "expected (N, 3072) and N labels"
                )
            _check_labels(site, batch_labels, len(self.classes), path)
            batches.append(data)
            labels.append(batch_labels)
        # each row is the red, green then blue plane, each 32x32 in row-major order
        self.data = np.ascontiguousarray(np.concatenate(batches).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        self.targets = np.concatenate(labels).tolist()


class _Cifar100(_Cifar10, torchvision.datasets.CIFAR100):
    """As :class:`_Cifar10`, with CIFAR-100's files and its 100 fine labels."""

    labels_key = "fine_labels"


# CIFAR's and STL-10's stats are those solo-learn's own pipelines use, so Un-Mix runs and
# plain solo-learn runs normalise identically
_CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))


def _load_cifar(site: _Site, split: str, reader: type[_Cifar10]) -> ArrayDataset:
    cifar = reader(site, train=split != "val")
    return ArrayDataset(cifar, cifar.targets, cifar.classes, Path(cifar.root, cifar.base_folder), 32)


DATASETS["cifar10"] = DatasetSpec(
    title="CIFAR-10",
    layout="in torchvision's format: {root}/cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta",
    num_classes=10,
    image_size=32,
    pretrain_images=50_000,
    stats=_CIFAR_STATS,
    load=functools.partial(_load_cifar, reader=_Cifar10),
    download=_torchvision_download("CIFAR10"),
)

DATASETS["cifar100"] = DatasetSpec(
    title="CIFAR-100",
    layout="in torchvision's format: {root}/cifar-100-python/ with train, test, meta",
    num_classes=100,
    image_size=32,
    pretrain_images=50_000,
    stats=_CIFAR_STATS,
    load=functools.partial(_load_cifar, reader=_Cifar100),
    download=_torchvision_download("CIFAR100"),
)


# ---------------------------------------------------------------------------
# STL-10 (binary release)

_STL_SIDE = 96
_STL_BYTES = 3 * _STL_SIDE * _STL_SIDE
_STL_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


class _BinImages:
    """The images of one STL-10 ``*_X.bin`` file, memory-mapped on first use.

    ``self[row]`` is a uint8 array (3, 96, 96) indexed [channel, row, column],
    as torchvision's reader returns them (the file stores each channel
    column-major). The map is not pickled, so DataLoader workers each open
    their own instead of copying gigabytes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shape = (path.stat().st_size // _STL_BYTES, 3, _STL_SIDE, _STL_SIDE)
        self._map: np.ndarray | None = None

    def __getitem__(self, row: int) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)
        return self._map[row].transpose(0, 2, 1)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_map": None}


class _Stl10(torchvision.datasets.STL10):
    """torchvision's STL-10 (splits, labels from 0, class names, ``__getitem__``) on memory-mapped images.

    torchvision reads each ``*_X.bin`` whole (unlabeled_X.bin is 2.6 GB) and
    checks its md5 sum on every build, which no re-packed or fake copy has;
    :func:`_stl10_split` checks the sizes instead. ``data``: :class:`_BinImages`;
    ``labels``: int64 array (N,), -1 for the unlabeled split.
    """

    def _check_integrity(self) -> bool:
        return True

    def _read_mapped(self, data_file: str, labels_file: str | None = None) -> tuple[_BinImages, np.ndarray | None]:
        folder = Path(self.root, self.base_folder)
        if labels_file is None:
            return _BinImages(folder / data_file), None
        # the file counts from 1; int64 first, so a 0 byte reads as -1 (out of range), not 255
        return _BinImages(folder / data_file), np.fromfile(folder / labels_file, dtype=np.uint8).astype(np.int64) - 1

    # torchvision's reader is private to STL10 (the name-mangled __loadfile): this is the one part replaced
    _STL10__loadfile = _read_mapped


def _stl10_split(site: _Site, folder: Path, split: str) -> _Stl10:
    """torchvision's ``split`` ("train", "test" or "unlabeled") of the release in ``folder``, its files checked."""
    images = site.require(folder / f"{split}_X.bin")
    size = images.stat().st_size
    if size % _STL_BYTES:
        raise site.fail(f"{images} has {size} bytes, not a multiple of {_STL_BYTES} (3x96x96 uint8 images)")
    if split != "unlabeled":
        site.require(folder / f"{split}_y.bin")
    stl = _Stl10(str(folder.parent), split=split)
    if split != "unlabeled" and len(stl.labels) != len(stl):
        raise site.fail(f"{folder / f'{split}_y.bin'} has {len(stl.labels)} labels for {len(stl)} images")
    return stl


def _load_stl10(site: _Site, split: str) -> ArrayDataset:
    folder = _base(site.root, _Stl10.base_folder)
    # torchvision's "train+unlabeled" concatenates the arrays in memory; ConcatDataset joins the maps
    names = {"val": ("test",), "train": ("train",), "pretrain": ("train", "unlabeled")}[split]
    parts = [_stl10_split(site, folder, name) for name in names]
    classes = getattr(parts[0], "classes", _STL_CLASSES)  # torchvision sets it only when class_names.txt exists
    labels_path = folder / f"{names[0]}_y.bin"
    _check_labels(site, parts[0].labels, len(classes), labels_path)
    targets = np.concatenate([part.labels for part in parts])
    return ArrayDataset(ConcatDataset(parts), targets, classes, folder, _STL_SIDE)


DATASETS["stl10"] = DatasetSpec(
    title="STL-10",
    layout=(
        "in its binary format: {root}/stl10_binary/ with train_X.bin, train_y.bin, test_X.bin, test_y.bin, "
        "unlabeled_X.bin"
    ),
    num_classes=10,
    image_size=_STL_SIDE,
    pretrain_images=105_000,
    stats=((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261)),
    load=_load_stl10,
    download=_torchvision_download("STL10", split="train+unlabeled"),
)


# ---------------------------------------------------------------------------
# Fashion-MNIST (IDX files)

_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes


def _find_idx(site: _Site, name: str) -> Path:
    for folder in (site.root, site.root / "FashionMNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise site.fail(f"{site.root} has no {name} nor {name}.gz", DataNotFoundError)


def _read_idx(site: _Site, path: Path, ndim: int) -> torch.Tensor:
    """The uint8 tensor (N, ...) of an IDX file with ``ndim`` dimensions (gzipped if named .gz)."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise site.fail(f"{path} cannot be read ({_first_line(exc)})") from None
    expected_magic = (_IDX_UBYTE << 8) | ndim
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise site.fail(f"{path} starts with magic number {magic:#010x}, not {expected_magic:#010x}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(shape):
        raise site.fail(f"{path} has {len(raw) - header} data bytes; its header {shape} needs {math.prod(shape)}")
    # bytearray: torch.from_numpy warns on read-only memory such as bytes
    return torch.from_numpy(np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(shape))


def _to_rgb(image: Image.Image) -> Image.Image:
    # the grey value repeated: the pretraining pipelines and backbones expect 3 channels
    return image.convert("RGB")


class _FashionMnist(torchvision.datasets.FashionMNIST):
    """torchvision's Fashion-MNIST (class names, ``__getitem__``) on IDX files read by :func:`_read_idx`.

    torchvision reads only uncompressed files under ``root/FashionMNIST/raw``
    and stops at a damaged one with a bare assert; Debian ships them gzipped in
    one flat folder. ``data``: uint8 tensor (N, 28, 28); ``targets``: int64 tensor (N,).
    """

    def __init__(self, site: _Site, train: bool, transform: Callable[[Image.Image], Any] | None) -> None:
        prefix = "train" if train else "t10k"
        images_path = _find_idx(site, f"{prefix}-images-idx3-ubyte")
        labels_path = _find_idx(site, f"{prefix}-labels-idx1-ubyte")
        torchvision.datasets.VisionDataset.__init__(self, str(images_path.parent), transform=transform)
        self.train = train
        self.data = _read_idx(site, images_path, 3)
        self.targets = _read_idx(site, labels_path, 1).long()
        if len(self.targets) != len(self.data):
            raise site.fail(
                f"{labels_path} has {len(self.targets)} labels for the {len(self.data)} images of {images_path}"
            )
        _check_labels(site, self.targets.numpy(), len(self.classes), labels_path)


def _load_fashion_mnist(site: _Site, split: str, rgb: bool = True) -> ArrayDataset:
    fashion = _FashionMnist(site, train=split != "val", transform=_to_rgb if rgb else None)
    side = fashion.data.shape[1]
    return ArrayDataset(fashion, fashion.targets, fashion.classes, Path(fashion.root), side)


DATASETS["fashion_mnist"] = DatasetSpec(
    title="Fashion-MNIST",
    layout=(
        "as IDX files (plain or .gz): {root}/train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, or the same under {root}/FashionMNIST/raw/ "
        "(Debian package dataset-fashion-mnist)"
    ),
    num_classes=10,
    image_size=28,
    pretrain_images=60_000,
    stats=((0.2860,) * 3, (0.3530,) * 3),  # the grey channel's, repeated: the loader hands out RGB images
    load=_load_fashion_mnist,
    options=("rgb",),
    download=_torchvision_download("FashionMNIST"),
    default_root=FASHION_MNIST_ROOT,
)


# ---------------------------------------------------------------------------
# folder datasets: Tiny ImageNet, ImageNet, ImageNet-100, any image folder

_FOLDER_OPTIONS = ("on_corrupt", "verify")


def _is_image_file(folder: str, path: str) -> bool:
    """Whether ``path``, under ``folder``, is an image file to read."""
    # hidden names are skipped: macOS copies leave "._x.JPEG" files and ".ipynb_checkpoints" folders
    hidden = any(part.startswith(".") for part in os.path.relpath(path, folder).split(os.sep))
    return not hidden and has_file_allowed_extension(path, IMAGE_EXTENSIONS)


def _subfolders(folder: Path) -> list[str]:
    """Class folders: the non-hidden subfolders, sorted."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def _labelled_files(
    site: _Site, folder: Path, names: Sequence[str], classes: Sequence[str], image_dir: str = ""
) -> tuple[list[str], list[int]]:
    """Image files under ``folder/<name>/`` for each name, labelled by the name's index in ``classes``.

    torchvision's DatasetFolder listing (recursive, links followed, sorted; see :func:`_walk_images`); each
    ``folder/<name>/<image_dir>`` must hold images. With no names, the files of ``folder`` itself, labelled -1
    (unlabeled).
    """
    index = {name: i for i, name in enumerate(classes)}
    # os.path.join(folder, "") is folder: the unlabeled files are one "class" numbered -1
    wanted = {name: index[name] for name in names} or {"": -1}
    for name in names:
        site.require(folder / name / image_dir)
    is_valid = functools.partial(_is_image_file, str(folder))
    samples = _walk_images(site, folder, wanted, is_valid)
    found = {target for _, target in samples}
    empty = [name for name in names if index[name] not in found]
    if empty:
        class_dir = folder / empty[0] / image_dir
        raise site.fail(f"class folder {class_dir} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return [path for path, _ in samples], [target for _, target in samples]


def _walk_images(
    site: _Site, folder: Path, wanted: dict[str, int], is_valid: Callable[[str], bool]
) -> list[tuple[str, int]]:
    """``(path, target)`` of every valid file under ``folder/<name>`` for each ``name: target`` of ``wanted``.

    As torchvision's ``make_dataset`` lists them (classes, folders and files sorted, links followed), except
    that each folder is listed once: a link back to a folder above it (``c0/loop -> ..``) or a second way into
    a folder already listed is skipped with a warning, where ``os.walk`` would list its files again and again.
    """
    def identity(path: str) -> tuple[int, int]:
        status = os.stat(path)
        return status.st_dev, status.st_ino

    # the dataset's folder and its class folders are where they are: a link into one of them from elsewhere
    # would give its images a second label
    tops = [os.path.join(folder, name) for name in sorted(wanted)]
    seen = {identity(path): path for path in [str(folder), *tops] if os.path.isdir(path)}
    samples: list[tuple[str, int]] = []
    for (name, target), class_top in zip(sorted(wanted.items()), tops):
        found: list[tuple[str, list[str]]] = []
        for top, dirs, files in os.walk(class_top, followlinks=True):
            first = seen.setdefault(identity(top), top)
            if first != top:
                dirs.clear()
                warnings.warn(f"{site.key}: {top} is {first} again (a link loop, or a second link to one folder); "
                              "its images are listed once", stacklevel=2)
                continue
            found.append((top, files))
        for top, files in sorted(found):
            samples += [(path, target) for path in (os.path.join(top, file) for file in sorted(files))
                        if is_valid(path)]
    return samples


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _load_tiny_imagenet(site: _Site, split: str, on_corrupt: str = "error", verify: str = "auto") -> FileDataset:
    base = _base(site.root, "tiny-imagenet-200")
    # sorted, as an ImageFolder over train/ would number them
    classes = sorted(_read_lines(site.require(base / "wnids.txt")))
    if split != "val":
        paths, targets = _labelled_files(site, base / "train", classes, classes, image_dir="images")
        return FileDataset(paths, targets, classes, base / "train", site.key, on_corrupt, verify)
    annotations = site.require(base / "val" / "val_annotations.txt")
    index = {name: i for i, name in enumerate(classes)}
    paths, targets = [], []
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise site.fail(f"{annotations} line {number} does not start with <file>\\t<wnid from wnids.txt>")
        path = base / "val" / "images" / fields[0]
        if not path.is_file():
            raise site.fail(f"{path} is listed in {annotations} but missing", DataNotFoundError)
        paths.append(str(path))
        targets.append(index[fields[1]])
    return FileDataset(paths, targets, classes, base / "val", site.key, on_corrupt, verify)


DATASETS["tiny_imagenet"] = DatasetSpec(
    title="Tiny ImageNet",
    layout=(
        "in its release layout: {root}/tiny-imagenet-200/ with wnids.txt, train/<wnid>/images/*.JPEG, "
        "val/images/*.JPEG, val/val_annotations.txt"
    ),
    num_classes=200,
    image_size=64,
    pretrain_images=100_000,
    stats=((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    load=_load_tiny_imagenet,
    options=_FOLDER_OPTIONS,
)


def _split_folder(site: _Site, split: str) -> Path:
    return site.require(site.root / ("val" if split == "val" else "train"))


def _read_class_folders(
    site: _Site, folder: Path, classes: Sequence[str], on_corrupt: str, verify: str
) -> FileDataset:
    """``folder/<class>/...`` labelled by position in ``classes``; a class folder outside them is an error."""
    unknown = sorted(set(_subfolders(folder)) - set(classes))
    if unknown:
        raise site.fail(f"{folder / unknown[0]} is not one of the {len(classes)} training classes")
    names = [name for name in classes if (folder / name).is_dir()]
    paths, targets = _labelled_files(site, folder, names, classes)
    return FileDataset(paths, targets, classes, folder, site.key, on_corrupt, verify)


def _load_imagenet(site: _Site, split: str, on_corrupt: str = "error", verify: str = "auto") -> FileDataset:
    classes = _subfolders(site.require(site.root / "train"))
    return _read_class_folders(site, _split_folder(site, split), classes, on_corrupt, verify)


DATASETS["imagenet"] = DatasetSpec(
    title="ImageNet",
    layout="in ImageFolder layout: {root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG",
    num_classes=1000,
    image_size=None,
    pretrain_images=1_281_167,
    load=_load_imagenet,
    options=_FOLDER_OPTIONS,
)


def _imagenet100_classes(site: _Site, class_list: str | Path | None) -> list[str]:
    """The wnids of the class list; with none given and no default file, train/ must hold exactly 100 classes."""
    path = site.root / (IMAGENET100_CLASS_LIST if class_list is None else class_list)
    if path.is_file():
        classes = sorted(set(_read_lines(path)))
        missing = [name for name in classes if not (site.root / "train" / name).is_dir()]
        if missing:
            raise site.fail(f"class {missing[0]} of {path} has no folder {site.root / 'train' / missing[0]}")
        return classes
    if class_list is not None:
        raise DataNotFoundError(f"class_list: {path} does not exist; expected one wnid per line")
    # a pre-made subset (as solo-learn's scripts build): its own class folders are the list
    classes = _subfolders(site.require(site.root / "train"))
    if len(classes) != 100:
        raise site.fail(f"{path} does not exist and {site.root / 'train'} has {len(classes)} class folders, not 100")
    return classes


def _load_imagenet100(
    site: _Site, split: str, class_list: str | Path | None = None, on_corrupt: str = "error", verify: str = "auto"
) -> FileDataset:
    classes = _imagenet100_classes(site, class_list)
    folder = _split_folder(site, split)
    names = [name for name in classes if (folder / name).is_dir()]
    paths, targets = _labelled_files(site, folder, names, classes)
    return FileDataset(paths, targets, classes, folder, site.key, on_corrupt, verify)


DATASETS["imagenet100"] = DatasetSpec(
    title="ImageNet-100",
    layout=(
        "in ImageFolder layout: {root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG, with the class list "
        f"{{root}}/{IMAGENET100_CLASS_LIST} (one wnid per line; option class_list) or exactly 100 class folders"
    ),
    num_classes=100,
    image_size=None,
    load=_load_imagenet100,
    options=("class_list", *_FOLDER_OPTIONS),
)


def _load_image_folder(site: _Site, split: str, on_corrupt: str = "error", verify: str = "auto") -> FileDataset:
    root = site.root
    if (root / "train").is_dir() or (root / "val").is_dir():
        folder = _split_folder(site, split)
        class_root = root / "train" if (root / "train").is_dir() else folder
    else:
        # one folder serves every split
        folder = class_root = root
    classes = _subfolders(class_root)
    if classes:
        return _read_class_folders(site, folder, classes, on_corrupt, verify)
    # no class folders: unlabeled images
    paths, targets = _labelled_files(site, folder, [], [])
    return FileDataset(paths, targets, [], folder, site.key, on_corrupt, verify)


def has_val_split(name: str, root: str | Path | None) -> bool:
    """Whether dataset ``name`` at ``root`` has validation images apart from its training images: every
    dataset but an image folder without a ``val/`` subfolder (whose "val" split would be its training images)."""
    if name != "image_folder" or root is None:
        return True
    root = Path(root).expanduser()
    return not root.is_dir() or (root / "val").is_dir()


DATASETS["image_folder"] = DatasetSpec(
    title="an image folder",
    layout=(
        "in ImageFolder layout: {root}/train/<class>/* and {root}/val/<class>/*, or one folder {root}/<class>/* "
        "(or unlabeled {root}/*) used for every split"
    ),
    num_classes=0,
    image_size=None,
    load=_load_image_folder,
    options=_FOLDER_OPTIONS,
)


# ---------------------------------------------------------------------------
# entry points


def balanced_subset(targets: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced random subset, the same for the same seed.

    Args:
        targets: int array (N,), class per sample; -1 (unlabeled) is one more group.
        fraction: share of each class to keep, in (0, 1]; each class keeps at least one sample.
        seed: seed of the draw.

    Returns:
        Sorted int64 array of the kept indices.
    """
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        count = max(1, int(round(fraction * len(members))))
        kept.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def _check_fraction(fraction: Any) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise DataError(f"fraction: must be a number in (0, 1], got {fraction!r}")
    return float(fraction)


def _check_min_size(min_size: Any) -> int | None:
    if min_size is not None and (isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1):
        raise DataError(f"min_size: must be a positive integer or None, got {min_size!r}")
    return min_size


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"seed: must be a non-negative integer, got {seed!r}")
    return int(seed)


def build_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    transform: Callable[[Image.Image], Any] | None = None,
    download: bool = False,
    *,
    fraction: float = 1.0,
    seed: int = 0,
    min_size: int | None = None,
    root_key: str = "root",
    **options: Any,
) -> LabelledDataset:
    """Reads one split of a dataset from its standard on-disk format.

    Args:
        name: a key of :data:`DATASETS`.
        root: directory holding the files (see the module docstring); None for the
            dataset's default root (Fashion-MNIST only).
        split: "train", "val" or "pretrain" (train, plus STL-10's unlabeled images).
        transform: applied to each PIL image.
        download: fetch the files with torchvision's downloader first (CIFAR,
            STL-10, Fashion-MNIST); any other dataset raises.
        fraction: keep this class-balanced share of the split, in (0, 1].
        seed: seed of the ``fraction`` draw.
        min_size: smallest allowed image side in pixels, or None.
        root_key: the argument or config key ``root`` came from, named in errors
            (e.g. "data.train_path").
        **options: dataset-specific, see ``DATASETS[name].options``: ``on_corrupt``
            ("error" or "skip") and ``verify`` ("auto", "upfront", "lazy") for folder
            datasets, ``class_list`` for imagenet100, ``rgb`` for fashion_mnist.

    Returns:
        A :class:`LabelledDataset` of ``(image, target)``, target an int, -1 if unlabeled.

    Raises:
        DataError: one line naming the argument or path; DataNotFoundError for a
            missing root or file, CorruptImageError for an unreadable image.
    """
    spec = dataset_spec(name)
    if split not in SPLITS:
        raise DataError(f"split: must be one of {', '.join(map(repr, SPLITS))}; got {split!r}")
    fraction = _check_fraction(fraction)
    min_size = _check_min_size(min_size)
    seed = _check_seed(seed)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(("fraction", "seed", "min_size", "root_key", *spec.options))
        raise DataError(f"options: {', '.join(unknown)} not accepted by {name}; it accepts {accepted}")
    if root is None:
        if spec.default_root is None:
            raise DataError(f"{root_key}: {name} has no default location; pass the directory holding its files")
        root = spec.default_root
    site = _Site(Path(root).expanduser(), root_key, spec)
    if download:
        if spec.download is None:
            raise DataError(f"download: {name} has no downloader; place its files {spec.layout.format(root=site.root)}")
        try:
            spec.download(site.root)
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataError(f"download: fetching {spec.title} into {site.root} failed ({_first_line(exc)})") from exc
    if not site.root.is_dir():
        raise site.fail(f"{site.root} does not exist", DataNotFoundError)

    dataset = spec.load(site, split, **options)
    if len(dataset) == 0:
        raise site.fail(f"{dataset.source} holds no images for split {split!r}")
    if fraction < 1:
        dataset.select(balanced_subset(dataset.targets, fraction, seed))
    dataset.check(min_size)
    dataset.transform = transform
    return dataset
