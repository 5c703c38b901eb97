"""Datasets, splits, normalisation, IDX / CIFAR readers and the batch loader."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from convtrain.runtime.backend import get_backend
from convtrain.data import (
    ArraySplit,
    AugmentSpec,
    Normalization,
    iterate_batches,
    load_dataset,
    num_batches,
    parse_augment,
)
from convtrain.data import digits as digits_module
from convtrain.data.augment import augment_batch
from convtrain.data.idx import read_idx, read_idx_split
from convtrain.data.stratify import allocate_per_class, stratified_split
from convtrain.errors import ConfigError, DataError

RESOURCES = Path(digits_module.__file__).parent / "resources"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits read directly with NumPy (independent of the loader)."""
    with np.load(RESOURCES / "digits.npz", allow_pickle=False) as archive:
        return archive["images"].copy(), archive["labels"].copy()


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """An IDX file built by hand with struct: magic, big-endian dims, big-endian data."""
    big_endian = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[
        code
    ]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(big_endian).tobytes()


def write_mnist_files(
    directory: Path, n_train: int = 40, n_test: int = 20, shape=(6, 5), gz=True, seed=0
):
    """Four small MNIST-style IDX files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        payload = idx_bytes(array, 0x08)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(payload))
        else:
            (directory / stem).write_bytes(payload)
    return arrays


# --------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_fixed_test_split():
    data = load_dataset({"name": "digits", "val_fraction": 0.1}, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (1293, 144, 360)
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == np.float32 and split.x.flags.c_contiguous
        assert split.x.shape[1:] == (1, 8, 8)
        assert split.y.dtype == np.int64
        assert set(np.unique(split.y)) == set(range(10))
    assert data.input_shape == (1, 8, 8)
    assert data.num_classes == 10 and data.class_names == tuple("0123456789")
    assert data.name == "digits"


def test_built_in_datasets_declare_the_shape_their_reader_returns():
    """The shapes the model is built from before any data is read (task=summary needs no
    files): every built-in dataset declares one, and digits' equals what its reader returns
    (the others' readers are checked on real-format files below)."""
    from convtrain.data import DATASETS
    from convtrain.data.registry import declared_input_shape

    expected = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
                "cifar10": (3, 32, 32)}
    for name, shape in expected.items():
        assert declared_input_shape(DATASETS.get(name)) == shape
    raw = DATASETS.get("digits")(None)
    assert raw.train.x.shape[1:] == raw.test.x.shape[1:] == expected["digits"]


def test_digits_splits_partition_the_embedded_images_exactly():
    images, labels = raw_digits()
    data = load_dataset({"name": "digits", "val_fraction": 0.2, "normalize": False}, seed=3)
    pixels = np.concatenate([data.train.x, data.val.x, data.test.x]) * 16
    got_labels = np.concatenate([data.train.y, data.val.y, data.test.y])
    # Every embedded image appears exactly once (compare as sorted byte rows with labels).
    expected_rows = np.column_stack([images.reshape(len(images), -1), labels]).astype(np.int64)
    got_rows = np.column_stack([np.rint(pixels).reshape(len(pixels), -1), got_labels]).astype(
        np.int64
    )
    assert np.array_equal(np.unique(expected_rows, axis=0), np.unique(got_rows, axis=0))
    assert len(got_rows) == len(expected_rows) == 1797


def test_digits_resource_equals_scikit_learn_copy():
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    images, labels = raw_digits()
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    assert np.array_equal(images.astype(np.float64), bunch.images)
    assert np.array_equal(labels.astype(np.int64), bunch.target)


def test_digits_resource_checksum_matches_readme_and_file():
    payload = (RESOURCES / "digits.npz").read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    readme = (RESOURCES / "README.md").read_text()
    assert re.search(r"SHA-256 \| `([0-9a-f]{64})`", readme).group(1) == digest
    assert digest == digits_module.RESOURCE_SHA256


def test_corrupted_digits_resource_raises_data_error():
    payload = bytearray((RESOURCES / "digits.npz").read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    with pytest.raises(DataError, match="SHA-256"):
        digits_module.read_digits_arrays(bytes(payload))


def test_test_split_ignores_run_seed_but_val_split_follows_it():
    a = load_dataset({"name": "digits", "normalize": False}, seed=0)
    b = load_dataset({"name": "digits", "normalize": False}, seed=1)
    assert np.array_equal(a.test.x, b.test.x) and np.array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.val.x, b.val.x)


