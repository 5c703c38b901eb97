"""convtrain.model_config: a model file composed as the command line composes it."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import convtrain
from convtrain.app.cli import config_dir
from convtrain.errors import ConfigError

CONFIGS = Path(config_dir())


def test_a_shared_block_comes_in_through_the_defaults_list():
    block = yaml.safe_load((CONFIGS / "blocks" / "basic_residual.yaml").read_text())
    for name in ("resnet20", "fmnist_resnet"):
        raw = yaml.safe_load((CONFIGS / "model" / f"{name}.yaml").read_text())
        assert "blocks" not in raw  # the file alone does not hold it ...
        assert convtrain.model_config(name)["blocks"] == {"basic": block}  # ... composed, it does
    model = convtrain.build_model(convtrain.model_config("resnet20"), (1, 28, 28))
    assert "stage3.block3.conv2" in model.layers and model.output_shape == (10,)


def test_overrides_apply_like_on_the_command_line():
    spec = convtrain.model_config("resnet20", ["model.layers.stage2.filters=48"])
    assert spec["layers"]["stage2"]["filters"] == 48
    assert convtrain.model_config("resnet20")["layers"]["stage2"]["filters"] == 32


def test_an_unknown_model_is_one_line_with_a_suggestion():
    with pytest.raises(ConfigError) as caught:
        convtrain.model_config("resnet2")
    message = str(caught.value)
    assert "\n" not in message and "resnet2" in message and "did you mean 'resnet20'" in message


def test_composing_inside_an_initialised_hydra_leaves_it_as_it_was(tmp_path):
    (tmp_path / "app.yaml").write_text("x: 1\n")
    with initialize_config_dir(str(tmp_path), version_base="1.3"):
        outer = GlobalHydra.instance().hydra
        assert convtrain.model_config("small_cnn")["layers"]
        assert GlobalHydra.instance().hydra is outer
    assert not GlobalHydra.instance().is_initialized()
