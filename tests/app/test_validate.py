"""The shared value checks of convtrain.validate: one rule set for every config key."""
import numpy as np
import pytest

from convtrain import validate
from convtrain.errors import ConfigError


# --- predicates -------------------------------------------------------------------------------
@pytest.mark.parametrize("value,is_int,is_real,is_bool", [
    (3, True, True, False),
    (np.int64(3), True, True, False),
    (np.uint8(3), True, True, False),
    (3.0, False, True, False),
    (np.float32(0.5), False, True, False),
    (np.float64(3.0), False, True, False),
    (True, False, False, True),
    (np.bool_(True), False, False, True),
    ("3", False, False, False),
    (None, False, False, False),
    ([3], False, False, False),
])
def test_predicates(value, is_int, is_real, is_bool):
    assert validate.is_int(value) is is_int
    assert validate.is_real(value) is is_real
    assert validate.is_bool(value) is is_bool


# --- integers ---------------------------------------------------------------------------------
def test_integer_accepts_python_and_numpy_ints():
    assert validate.integer("k", 4) == 4
    got = validate.integer("k", np.int32(4), low=1)
    assert got == 4 and type(got) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.5, "3", None, [1]])
def test_integer_rejects_non_integers(value):
    with pytest.raises(ConfigError, match=r"^scheduler\.t_max: expected an integer, got "):
        validate.integer("scheduler.t_max", value)


def test_integral_float_is_rejected_with_a_hint():
    with pytest.raises(ConfigError, match=r"^trainer\.max_epochs: expected a positive integer, "
                                          r"got 30\.0 \(write 30, not 30\.0\)$"):
        validate.positive_int("trainer.max_epochs", 30.0)
    with pytest.raises(ConfigError, match=r"got np.float64\(3\.0\) \(write 3, not 3\.0\)"):
        validate.integer("scheduler.step_size", np.float64(3.0), low=1)
    # no "write 0" hint when 0 would be out of range as well
    with pytest.raises(ConfigError, match=r"got 0\.0$"):
        validate.positive_int("k", 0.0)


def test_integer_range_messages():
    with pytest.raises(ConfigError, match=r"^k: must be >= 1, got 0$"):
        validate.integer("k", 0, low=1)
    with pytest.raises(ConfigError, match=r"^k: expected a positive integer, got 0$"):
        validate.positive_int("k", 0)
    with pytest.raises(ConfigError, match=r"^k: expected an integer >= 0 \(0 = off\), got -1$"):
        validate.non_negative_int("k", -1, zero_means="off")
    assert validate.non_negative_int("k", 0) == 0


def test_seed():
    assert validate.seed(np.int64(7)) == 7  # NumPy integers are seeds everywhere
    for bad in (-1, True, 1.0, "7"):
        with pytest.raises(ConfigError, match=r"^seed: expected a non-negative integer"):
            validate.seed(bad)
    with pytest.raises(ConfigError, match=r"^run\.seed: "):
        validate.seed(-1, key="run.seed")


# --- reals ------------------------------------------------------------------------------------
def test_real_accepts_ints_floats_and_numpy_scalars():
    assert validate.real("optimizer.lr", 1) == 1.0
    got = validate.real("data.val_fraction", np.float32(0.25), low=0.0, high=1.0, high_open=True)
    assert got == 0.25 and type(got) is float
    assert validate.real("k", np.int64(2)) == 2.0


@pytest.mark.parametrize("value,match", [
    (True, r"^k: expected a number, got True$"),
    (np.bool_(False), r"^k: expected a number"),
    ("0.1", r"^k: expected a number"),
    (float("nan"), r"^k: expected a finite number"),
    (float("inf"), r"^k: expected a finite number"),
])
def test_real_rejects(value, match):
    with pytest.raises(ConfigError, match=match):
        validate.real("k", value)


def test_real_bounds():
    assert validate.real("k", 0.0, low=0.0) == 0.0
    with pytest.raises(ConfigError, match=r"^k: must be > 0, got 0"):
        validate.real("k", 0, low=0.0, low_open=True)
    with pytest.raises(ConfigError, match=r"^k: must be >= 0, got -0.1"):
        validate.real("k", -0.1, low=0.0)
    with pytest.raises(ConfigError, match=r"^k: must be < 1, got 1.0"):
        validate.real("k", 1.0, high=1.0, high_open=True)
    with pytest.raises(ConfigError, match=r"^k: must be <= 1, got 1.5"):
        validate.real("k", 1.5, high=1.0)
    with pytest.raises(ConfigError, match=r"^k: expected a number in \[0, 1\), got 1.0$"):
        validate.real("k", 1.0, low=0.0, high=1.0, high_open=True, expected="a number in [0, 1)")


