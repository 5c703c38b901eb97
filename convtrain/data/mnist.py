"""MNIST and Fashion-MNIST: 28x28 grey images, 60,000 train / 10,000 test, IDX files."""

from __future__ import annotations

from pathlib import Path

from convtrain.data.download import fetch_dataset_file
from convtrain.data.idx import read_idx_split
from convtrain.data.paths import StorageOptions, find_file, missing_files_error, search_dirs
from convtrain.data.registry import DATASETS, input_shape
from convtrain.data.splits import RawDataset

# Official file names (the same for both datasets); each may also be present uncompressed.
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

MNIST_CLASSES = tuple(str(digit) for digit in range(10))
# From the Fashion-MNIST README (github.com/zalandoresearch/fashion-mnist), label order.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Debian's package `dataset-fashion-mnist` installs the four .gz files here.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx_dataset(
    options: StorageOptions, class_names: tuple[str, ...], system_dirs: tuple[str, ...] = ()
) -> RawDataset:
    """Locate (or download) the four IDX files of ``options.name`` and read them."""
    dirs = search_dirs(options, system_dirs)
    paths: dict[str, Path | None] = {}
    missing = []
    for stem in IDX_FILES:
        path = find_file(dirs, (stem + ".gz", stem))
        if path is None:
            missing.append(stem + ".gz")
        paths[stem] = path
    if missing:
        if not options.download:
            raise missing_files_error(options, missing, dirs)
        for filename in missing:
            paths[filename[: -len(".gz")]] = fetch_dataset_file(
                options.name, filename, dirs[0], mirror=options.mirror
            )
    num_classes = len(class_names)
    return RawDataset(
        train=read_idx_split(paths[TRAIN_IMAGES], paths[TRAIN_LABELS], num_classes),
        test=read_idx_split(paths[TEST_IMAGES], paths[TEST_LABELS], num_classes),
        class_names=class_names,
        pixel_max=255.0,
    )


@DATASETS.register("mnist")
@input_shape(1, 28, 28)
def read_mnist(options: StorageOptions) -> RawDataset:
    """LeCun, Cortes & Burges' handwritten digits: (1, 28, 28), 10 classes."""
    return read_idx_dataset(options, MNIST_CLASSES)


@DATASETS.register("fashion_mnist")
@input_shape(1, 28, 28)
def read_fashion_mnist(options: StorageOptions) -> RawDataset:
    """Zalando's Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): (1, 28, 28), 10 classes."""
    return read_idx_dataset(
        options, FASHION_MNIST_CLASSES, system_dirs=(DEBIAN_FASHION_MNIST_DIR,)
    )
