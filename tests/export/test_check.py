"""The rule of the export-time check: absolute for logits within +-1, relative beyond."""
from __future__ import annotations

import math

import numpy as np

from convtrain.export.settings import TOLERANCE, allowed_difference
from convtrain.export.walk import LogitCheck


def check(exported, reference) -> LogitCheck:
    return LogitCheck.compare("runtime", np.asarray(exported), np.asarray(reference, np.float64),
                              TOLERANCE)


def test_small_logits_are_held_to_the_absolute_tolerance():
    reference = np.array([[0.5, -0.9], [0.1, 0.0]])
    assert check(reference + 9e-6, reference).passed
    failed = check(reference + 2e-5, reference)
    assert not failed.passed and failed.allowed == TOLERANCE
    assert math.isclose(failed.difference, 2e-5, rel_tol=1e-9)


def test_large_logits_allow_the_same_relative_rounding():
    reference = np.array([[388.0, -12.0], [3.0, 100.0]])
    assert allowed_difference(TOLERANCE, 388.0) == TOLERANCE * 388.0
    assert check(reference + 9e-5, reference).passed  # float32 noise at this size
    assert not check(reference + 388 * 2e-5, reference).passed


def test_anything_not_finite_or_misshapen_fails():
    reference = np.zeros((2, 3))
    for exported in (np.full((2, 3), np.nan), np.full((2, 3), np.inf), np.zeros((2, 4))):
        result = check(exported, reference)
        assert result.difference == math.inf and not result.passed
    nan_reference = check(np.zeros((2, 3)), np.full((2, 3), np.nan))
    assert not nan_reference.passed


def test_the_lines_and_the_record():
    result = check([[1.0, 30.0 + 1e-4]], [[1.0, 30.0]])
    assert result.summary("test images") == (
        "runtime vs convtrain on 1 test images: max abs logit difference 0.0001 "
        "(largest |logit| 30, allowed 0.0003)")
    assert result.as_dict()["allowed"] == TOLERANCE * 30.0
    failed = check([[1.0, 31.0]], [[1.0, 30.0]])
    assert str(failed.failure("the model", "x was not written")) == (
        "export: the model's logits differ from convtrain's by up to 1 on 1 inputs (allowed "
        "0.0003: tolerance 1e-05 x max(1, largest |logit| 30)); x was not written")
