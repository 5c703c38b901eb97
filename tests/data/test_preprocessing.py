"""Preprocessing: raw pixels -> the model input, exactly as training prepares its images."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from convtrain.data.config import parse_data_config
from convtrain.data.load import prepare_splits
from convtrain.data.splits import ArraySplit, Normalization, Preprocessing, RawDataset
from convtrain.errors import ConfigError


def raw_dataset(pixel_max: float, channels: int = 2) -> RawDataset:
    rng = np.random.default_rng(0)
    top = int(pixel_max)

    def split(n):
        return ArraySplit(rng.integers(0, top + 1, (n, channels, 5, 4)).astype(np.uint8),
                          np.arange(n) % 3)

    return RawDataset(split(60), split(20), ("a", "b", "c"), pixel_max)


@pytest.mark.parametrize("pixel_max", [16.0, 255.0])
def test_apply_equals_the_training_images_bit_for_bit(pixel_max):
    raw = raw_dataset(pixel_max)
    splits = prepare_splits(raw, parse_data_config({"name": "digits", "val_fraction": 0}),
                            seed=0)
    preprocessing = Preprocessing.of(pixel_max, splits.normalization)
    np.testing.assert_array_equal(preprocessing.apply(raw.test.x), splits.test.x)
    np.testing.assert_array_equal(preprocessing.apply(raw.test.x.astype(np.float32)),
                                  splits.test.x)
    # and that is (x / pixel_max - mean) / std, computed independently in float64
    mean = np.asarray(preprocessing.mean).reshape(1, -1, 1, 1)
    std = np.asarray(preprocessing.std).reshape(1, -1, 1, 1)
    np.testing.assert_allclose(splits.test.x, (raw.test.x / pixel_max - mean) / std,
                               rtol=0, atol=1e-6)


def test_apply_leaves_its_input_alone_and_returns_float32():
    raw = np.full((2, 1, 3, 3), 8.0)
    result = Preprocessing(16.0, (0.25,), (0.5,)).apply(raw)
    assert result.dtype == np.float32 and np.all(result == 0.5) and np.all(raw == 8.0)


def test_constants_are_the_float32_operands_of_apply():
    preprocessing = Preprocessing(255.0, (0.1, 0.7), (0.3, 0.11))
    pixel_max, mean, inv_std = preprocessing.constants()
    raw = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3) * 7
    by_hand = (raw / pixel_max - mean.reshape(1, -1, 1, 1)) * inv_std.reshape(1, -1, 1, 1)
    assert by_hand.dtype == np.float32
    np.testing.assert_array_equal(preprocessing.apply(raw), by_hand)
    assert preprocessing.normalization == Normalization((0.1, 0.7), (0.3, 0.11))


def test_round_trip_and_immutability():
    preprocessing = Preprocessing(255.0, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    stored = preprocessing.as_dict()
    assert stored == {"pixel_max": 255.0, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    assert Preprocessing(stored["pixel_max"], tuple(stored["mean"]),
                         tuple(stored["std"])) == preprocessing
    with pytest.raises(dataclasses.FrozenInstanceError):
        preprocessing.pixel_max = 16.0


def test_wrong_input_shape_is_one_line():
    preprocessing = Preprocessing(255.0, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    with pytest.raises(ConfigError, match=r"^preprocessing: expected raw pixels of shape "
                                          r"\(N, C=3, H, W\), got \(2, 1, 4, 4\)$"):
        preprocessing.apply(np.zeros((2, 1, 4, 4)))
    with pytest.raises(ConfigError, match=r"got \(4, 4\)$"):
        preprocessing.apply(np.zeros((4, 4)))


@pytest.mark.parametrize("fields", [(0.0, (0.5,), (0.2,)), (255.0, (0.5,), (0.0,)),
                                    (255.0, (0.5, 0.1), (0.2,)), (255.0, (), ()),
                                    (float("nan"), (0.5,), (0.2,)),
                                    (255.0, (float("inf"),), (0.2,))])
def test_impossible_statistics_are_one_line(fields):
    with pytest.raises(ConfigError, match="^preprocessing: ") as error:
        Preprocessing(*fields)
    assert "\n" not in str(error.value)


def test_sequences_become_tuples_of_floats():
    from_json = Preprocessing(np.float32(16), [np.float64(0.25)], [0.5])
    assert from_json == Preprocessing(16.0, (0.25,), (0.5,))
    assert type(from_json.pixel_max) is float and type(from_json.mean[0]) is float
