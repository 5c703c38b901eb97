"""The PyTorch route: the generated module, run by PyTorch with the written weights, gives
convtrain's logits; its state_dict names are convtrain's; writing needs no torch."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from convtrain.errors import ConfigError
from convtrain.export.torch_code import (MODULE_ATTRIBUTES, TORCH_EXPORTERS, load_torch_export,
                                         torch_class_name, torch_module_source,
                                         verify_torch_export, write_torch_export)
from convtrain.nn.model import build_model
from tests.export.cases import (case_model, image_pixels, preprocessing_for,
                                shipped_model)

TOLERANCE = 1e-5
#: architectures with grouped/dilated conv, same padding, BN, avg pool with padding, every
#: activation, global pooling, dense without bias and dropout
TORCH_CASES = ["conv_groups", "conv_pair_dilation_same", "conv_same", "batchnorm",
               "avgpool_padding_include", "avgpool_padding_exclude", "maxpool_padding",
               "activations", "global_avgpool", "dense_stack_no_bias", "dropout_removed",
               "conv_depthwise", "conv_pair_kernel_stride_padding", "activations_issue14",
               "softmax_features", "batchnorm1d", "dropout2d_removed", "graph_concat_add"]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def torch_logits(torch, export, raw):
    module = load_torch_export(export)
    with torch.no_grad():
        return module(torch.from_numpy(raw)).numpy()


@pytest.mark.parametrize("case", TORCH_CASES)
def test_generated_module_gives_convtrains_logits(case, torch, tmp_path):
    model = case_model(case)
    preprocessing = preprocessing_for(model)
    export = write_torch_export(model, tmp_path, preprocessing=preprocessing)
    raw = image_pixels(7, model.input_shape, seed=5)
    expected = model.forward(preprocessing.apply(raw), training=False)
    for batch, reference in ((raw, expected), (raw[:1], expected[:1])):
        difference = float(np.abs(torch_logits(torch, export, batch) - reference).max())
        assert difference <= TOLERANCE, (case, difference)
    assert verify_torch_export(export, model, preprocessing, raw) <= TOLERANCE


@pytest.mark.parametrize("name", ["cifar_cnn", "small_cnn", "resnet20", "mobile_cnn"])
def test_shipped_models(name, torch, tmp_path):
    # resnet20 and mobile_cnn: blocks (nested modules stage2.block1.conv1), add, switched-off
    # projections
    model = shipped_model(name, seed=2)
    preprocessing = preprocessing_for(model, pixel_max=16.0 if name == "small_cnn" else 255.0)
    export = write_torch_export(model, tmp_path, preprocessing=preprocessing)
    raw = image_pixels(5, model.input_shape, pixel_max=preprocessing.pixel_max)
    largest = float(np.abs(model.forward(preprocessing.apply(raw), training=False)).max())
    assert verify_torch_export(export, model, preprocessing, raw) <= TOLERANCE * max(1.0, largest)
    module = load_torch_export(export)
    names = {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}
    assert names == set(model.state_dict())


def test_state_dict_names_are_convtrains(torch, tmp_path):
    from safetensors.torch import load_file

    model = case_model("batchnorm")
    export = write_torch_export(model, tmp_path, preprocessing=preprocessing_for(model))
    module = load_torch_export(export)  # loads strictly
    names = {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}
    assert names == set(model.state_dict()) == set(load_file(str(export.weights)))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(module.state_dict()[key].numpy(), value)
    # the preprocessing constants belong to the code, not to the weights
    assert not any(key.startswith("input_") for key in module.state_dict())
    assert type(module).__name__ == "Batchnorm" == export.class_name


def test_the_module_can_be_fine_tuned_like_convtrain_in_training_mode(torch, tmp_path):
    # batch statistics in training mode: BatchNorm (and the preprocessing) agree there too
    model = case_model("batchnorm")
    preprocessing = preprocessing_for(model)
    export = write_torch_export(model, tmp_path, preprocessing=preprocessing)
    module = load_torch_export(export).train()
    raw = image_pixels(6, model.input_shape, seed=9)
    logits = module(torch.from_numpy(raw)).detach().numpy()
    expected = model.forward(preprocessing.apply(raw), training=True)
    assert float(np.abs(logits - expected).max()) <= TOLERANCE
    # and both moved their running statistics the same way (momentum, unbiased variance)
    for key in ("bn.running_mean", "bn.running_var"):
        np.testing.assert_allclose(module.state_dict()[key].numpy(), model.state_dict()[key],
                                   rtol=1e-5, atol=1e-6)


def test_layer_names_that_are_not_identifiers(torch, tmp_path):
    layers = {"conv-1": {"type": "conv2d", "filters": 2, "kernel_size": 3},
              "class": {"type": "relu"}, "flat": {"type": "flatten"},
              "fc": {"type": "dense", "units": 3}}
    model = build_model({"name": '9 odd-name """\\', "layers": layers}, (1, 5, 5))
    preprocessing = preprocessing_for(model)
    source = torch_module_source(model, preprocessing=preprocessing)
    assert "self.add_module('conv-1', nn.Conv2d(1, 2, kernel_size=(3, 3)))" in source
    assert "x = getattr(self, 'class')(x)" in source
    export = write_torch_export(model, tmp_path, preprocessing=preprocessing)
    assert export.class_name == "ConvtrainModel"
    raw = image_pixels(3, model.input_shape)
    assert verify_torch_export(export, model, preprocessing, raw) <= TOLERANCE


