"""residual_deep (configs/model/residual_deep.yaml, its block configs/blocks/plain_residual.yaml):
plain_deep's eight conv 3x3 + ReLU layers with identity shortcuts and no batch norm, equal to a
PyTorch network written out by hand, and summarised for 28x28 Fashion-MNIST."""
from __future__ import annotations

import numpy as np
import pytest

import convtrain

CONVS = ["conv1", "conv2"] + [f"stage.block{b}.conv{c}" for b in (1, 2, 3) for c in (1, 2)]


def test_residual_deep_equals_a_torch_network_with_identity_shortcuts():
    torch = pytest.importorskip("torch")
    nn, relu = torch.nn, torch.relu
    model = convtrain.build_model(convtrain.model_config("residual_deep"), (1, 12, 12), seed=3,
                                  dtype=np.float64)

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else 16, 16, 3, padding=1)
                                       for i in range(8))
            self.fc = nn.Linear(16 * 6 * 6, 10)

        def forward(self, x):
            c = self.convs
            h = relu(c[1](relu(c[0](x))))
            for b in range(3):  # out = relu(h + conv(relu(conv(h))))
                h = relu(h + c[3 + 2 * b](relu(c[2 + 2 * b](h))))
            return self.fc(torch.flatten(nn.functional.max_pool2d(h, 2), 1))

    reference = Reference().double()
    ours = model.state_dict()
    weights = {f"convs.{i}.{key}": ours[f"{name}.{key}"] for i, name in enumerate(CONVS)
               for key in ("weight", "bias")}
    weights |= {"fc.weight": ours["fc1.weight"], "fc.bias": ours["fc1.bias"]}
    assert len(weights) == len(ours)  # every parameter of ours has its place in the reference
    reference.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})

    x = np.random.default_rng(1).standard_normal((3, 1, 12, 12))
    dlogits = np.random.default_rng(2).standard_normal((3, 10))
    tx = torch.tensor(x, requires_grad=True)
    ty = reference(tx)
    ty.backward(torch.tensor(dlogits))
    np.testing.assert_allclose(model.forward(x, training=True), ty.detach().numpy(),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.backward(dlogits), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    first_block_conv = model.layers["stage.block1.conv1"].grads["weight"]
    np.testing.assert_allclose(first_block_conv, reference.convs[2].weight.grad.numpy(),
                               rtol=1e-10, atol=1e-12)


def test_residual_deep_is_plain_deep_with_skips_and_summarises_at_28x28():
    plain = convtrain.build_model(convtrain.model_config("plain_deep"), (1, 28, 28))
    residual = convtrain.build_model(convtrain.model_config("residual_deep"), (1, 28, 28))
    convs = [name for name, layer in residual.layers.items() if type(layer).__name__ == "Conv2d"]
    assert convs == CONVS
    assert [residual.layers[n].params["weight"].shape for n in convs] == \
        [layer.params["weight"].shape for layer in plain.layers.values()
         if type(layer).__name__ == "Conv2d"]
    relus = [name for name, layer in residual.layers.items() if type(layer).__name__ == "ReLU"]
    assert len(relus) == 8
    assert residual.num_params() == plain.num_params()
    summary = residual.summary()
    assert "Model: residual_deep" in summary and "Output shape:         (10,)" in summary
    assert "batchnorm" not in summary  # no BN: the initialisation alone sets the scale
