"""A damaged or hand-edited checkpoint is refused on load, before any training: one line
naming the file and the field (tensors, optimizer slots, header), exit status 2 on the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from convtrain.errors import ConfigError
from convtrain.training.checkpoint import load_checkpoint, save_checkpoint
from tests.app.test_cli_errors import convtrain  # noqa: F401 - the fixture
from tests.training.test_checkpoint import META, model_state, optimizer_state


def saved(tmp_path, model=None, optimizer=None, meta=None):
    return save_checkpoint(tmp_path, "last", model_state() if model is None else model,
                           optimizer_state() if optimizer is None else optimizer,
                           META if meta is None else meta)


def refused(path, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"checkpoint '{path}': ")
    return str(info.value)


@pytest.mark.parametrize("bad, held", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_model_weights_are_refused(tmp_path, bad, held):
    model = model_state()
    model["conv1.weight"][0, 0, 1, 1] = bad
    message = refused(saved(tmp_path, model=model),
                      rf"model\.conv1\.weight holds {held} \(1 of 36 values\)")
    assert "diverged" in message


def test_non_finite_optimizer_state_is_refused(tmp_path):
    optimizer = optimizer_state()
    optimizer["conv1.weight/momentum_buffer"][:] = np.nan
    refused(saved(tmp_path, optimizer=optimizer),
            r"optimizer/conv1\.weight/momentum_buffer holds NaN \(36 of 36 values\)")


def test_a_parameter_without_its_step_is_refused(tmp_path):
    optimizer = optimizer_state()
    del optimizer["conv1.weight/step"]
    refused(saved(tmp_path, optimizer=optimizer),
            r"optimizer/conv1\.weight/step is missing \(parameter 'conv1\.weight' has "
            r"optimizer state momentum_buffer but no step count\)")


def test_missing_optimizer_step_count_is_refused(tmp_path):
    optimizer = optimizer_state()
    del optimizer["steps"]
    refused(saved(tmp_path, optimizer=optimizer), r"lacks its step count 'optimizer/steps'")


def test_incomplete_slots_are_refused(tmp_path):
    optimizer = {**optimizer_state(), "conv1.bias/step": np.array(7, dtype=np.int64)}
    refused(saved(tmp_path, optimizer=optimizer),
            r"optimizer/conv1\.bias/momentum_buffer is missing \(parameter 'conv1\.weight' "
            r"has it")


@pytest.mark.parametrize("key, value, match", [
    ("conv2.weight/step", np.array(1, dtype=np.int64), r"optimizer/conv2\.weight/step belongs "
                                                       r"to no tensor of the checkpoint's model"),
    ("conv1.weight/step", np.array(9, dtype=np.int64), r"optimizer/conv1\.weight/step is 9, "
                                                       r"more than the optimizer's "
                                                       r"optimizer/steps 7"),
    ("conv1.weight/step", np.array(1.5), r"optimizer/conv1\.weight/step must be a "
                                         r"non-negative integer scalar, got dtype float64"),
    ("conv1.weight/momentum_buffer", np.zeros((4, 1, 3), np.float32),
     r"optimizer/conv1\.weight/momentum_buffer has shape \(4, 1, 3\), the tensor "
     r"model\.conv1\.weight has \(4, 1, 3, 3\)"),
])
def test_inconsistent_optimizer_entries_are_refused(tmp_path, key, value, match):
    refused(saved(tmp_path, optimizer={**optimizer_state(), key: value}), match)


@pytest.mark.parametrize("change, match", [
    ({"epoch": "3"}, r"header field 'epoch' must be a non-negative integer, got '3'"),
    ({"epoch": True}, r"header field 'epoch' must be a non-negative integer, got True"),
    ({"global_step": -1}, r"header field 'global_step' must be a non-negative integer, got -1"),
    ({"global_step": 2}, r"header field 'global_step' is 2, fewer than its 3 completed epochs"),
    ({"rng": None}, r"header field 'rng' must be a mapping of rng states, got nothing"),
    ({"rng": {"shuffle": [1, 2]}}, r"header field 'rng\.shuffle' is not a NumPy "
                                   r"bit-generator state"),
    ({"rng": {**META["rng"], "layers": {"drop1": 5}}}, r"header field 'rng\.layers\.drop1' is "
                                                        r"not a NumPy bit-generator state"),
])
def test_bad_header_fields_are_refused(tmp_path, change, match):
    refused(saved(tmp_path, meta={**META, **change}), match)


def test_missing_header_field_is_refused(tmp_path):
    meta = {k: v for k, v in META.items() if k != "global_step"}
    refused(saved(tmp_path, meta=meta),
            r"header field 'global_step' must be a non-negative integer, got missing")


def test_extra_header_fields_are_accepted(tmp_path):
    path = saved(tmp_path, meta={**META, "interrupted": {"batch": 3}, "future_field": [1]})
    assert load_checkpoint(path).meta["interrupted"] == {"batch": 3}


# --- through the command line ------------------------------------------------------------

@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """One finished 1-epoch digits run (its checkpoints/last is what the tests damage)."""
    run_dir = tmp_path_factory.mktemp("good") / "run"
    subprocess.run([sys.executable, "-m", "convtrain", "+experiment=digits_cnn",
                    "trainer.max_epochs=1", "trainer.progress=false",
                    f"hydra.run.dir={run_dir}"], check=True, capture_output=True)
    return run_dir


def damaged(good_run, tmp_path, how):
    ck = load_checkpoint(good_run)
    model, optimizer = dict(ck.model_state), dict(ck.optimizer_state)
    meta = {k: v for k, v in ck.meta.items() if k != "format"}
    if how == "nan":
        weight = model["conv1.weight"].copy()
        weight.flat[5] = np.nan
        model["conv1.weight"] = weight
    elif how == "no step":
        del optimizer["fc2.bias/step"]
    elif how == "no state":
        optimizer = {k: v for k, v in optimizer.items() if not k.startswith("fc2.bias/")}
    elif how == "no tensor":
        del model["fc2.bias"]
        optimizer = {k: v for k, v in optimizer.items() if not k.startswith("fc2.bias/")}
    elif how == "shape":
        model["fc2.bias"] = np.zeros(11, np.float32)
        optimizer["fc2.bias/momentum_buffer"] = np.zeros(11, np.float32)
    elif how == "slot shape":
        optimizer["fc2.bias/momentum_buffer"] = np.zeros(11, np.float32)
    elif how == "int weight":
        model["fc2.bias"] = model["fc2.bias"].astype(np.int32)
    elif how == "rng":
        state = np.random.Generator(np.random.MT19937(1)).bit_generator.state
        meta["rng"] = {**meta["rng"], "shuffle": json.loads(json.dumps(
            state, default=lambda a: a.tolist()))}
    return save_checkpoint(tmp_path / "damaged", "last", model, optimizer, meta)


@pytest.mark.parametrize("how, expected", [
    ("nan", "checkpoint '{path}': model.conv1.weight holds NaN (1 of 144 values)"),
    ("no step", "checkpoint '{path}': optimizer/fc2.bias/step is missing"),
    ("no state", "resume '{path}': optimizer/fc2.bias/step is missing: the checkpoint's "
                 "optimizer took 41 steps but kept no state for the trainable parameter "
                 "'fc2.bias'"),
    ("no tensor", "resume '{path}': load_state_dict: missing keys: fc2.bias (model keys: "),
    ("shape", "resume '{path}': load_state_dict: 'fc2.bias' has shape (11,) in the state dict "
              "but (10,) in the model"),
    ("slot shape", "checkpoint '{path}': optimizer/fc2.bias/momentum_buffer has shape (11,), the "
                   "tensor model.fc2.bias has (10,)"),
    ("int weight", "resume '{path}': model.fc2.bias has dtype int32 in the checkpoint, the "
                   "model holds float32"),
    ("rng", "resume '{path}': the shuffle order's rng state in the checkpoint does not fit its "
            "NumPy PCG64 generator (state must be for a PCG64 RNG)"),
])
def test_the_cli_refuses_a_damaged_checkpoint_in_one_line(convtrain, capsys, good_run, tmp_path,
                                                          how, expected):
    path = damaged(good_run, tmp_path, how)
    code = convtrain("+experiment=digits_cnn", "trainer.max_epochs=2", "trainer.progress=false",
                     f"trainer.resume={path}", f"hydra.run.dir={tmp_path / 'resumed'}")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("convtrain: error:")]
    assert errors == [line for line in err.splitlines() if "error" in line.lower()], err
    assert len(errors) == 1 and expected.format(path=path) in errors[0], err
    assert not (tmp_path / "resumed" / "metrics.json").exists()  # nothing trained