def test_a_graphs_forward_has_one_variable_per_layer(torch):
    model = case_model("graph_concat_add")
    source = torch_module_source(model, preprocessing=preprocessing_for(model))
    assert "        cat = torch.cat([a, b, x], dim=1)\n" in source
    assert "        h_sum = c1 + skip + cat\n" in source  # not the builtin's name
    assert source.rstrip().endswith("return fc")


def test_a_name_torch_modules_already_use_is_one_line(tmp_path):
    model = build_model({"layers": {"train": {"type": "flatten"},
                                    "fc": {"type": "dense", "units": 2}}}, (1, 2, 2))
    with pytest.raises(ConfigError, match=r"^model\.layers\.train: the name 'train' is an "
                                          r"attribute of the exported torch\.nn\.Module"):
        write_torch_export(model, tmp_path, preprocessing=preprocessing_for(model))
    assert not list(tmp_path.iterdir())


def test_reserved_names_cover_the_installed_torch(torch):
    attributes = set(dir(torch.nn.Module)) | set(vars(torch.nn.Module()))
    assert {a for a in attributes if not a.startswith("__")} <= MODULE_ATTRIBUTES


def test_a_layer_type_without_exporter(monkeypatch):
    monkeypatch.delitem(TORCH_EXPORTERS, "avgpool2d")
    model = case_model("avgpool_plain")
    with pytest.raises(ConfigError, match=r"^model\.layers\.pool: layer type 'avgpool2d' has no "
                                          r"PyTorch exporter \(exportable types: add, batchnorm1d, "):
        torch_module_source(model, preprocessing=preprocessing_for(model))


def test_writing_needs_no_torch(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)
    model = case_model("conv_groups")
    export = write_torch_export(model, tmp_path, preprocessing=preprocessing_for(model))
    source = export.source.read_text()
    compile(source, str(export.source), "exec")
    assert source.startswith(f'"""{torch_class_name(model)}: the convtrain model ')
    assert "model.load_state_dict(load_file(\"model.safetensors\"))" in source
    assert "nn.Conv2d(4, 6, kernel_size=(3, 3), stride=(2, 2), padding=(2, 2), " \
           "dilation=(2, 2), groups=2)" in source
    with pytest.raises(ConfigError, match=r"^torch is not installed \(needed to run the PyTorch "
                                          r"export\); install it with: pip install torch$"):
        verify_torch_export(export, model, preprocessing_for(model),
                            image_pixels(1, model.input_shape))



def test_a_failed_check_writes_nothing(torch, monkeypatch, tmp_path):
    # a wrong exporter (tanh for sigmoid) is caught before any file is written
    monkeypatch.setitem(TORCH_EXPORTERS, "sigmoid", TORCH_EXPORTERS["tanh"])
    model = case_model("activations")
    raw = image_pixels(3, model.input_shape)
    with pytest.raises(ConfigError) as error:
        write_torch_export(model, tmp_path / "out", preprocessing=preprocessing_for(model),
                           verify_batch=raw)
    assert str(error.value).startswith("export: the PyTorch module's logits differ from "
                                       "convtrain's by up to ")
    assert str(error.value).endswith(f"nothing was written to {tmp_path / 'out'}")
    assert not (tmp_path / "out").exists()


def test_the_check_before_writing(torch, tmp_path):
    model = case_model("conv_depthwise")
    raw = image_pixels(4, model.input_shape)
    export = write_torch_export(model, tmp_path, preprocessing=preprocessing_for(model),
                                verify_batch=raw)
    assert export.check.passed and export.check.difference <= TOLERANCE
    assert export.check.difference == verify_torch_export(export, model,
                                                          preprocessing_for(model), raw)
