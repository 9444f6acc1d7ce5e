"""Dataset readers (unmix_ext.runner.data) on small files in each real format (unmix_ext.runner.fake_data)."""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import shutil
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torchvision
from PIL import Image

from unmix_ext.runner import data, fake_data
from unmix_ext.runner.data import (
    DATASETS,
    CorruptImageError,
    DataError,
    DataNotFoundError,
    balanced_subset,
    build_dataset,
)
from unmix_ext.runner.fake_data import write_fake_dataset

NUM_CLASSES = 4
PER_CLASS = 6  # train; test/val get 3 per class, STL-10's unlabeled too


def assert_one_line(exc_info: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def random_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def as_array(dataset, index: int) -> np.ndarray:
    return np.asarray(dataset[index][0])


@pytest.fixture(scope="module")
def fakes(tmp_path_factory) -> dict[str, Path]:
    """One small fake root per dataset, shared by the read-only tests."""
    base = tmp_path_factory.mktemp("fakes")
    return {
        name: write_fake_dataset(name, base / name, num_per_class=PER_CLASS, num_classes=NUM_CLASSES, seed=1)
        for name in DATASETS
    }


# ---------------------------------------------------------------------------
# every dataset, every split


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_split_loads_with_expected_size_labels_and_images(name, fakes):
    spec = DATASETS[name]
    side = spec.image_size or 32
    expected = {"train": NUM_CLASSES * PER_CLASS, "val": NUM_CLASSES * PER_CLASS // 2}
    expected["pretrain"] = expected["train"] + (expected["val"] if name == "stl10" else 0)
    for split, length in expected.items():
        dataset = build_dataset(name, fakes[name], split)
        assert len(dataset) == length
        # Fashion-MNIST's files carry no class names: it always has its 10
        assert dataset.num_classes == (10 if name == "fashion_mnist" else NUM_CLASSES)
        labelled = dataset.targets[dataset.targets >= 0]
        assert sorted(set(labelled.tolist())) == list(range(NUM_CLASSES))
        unlabeled = int((dataset.targets == -1).sum())
        assert unlabeled == (expected["val"] if (name, split) == ("stl10", "pretrain") else 0)
        dataset = pickle.loads(pickle.dumps(dataset))  # as DataLoader workers get it under spawn
        image, target = dataset[length - 1]
        assert isinstance(target, int) and target == dataset.targets[length - 1]
        assert image.mode == "RGB" and image.size == (side, side)


def test_fake_writer_covers_every_dataset():
    assert set(fake_data._FORMATS) == set(DATASETS)


def test_transform_is_applied(fakes):
    dataset = build_dataset("cifar10", fakes["cifar10"], "val", transform=torchvision.transforms.ToTensor())
    image, _ = dataset[0]
    assert image.shape == (3, 32, 32)


def test_root_may_be_the_release_folder_itself(fakes):
    dataset = build_dataset("cifar10", fakes["cifar10"] / "cifar-10-batches-py", "val")
    assert len(dataset) == NUM_CLASSES * PER_CLASS // 2


def test_fake_classes_are_separable_by_colour():
    labels = np.repeat(np.arange(10), 20)
    train = fake_data.class_pattern_images(labels, 16, 10, seed=0).reshape(len(labels), -1).astype(float)
    test = fake_data.class_pattern_images(labels, 16, 10, seed=1).reshape(len(labels), -1).astype(float)
    centroids = np.stack([train[labels == c].mean(0) for c in range(10)])
    predicted = np.argmin(((test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == labels).mean() > 0.9


# ---------------------------------------------------------------------------
# byte layouts: known pixels round-trip, and torchvision's readers agree


def cifar_splits(size: int = 32) -> dict:
    labels = np.array([0, 1, 2, 1, 0, 2, 1, 0, 2, 1], dtype=np.uint8)
    return {"train": (random_images(10, size, 0), labels), "test": (random_images(3, size, 1), labels[:3])}


@pytest.mark.parametrize(
    "name, writer, tv_class",
    [
        ("cifar10", fake_data.write_cifar10, torchvision.datasets.CIFAR10),
        ("cifar100", fake_data.write_cifar100, torchvision.datasets.CIFAR100),
    ],
)
def test_cifar_pixels_round_trip_and_match_torchvision(tmp_path, name, writer, tv_class):
    splits = cifar_splits()
    writer(tmp_path, splits, ["a", "b", "c"])
    ours = build_dataset(name, tmp_path, "train")
    for index in (0, 7):
        assert np.array_equal(as_array(ours, index), splits["train"][0][index])
        assert ours[index][1] == splits["train"][1][index]
    # torchvision reads the same files once its md5 check is bypassed
    with mock.patch.object(tv_class, "_check_integrity", return_value=True), mock.patch(
        "torchvision.datasets.cifar.check_integrity", return_value=True
    ):
        theirs = tv_class(str(tmp_path), train=False)
    assert theirs.classes == ["a", "b", "c"]
    val = build_dataset(name, tmp_path, "val")
    for index in range(3):
        assert np.array_equal(as_array(val, index), np.asarray(theirs[index][0]))
        assert val[index][1] == theirs[index][1]


def test_cifar_file_is_a_python2_pickle_with_byte_keys_and_planar_rows(tmp_path):
    splits = cifar_splits()
    fake_data.write_cifar10(tmp_path, splits, ["a", "b", "c"])
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as file:
        entry = pickle.load(file, encoding="bytes")
    assert {b"data", b"labels", b"batch_label", b"filenames"} <= set(entry)
    row, image = entry[b"data"][1], splits["test"][0][1]
    # red plane, then green, then blue; each 32x32 row-major
    assert row[0 * 1024 + 5 * 32 + 9] == image[5, 9, 0]
    assert row[2 * 1024 + 31 * 32 + 0] == image[31, 0, 2]
    with open(tmp_path / "cifar-10-batches-py" / "batches.meta", "rb") as file:
        assert pickle.load(file, encoding="bytes")[b"label_names"] == [b"a", b"b", b"c"]


def stl_splits() -> dict:
    labels = np.array([3, 0, 9, 4], dtype=np.uint8)
    return {
        "train": (random_images(4, 96, 0), labels),
        "test": (random_images(2, 96, 1), labels[:2]),
        "unlabeled": (random_images(3, 96, 2), None),
    }


def test_stl10_is_column_major_and_matches_torchvision(tmp_path):
    splits = stl_splits()
    fake_data.write_stl10(tmp_path, splits, list(data._STL_CLASSES))
    raw = np.fromfile(tmp_path / "stl10_binary" / "train_X.bin", dtype=np.uint8)
    image = splits["train"][0][2]
    # third image, channel 1, column 7, row 40
    assert raw[2 * 27648 + 1 * 9216 + 7 * 96 + 40] == image[40, 7, 1]
    assert (tmp_path / "stl10_binary" / "train_y.bin").read_bytes() == bytes([4, 1, 10, 5])

    ours = build_dataset("stl10", tmp_path, "pretrain")
    assert ours.targets.tolist() == [3, 0, 9, 4, -1, -1, -1]
    assert np.array_equal(as_array(ours, 2), image)
    assert np.array_equal(as_array(ours, 6), splits["unlabeled"][0][2])
    with mock.patch.object(torchvision.datasets.STL10, "_check_integrity", return_value=True):
        theirs = torchvision.datasets.STL10(str(tmp_path), split="train+unlabeled")
    for index in range(7):
        assert np.array_equal(as_array(ours, index), np.asarray(theirs[index][0]))
        assert ours[index][1] == theirs[index][1]


def test_stl10_dataset_pickles_without_its_memory_map(tmp_path):
    fake_data.write_stl10(tmp_path, stl_splits(), list(data._STL_CLASSES))
    dataset = build_dataset("stl10", tmp_path, "pretrain")
    before = as_array(dataset, 5)
    blob = pickle.dumps(dataset)
    assert len(blob) < 27648  # less than one image: the mapped files are not copied
    assert np.array_equal(as_array(pickle.loads(blob), 5), before)


def fashion_splits() -> dict:
    grey = random_images(5, 28, 3)[..., :1]
    return {"train": (grey, np.array([9, 0, 3, 3, 1], np.uint8)), "test": (grey[:2], np.array([2, 8], np.uint8))}


def test_fashion_mnist_gzipped_idx_round_trips_and_matches_torchvision(tmp_path):
    splits = fashion_splits()
    fake_data.write_fashion_mnist(tmp_path, splits, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    ]  # fmt: skip
    header = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())[:16]
    assert header == bytes([0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28])

    ours = build_dataset("fashion_mnist", tmp_path, "train")
    grey = build_dataset("fashion_mnist", tmp_path, "train", rgb=False)
    assert grey[0][0].mode == "L"
    assert np.array_equal(np.asarray(grey[1][0]), splits["train"][0][1, ..., 0])
    assert np.array_equal(as_array(ours, 1), np.repeat(splits["train"][0][1], 3, axis=-1))
    # torchvision reads the unzipped files from root/FashionMNIST/raw
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in tmp_path.glob("*.gz"):
        (raw / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    theirs = torchvision.datasets.FashionMNIST(str(tmp_path / "tv"), train=True)
    for index in range(5):
        assert np.array_equal(np.asarray(grey[index][0]), np.asarray(theirs[index][0]))
        assert grey[index][1] == theirs[index][1]
    # ... and so do we: plain files in torchvision's folder
    assert np.array_equal(as_array(build_dataset("fashion_mnist", tmp_path / "tv", "train"), 4), as_array(ours, 4))


def test_fashion_mnist_default_root_is_the_debian_package_path(tmp_path, monkeypatch):
    assert DATASETS["fashion_mnist"].default_root == Path("/usr/share/datasets/fashion-mnist")
    fake_data.write_fashion_mnist(tmp_path, fashion_splits(), [])
    local = dataclasses.replace(DATASETS["fashion_mnist"], default_root=tmp_path)
    monkeypatch.setitem(DATASETS, "fashion_mnist", local)
    assert len(build_dataset("fashion_mnist", split="val")) == 2


@pytest.mark.skipif(not data.FASHION_MNIST_ROOT.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_when_installed():
    dataset = build_dataset("fashion_mnist", split="val")
    assert len(dataset) == 10_000 and dataset[0][0].size == (28, 28)


def quadrants(size: int) -> np.ndarray:
    """Four flat colours, one per quadrant: survives JPEG and shows any flip or transpose."""
    image = np.zeros((size, size, 3), np.uint8)
    half = size // 2
    image[:half, :half] = (250, 10, 10)
    image[:half, half:] = (10, 250, 10)
    image[half:, :half] = (10, 10, 250)
    image[half:, half:] = (250, 250, 10)
    return image


def assert_quadrants(image: Image.Image) -> None:
    pixels = np.asarray(image).astype(int)
    half, quarter = pixels.shape[0] // 2, pixels.shape[0] // 4
    expected = quadrants(pixels.shape[0]).astype(int)
    for y in (quarter, half + quarter):
        for x in (quarter, half + quarter):
            assert np.abs(pixels[y, x] - expected[y, x]).max() < 20


def folder_splits(size: int) -> dict:
    pictures = np.stack([quadrants(size)] * 4)
    return {"train": (pictures, np.array([0, 1, 1, 0])), "val": (pictures[:2], np.array([1, 0]))}


@pytest.mark.parametrize(
    "name, writer",
    [
        ("tiny_imagenet", fake_data.write_tiny_imagenet),
        ("imagenet", fake_data.write_image_folder),
        ("imagenet100", fake_data.write_imagenet100),
        ("image_folder", fake_data.write_image_folder),
    ],
)
def test_folder_datasets_read_known_pictures_and_labels(tmp_path, name, writer):
    writer(tmp_path, folder_splits(64), ["n02", "n01"])
    for split, labels in (("train", [0, 0, 1, 1]), ("val", [0, 1])):
        dataset = build_dataset(name, tmp_path, split)
        # classes are numbered in sorted order: n01 -> 0, n02 -> 1 (written as 1 -> n01)
        assert dataset.classes == ["n01", "n02"]
        assert sorted(dataset.targets.tolist()) == labels
        assert_quadrants(dataset[0][0])


def test_tiny_imagenet_val_labels_come_from_the_annotations(tmp_path):
    fake_data.write_tiny_imagenet(tmp_path, folder_splits(64), ["n02", "n01"])
    lines = (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").read_text().splitlines()
    assert lines[0].split("\t")[:2] == ["val_0.JPEG", "n01"]
    dataset = build_dataset("tiny_imagenet", tmp_path, "val")
    assert dataset.targets.tolist() == [0, 1]
    assert dataset._items[0].endswith("val/images/val_0.JPEG")


def test_imagenet100_keeps_the_listed_classes(tmp_path):
    write_fake_dataset("imagenet", tmp_path, num_per_class=2, num_classes=5, image_size=8)
    (tmp_path / "subset.txt").write_text("n00000004\nn00000001\n")
    dataset = build_dataset("imagenet100", tmp_path, "train", class_list="subset.txt")
    assert dataset.classes == ["n00000001", "n00000004"]
    assert sorted(dataset.targets.tolist()) == [0, 0, 1, 1]


def test_image_folder_single_folder_with_and_without_classes(tmp_path):
    for name in ("cat", "dog"):
        fake_data._save_jpeg(tmp_path / "labelled" / name / "x.jpg", quadrants(16))
    fake_data._save_jpeg(tmp_path / "flat" / "a.jpg", quadrants(16))
    # hidden files and folders (macOS, Jupyter) are neither images nor classes, at any depth
    (tmp_path / "flat" / "._a.jpg").write_bytes(b"\0\5\26\7")
    (tmp_path / "labelled" / ".ipynb_checkpoints").mkdir()
    fake_data._save_jpeg(tmp_path / "labelled" / "cat" / ".ipynb_checkpoints" / "x.jpg", quadrants(16))
    labelled = build_dataset("image_folder", tmp_path / "labelled", "val")
    assert labelled.classes == ["cat", "dog"] and labelled.targets.tolist() == [0, 1]
    flat = build_dataset("image_folder", tmp_path / "flat", "pretrain")
    assert flat.targets.tolist() == [-1] and flat[0][1] == -1


def test_a_hidden_folder_above_the_root_is_read(tmp_path):
    root = tmp_path / ".cache" / "imagenet"  # only names below the root are checked for a leading dot
    write_fake_dataset("imagenet", root, num_per_class=2, num_classes=2, image_size=8)
    assert len(build_dataset("imagenet", root, "train")) == 4


def test_symlink_loop_is_listed_once_with_a_warning_and_a_linked_class_folder_is_read(tmp_path):
    root = write_fake_dataset("image_folder", tmp_path / "data", num_per_class=3, num_classes=2, image_size=8)
    train = root / "train"
    (train / "class_000" / "loop").symlink_to("..")  # back to train/: every class again, under class_000
    (train / "class_000" / "twin").symlink_to(train / "class_001")  # class_001's images labelled class_000
    elsewhere = write_fake_dataset("image_folder", tmp_path / "elsewhere", num_per_class=3, num_classes=3,
                                   image_size=8)
    (train / "class_002").symlink_to(elsewhere / "train" / "class_002")  # a class kept on another disk

    with pytest.warns(UserWarning, match=r"class_000/loop is .*train again \(a link loop") as record:
        dataset = build_dataset("image_folder", root, "train")

    assert any("class_000/twin is " in str(warning.message) for warning in record)
    assert dataset.classes == ["class_000", "class_001", "class_002"]
    assert np.bincount(dataset.targets).tolist() == [3, 3, 3]  # every image once, under its own class
    assert len(set(dataset._items)) == 9


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    grey = np.array([[0, 257 * 64], [257 * 128, 65535]], dtype=np.uint16).repeat(4, 0).repeat(4, 1)
    path = tmp_path / "flat" / "deep.png"
    path.parent.mkdir()
    Image.fromarray(grey).save(path)  # a real 16-bit greyscale PNG
    assert Image.open(path).mode.startswith("I")

    image = build_dataset("image_folder", tmp_path / "flat", "pretrain")[0][0]

    assert image.mode == "RGB"
    assert np.asarray(image)[::4, ::4, 0].tolist() == [[0, 64], [128, 255]]  # not clipped to white
    assert (np.asarray(image) == np.asarray(image)[..., :1]).all()


def test_float_image_is_refused_in_one_line(tmp_path):
    path = tmp_path / "flat" / "float.tif"
    path.parent.mkdir()
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(path)
    with pytest.raises(CorruptImageError) as exc_info:
        build_dataset("image_folder", tmp_path / "flat", "pretrain")
    assert_one_line(exc_info, str(path), "32-bit float image (mode F), whose range is unknown")


# ---------------------------------------------------------------------------
# fraction


def test_fraction_is_class_balanced_and_deterministic(fakes):
    def pick(seed):
        return build_dataset("cifar10", fakes["cifar10"], "train", fraction=0.5, seed=seed)

    first, again, other = pick(0), pick(0), pick(1)
    assert np.bincount(first.targets).tolist() == [PER_CLASS // 2] * NUM_CLASSES
    assert np.array_equal(first._items, again._items)
    assert not np.array_equal(first._items, other._items)
    assert np.array_equal(as_array(first, 3), as_array(again, 3))


def test_fraction_keeps_every_class_and_the_unlabeled_share():
    targets = np.array([0] * 10 + [1] * 20 + [-1] * 40)
    kept = targets[balanced_subset(targets, 0.1, seed=3)]
    assert np.bincount(kept + 1).tolist() == [4, 1, 2]
    assert np.bincount(targets[balanced_subset(targets, 0.01)] + 1).tolist() == [1, 1, 1]


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5, float("nan"), True, "half"])
def test_fraction_outside_unit_interval_is_rejected(fakes, fraction):
    with pytest.raises(DataError) as exc_info:
        build_dataset("cifar10", fakes["cifar10"], "train", fraction=fraction)
    assert_one_line(exc_info, "fraction", "(0, 1]")


# ---------------------------------------------------------------------------
# errors on arguments and layouts


def test_missing_root_names_key_path_and_layout(tmp_path):
    missing = tmp_path / "x" / "y"
    with pytest.raises(DataNotFoundError) as exc_info:
        build_dataset("cifar10", missing, "train", root_key="data.train_path")
    message = assert_one_line(exc_info, f"data.train_path: {missing} does not exist", "CIFAR-10")
    assert f"{missing}/cifar-10-batches-py/ with data_batch_1..5, test_batch" in message
    assert isinstance(exc_info.value, FileNotFoundError) and isinstance(exc_info.value, ValueError)


@pytest.mark.parametrize(
    "name, lacking",
    [
        ("cifar10", "cifar-10-batches-py/batches.meta"),
        ("cifar100", "cifar-100-python/meta"),
        ("stl10", "stl10_binary/train_X.bin"),
        ("tiny_imagenet", "tiny-imagenet-200/wnids.txt"),
        ("imagenet", "train"),
        ("imagenet100", "train"),
        ("fashion_mnist", "train-images-idx3-ubyte nor train-images-idx3-ubyte.gz"),
        ("image_folder", None),
    ],
)
def test_root_without_the_expected_files(tmp_path, name, lacking):
    with pytest.raises(DataError) as exc_info:
        build_dataset(name, tmp_path, "train")
    if lacking is None:  # an empty folder is an empty single-folder dataset
        assert_one_line(exc_info, f"root: {tmp_path} holds no images for split 'train'")
    else:
        assert_one_line(exc_info, f"root: {tmp_path} has no {lacking}; expected {DATASETS[name].title}")
        assert isinstance(exc_info.value, FileNotFoundError)


def test_missing_val_split_names_the_folder(fakes, tmp_path):
    shutil.copytree(fakes["imagenet"] / "train", tmp_path / "train")
    with pytest.raises(DataNotFoundError) as exc_info:
        build_dataset("imagenet", tmp_path, "val")
    assert_one_line(exc_info, f"{tmp_path} has no val;", "ImageFolder layout")


def test_unknown_dataset_name_lists_known_and_suggests_closest():
    with pytest.raises(DataError) as exc_info:
        build_dataset("cifar_10", "/data")
    assert_one_line(exc_info, "unknown name 'cifar_10'", "stl10, ", "did you mean 'cifar10'?")


@pytest.mark.parametrize(
    "kwargs, needles",
    [
        ({"split": "test"}, ("split:", "'pretrain'", "'test'")),
        ({"min_size": 0}, ("min_size:", "positive")),
        ({"seed": 0.5}, ("seed:", "non-negative integer")),
        ({"on_corrupt": "skip"}, ("options: on_corrupt not accepted by cifar10", "fraction")),
    ],
)
def test_bad_arguments_name_themselves(fakes, kwargs, needles):
    with pytest.raises(DataError) as exc_info:
        build_dataset("cifar10", fakes["cifar10"], **kwargs)
    assert_one_line(exc_info, *needles)


def test_bad_folder_options_name_themselves(fakes):
    for option in ("on_corrupt", "verify"):
        with pytest.raises(DataError) as exc_info:
            build_dataset("imagenet", fakes["imagenet"], **{option: "sometimes"})
        assert_one_line(exc_info, f"{option}: must be one of", "'sometimes'")


def test_class_folder_without_images(tmp_path):
    cases = [
        ("imagenet", tmp_path / "in", "train/n00000001"),
        ("tiny_imagenet", tmp_path / "tiny", "tiny-imagenet-200/train/n00000001/images"),
    ]
    for name, root, folder in cases:
        write_fake_dataset(name, root, num_per_class=1, num_classes=2, image_size=8)
        for path in (root / folder).glob("*.JPEG"):
            path.unlink()
        with pytest.raises(DataError) as exc_info:
            build_dataset(name, root, "train")
        assert_one_line(exc_info, f"class folder {root / folder} has no image files (.jpg, .jpeg, .png")


def test_val_class_unknown_to_train_is_an_error(tmp_path):
    write_fake_dataset("imagenet", tmp_path, num_per_class=2, num_classes=2, image_size=8)
    (tmp_path / "val" / "n00000000").rename(tmp_path / "val" / "n99999999")
    with pytest.raises(DataError) as exc_info:
        build_dataset("imagenet", tmp_path, "val")
    assert_one_line(exc_info, f"{tmp_path / 'val' / 'n99999999'} is not one of the 2 training classes")


def test_imagenet100_class_list_errors(tmp_path):
    write_fake_dataset("imagenet", tmp_path, num_per_class=1, num_classes=3, image_size=8)
    with pytest.raises(DataError) as exc_info:
        build_dataset("imagenet100", tmp_path)
    assert_one_line(exc_info, f"{tmp_path / 'imagenet100.txt'} does not exist", "3 class folders, not 100")
    with pytest.raises(DataNotFoundError) as exc_info:
        build_dataset("imagenet100", tmp_path, class_list=tmp_path / "nope.txt")
    assert_one_line(exc_info, f"class_list: {tmp_path / 'nope.txt'} does not exist")
    (tmp_path / "imagenet100.txt").write_text("n00000000\nn00000042\n")
    with pytest.raises(DataError) as exc_info:
        build_dataset("imagenet100", tmp_path)
    assert_one_line(exc_info, "class n00000042 of", f"has no folder {tmp_path / 'train' / 'n00000042'}")


def test_tiny_imagenet_annotation_naming_a_missing_file(tmp_path):
    root = write_fake_dataset("tiny_imagenet", tmp_path, num_per_class=2, num_classes=2, image_size=8)
    missing = root / "tiny-imagenet-200" / "val" / "images" / "val_1.JPEG"
    missing.unlink()
    with pytest.raises(DataNotFoundError) as exc_info:
        build_dataset("tiny_imagenet", root, "val")
    assert_one_line(exc_info, f"{missing} is listed in", "val_annotations.txt but missing")


# ---------------------------------------------------------------------------
# damaged files


def test_truncated_cifar_pickle_names_the_file(tmp_path):
    fake_data.write_cifar10(tmp_path, cifar_splits(), ["a", "b", "c"])
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(DataError) as exc_info:
        build_dataset("cifar10", tmp_path, "train")
    assert_one_line(exc_info, f"{batch} is not a readable CIFAR pickle")


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    fake_data.write_cifar10(tmp_path, cifar_splits(), ["a", "b", "c"])
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": print}))
    with pytest.raises(DataError) as exc_info:
        build_dataset("cifar10", tmp_path, "val")
    assert_one_line(exc_info, f"{meta} is not a readable CIFAR pickle", "which a CIFAR file never does")


def test_idx_with_wrong_magic_number_or_length(tmp_path):
    fake_data.write_fashion_mnist(tmp_path, fashion_splits(), [], compress=False)
    images = tmp_path / "train-images-idx3-ubyte"
    raw = images.read_bytes()
    images.write_bytes(raw[:-5])
    with pytest.raises(DataError) as exc_info:
        build_dataset("fashion_mnist", tmp_path)
    assert_one_line(exc_info, f"{images} has {len(raw) - 21} data bytes")
    images.write_bytes(bytes([0, 0, 8, 1]) + raw[4:])
    with pytest.raises(DataError) as exc_info:
        build_dataset("fashion_mnist", tmp_path)
    assert_one_line(exc_info, f"{images} starts with magic number 0x00000801, not 0x00000803")


def test_stl10_file_of_wrong_size_or_label_count(tmp_path):
    fake_data.write_stl10(tmp_path, stl_splits(), list(data._STL_CLASSES))
    labels = tmp_path / "stl10_binary" / "train_y.bin"
    labels.write_bytes(b"\x01\x02")
    with pytest.raises(DataError) as exc_info:
        build_dataset("stl10", tmp_path)
    assert_one_line(exc_info, f"{labels} has 2 labels for 4 images")
    images = tmp_path / "stl10_binary" / "test_X.bin"
    images.write_bytes(images.read_bytes()[:-1])
    with pytest.raises(DataError) as exc_info:
        build_dataset("stl10", tmp_path, "val")
    assert_one_line(exc_info, f"{images} has {2 * 27648 - 1} bytes, not a multiple of 27648")
    labels.write_bytes(b"\x01\x00\x02\x03")  # the file counts from 1: a 0 is no class
    with pytest.raises(DataError) as exc_info:
        build_dataset("stl10", tmp_path)
    assert_one_line(exc_info, f"{labels} has labels in [-1, 2], outside [0, 10)")


@pytest.fixture
def folder_with_two_broken(tmp_path) -> tuple[Path, list[Path]]:
    root = write_fake_dataset("image_folder", tmp_path, num_per_class=4, num_classes=2, image_size=16)
    broken = sorted((root / "train" / "class_001").iterdir())[:2]
    broken[0].write_bytes(broken[0].read_bytes()[:100])  # truncated
    broken[1].write_bytes(b"not an image")
    return root, broken


def test_corrupt_images_skipped_with_one_warning(folder_with_two_broken):
    root, broken = folder_with_two_broken
    with pytest.warns(UserWarning) as record:
        dataset = build_dataset("image_folder", root, "train", on_corrupt="skip")
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller
    message = str(record[0].message)
    assert "skipped 2 unreadable image file(s)" in message and f"first: {broken[0]}" in message
    assert len(dataset) == 6 and dataset.skipped == [str(p) for p in broken]
    assert np.bincount(dataset.targets).tolist() == [4, 2]


def test_corrupt_image_error_names_the_file(folder_with_two_broken):
    root, broken = folder_with_two_broken
    with pytest.raises(CorruptImageError) as exc_info:
        build_dataset("image_folder", root, "train")
    assert_one_line(exc_info, f"root: {broken[0]} cannot be read as an image", "on_corrupt='skip'")


def test_postscript_named_like_an_image_is_refused_and_ghostscript_never_runs(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    root = write_fake_dataset("image_folder", tmp_path, num_per_class=2, num_classes=2, image_size=16)
    disguised = sorted((root / "train" / "class_001").iterdir())[0]
    disguised.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n")
    runs = []

    def ghostscript(*args, **kwargs):  # PIL's EPS loader hands the file's PostScript to this
        runs.append(args)
        raise OSError("Ghostscript ran")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    with pytest.raises(CorruptImageError) as exc_info:
        build_dataset("image_folder", root, "train")
    assert_one_line(exc_info, f"{disguised} cannot be read as an image (cannot identify image file")
    assert not runs


def test_lazy_verification_checks_at_read_time(folder_with_two_broken):
    root, broken = folder_with_two_broken
    strict = build_dataset("image_folder", root, "train", verify="lazy")
    assert len(strict) == 8  # nothing decoded yet
    first_broken = list(strict._items).index(str(broken[0]))
    with pytest.raises(CorruptImageError) as exc_info:
        strict[first_broken]
    assert_one_line(exc_info, str(broken[0]))

    lenient = build_dataset("image_folder", root, "train", verify="lazy", on_corrupt="skip")
    with pytest.warns(UserWarning, match="skipping unreadable image") as record:
        image, target = lenient[first_broken]  # served by the next readable sample
        lenient[first_broken + 1]
    assert len(record) == 1 and record[0].filename == __file__
    assert image.size == (16, 16) and target == 1
    assert lenient.skipped == [str(p) for p in broken]


def test_min_size_names_the_file_and_its_size(fakes, folder_with_two_broken):
    root, broken = folder_with_two_broken
    with pytest.raises(DataError) as exc_info:
        build_dataset("image_folder", root, "val", min_size=20)
    assert_one_line(exc_info, "min_size:", "is 16x16 pixels, smaller than min_size=20", str(root / "val"))
    lazy = build_dataset("image_folder", root, "val", min_size=20, verify="lazy")
    with pytest.raises(DataError) as exc_info:
        lazy[0]
    assert_one_line(exc_info, f"min_size: {lazy._items[0]} is 16x16 pixels")
    with pytest.raises(DataError) as exc_info:
        build_dataset("cifar10", fakes["cifar10"], min_size=33)
    assert_one_line(exc_info, "min_size: images in", "cifar-10-batches-py are 32x32 pixels")
    assert len(build_dataset("cifar10", fakes["cifar10"], "val", min_size=32)) == 12


# ---------------------------------------------------------------------------
# download


def test_download_uses_torchvision_where_it_has_a_downloader(tmp_path, monkeypatch):
    calls = []

    def fake_cifar10(root, download):
        calls.append((root, download))
        fake_data.write_cifar10(Path(root), cifar_splits(), ["a", "b", "c"])

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    dataset = build_dataset("cifar10", tmp_path / "new", "val", download=True)
    assert calls == [(str(tmp_path / "new"), True)] and len(dataset) == 3


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    def offline(root, download, split):
        raise RuntimeError("Error downloading stl10_binary.tar.gz:\nTried http://..., got: URLError")

    monkeypatch.setattr(torchvision.datasets, "STL10", offline)
    with pytest.raises(DataError) as exc_info:
        build_dataset("stl10", tmp_path, download=True)
    assert_one_line(exc_info, f"download: fetching STL-10 into {tmp_path} failed (Error downloading")


def test_download_of_a_dataset_without_downloader(tmp_path):
    with pytest.raises(DataError) as exc_info:
        build_dataset("tiny_imagenet", tmp_path, download=True)
    assert_one_line(exc_info, "download: tiny_imagenet has no downloader", f"{tmp_path}/tiny-imagenet-200/")


def test_missing_files_hint_at_download_only_where_possible(tmp_path):
    with pytest.raises(DataError, match=r"\(or pass download=True\)$"):
        build_dataset("stl10", tmp_path)
    with pytest.raises(DataError) as exc_info:
        build_dataset("imagenet", tmp_path)
    assert "download" not in str(exc_info.value)


def test_nothing_warns_on_a_clean_dataset(fakes):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_dataset("tiny_imagenet", fakes["tiny_imagenet"], "train")[0]