def test_same_seed_gives_identical_splits():
    a = load_dataset({"name": "digits", "subset": 500}, seed=7)
    b = load_dataset({"name": "digits", "subset": 500}, seed=7)
    for name in ("train", "val", "test"):
        assert np.array_equal(getattr(a, name).x, getattr(b, name).x)
        assert np.array_equal(getattr(a, name).y, getattr(b, name).y)


def test_validation_split_is_stratified():
    data = load_dataset({"name": "digits", "val_fraction": 0.25, "normalize": False}, seed=5)
    pool = np.bincount(np.concatenate([data.train.y, data.val.y]), minlength=10)
    val = np.bincount(data.val.y, minlength=10)
    assert val.sum() == round(0.25 * pool.sum())
    assert np.all(np.abs(val - 0.25 * pool) < 1.0)


def test_subset_is_stratified_and_precedes_validation_split():
    data = load_dataset({"name": "digits", "subset": 200, "val_fraction": 0.1}, seed=2)
    assert len(data.train) + len(data.val) == 200
    assert len(data.val) == 20
    pool = np.bincount(np.concatenate([data.train.y, data.val.y]), minlength=10)
    full = np.bincount(raw_digits()[1], minlength=10)
    train_share = full / full.sum()  # the training set is stratified too, same shares +-1
    assert np.all(np.abs(pool - 200 * train_share) <= 1.5)
    assert len(data.test) == 360  # the test split is never subsetted


def test_identity_records_what_decides_the_splits():
    """Checkpoints store it, so a resume can refuse other splits (see the trainer tests)."""
    data = load_dataset({"name": "digits", "subset": 200, "val_fraction": 0.1}, seed=2)
    assert data.identity() == {
        "name": "digits", "subset": 200, "val_fraction": 0.1, "normalize": True,
        "normalization": {"mean": list(data.normalization.mean),
                          "std": list(data.normalization.std)},
    }


def test_zero_val_fraction_gives_empty_val_split():
    data = load_dataset({"name": "digits", "val_fraction": 0}, seed=0)
    assert len(data.train) == 1437
    assert data.val.x.shape == (0, 1, 8, 8) and data.val.x.dtype == np.float32
    assert data.val.y.shape == (0,) and data.val.y.dtype == np.int64


def test_normalisation_uses_train_statistics_for_all_splits():
    plain = load_dataset({"name": "digits", "normalize": False}, seed=4)
    normed = load_dataset({"name": "digits", "normalize": True}, seed=4)
    # Unnormalised pixels are the embedded 0..16 values divided by 16.
    assert plain.train.x.min() == 0.0 and plain.train.x.max() == 1.0
    assert np.allclose(plain.train.x * 16, np.rint(plain.train.x * 16))
    mean = plain.train.x.astype(np.float64).mean()
    std = plain.train.x.astype(np.float64).std()
    assert normed.normalization.mean == pytest.approx((mean,), rel=1e-9)
    assert normed.normalization.std == pytest.approx((std,), rel=1e-6)
    for name in ("train", "val", "test"):
        expected = (getattr(plain, name).x.astype(np.float64) - mean) / std
        assert np.allclose(getattr(normed, name).x, expected, atol=1e-5)
    assert abs(normed.train.x.mean()) < 1e-5 and abs(normed.train.x.std() - 1) < 1e-5
    assert plain.normalization == Normalization.identity(1)


def test_normalization_fit_matches_float64_reference_per_channel():
    rng = np.random.default_rng(0)
    x = (rng.random((9000, 3, 4, 5)) * np.array([1, 5, 0.01]).reshape(1, 3, 1, 1) + 2).astype(
        np.float32
    )
    fitted = Normalization.fit(x)
    reference = x.astype(np.float64)
    assert np.allclose(fitted.mean, reference.mean(axis=(0, 2, 3)), rtol=1e-12)
    assert np.allclose(fitted.std, reference.std(axis=(0, 2, 3)), rtol=1e-6)
    constant = np.full((4, 2, 3, 3), 0.5, np.float32)
    assert Normalization.fit(constant).std == (1.0, 1.0)


