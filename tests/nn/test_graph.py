"""Graphs: merge layers (finite differences, PyTorch), whole graphs against finite differences
and a hand-written PyTorch module, the executor (stack fast path, freeing, the ReLU/max-pool swap
only where valid, summed gradients), blocks, after:/before:/null/enabled on graphs, and every
one-line error of the graph and block configs."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from convtrain.errors import ConfigError
from convtrain.nn import LAYERS
from convtrain.nn.graph import INPUT, expand_graph
from convtrain.nn.layers.merge import Add, Concat, Identity
from convtrain.nn.model import Model, build_model
from convtrain.nn.options import REQUIRED
from convtrain.ops.losses import softmax_cross_entropy
from tests.gradcheck import check_gradients, projected_sum

CONV = {"type": "conv2d", "kernel_size": 3, "padding": 1}

#: a residual block and a two-branch concat, every kind of edge: a layer read by 3 others
#: (stem), an add of a branch and the identity, a concat of two branches, a null layer.
GRAPH = {"layers": {
    "stem": {**CONV, "filters": 4},
    "a": {**CONV, "filters": 4},
    "a_relu": {"type": "relu"},
    "a2": {**CONV, "filters": 4},
    "res": {"type": "add", "inputs": ["a2", "stem"]},
    "res_relu": {"type": "relu"},
    "b1": {**CONV, "filters": 3, "inputs": "res_relu"},
    "b2": {"type": "conv2d", "filters": 2, "kernel_size": 1, "inputs": ["stem"]},
    "cat": {"type": "concat", "inputs": ["b1", "b2", "res_relu"]},
    "pool": {"type": "maxpool2d", "kernel_size": 2},
    "flat": {"type": "flatten"},
    "fc": {"type": "dense", "units": 3},
}}


def as_float64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


# --- merge layers ------------------------------------------------------------------------------
def test_add_and_concat_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((2, 3, 4, 4)) for _ in range(3))
    add = Add().build([(3, 4, 4)] * 3)
    dy = rng.standard_normal((2, 3, 4, 4))
    add.forward([a, b, c])
    grads = add.backward(dy)
    assert grads[0] is dy and grads[1] is dy and grads[2] is dy  # no copies
    check_gradients(lambda: projected_sum(add.forward([a, b, c]), dy),
                    {"a": a, "b": b, "c": c}, dict(zip("abc", grads)))

    x1, x2 = rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((2, 5, 3, 3))
    cat = Concat().build([(2, 3, 3), (5, 3, 3)])
    y = cat.forward([x1, x2])
    dy = rng.standard_normal(y.shape)
    d1, d2 = cat.backward(dy)
    assert np.shares_memory(d1, dy) and np.shares_memory(d2, dy)  # views, no copies
    check_gradients(lambda: projected_sum(cat.forward([x1, x2]), dy), {"x1": x1, "x2": x2},
                    {"x1": d1, "x2": d2})


def test_merge_layers_equal_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, c, 3, 5)) for c in (1, 4, 2)]
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    cat = Concat().build([x.shape[1:] for x in xs])
    y = cat.forward(xs)
    ty = torch.cat(ts, dim=1)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    for d, t in zip(cat.backward(dy), ts):
        np.testing.assert_array_equal(d, t.grad.numpy())

    same = [rng.standard_normal((2, 3, 4)) for _ in range(2)]
    tsame = [torch.tensor(x, requires_grad=True) for x in same]
    add = Add().build([(3, 4)] * 2)
    ty = tsame[0] + tsame[1]
    np.testing.assert_allclose(add.forward(same), ty.detach().numpy(), rtol=0, atol=1e-15)
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(dy))
    for d, t in zip(add.backward(dy), tsame):
        np.testing.assert_array_equal(d, t.grad.numpy())
    x = rng.standard_normal((2, 3))
    identity = Identity().build((3,))
    assert identity.forward(x) is x and identity.backward(x) is x


def _smallest_spec(layer_cls):
    """A config of ``layer_cls`` with every required option at a small valid value."""
    spec = {"type": layer_cls.type_name}
    for option in layer_cls.options:
        if option.config and option.default is REQUIRED:
            spec[option.key] = 2
    return spec


@pytest.mark.parametrize("type_name", [t for t in LAYERS.names()
                                       if not LAYERS.get(t).merges_inputs])
def test_no_layer_writes_into_its_input_or_its_gradient(type_name):
    """The aliasing rule add and the graph executor rely on (convtrain/nn/layers/merge.py):
    forward leaves x alone and backward leaves dy alone, for every layer type."""
    layer_cls = LAYERS.get(type_name)
    shape = (12,) if layer_cls.input_rank == 1 else (3, 6, 6)
    model = build_model({"layers": {"x": _smallest_spec(layer_cls)}}, shape, dtype=np.float64)
    layer = model.layers["x"]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, *shape))
    before = x.copy()
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(x, before)
    dy = rng.standard_normal(y.shape)
    dy_before = dy.copy()
    layer.backward(dy)
    np.testing.assert_array_equal(dy, dy_before)


# --- whole graphs -------------------------------------------------------------------------------
def test_graph_gradients_match_finite_differences():
    model = build_model(GRAPH, (2, 4, 4), seed=1, dtype=np.float64)
    assert not model.is_chain
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 4, 4))
    labels = np.array([0, 2])

    def loss():
        return softmax_cross_entropy(model.forward(x), labels)[0]

    _, dlogits = softmax_cross_entropy(model.forward(x), labels)
    dx = model.backward(dlogits)
    params = {"x": x, "stem.weight": model.layers["stem"].params["weight"],
              "b2.weight": model.layers["b2"].params["weight"],
              "a2.bias": model.layers["a2"].params["bias"]}
    grads = {"x": dx, "stem.weight": model.layers["stem"].grads["weight"],
             "b2.weight": model.layers["b2"].grads["weight"],
             "a2.bias": model.layers["a2"].grads["bias"]}
    check_gradients(loss, params, {k: v.copy() for k, v in grads.items()})


def test_graph_equals_a_hand_written_torch_module():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = build_model(GRAPH, (2, 4, 4), seed=4, dtype=np.float64)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(2, 4, 3, padding=1)
            self.a = nn.Conv2d(4, 4, 3, padding=1)
            self.a2 = nn.Conv2d(4, 4, 3, padding=1)
            self.b1 = nn.Conv2d(4, 3, 3, padding=1)
            self.b2 = nn.Conv2d(4, 2, 1)
            self.fc = nn.Linear(9 * 2 * 2, 3)

        def forward(self, x):
            stem = self.stem(x)
            res = torch.relu(self.a2(torch.relu(self.a(stem))) + stem)
            cat = torch.cat([self.b1(res), self.b2(stem), res], dim=1)
            return self.fc(torch.flatten(nn.functional.max_pool2d(cat, 2), 1))

    net = Net().double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = np.random.default_rng(5).standard_normal((3, 2, 4, 4))
    tx = torch.tensor(x, requires_grad=True)
    tlogits = net(tx)
    logits = model.forward(x)
    np.testing.assert_allclose(logits, tlogits.detach().numpy(), rtol=1e-10, atol=1e-12)
    dlogits = np.random.default_rng(6).standard_normal(logits.shape)
    tlogits.backward(torch.tensor(dlogits))
    np.testing.assert_allclose(model.backward(dlogits), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    for name, param in net.named_parameters():
        layer, key = name.rsplit(".", 1)
        np.testing.assert_allclose(model.layers[layer].grads[key], param.grad.numpy(),
                                   rtol=1e-9, atol=1e-12, err_msg=name)


def test_plain_stack_keeps_its_fast_path_and_config_order():
    layers = {"conv": {**CONV, "filters": 2}, "relu": {"type": "relu"},
              "pool": {"type": "maxpool2d", "kernel_size": 2}, "flat": {"type": "flatten"},
              "fc": {"type": "dense", "units": 2}}
    model = build_model({"layers": layers}, (1, 4, 4))
    assert model.is_chain and model.order == list(layers) and model._plan is None
    assert [type(layer).__name__ for layer in model._run_order()][:3] == [
        "Conv2d", "MaxPool2d", "ReLU"]
    model.forward(np.zeros((2, 1, 4, 4)))
    assert model._plan is None  # the graph executor never ran
    assert model.inputs_of("conv") == (INPUT,) and model.inputs_of("relu") == ("conv",)
    assert model.consumers_of("conv") == ("relu",)
    # the same stack with explicit inputs is the same model
    explicit = {name: {**spec, "inputs": prev} for (name, spec), prev
                in zip(layers.items(), ["input", *layers])}
    assert build_model({"layers": explicit}, (1, 4, 4)).is_chain


def test_graph_frees_each_activation_after_its_last_reader_and_swaps_only_where_valid():
    model = build_model(GRAPH, (2, 4, 4), seed=1)
    plan = model._graph_plan()
    freed = [key for step in plan for key in step.frees]
    assert sorted(freed) == sorted({key for step in plan for key in step.reads})
    for index, step in enumerate(plan):  # freed at the last step that reads it
        for key in step.frees:
            assert not any(key in later.reads for later in plan[index + 1:])
    # res_relu feeds b1, cat and pool? no: cat -> pool; res_relu has two readers: no swap
    names = [step.name for step in plan]
    assert names.index("res_relu") < names.index("pool")
    # a ReLU whose only reader is a max pool runs after it, even inside a graph
    swap = {"layers": {"c": {**CONV, "filters": 2}, "r": {"type": "relu"},
                       "p": {"type": "maxpool2d", "kernel_size": 2},
                       "d": {**CONV, "filters": 2, "inputs": "c"},
                       "dp": {"type": "maxpool2d", "kernel_size": 2},
                       "sum": {"type": "add", "inputs": ["p", "dp"]}}}
    model = build_model(swap, (1, 4, 4), seed=2, dtype=np.float64)
    assert [step.name for step in model._graph_plan()][:3] == ["c", "p", "r"]
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4))
    x[0] = -1.0  # windows without a positive value
    y = model.forward(x)
    c = model.layers["c"].forward(x)
    reference = (model.layers["p"].forward(model.layers["r"].forward(c))
                 + model.layers["dp"].forward(model.layers["d"].forward(c)))
    np.testing.assert_array_equal(y, reference)
    outputs = model.layer_outputs(x, ["c", "d"])
    np.testing.assert_array_equal(outputs["d"], model.layers["d"].forward(c))


def test_gradient_of_a_layer_read_twice_is_the_sum_and_input_grad_can_be_skipped():
    cfg = {"layers": {"c": {**CONV, "filters": 2},
                      "twice": {"type": "add", "inputs": ["c", "c", "c"]},
                      "flat": {"type": "flatten"}, "fc": {"type": "dense", "units": 2}}}
    model = build_model(cfg, (1, 3, 3), seed=0, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 1, 3, 3))
    logits = model.forward(x)
    dlogits = np.ones_like(logits)
    dx = model.backward(dlogits)
    dweight = model.layers["c"].grads["weight"].copy()
    # three times the gradient of a single read
    single = build_model({"layers": {**cfg["layers"], "twice": None}}, (1, 3, 3), seed=0,
                         dtype=np.float64)
    single.load_state_dict(model.state_dict())
    single.forward(x)
    np.testing.assert_allclose(dx, 3 * single.backward(dlogits), rtol=1e-12)
    np.testing.assert_allclose(dweight, 3 * single.layers["c"].grads["weight"], rtol=1e-12)
    model.forward(x)
    assert model.backward(dlogits, input_grad=False) is None
    np.testing.assert_allclose(model.layers["c"].grads["weight"], dweight, rtol=1e-12)


def test_directly_constructed_graph_model():
    from convtrain.nn import Conv2d, ReLU
    model = Model({"c": Conv2d(1, 2, 3, padding=1), "r": ReLU(), "sum": Add()}, (1, 4, 4),
                  inputs={"c": "input", "r": ["c"], "sum": ["c", "r"]})
    assert model.output_shape == (2, 4, 4) and model.layers["sum"].input_shape == ((2, 4, 4),) * 2
    assert model.forward(np.ones((1, 1, 4, 4))).shape == (1, 2, 4, 4)


def test_summary_shows_inputs_and_the_receptive_field_of_the_largest_path():
    model = build_model(GRAPH, (2, 8, 8))
    rows = {row["name"]: row for row in model.summary_rows()}
    assert rows["res"]["inputs"] == ("a2", "stem")
    assert rows["res"]["input_shape"] == ((4, 8, 8), (4, 8, 8))
    assert rows["res"]["flops"] == 4 * 8 * 8
    # stem 3x3 -> a 5x5 -> a2 7x7 (the shortcut's 3x3 is smaller); b2 1x1 keeps stem's 3x3
    assert rows["res"]["receptive_field"] == (7, 7)
    assert rows["b2"]["receptive_field"] == (3, 3)
    assert rows["cat"]["receptive_field"] == (9, 9)  # b1: 7 + 2
    assert rows["pool"]["receptive_field"] == (10, 10)
    text = model.summary()
    assert "inputs" in text.splitlines()[2]
    assert any(line.startswith("cat ") and "b1, b2, res_relu" in line
               for line in text.splitlines())
    stack = build_model({"layers": {"c": {**CONV, "filters": 2}}}, (1, 4, 4)).summary()
    assert "inputs" not in stack.splitlines()[2]


# --- blocks -------------------------------------------------------------------------------------
BLOCKS = {"basic": {
    "params": {"filters": "???", "stride": 1, "project": False},
    "first_only": ["stride", "project"],
    "layers": {
        "conv1": {"type": "conv2d", "filters": "$filters", "kernel_size": 3, "stride": "$stride",
                  "padding": 1, "bias": False},
        "relu1": {"type": "relu"},
        "conv2": {"type": "conv2d", "filters": "$filters", "kernel_size": [3, 3], "padding": 1},
        "proj": {"type": "conv2d", "inputs": "input", "filters": "$filters", "kernel_size": 1,
                 "stride": "$stride", "enabled": "$project"},
        "add": {"type": "add", "inputs": ["conv2", "proj"]},
        "relu2": {"type": "relu"}}}}


def residual(**stage):
    return {"blocks": copy.deepcopy(BLOCKS), "layers": {
        "stem": {**CONV, "filters": 2},
        "stage": {"block": "basic", "repeat": 2, "filters": 4, "stride": 2, "project": True,
                  **stage},
        "pool": {"type": "global_avgpool2d"}, "fc": {"type": "dense", "units": 3}}}


def test_block_instances_expand_into_stable_dotted_names():
    model = build_model(residual(), (1, 8, 8))
    assert model.order == [
        "stem", "stage.block1.conv1", "stage.block1.relu1", "stage.block1.conv2",
        "stage.block1.proj", "stage.block1.add", "stage.block1.relu2",
        "stage.block2.conv1", "stage.block2.relu1", "stage.block2.conv2", "stage.block2.add",
        "stage.block2.relu2", "pool", "fc"]
    # stride and projection in the first repeat only; the second's shortcut is the identity
    assert model.layers["stage.block1.conv1"].stride == (2, 2)
    assert model.layers["stage.block2.conv1"].stride == (1, 1)
    assert model.inputs_of("stage.block1.proj") == ("stem",)
    assert model.inputs_of("stage.block2.add") == ("stage.block2.conv2", "stage.block1.relu2")
    assert model.inputs_of("pool") == ("stage.block2.relu2",)
    assert "stage.block1.conv1.weight" in model.state_dict()
    # one repeat changed, one layer removed, one added
    changed = build_model(residual(block2={"conv1": {"filters": 6},
                                           "relu1": None,
                                           "extra": {"type": "relu", "after": "conv2"}}),
                          (1, 8, 8))
    assert changed.layers["stage.block2.conv1"].out_channels == 6
    assert changed.layers["stage.block1.conv1"].out_channels == 4
    assert "stage.block2.relu1" not in changed.layers
    assert changed.inputs_of("stage.block2.conv2") == ("stage.block2.conv1",)
    assert changed.inputs_of("stage.block2.extra") == ("stage.block2.conv2",)
    assert changed.inputs_of("stage.block2.add") == ("stage.block2.extra", "stage.block1.relu2")


def test_insertion_removal_and_switching_off_in_graphs():
    base = GRAPH["layers"]
    # after: X splices onto every edge leaving X (stem feeds a, res and b2)
    graph = expand_graph({**base, "bn": {"type": "batchnorm2d", "after": "stem"}})
    assert graph.inputs["bn"] == ("stem",)
    assert graph.inputs["a"] == graph.inputs["b2"] == ("bn",)
    assert graph.inputs["res"] == ("a2", "bn")
    # before: Y splices onto the edge entering Y
    graph = expand_graph({**base, "drop": {"type": "dropout", "before": "b2"}})
    assert graph.inputs["drop"] == ("stem",) and graph.inputs["b2"] == ("drop",)
    assert graph.inputs["a"] == ("stem",)
    with pytest.raises(ConfigError, match=r"^model\.layers\.d\.before: 'res' has 2 inputs "
                                          r"\(a2, stem\); place the layer after one of them"):
        expand_graph({**base, "d": {"type": "dropout", "before": "res"}})
    # enabled: false passes the input on; null does so for the next layer in config order
    graph = expand_graph({**base, "b2": {**base["b2"], "enabled": False}})
    assert graph.inputs["cat"] == ("b1", "stem", "res_relu") and "b2" not in graph.specs
    graph = expand_graph({**base, "a_relu": None})
    assert graph.inputs["a2"] == ("a",)
    with pytest.raises(ConfigError, match=r"^model\.layers\.cat\.inputs: 'b2' is removed "
                                          r"\(null\), so nothing says what fed it"):
        expand_graph({**base, "b2": None})
    with pytest.raises(ConfigError, match=r"^model\.layers\.res_relu\.inputs: 'res' is switched "
                                          r"off and has 2 inputs"):
        expand_graph({**base, "res": {**base["res"], "enabled": False}})


# --- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"res": {"type": "add", "inputs": ["a2", "stemm"]}},
     r"^model\.layers\.res\.inputs: unknown layer 'stemm'; did you mean 'stem'\? \(layers: "),
    ({"a": {**CONV, "filters": 4, "inputs": "res_relu"}},
     r"^model\.layers: the inputs form a cycle \((\w+ -> )*res_relu -> a( -> \w+)+\)$"),
    ({"b2": {"type": "conv2d", "filters": 2, "kernel_size": 1, "inputs": "b1"}},
     None),
    ({"extra": {"type": "relu", "inputs": "b1"}, "fc2": {"type": "dense", "units": 3,
                                                         "inputs": "flat"}},
     r"^model\.layers\.fc: unused: its output reaches no other layer and is not the model's "
     r"output \(the last layer, 'fc2'\); .*\(unused layers: fc, extra\)"),
    ({"a2": {**CONV, "filters": 4, "inputs": ["a_relu", "stem"]}},
     r"^model\.layers\.a2\.inputs: conv2d takes one input, got 2 \(a_relu, stem\); join them "
     r"first with an add or concat layer$"),
    ({"input": {"type": "relu"}}, r"^model\.layers\.input: 'input' names the model's"),
    ({"drop": {"type": "dropout", "after": "stage.block1.relu1"}},
     r"^model\.layers\.drop\.after: 'stage\.block1\.relu1' is a layer inside block instance "
     r"'stage'; add the layer to that repeat instead \(\+model\.layers\.stage\.block1\.<name>="),
])
def test_graph_errors_are_one_line_naming_the_key(change, message):
    config = {"layers": {**GRAPH["layers"], **change}}
    if message is None:  # b2 reads b1: fine, still one output
        build_model(config, (2, 4, 4))
        return
    with pytest.raises(ConfigError, match=message) as info:
        build_model(config, (2, 4, 4))
    assert "\n" not in str(info.value)


def test_more_than_one_output_is_an_error():
    layers = {"c": {**CONV, "filters": 2}, "head1": {"type": "flatten", "inputs": "c"},
              "head2": {"type": "global_avgpool2d", "inputs": "c"},
              "last": {"type": "relu", "inputs": "c"}, "tail": {"type": "relu", "inputs": "head1"}}
    layers["last"] = {"type": "relu", "inputs": "tail"}
    layers["tail"] = {"type": "relu", "inputs": "last"}  # the last layer is read: no clear output
    with pytest.raises(ConfigError, match=r"^model\.layers: the inputs form a cycle"):
        expand_graph(layers)
    layers = {"c": {**CONV, "filters": 2}, "b": {"type": "relu", "inputs": "last"},
              "a": {"type": "relu", "inputs": "c"}, "last": {"type": "relu", "inputs": "c"}}
    with pytest.raises(ConfigError, match=r"^model\.layers: the graph has 2 outputs \(a, b\); a "
                                          r"model has one: join them with an add or concat"):
        expand_graph(layers)


@pytest.mark.parametrize("shapes, message", [
    ({"stem": {**CONV, "filters": 5}},
     r"^model\.layers\.res: add needs inputs of one shape, got 'a2' 4x4x4, 'stem' 5x4x4$"),
    ({"b2": {"type": "conv2d", "filters": 2, "kernel_size": 1, "stride": 2, "inputs": "stem"}},
     r"^model\.layers\.cat: concat joins channels and needs one spatial size, got 'b1' 3x4x4, "
     r"'b2' 2x2x2, 'res_relu' 4x4x4$"),
])
def test_merge_shape_errors_name_both_layers_and_shapes(shapes, message):
    with pytest.raises(ConfigError, match=message):
        build_model({"layers": {**GRAPH["layers"], **shapes}}, (2, 4, 4))


@pytest.mark.parametrize("change, message", [
    ({"stage": {"block": "basik", "filters": 4}},
     r"^model\.layers\.stage\.block: unknown block 'basik'; did you mean 'basic'\? \(blocks "
     r"defined in model\.blocks: basic\)$"),
    ({"stage": {"block": "basic", "stride": 2}},
     r"^model\.layers\.stage\.filters: missing: block 'basic' needs parameter 'filters' \(no "
     r"default in model\.blocks\.basic\.params\)$"),
    ({"stage": {"block": "basic", "filters": 4, "strides": 2}},
     r"^model\.layers\.stage\.strides: unknown key for an instance of block 'basic'; did you "
     r"mean 'model\.layers\.stage\.stride'\?"),
    ({"stage": {"block": "basic", "filters": 4, "repeat": 2, "block3": {"conv1": {}}}},
     r"^model\.layers\.stage\.block3: instance 'stage' repeats block 'basic' 2 time\(s\)"),
    ({"stage": {"block": "basic", "filters": 4, "repeat": 0}},
     r"^model\.layers\.stage\.repeat: expected an integer >= 1, got 0$"),
])
def test_block_instance_errors(change, message):
    config = residual()
    config["layers"].update(change)
    with pytest.raises(ConfigError, match=message):
        build_model(config, (1, 8, 8))


def test_block_definition_errors():
    config = residual()
    config["blocks"]["basic"]["layers"]["conv2"]["filters"] = "$filtrs"
    with pytest.raises(ConfigError, match=r"^model\.blocks\.basic\.layers\.conv2\.filters: "
                                          r"'\$filtrs' names no parameter of block 'basic'; did "
                                          r"you mean '\$filters'\?"):
        build_model(config, (1, 8, 8))
    config = residual()
    config["blocks"]["basic"]["layers"]["add"]["inputs"] = ["conv2", "projj"]
    with pytest.raises(ConfigError, match=r"^model\.blocks\.basic\.layers\.add\.inputs: unknown "
                                          r"layer 'projj'; did you mean 'proj'\?"):
        build_model(config, (1, 8, 8))
    config = residual()
    config["blocks"]["basic"]["first_only"] = ["filters"]
    with pytest.raises(ConfigError, match=r"^model\.blocks\.basic\.first_only: 'filters' needs "
                                          r"a default"):
        build_model(config, (1, 8, 8))
    config = residual()
    config["blocks"]["basic"]["layers"]["inner"] = {"block": "basic", "filters": 2}
    with pytest.raises(ConfigError, match=r"^model\.blocks\.basic: a block cannot contain itself"):
        build_model(config, (1, 8, 8))
    # a shape error inside an expanded layer names the expanded key
    with pytest.raises(ConfigError, match=r"^model\.layers\.stage\.block1\.add: add needs inputs "
                                          r"of one shape, got 'stage\.block1\.conv2' 4x4x4, "
                                          r"'stem' 2x8x8$"):
        build_model(residual(project=False), (1, 8, 8))


# --- the CuPy stand-in --------------------------------------------------------------------------
def test_residual_graph_runs_on_the_cupy_stand_in_like_numpy(strict_cupy):
    results = []
    for backend in ("numpy", "cupy"):
        model = build_model(residual(), (1, 8, 8), seed=3, dtype=np.float64, backend=backend)
        graph = build_model(GRAPH, (2, 4, 4), seed=3, dtype=np.float64, backend=backend)
        rng = np.random.default_rng(0)
        out = []
        for m, shape in ((model, (1, 8, 8)), (graph, (2, 4, 4))):
            x = m.backend.asarray(rng.standard_normal((3, *shape)))
            logits = m.forward(x)
            out.append(m.backend.to_numpy(logits))
            out.append(m.backend.to_numpy(m.backward(m.backend.asarray(np.ones((3, 3))))))
            out += [m.backend.to_numpy(layer.grads[key]) for layer in m.layers.values()
                    for key in sorted(layer.grads)]
        if backend == "cupy":
            assert type(model.layers["stem"].params["weight"]) is strict_cupy.ndarray
        results.append(out)
    for cpu, gpu in zip(*results):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-9, atol=1e-12)


def test_a_bad_parameter_value_names_the_expanded_key_and_where_the_value_came_from():
    with pytest.raises(ConfigError, match=r"^model\.layers\.stage\.block1\.conv1\.filters: must "
                                          r"be >= 1, got 0 \(set by model\.layers\.stage\.filters "
                                          r"through \$filters\)$"):
        build_model(residual(filters=0), (1, 8, 8))
    config = residual()
    config["blocks"]["basic"]["params"]["stride"] = 0
    with pytest.raises(ConfigError, match=r"^model\.layers\.stage\.block2\.conv1\.stride: must be "
                                          r">= 1, got 0 \(set by model\.blocks\.basic\.params\."
                                          r"stride through \$stride\)$"):
        build_model(config, (1, 8, 8))


def test_a_typo_in_a_block_definition_is_named_in_the_definition():
    config = residual()
    config["blocks"]["basic"]["layers"]["conv2"]["filtrs"] = 3
    with pytest.raises(ConfigError, match=r"^model\.blocks\.basic\.layers\.conv2\.filtrs: unknown "
                                          r"key for layer type 'conv2d'; did you mean "
                                          r"'model\.blocks\.basic\.layers\.conv2\.filters'\?"):
        build_model(config, (1, 8, 8))
    config = residual(block2={"conv2": {"kernel_sise": 3}})
    with pytest.raises(ConfigError, match=r"^model\.layers\.stage\.block2\.conv2\.kernel_sise: "
                                          r"unknown key"):
        build_model(config, (1, 8, 8))


def test_blocks_nest_and_pass_their_parameters_on():
    config = residual()
    config["blocks"]["stage"] = {"params": {"width": "???"}, "layers": {
        "down": {"block": "basic", "filters": "$width", "stride": 2, "project": True},
        "rest": {"block": "basic", "filters": "$width", "repeat": 2}}}
    config["layers"]["stage"] = {"block": "stage", "width": 6}
    model = build_model(config, (1, 8, 8))
    assert model.layers["stage.block1.down.block1.conv1"].stride == (2, 2)
    assert model.layers["stage.block1.rest.block2.conv2"].out_channels == 6
    assert model.inputs_of("stage.block1.rest.block1.conv1") == ("stage.block1.down.block1.relu2",)
    assert model.inputs_of("pool") == ("stage.block1.rest.block2.relu2",)
