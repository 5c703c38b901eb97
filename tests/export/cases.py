"""Models and inputs shared by the export tests: every layer type and option combination,
the shipped model configs, and image-like raw pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from convtrain.data.splits import Preprocessing
from convtrain.nn.model import Model, build_model
from tests.shipped_models import shipped_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"
#: the per-sample input of each shipped model (the dataset it is meant for)
SHIPPED_INPUT = {"small_cnn": (1, 8, 8), "cifar_cnn": (3, 32, 32), "resnet20": (3, 32, 32),
                 "seed_example": (3, 224, 224)}
SHIPPED = sorted(path.stem for path in CONFIGS.glob("*.yaml"))


def shipped_model(name: str, seed: int = 0) -> Model:
    config = shipped_config(name)
    return build_model(config, SHIPPED_INPUT.get(name, (1, 28, 28)), seed=seed)


def conv(filters: int, **options) -> dict:
    return {"type": "conv2d", "filters": filters, "kernel_size": 3, **options}


def head(units: int = 5) -> dict:
    return {"flat": {"type": "flatten"}, "fc": {"type": "dense", "units": units}}


#: name -> (layers, per-sample input): every layer type, every option that changes the math
LAYER_CASES = {
    "conv_stride_int_padding": ({"c": conv(4, stride=2, padding=1), **head()}, (2, 9, 9)),
    "conv_pair_kernel_stride_padding": (
        {"c": conv(3, kernel_size=[3, 2], stride=[2, 1], padding=[2, 1]), **head()}, (1, 7, 8)),
    "conv_same": ({"c": conv(4, kernel_size=5, padding="same"), **head()}, (3, 6, 6)),
    "conv_valid_no_bias": ({"c": conv(4, padding="valid", bias=False), **head()}, (2, 7, 7)),
    "conv_dilation": ({"c": conv(4, dilation=2, padding=2), **head()}, (2, 9, 9)),
    "conv_pair_dilation_same": (
        {"c": conv(2, kernel_size=[3, 5], dilation=[2, 1], padding="same"), **head()}, (1, 8, 8)),
    "conv_groups": ({"c": conv(6, groups=2, stride=2, dilation=2, padding=2), **head()},
                    (4, 9, 9)),
    "conv_depthwise": ({"c": conv(6, groups=3, padding="same", bias=False),
                        "p": conv(4, kernel_size=1), **head()}, (3, 6, 6)),
    "batchnorm": ({"c": conv(4, padding=1), "bn": {"type": "batchnorm2d", "eps": 1e-3},
                   **head()}, (2, 6, 6)),
    "maxpool_padding": ({"c": conv(3), "pool": {"type": "maxpool2d", "kernel_size": 3,
                                               "stride": 2, "padding": 1}, **head()},
                        (1, 9, 9)),
    "maxpool_pair_overlapping": (
        {"pool": {"type": "maxpool2d", "kernel_size": [3, 2], "stride": [1, 2],
                  "padding": [1, 0]}, **head()}, (2, 7, 8)),
    "relu_then_maxpool": ({"c": conv(3), "r": {"type": "relu"},
                           "pool": {"type": "maxpool2d", "kernel_size": 2}, **head()},
                          (1, 8, 8)),
    "avgpool_plain": ({"pool": {"type": "avgpool2d", "kernel_size": 2}, **head()}, (2, 6, 6)),
    "avgpool_padding_include": (
        {"pool": {"type": "avgpool2d", "kernel_size": 3, "stride": 2, "padding": 1}, **head()},
        (2, 7, 7)),
    "avgpool_padding_exclude": (
        {"pool": {"type": "avgpool2d", "kernel_size": [3, 2], "stride": [2, 1],
                  "padding": [1, 1], "count_include_pad": False}, **head()}, (2, 7, 6)),
    "global_avgpool": ({"c": conv(5, padding=1), "gap": {"type": "global_avgpool2d"},
                        "fc": {"type": "dense", "units": 3}}, (2, 5, 7)),
    "dense_stack_no_bias": ({"flat": {"type": "flatten"},
                             "fc1": {"type": "dense", "units": 7, "bias": False},
                             "fc2": {"type": "dense", "units": 4}}, (1, 4, 4)),
    "activations": ({"c": conv(4, padding=1), "a1": {"type": "tanh"},
                     "c2": conv(4, padding=1), "a2": {"type": "sigmoid"},
                     "c3": conv(4, padding=1), "a3": {"type": "leaky_relu",
                                                      "negative_slope": 0.2},
                     "c4": conv(4, padding=1), "a4": {"type": "relu"}, **head()}, (1, 6, 6)),
    "activations_issue14": ({"c": conv(4, padding=1), "a1": {"type": "elu", "alpha": 0.7},
                             "c2": conv(4, padding=1), "a2": {"type": "silu"},
                             "c3": conv(4, padding=1), "a3": {"type": "gelu"},
                             "c4": conv(4, padding=1), "a4": {"type": "gelu", "approximate": "tanh"},
                             "c5": conv(4, padding=1), "s": {"type": "softmax"}, **head()},
                            (1, 6, 6)),
    "softmax_features": ({"flat": {"type": "flatten"}, "fc1": {"type": "dense", "units": 6},
                          "s": {"type": "softmax"}, "fc2": {"type": "dense", "units": 3}},
                         (2, 3, 3)),
    "batchnorm1d": ({"flat": {"type": "flatten"}, "fc1": {"type": "dense", "units": 8},
                     "bn1d": {"type": "batchnorm1d", "eps": 1e-3, "momentum": 0.3},
                     "fc2": {"type": "dense", "units": 3}}, (1, 4, 4)),
    "dropout2d_removed": ({"c": conv(4, padding=1), "drop": {"type": "dropout2d", "p": 0.4},
                           **head()}, (2, 5, 5)),
    # a graph: branches joined by concat (the model input among them) and a 3-way add with an
    # identity shortcut; flat takes the layer before it in config order
    "graph_concat_add": ({"c0": conv(4, padding=1),
                          "a": conv(3, padding=1, inputs="c0"),
                          "b": conv(2, kernel_size=1, inputs="c0"),
                          "cat": {"type": "concat", "inputs": ["a", "b", "input"]},
                          "skip": {"type": "identity", "inputs": "cat"},
                          "c1": conv(7, padding=1, inputs="cat"),
                          "sum": {"type": "add", "inputs": ["c1", "skip", "cat"]},
                          **head()}, (2, 6, 6)),
    "dropout_removed": ({"flat": {"type": "flatten"}, "fc1": {"type": "dense", "units": 6},
                         "drop": {"type": "dropout", "p": 0.5},
                         "fc2": {"type": "dense", "units": 3},
                         "drop_last": {"type": "dropout", "p": 0.3}}, (1, 4, 4)),
}


def case_model(name: str, seed: int = 0) -> Model:
    """The case's model with random (not default) BatchNorm weights and running statistics,
    so that evaluation mode is really exercised."""
    layers, shape = LAYER_CASES[name]
    model = build_model({"name": name, "layers": layers}, shape, seed=seed)
    rng = np.random.default_rng(seed + 100)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith(("running_mean", ".bias")):
            state[key] = rng.normal(0, 0.5, value.shape).astype(np.float32)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.2, 3.0, value.shape).astype(np.float32)
        elif key.startswith("bn") and key.endswith(".weight"):
            state[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
    model.load_state_dict(state)
    return model


def preprocessing_for(model: Model, pixel_max: float = 255.0) -> Preprocessing:
    """Made-up statistics of the kind a dataset has (mean ~0.3-0.5, std ~0.2-0.35)."""
    channels = model.input_shape[0]
    return Preprocessing(pixel_max, tuple(np.linspace(0.3, 0.5, channels)),
                         tuple(np.linspace(0.2, 0.35, channels)))


def image_pixels(n: int, shape: tuple[int, int, int], pixel_max: float = 255.0,
                 seed: int = 0) -> np.ndarray:
    """Raw integer pixels 0..pixel_max with an image's smooth structure (a coarse random
    pattern upsampled and blurred), float32 ``(n, C, H, W)``."""
    channels, height, width = shape
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, pixel_max, (n, channels, height // 3 + 2, width // 3 + 2))
    image = np.kron(coarse, np.ones((1, 1, 3, 3)))[:, :, :height, :width]
    image = (image + np.roll(image, 1, 2) + np.roll(image, 1, 3) + np.roll(image, 1, (2, 3))) / 4
    return np.round(image).astype(np.float32)