def test_omegaconf_config_is_accepted():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(
        {
            "name": "digits",
            "val_fraction": 0.1,
            "normalize": True,
            "root": None,
            "download": False,
            "subset": None,
            "mirror": None,
        }
    )
    assert len(load_dataset(cfg, seed=0).train) == 1293


@pytest.mark.parametrize(
    ("cfg", "key", "shown"),
    [
        ({"val_fraction": 1.0}, "data.val_fraction", "1.0"),
        ({"val_fraction": -0.1}, "data.val_fraction", "-0.1"),
        ({"val_fraction": "0.1"}, "data.val_fraction", "'0.1'"),
        ({"val_fraction": True}, "data.val_fraction", "True"),
        ({"normalize": "yes"}, "data.normalize", "'yes'"),
        ({"download": 1}, "data.download", "1"),
        ({"subset": 0}, "data.subset", "0"),
        ({"subset": 2.5}, "data.subset", "2.5"),
        ({"subset": True}, "data.subset", "True"),
        ({"subset": 5000}, "data.subset", "5000"),
        ({"root": 5}, "data.root", "5"),
        ({"mirror": "ftp://example.org/"}, "data.mirror", "'ftp://example.org/'"),
        ({"name": 3}, "data.name", "3"),
        ({"name": "mnst"}, "data.name", "'mnst'"),
        ({"val_frac": 0.1}, "data.val_frac", "unknown key"),
        ({"augment": {"rotate": 10}}, "data.augment.rotate", "unknown augmentation"),
        ({"augment": {"random_crop": -1}}, "data.augment.random_crop", "-1"),
        ({"augment": {"horizontal_flip": "yes"}}, "data.augment.horizontal_flip", "'yes'"),
        ({"augment": [4]}, "data.augment", "[4]"),
        ({"subset": 5, "val_fraction": 0.05}, "data.val_fraction", "0.05"),
    ],
)
def test_bad_config_values_name_the_key(cfg, key, shown):
    with pytest.raises(ConfigError) as info:
        load_dataset({"name": "digits", **cfg}, seed=0)
    message = str(info.value)
    assert message.startswith(key + ":"), message
    assert shown in message, message


def test_unknown_key_and_dataset_suggest_the_right_name():
    with pytest.raises(
        ConfigError, match=r"data\.val_frac: unknown key.*did you mean 'data\.val_fraction'"
    ):
        load_dataset({"val_frac": 0.1}, seed=0)
    with pytest.raises(
        ConfigError, match=r"data\.name: Unknown dataset 'mnst'.*did you mean 'mnist'"
    ):
        load_dataset({"name": "mnst"}, seed=0)


def test_bad_seed_is_rejected():
    with pytest.raises(ConfigError, match="seed"):
        load_dataset({"name": "digits"}, seed=-1)


# --------------------------------------------------------------------------- stratification


def test_allocate_per_class_is_exact_and_proportional():
    counts = np.array([5, 5, 5, 1])
    got = allocate_per_class(counts, 4)
    assert got.sum() == 4 and np.all(got <= counts)
    assert np.all(np.abs(got - counts * 4 / 16) < 1)


def test_stratified_split_partitions_indices():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    keep, take = stratified_split(labels, 12, np.random.default_rng(0))
    assert len(take) == 12 and np.array_equal(np.sort(np.concatenate([keep, take])), np.arange(60))
    assert np.bincount(labels[take]).tolist() == [2, 4, 6]


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    ("code", "dtype"),
    [
        (0x08, np.uint8),
        (0x09, np.int8),
        (0x0B, np.int16),
        (0x0C, np.int32),
        (0x0D, np.float32),
        (0x0E, np.float64),
    ],
)
def test_idx_round_trip(tmp_path, code, dtype, gz):
    rng = np.random.default_rng(code)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    payload = idx_bytes(array, code)
    path = tmp_path / "data.idx"
    path.write_bytes(gzip.compress(payload) if gz else payload)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    assert np.array_equal(got, array)


def test_idx_split_reads_mnist_layout(tmp_path):
    arrays = write_mnist_files(tmp_path, gz=False)
    split = read_idx_split(
        tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte", 10
    )
    assert split.x.shape == (40, 1, 6, 5) and split.y.dtype == np.int64
    assert np.array_equal(split.x[:, 0], arrays["train-images-idx3-ubyte"])


