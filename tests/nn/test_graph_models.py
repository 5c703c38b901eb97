"""The shipped graph models: each builds and its parameter count equals an independent count
(hand formulas, or a torch module written here); resnet20 against a hand-written torch ResNet-20;
task=summary and the block-layer override through the real CLI; bitwise resume and TensorBoard
tags of a residual model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from convtrain.nn.model import build_model
from tests.training.test_trainer import blobs, make_trainer, read_tb
from tests.shipped_models import shipped_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"


def shipped(name: str) -> dict:
    return shipped_config(name)


def conv(c_in, c_out, k, bias=True, groups=1):
    return c_out * (c_in // groups) * k * k + (c_out if bias else 0)


def test_fmnist_bn_mobile_cnn_and_seed_example_parameter_counts_follow_the_formulas():
    fmnist = build_model(shipped("fmnist_bn"), (1, 28, 28))
    expected = (conv(1, 32, 3, False) + 2 * 32 + conv(32, 64, 3, False) + 2 * 64
                + 64 * 7 * 7 * 10 + 10)
    assert fmnist.num_params() == expected < 100_000

    mobile = build_model(shipped("mobile_cnn"), (1, 28, 28))
    separable = [(16, 32), (32, 64), (64, 64), (64, 64), (64, 128), (128, 128)]
    expected = conv(1, 16, 3, False) + 2 * 16 + 128 * 10 + 10 + sum(
        conv(c, c, 3, False, groups=c) + 2 * c + conv(c, f, 1, False) + 2 * f
        for c, f in separable)
    assert mobile.num_params() == expected
    assert mobile.layers["sep3.block2.dw"].groups == 64
    assert mobile.output_shape == (10,) and mobile.layer_shapes["pool"][0] == (128, 7, 7)

    for model, count in ((fmnist, fmnist.num_params()), (mobile, expected)):
        assert f"Total params:         {count:,}" in model.summary()

    seed = build_model(shipped("seed_example"), (3, 224, 224))
    chain = [(3, 64, 7), (64, 128, 3), (128, 256, 3), (256, 512, 3), (512, 512, 3)]
    assert seed.num_params() == sum(conv(c, f, k) for c, f, k in chain) + 512 * 1000 + 1000
    # out = floor((in + 2p - k) / s) + 1: 224 -> 112 -> 56 -> 28 -> 14 -> 7
    assert [seed.layer_shapes[f"conv{i}"][1] for i in range(1, 6)] == [
        (64, 112, 112), (128, 56, 56), (256, 28, 28), (512, 14, 14), (512, 7, 7)]


def torch_resnet20(torch, in_channels):
    """ResNet-20 written out by hand (He et al. 2016, CIFAR variant, 1x1-conv projections),
    with the module names of convtrain's expanded layers."""
    nn = torch.nn

    class Basic(nn.Module):
        def __init__(self, c_in, filters, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, filters, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(filters)
            self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(filters)
            self.project = stride != 1 or c_in != filters
            if self.project:
                self.proj = nn.Conv2d(c_in, filters, 1, stride, bias=False)
                self.proj_bn = nn.BatchNorm2d(filters)

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(y + (self.proj_bn(self.proj(x)) if self.project else x))

    class ResNet20(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            c_in = 16
            for stage, (filters, stride) in enumerate([(16, 1), (32, 2), (64, 2)], 1):
                blocks = nn.Module()
                for index in range(1, 4):
                    blocks.add_module(f"block{index}", Basic(c_in, filters,
                                                             stride if index == 1 else 1))
                    c_in = filters
                self.add_module(f"stage{stage}", blocks)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            for stage in (self.stage1, self.stage2, self.stage3):
                for block in stage.children():
                    x = block(x)
            return self.fc(x.mean(dim=(2, 3)))

    return ResNet20()


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_resnet20_equals_a_hand_written_torch_resnet20(shape):
    torch = pytest.importorskip("torch")
    model = build_model(shipped("resnet20"), shape, seed=0)
    net = torch_resnet20(torch, shape[0])
    state = {k: torch.from_numpy(v) for k, v in model.state_dict().items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    assert model.num_params() == sum(p.numel() for p in net.parameters())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, *shape)).astype(np.float32)
    labels = np.array([1, 3, 5, 7])
    tx = torch.tensor(x, requires_grad=True)
    net.train()
    tlogits = net(tx)
    loss = torch.nn.functional.cross_entropy(tlogits, torch.tensor(labels))
    loss.backward()
    from convtrain.ops.losses import softmax_cross_entropy

    logits = model.forward(x, training=True)
    np.testing.assert_allclose(logits, tlogits.detach().numpy(), rtol=1e-4, atol=1e-4)
    _, dlogits = softmax_cross_entropy(logits, labels)
    dx = model.backward(dlogits)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-3, atol=1e-6)
    for name, param in net.named_parameters():
        layer, key = name.rsplit(".", 1)
        grad = param.grad.numpy()
        np.testing.assert_allclose(model.layers[layer].grads[key], grad, rtol=1e-3,
                                   atol=1e-4 * float(np.abs(grad).max()), err_msg=name)
    for name, buffer in net.named_buffers():  # running statistics moved the same way
        if not name.endswith("num_batches_tracked"):
            layer, key = name.rsplit(".", 1)
            np.testing.assert_allclose(model.layers[layer].buffers[key], buffer.numpy(),
                                       rtol=1e-4, atol=1e-5, err_msg=name)