# --- bools ------------------------------------------------------------------------------------
def test_boolean():
    assert validate.boolean("k", True) is True
    assert validate.boolean("k", np.bool_(False)) is False
    for bad in (1, 0, "yes", "true", None):
        with pytest.raises(ConfigError, match=r"^k: expected true or false, got "):
            validate.boolean("k", bad)
    with pytest.raises(ConfigError, match=r"^k: expected true, false or null, got 'x'$"):
        validate.boolean("k", "x", expected="true, false or null")


@pytest.mark.parametrize("value,want", [
    ("auto", "auto"), (" AUTO ", "auto"), ("true", True), ("False", False), (True, True),
    (np.bool_(False), False),
])
def test_progress(value, want):
    assert validate.progress("trainer.progress", value) == want


@pytest.mark.parametrize("value", ["sometimes", 1, None])
def test_progress_rejects(value):
    with pytest.raises(ConfigError, match=r"^trainer\.progress: expected auto, true or false"):
        validate.progress("trainer.progress", value)


# --- containers -------------------------------------------------------------------------------
def test_mapping_and_sequence():
    assert validate.mapping("optimizer", {"lr": 1}) == {"lr": 1}
    with pytest.raises(ConfigError, match=r"^optimizer: expected a mapping, got 0.1$"):
        validate.mapping("optimizer", 0.1)
    assert validate.real_sequence("optimizer.betas", (0.9, 0.99), 2) == [0.9, 0.99]
    with pytest.raises(ConfigError, match=r"^optimizer\.betas: expected a list of 2 numbers"):
        validate.real_sequence("optimizer.betas", "ab", 2)


# --- did you mean -----------------------------------------------------------------------------
def test_did_you_mean():
    assert validate.did_you_mean("momentun", ["lr", "momentum"]) == "; did you mean 'momentum'?"
    assert validate.did_you_mean("lrr", ("lr",), "optimizer.") == "; did you mean 'optimizer.lr'?"
    assert validate.did_you_mean("zzz", ["lr", "momentum"]) == ""
    assert validate.did_you_mean("x", []) == ""
    assert validate.closest(1, [1, 2]) == "1"  # names and candidates compared as strings
    assert validate.closest("zzz", ["lr"]) is None


def test_reject_unknown_keys():
    elsewhere = {"sgd": ["lr", "momentum"], "adam": ["lr", "betas"]}
    validate.reject_unknown_keys("optimizer", "optimizer", "sgd", {"lr": 1},
                                 elsewhere["sgd"], elsewhere)
    with pytest.raises(ConfigError, match=r"optimizer\.betas: .*\(it is an option of adam; "):
        validate.reject_unknown_keys("optimizer", "optimizer", "sgd", {"betas": 1},
                                     elsewhere["sgd"], elsewhere)
    with pytest.raises(ConfigError, match=r"optimizer\.momentun: .*\(did you mean 'momentum'\?; "):
        validate.reject_unknown_keys("optimizer", "optimizer", "sgd", {"momentun": 1},
                                     elsewhere["sgd"], elsewhere)
    with pytest.raises(ConfigError, match=r"optimizer\.zzz: .*\(unknown key; options of 'sgd': "
                                          r"name, lr, momentum\)"):
        validate.reject_unknown_keys("optimizer", "optimizer", "sgd", {"zzz": 1},
                                     elsewhere["sgd"], elsewhere)


# --- the call sites follow the same rules -----------------------------------------------------
def test_call_sites_share_the_rules():
    from convtrain.data import parse_data_config
    from convtrain.optim import build_schedule

    # NumPy floats are numbers for data.val_fraction too
    assert parse_data_config({"val_fraction": np.float64(0.2)}).val_fraction == 0.2
    with pytest.raises(ConfigError, match=r"^data\.subset: expected a positive number of "
                                          r"samples or null, got 3\.0 \(write 3, not 3\.0\)"):
        parse_data_config({"subset": 3.0})
    with pytest.raises(ConfigError, match=r"^data\.normalize: expected true or false"):
        parse_data_config({"normalize": 1})
    # an integral float is no longer an epoch count for the schedules
    with pytest.raises(ConfigError, match=r"^scheduler\.t_max: expected an integer, got 30\.0"):
        build_schedule({"name": "cosine", "t_max": 30.0}, base_lr=0.1, max_epochs=10)
    with pytest.raises(ConfigError, match=r"^trainer\.max_epochs: expected an integer, got 30\.0"):
        build_schedule({"name": "cosine"}, base_lr=0.1, max_epochs=30.0)
    # while an int learning rate is a number
    assert build_schedule({"name": "constant"}, base_lr=1, max_epochs=3).lr_at(0) == 1.0