def _images_payload():
    return idx_bytes(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3), 0x08)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_images_payload()[:-1], "truncated IDX data"),
        (_images_payload() + b"\x00\x00", "trailing bytes"),
        (b"\x01\x02" + _images_payload()[2:], "bad IDX magic"),
        (
            _images_payload()[:2] + b"\x0a" + _images_payload()[3:],
            "unknown IDX data type code 0x0A",
        ),
        (_images_payload()[:7], "truncated IDX header"),
        (b"\x00\x00", "truncated IDX file"),
        (struct.pack(">BBBB", 0, 0, 8, 0), "0 dimensions"),
        (gzip.compress(_images_payload())[:-10], "corrupt or truncated gzip"),
    ],
)
def test_idx_corruption_errors_name_the_file(tmp_path, payload, message):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(tmp_path / "nope")


def test_idx_pair_errors(tmp_path):
    images = tmp_path / "images"
    labels = tmp_path / "labels"
    images.write_bytes(idx_bytes(np.zeros((4, 2, 2), np.uint8), 0x08))
    labels.write_bytes(idx_bytes(np.zeros(3, np.uint8), 0x08))
    with pytest.raises(DataError, match="image/label count mismatch.*4 images.*3 labels"):
        read_idx_split(images, labels, 10)
    labels.write_bytes(idx_bytes(np.array([0, 1, 2, 10], np.uint8), 0x08))
    with pytest.raises(DataError, match="found label 10 but this dataset has 10 classes"):
        read_idx_split(images, labels, 10)
    with pytest.raises(DataError, match="expected uint8 images"):
        read_idx_split(labels, labels, 10)
    with pytest.raises(DataError, match="expected uint8 labels"):
        read_idx_split(images, images, 10)


# --------------------------------------------------------------------------- MNIST-style datasets


def test_mnist_from_root_scales_pixels_and_keeps_official_test(tmp_path):
    arrays = write_mnist_files(tmp_path / "m")
    data = load_dataset(
        {"name": "mnist", "root": str(tmp_path / "m"), "normalize": False, "val_fraction": 0},
        seed=0,
    )
    assert data.input_shape == (1, 6, 5) and data.class_names == tuple("0123456789")
    assert np.array_equal(data.train.x[:, 0], arrays["train-images-idx3-ubyte"] / np.float32(255))
    assert np.array_equal(data.test.y, arrays["t10k-labels-idx1-ubyte"])


def test_mnist_uncompressed_files_and_env_directory(tmp_path, monkeypatch):
    write_mnist_files(tmp_path / "env" / "mnist", gz=False)
    monkeypatch.setenv("CONVTRAIN_DATA", str(tmp_path / "env"))
    data = load_dataset({"name": "mnist", "val_fraction": 0.25}, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 20)