def cli(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "convtrain", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def summary_params(stdout: str) -> int:
    line = next(l for l in stdout.splitlines() if l.startswith("Total params:"))
    return int(line.split(":")[1].replace(",", ""))


@pytest.mark.slow
def test_summary_and_block_layer_override_through_the_cli(tmp_path):
    proc = cli(tmp_path, "model=resnet20", "data=fashion_mnist", "task=summary")
    assert proc.returncode == 0, proc.stderr
    # stem + 18 block convs + 2 projections, 19 + 2 BN layers, fc: by hand
    convs = (9 * 1 * 16 + 6 * 9 * 16 * 16 + (9 * 16 * 32 + 5 * 9 * 32 * 32)
             + (9 * 32 * 64 + 5 * 9 * 64 * 64) + 16 * 32 + 32 * 64)
    bn = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64 + 32 + 64)
    total = convs + bn + 64 * 10 + 10
    assert summary_params(proc.stdout) == total
    assert "stage2.block1.add" in proc.stdout and "bn2, proj_bn" in proc.stdout

    # the issue's own override of one expanded layer (with the '+' Hydra needs)
    proc = cli(tmp_path, "model=resnet20", "data=fashion_mnist", "task=summary",
               "+model.layers.stage2.block1.conv1.filters=64")
    assert proc.returncode == 0, proc.stderr
    row = next(l for l in proc.stdout.splitlines() if l.startswith("stage2.block1.conv1 "))
    assert "64@3x3, s2" in row
    # conv1 gets 32 more filters, its BN 32 more channels, conv2 32 more input channels
    assert summary_params(proc.stdout) == total + 16 * 32 * 9 + 2 * 32 + 32 * 32 * 9
    proc = cli(tmp_path, "model=resnet20", "data=fashion_mnist", "task=summary",
               "model.layers.stage2.block2.conv1.filters=48")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "convtrain: error: model.layers.stage2.block2: the layers of block instance 'stage2' "
        "exist only once it is expanded, so setting one needs a '+': "
        "+model.layers.stage2.block2.conv1.filters=48")
    proc = cli(tmp_path, "model=seed_example", "task=summary")
    assert proc.returncode == 0, proc.stderr
    assert "Input shape:          (3, 224, 224)" in proc.stdout


RESIDUAL = {"blocks": {"res": {"params": {"filters": "???"}, "layers": {
    "conv1": {"type": "conv2d", "filters": "$filters", "kernel_size": 3, "padding": 1},
    "bn": {"type": "batchnorm2d"}, "relu": {"type": "relu"},
    "drop": {"type": "dropout", "p": 0.2},
    "add": {"type": "add", "inputs": ["drop", "input"]}}}},
    "layers": {"stem": {"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": 1},
               "stage": {"block": "res", "repeat": 2, "filters": 3},
               "pool": {"type": "global_avgpool2d"}, "fc": {"type": "dense", "units": 3}}}


def test_residual_model_resumes_bitwise_and_logs_expanded_names(tmp_path):
    data = blobs()
    opt = {"name": "adam", "lr": 0.02}

    def run(run_dir, max_epochs, seed, resume=None):
        model = build_model(RESIDUAL, data.input_shape, seed=seed)
        trainer = make_trainer(run_dir, data, model, opt=opt, max_epochs=max_epochs,
                               resume=resume, seed=7)
        return trainer, trainer.fit()

    full, full_metrics = run(tmp_path / "full", 3, seed=1)
    run(tmp_path / "part", 2, seed=1)
    resumed, resumed_metrics = run(tmp_path / "resumed", 3, seed=2,
                                   resume=str(tmp_path / "part" / "checkpoints" /
                                              "last.safetensors"))
    for key in ("train_loss", "val_loss", "test_loss", "epochs_completed"):
        assert resumed_metrics[key] == full_metrics[key], key
    for key, value in full.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[key], value, err_msg=key)
    assert "stage.block2.conv1.weight" in full.model.state_dict()
    tags = set(read_tb(tmp_path / "full").Tags()["images"])
    assert {"kernels/stage.block1.conv1", "feature_maps/stage.block2.conv1"} <= tags


def test_the_readme_graph_example_builds():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    text = readme[readme.index("name: tiny_resnet"):]
    model = build_model(yaml.safe_load(text[:text.index("```")]), (1, 28, 28))
    assert model.inputs_of("stage2.block1.add") == ("stage2.block1.bn2", "stage2.block1.proj_bn")
    assert model.inputs_of("stage1.block1.add") == ("stage1.block1.bn2", "stem")


def test_preflight_checks_the_graph_before_any_data_or_shape():
    from omegaconf import OmegaConf

    from convtrain.app.preflight import check_layers
    from convtrain.errors import ConfigError

    config = OmegaConf.create(shipped("resnet20"))
    check_layers(config)
    config.layers.fc.inputs = "pol"
    with pytest.raises(ConfigError, match=r"^model\.layers\.fc\.inputs: unknown layer 'pol'; "
                                          r"did you mean 'pool'\?"):
        check_layers(config)
    config = OmegaConf.create(shipped("resnet20"))
    config.blocks.basic.layers.bn2 = {"type": "batchnorm2d", "inputs": ["conv2", "relu1"]}
    with pytest.raises(ConfigError, match=r"^model\.layers\.stage1\.block1\.bn2\.inputs: "
                                          r"batchnorm2d takes one input, got 2"):
        check_layers(config)
