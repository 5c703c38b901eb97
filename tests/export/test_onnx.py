"""The ONNX export against onnxruntime: every layer type and option, the shipped models, the
preprocessing, the dynamic batch, the opset, and the one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from convtrain.data.splits import Preprocessing  # noqa: E402
from convtrain.errors import ConfigError  # noqa: E402
from convtrain.export.onnx import (ONNX_EXPORTERS, export_onnx, onnx_model_proto,  # noqa: E402
                                   verify_onnx)
from convtrain.nn import LAYERS  # noqa: E402
from convtrain.nn.model import build_model  # noqa: E402
from tests.export.cases import (LAYER_CASES, SHIPPED, case_model, image_pixels,  # noqa: E402
                                preprocessing_for, shipped_model)

TOLERANCE = 1e-5


def run_onnx(path, raw):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": raw})[0]


def convtrain_logits(model, preprocessing, raw):
    return model.forward(preprocessing.apply(raw), training=False)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_every_layer_option_matches_onnxruntime(case, tmp_path):
    model = case_model(case)
    preprocessing = preprocessing_for(model)
    raw = image_pixels(7, model.input_shape, seed=1)
    path = tmp_path / "model.onnx"
    checked = export_onnx(model, path, preprocessing=preprocessing, verify_batch=raw)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)

    for batch in (raw, raw[:1]):  # the batch dimension is dynamic
        logits = run_onnx(path, batch)
        expected = convtrain_logits(model, preprocessing, batch)
        assert logits.shape == expected.shape == (len(batch), *model.output_shape)
        difference = float(np.abs(logits - expected).max())
        assert difference <= TOLERANCE, (case, difference)
    assert checked.passed and checked.difference <= TOLERANCE and checked.samples == 7
    assert verify_onnx(path, model, preprocessing, raw) == checked.difference


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_match_onnxruntime(name, tmp_path):
    model = shipped_model(name, seed=3)
    preprocessing = preprocessing_for(model)
    raw = image_pixels(7, model.input_shape, seed=2)
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path, preprocessing=preprocessing)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    for batch in (raw, raw[:1]):
        expected = convtrain_logits(model, preprocessing, batch)
        difference = float(np.abs(run_onnx(path, batch) - expected).max())
        # 1e-5, or 1e-5 of the largest |logit| above 1 (the export check's rule: float32
        # rounding grows with the values; resnet20 at initialisation has logits near 90)
        assert difference <= TOLERANCE * max(1.0, float(np.abs(expected).max())), \
            (name, difference)


def test_dynamic_batch_and_names_in_the_graph(tmp_path):
    model = case_model("batchnorm")
    path = tmp_path / "m.onnx"
    export_onnx(model, path, preprocessing=preprocessing_for(model))
    graph = onnx.load(str(path)).graph
    (graph_input,), (graph_output,) = graph.input, graph.output
    assert graph_input.name == "pixels" and graph_output.name == "logits"
    input_dims = graph_input.type.tensor_type.shape.dim
    assert input_dims[0].dim_param == "batch"
    assert [d.dim_value for d in input_dims[1:]] == list(model.input_shape)
    assert graph_output.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # nodes after the layers, constants after the state_dict
    layer_nodes = [n.name for n in graph.node if not n.name.startswith("preprocessing.")]
    assert layer_nodes == list(model.layers)
    constants = {i.name for i in graph.initializer} - {"pixel_max", "channel_mean",
                                                       "channel_inv_std"}
    assert constants == set(model.state_dict())
    for initializer in graph.initializer:
        if initializer.name in model.state_dict():
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(initializer),
                                          model.state_dict()[initializer.name])


def test_dropout_makes_no_node_and_the_graph_follows_the_models_order(tmp_path):
    model = case_model("dropout_removed")
    proto = onnx_model_proto(model, preprocessing_for(model))
    assert "Dropout" not in {n.op_type for n in proto.graph.node}
    assert proto.graph.node[-1].output[0] == "logits"  # the last dropout was no node either
    # a ReLU before max pooling stays before it (convtrain may run it after: the same function)
    relu_pool = case_model("relu_then_maxpool")
    names = [n.name for n in onnx_model_proto(relu_pool, preprocessing_for(relu_pool)).graph.node]
    assert names.index("r") < names.index("pool")


def test_a_graph_is_wired_as_the_model(tmp_path):
    model = case_model("graph_concat_add")
    graph = onnx_model_proto(model, preprocessing_for(model)).graph
    nodes = {n.name: n for n in graph.node}
    assert list(nodes["cat"].input) == ["a.out", "b.out", "normalized_pixels"]
    # identity makes no node: the add reads the concat's output twice
    assert list(nodes["sum"].input) == ["c1.out", "cat.out", "cat.out"]
    assert nodes["cat"].op_type == "Concat" and nodes["sum"].op_type == "Sum"
    assert "skip" not in nodes


def test_layers_may_be_called_like_the_graphs_own_names(tmp_path):
    layers = {"pixels": {"type": "conv2d", "filters": 2, "kernel_size": 3},
              "preprocessing": {"type": "gelu"}, "normalized_pixels": {"type": "silu"},
              "logits": {"type": "global_avgpool2d"}, "pixel_max": {"type": "dense", "units": 3}}
    model = build_model({"layers": layers}, (1, 5, 5))
    preprocessing = preprocessing_for(model)
    raw = image_pixels(3, model.input_shape)
    check = export_onnx(model, tmp_path / "m.onnx", preprocessing=preprocessing, verify_batch=raw)
    assert check.difference <= TOLERANCE
    names = [n.name for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert len(names) == len(set(names))


def test_preprocessing_in_the_graph_equals_training_bit_for_bit(tmp_path):
    # a model that only flattens: its logits are the normalised input itself
    for pixel_max, shape in ((16.0, (1, 8, 8)), (255.0, (3, 5, 4))):
        model = build_model({"layers": {"flat": {"type": "flatten"}}}, shape)
        preprocessing = Preprocessing(pixel_max, tuple(np.linspace(0.1, 0.6, shape[0])),
                                      tuple(np.linspace(0.15, 0.4, shape[0])))
        raw = image_pixels(6, shape, pixel_max=pixel_max, seed=4)
        path = tmp_path / "flat.onnx"
        export_onnx(model, path, preprocessing=preprocessing)
        normalised = run_onnx(path, raw)
        np.testing.assert_array_equal(normalised, preprocessing.apply(raw).reshape(6, -1))
        # and that is (x / pixel_max - mean) / std, computed here independently in float64
        mean = np.asarray(preprocessing.mean).reshape(1, -1, 1, 1)
        std = np.asarray(preprocessing.std).reshape(1, -1, 1, 1)
        reference = ((raw.astype(np.float64) / pixel_max - mean) / std).reshape(6, -1)
        np.testing.assert_allclose(normalised, reference, rtol=0, atol=2e-6)
        stored = json.loads(onnx.load(str(path)).metadata_props[0].value)
        assert Preprocessing(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in stored.items()}) == preprocessing


@pytest.mark.parametrize("opset", [17, 20])
def test_gelu_below_and_from_opset_20(opset, tmp_path):
    # opsets 17-19 spell GELU out (Erf / Tanh); 20 has the Gelu op
    model = case_model("activations_issue14")
    preprocessing = preprocessing_for(model)
    proto = onnx_model_proto(model, preprocessing, opset=opset)
    op_types = {n.op_type for n in proto.graph.node}
    assert ("Gelu" in op_types) == (opset >= 20) and ("Erf" in op_types) == (opset < 20)
    path = tmp_path / "gelu.onnx"
    path.write_bytes(proto.SerializeToString())
    raw = image_pixels(7, model.input_shape, seed=6)
    assert verify_onnx(path, model, preprocessing, raw) <= TOLERANCE


def test_float64_model_exports_as_float32(tmp_path):
    model = build_model({"layers": LAYER_CASES["batchnorm"][0]}, (2, 6, 6), dtype=np.float64)
    preprocessing = preprocessing_for(model)
    raw = image_pixels(3, model.input_shape)
    check = export_onnx(model, tmp_path / "m.onnx", preprocessing=preprocessing,
                        verify_batch=raw)
    assert check.difference <= TOLERANCE


def test_opset(tmp_path):
    model = case_model("global_avgpool")
    preprocessing = preprocessing_for(model)
    proto = onnx_model_proto(model, preprocessing, opset=18)
    assert [o.version for o in proto.opset_import] == [18]
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(proto.opset_import)
    for bad, message in ((16, "export.opset: must be >= 17, got 16"),
                         (99, "export.opset: opset 99 is newer than the installed onnx")):
        with pytest.raises(ConfigError, match=f"^{message}"):
            onnx_model_proto(model, preprocessing, opset=bad)


def test_a_layer_type_without_exporter_is_one_line_naming_it(monkeypatch, tmp_path):
    monkeypatch.delitem(ONNX_EXPORTERS, "tanh")
    model = case_model("activations")
    with pytest.raises(ConfigError) as error:
        export_onnx(model, tmp_path / "m.onnx", preprocessing=preprocessing_for(model))
    message = str(error.value)
    assert message.startswith("model.layers.a1: layer type 'tanh' has no ONNX exporter "
                              "(exportable types: add, avgpool2d, batchnorm1d, batchnorm2d, ")
    assert message.endswith("; a new type needs one entry in convtrain/export/onnx.py)")
    assert "\n" not in message and not (tmp_path / "m.onnx").exists()


def test_every_layer_type_has_an_exporter():
    # a new layer type (issue #14: gelu, silu, ...) needs one entry in each table
    from convtrain.export.torch_code import TORCH_EXPORTERS

    assert set(LAYERS.names()) <= set(ONNX_EXPORTERS)
    assert set(LAYERS.names()) <= set(TORCH_EXPORTERS)


def test_a_failed_check_writes_nothing(monkeypatch, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"the previous export")
    # a wrong exporter (sigmoid for relu) must be caught before the file is replaced
    monkeypatch.setitem(ONNX_EXPORTERS, "relu", ONNX_EXPORTERS["sigmoid"])
    model = case_model("relu_then_maxpool")
    raw = image_pixels(4, model.input_shape)
    with pytest.raises(ConfigError) as error:
        export_onnx(model, path, preprocessing=preprocessing_for(model), verify_batch=raw)
    message = str(error.value)
    assert message.startswith("export: the ONNX model's logits differ from convtrain's by up to ")
    assert message.endswith(f"{path} was not written") and "\n" not in message
    assert path.read_bytes() == b"the previous export"


def test_preprocessing_and_batch_must_fit_the_model(tmp_path):
    model = case_model("conv_same")  # 3 channels
    with pytest.raises(ConfigError, match=r"^export: the preprocessing has 1 channel\(s\) but "):
        export_onnx(model, tmp_path / "m.onnx", preprocessing=Preprocessing(255.0, (0.5,), (0.2,)))
    with pytest.raises(ConfigError, match=r"^export: the verification batch must be raw pixels "
                                          r"of shape \(N, 3, 6, 6\)"):
        export_onnx(model, tmp_path / "m.onnx", preprocessing=preprocessing_for(model),
                    verify_batch=np.zeros((2, 1, 6, 6), np.float32))


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_without_the_extra_the_error_names_the_install_command(missing, monkeypatch, tmp_path):
    model = case_model("dense_stack_no_bias")
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` raises ImportError
    with pytest.raises(ConfigError) as error:
        export_onnx(model, tmp_path / "m.onnx", preprocessing=preprocessing_for(model),
                    verify_batch=image_pixels(2, model.input_shape))
    assert str(error.value).startswith(f"{missing} is not installed (needed to ")
    # a wheel user's command and a checkout's
    assert str(error.value).endswith('install it with: pip install "convtrain[export]" (in a '
                                     'checkout: pip install -e ".[export]")')
    assert not (tmp_path / "m.onnx").exists()


def test_importing_the_package_loads_neither_onnx_nor_torch():
    code = ("import sys, convtrain.export, convtrain.export.onnx, convtrain.export.torch_code; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cupy_backend_model_exports(strict_cupy, tmp_path):
    model = case_model("batchnorm")
    preprocessing = preprocessing_for(model)
    raw = image_pixels(3, model.input_shape)
    expected = convtrain_logits(model, preprocessing, raw)
    model.to_backend("cupy")
    check = export_onnx(model, tmp_path / "m.onnx", preprocessing=preprocessing,
                        verify_batch=raw)
    assert check.difference <= TOLERANCE
    assert float(np.abs(run_onnx(tmp_path / "m.onnx", raw) - expected).max()) <= TOLERANCE