def test_missing_files_error_lists_directories_and_override(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVTRAIN_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        load_dataset({"name": "mnist"}, seed=0)
    message = str(info.value)
    assert str(tmp_path / "env" / "mnist") in message
    assert "data.download=true" in message and "train-images-idx3-ubyte.gz" in message
    monkeypatch.delenv("CONVTRAIN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(
        DataError, match=re.escape(str(tmp_path / "cache" / "convtrain" / "mnist"))
    ):
        load_dataset({"name": "mnist"}, seed=0)


@pytest.mark.skipif(
    not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist_smoke(tmp_path):
    data = load_dataset(
        {"name": "fashion_mnist", "root": str(tmp_path / "empty"), "val_fraction": 0}, seed=0
    )
    assert data.train.x.shape == (60000, 1, 28, 28) and data.test.x.shape == (10000, 1, 28, 28)
    # The dataset's README: 6,000 training and 1,000 test images per class.
    assert np.bincount(data.train.y).tolist() == [6000] * 10
    assert np.bincount(data.test.y).tolist() == [1000] * 10
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert abs(float(data.train.x.mean())) < 1e-4


# --------------------------------------------------------------------------- CIFAR-10


def cifar_records(labels: np.ndarray, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    images = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    rows = [
        bytes([int(label)]) + image.tobytes() for label, image in zip(labels, images, strict=True)
    ]
    return b"".join(rows), images


def write_cifar_archive(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_cifar10_binary_archive(tmp_path):
    rng = np.random.default_rng(0)
    members, train_images, train_labels = {}, [], []
    for i in range(1, 6):
        labels = rng.integers(0, 10, 4)
        members[f"data_batch_{i}.bin"], images = cifar_records(labels, rng)
        train_images.append(images)
        train_labels.append(labels)
    test_labels = np.arange(10)
    members["test_batch.bin"], test_images = cifar_records(test_labels, rng)
    members["batches.meta.txt"] = b"airplane\nautomobile\n"
    write_cifar_archive(tmp_path / "cifar-10-binary.tar.gz", members)
    data = load_dataset(
        {"name": "cifar10", "root": str(tmp_path), "val_fraction": 0, "normalize": False}, seed=0
    )
    assert data.input_shape == (3, 32, 32) and data.class_names[0] == "airplane"
    assert np.array_equal(data.train.x * 255, np.concatenate(train_images).astype(np.float32))
    assert np.array_equal(data.train.y, np.concatenate(train_labels))
    assert np.array_equal(data.test.x * 255, test_images.astype(np.float32))
    assert np.array_equal(data.test.y, test_labels)
    # Channel order: the first 1024 pixel bytes of a record are the red plane.
    first_record = members["test_batch.bin"][1:1025]
    assert np.array_equal(
        np.rint(data.test.x[0, 0] * 255).astype(np.uint8).tobytes(), first_record
    )


def test_cifar10_extracted_directory(tmp_path):
    rng = np.random.default_rng(1)
    directory = tmp_path / "cifar-10-batches-bin"
    directory.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (directory / name).write_bytes(cifar_records(np.arange(10), rng)[0])
    data = load_dataset({"name": "cifar10", "root": str(tmp_path), "val_fraction": 0.2}, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (40, 10, 10)


def test_cifar10_corruption_errors(tmp_path):
    rng = np.random.default_rng(2)
    good = cifar_records(np.arange(3), rng)[0]
    members = {f"data_batch_{i}.bin": good for i in range(1, 6)}
    write_cifar_archive(tmp_path / "cifar-10-binary.tar.gz", members)
    with pytest.raises(DataError, match="lacks member.*test_batch.bin"):
        load_dataset({"name": "cifar10", "root": str(tmp_path)}, seed=0)
    write_cifar_archive(
        tmp_path / "cifar-10-binary.tar.gz", {**members, "test_batch.bin": good[:-5]}
    )
    with pytest.raises(DataError, match="test_batch.bin.*not a whole number of 3073-byte"):
        load_dataset({"name": "cifar10", "root": str(tmp_path)}, seed=0)
    bad_label = bytes([12]) + good[1:]
    write_cifar_archive(
        tmp_path / "cifar-10-binary.tar.gz", {**members, "test_batch.bin": bad_label}
    )
    with pytest.raises(DataError, match="found label 12"):
        load_dataset({"name": "cifar10", "root": str(tmp_path)}, seed=0)
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"not a tar.gz at all")
    with pytest.raises(DataError, match="cannot read the CIFAR-10 archive"):
        load_dataset({"name": "cifar10", "root": str(tmp_path)}, seed=0)


# --------------------------------------------------------------------------- loader


def indexed_split(n: int, shape=(1, 2, 2)) -> ArraySplit:
    """Sample i has label i and all pixels equal to i, so batches reveal their indices."""
    x = np.repeat(np.arange(n, dtype=np.float32), int(np.prod(shape))).reshape(n, *shape)
    return ArraySplit(x, np.arange(n, dtype=np.int64))


def test_num_batches():
    assert num_batches(10, 3) == 4 and num_batches(10, 3, drop_last=True) == 3
    assert (
        num_batches(9, 3) == 3
        and num_batches(2, 3, drop_last=True) == 0
        and num_batches(0, 4) == 0
    )
    with pytest.raises(ConfigError, match="batch_size"):
        num_batches(10, 0)


def test_loader_covers_every_index_once_and_is_seeded():
    split = indexed_split(23)
    batches = list(iterate_batches(split, 5, shuffle=True, rng=np.random.default_rng(9)))
    assert [len(yb) for _, yb in batches] == [5, 5, 5, 5, 3]
    order = np.concatenate([yb for _, yb in batches])
    assert sorted(order.tolist()) == list(range(23))
    assert not np.array_equal(order, np.arange(23))
    for xb, yb in batches:  # images travel with their labels
        assert xb.dtype == np.float32 and xb.flags.c_contiguous and yb.dtype == np.int64
        assert np.array_equal(xb[:, 0, 0, 0], yb.astype(np.float32))
    again = np.concatenate(
        [yb for _, yb in iterate_batches(split, 5, shuffle=True, rng=np.random.default_rng(9))]
    )
    assert np.array_equal(order, again)
    assert np.array_equal(order, np.random.default_rng(9).permutation(23))


def test_loader_sequential_and_drop_last():
    split = indexed_split(10)
    order = [yb.tolist() for _, yb in iterate_batches(split, 4, shuffle=False)]
    assert order == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    order = [yb.tolist() for _, yb in iterate_batches(split, 4, shuffle=False, drop_last=True)]
    assert order == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_loader_batches_are_copies():
    split = indexed_split(6)
    xb, _ = next(iterate_batches(split, 3, shuffle=False))
    xb[:] = -1
    assert split.x.min() == 0


def test_loader_uses_backend_asarray():
    calls = []
    numpy_backend = get_backend("numpy")

    class RecordingBackend:
        def asarray(self, array, dtype=None):
            calls.append(array.dtype)
            return numpy_backend.asarray(array, dtype)

    batches = list(iterate_batches(indexed_split(4), 2, shuffle=False, backend=RecordingBackend()))
    assert len(batches) == 2 and calls == [np.float32, np.int64] * 2


def test_loader_rejects_shuffle_without_rng():
    with pytest.raises(ConfigError, match="rng"):
        next(iterate_batches(indexed_split(4), 2, shuffle=True))


def test_random_crop_returns_windows_of_the_padded_image():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 2, 5, 6)).astype(np.float32)
    out = augment_batch(x, AugmentSpec(random_crop=2), np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == np.float32 and out.flags.c_contiguous
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    offsets_seen = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(out[i], padded[i, :, dy : dy + 5, dx : dx + 6])
        ]
        assert matches, f"sample {i} is not a crop of its padded image"
        offsets_seen.update(matches)
    assert len(offsets_seen) > 3


def test_horizontal_flip_flips_about_half():
    x = np.random.default_rng(0).standard_normal((200, 1, 3, 4)).astype(np.float32)
    out = augment_batch(x, AugmentSpec(horizontal_flip=True), np.random.default_rng(2))
    flipped = np.array([np.array_equal(o, s[..., ::-1]) for o, s in zip(out, x, strict=True)])
    kept = np.array([np.array_equal(o, s) for o, s in zip(out, x, strict=True)])
    assert np.all(flipped ^ kept)
    assert 60 < flipped.sum() < 140
    assert np.array_equal(
        x, np.random.default_rng(0).standard_normal((200, 1, 3, 4)).astype(np.float32)
    )


def test_loader_augmentation_is_deterministic_and_validated():
    split = indexed_split(8, shape=(1, 4, 4))
    spec = {"random_crop": 1, "horizontal_flip": True}
    a = [
        xb
        for xb, _ in iterate_batches(
            split, 4, shuffle=True, rng=np.random.default_rng(3), augment=spec
        )
    ]
    b = [
        xb
        for xb, _ in iterate_batches(
            split, 4, shuffle=True, rng=np.random.default_rng(3), augment=spec
        )
    ]
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert parse_augment({"random_crop": 0, "horizontal_flip": False}) is None
    with pytest.raises(ConfigError, match=r"augment\.random_crp.*did you mean 'random_crop'"):
        next(iterate_batches(split, 4, shuffle=False, augment={"random_crp": 1}))
    # a padding as large as the image lets crops hold no image pixel at all
    h, w = split.x.shape[2:]
    with pytest.raises(ConfigError, match=rf"augment\.random_crop: {min(h, w)} pixels of "
                                          rf"padding on {h}x{w} images"):
        next(iterate_batches(split, 4, shuffle=True, rng=np.random.default_rng(0),
                             augment={"random_crop": min(h, w)}))
