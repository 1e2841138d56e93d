"""Parameter defaults and the ranges validate() enforces."""

from __future__ import annotations

import pytest

from spark_jobs import params
from spark_jobs.errors import ParameterError
from spark_jobs.params import Parameters
from spark_jobs.params import Range
from spark_jobs.params import check_range


def test_defaults_are_valid():
    defaults = Parameters()
    assert defaults.validate() is defaults


def test_defaults_match_module_constants():
    defaults = Parameters()
    assert defaults.seed == params.DEFAULT_SEED == 42
    assert defaults.test_fraction == params.DEFAULT_TEST_FRACTION == 0.2
    assert defaults.top_k == params.DEFAULT_TOP_K == 20
    assert defaults.max_quarantine_fraction == params.DEFAULT_MAX_QUARANTINE_FRACTION == 0.01


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"rank": 0}, "--rank"),
        ({"rank": 1001}, "--rank"),
        ({"reg_param": -1e-9}, "--reg-param"),
        ({"max_iter": 0}, "--max-iter"),
        ({"test_fraction": 0.0}, "--test-fraction"),
        ({"test_fraction": 1.0}, "--test-fraction"),
        ({"validation_fraction": 0.0}, "--validation-fraction"),
        ({"top_k": 0}, "--top-k"),
        ({"study_max_iter": 0}, "--study-max-iter"),
        ({"max_quarantine_fraction": -0.01}, "--max-quarantine-fraction"),
        ({"max_quarantine_fraction": 1.01}, "--max-quarantine-fraction"),
        ({"rank_grid": (8, 0)}, "--rank-grid"),
        ({"rank_grid": ()}, "--rank-grid"),
        ({"reg_grid": (-0.1,)}, "--reg-grid"),
        ({"reg_grid": ()}, "--reg-grid"),
        ({"split_method": "per_user"}, "--split-method"),
        ({"rating_model": "svd"}, "--rating-model"),
        ({"reg_param": float("nan")}, "--reg-param"),
        ({"implicit_alpha": float("nan")}, "--implicit-alpha"),
        ({"reg_param": float("inf")}, "--reg-param"),
        ({"reg_grid": (0.1, float("inf"))}, "--reg-grid"),
        ({"bayes_samples": 1}, "--bayes-samples"),
        ({"implicit_max_iter": 1001}, "--implicit-max-iter"),
        ({"seed": -1}, "--seed"),
        ({"seed": 2**63}, "--seed"),
    ],
)
def test_validate_rejects_option(changes, option):
    with pytest.raises(ParameterError) as raised:
        Parameters(**changes).validate()
    assert f"invalid value for {option}" in str(raised.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"rank": 1},
        {"reg_param": 0.0},
        {"test_fraction": 0.01},
        {"test_fraction": 0.99},
        {"max_quarantine_fraction": 0.0},
        {"max_quarantine_fraction": 1.0},
        {"top_k": 1},
        {"split_method": "per-user"},
        {"split_method": "hash"},
        {"ordering": "reranked"},
        {"seed": 0},
        {"seed": 2**63 - 1},
    ],
)
def test_validate_accepts_boundary(changes):
    Parameters(**changes).validate()


def test_check_range_message_shows_open_and_closed_bounds():
    with pytest.raises(ParameterError) as raised:
        check_range("--x", 1.0, Range(0, 1, min_inclusive=False, max_inclusive=False))
    assert str(raised.value) == "invalid value for --x: 1.0; allowed range is (0, 1)"


def test_check_range_message_without_maximum():
    with pytest.raises(ParameterError) as raised:
        check_range("--y", -2, Range(0))
    assert str(raised.value) == "invalid value for --y: -2; allowed range is [0, inf)"


def test_check_range_message_integer_bound_in_full():
    with pytest.raises(ParameterError) as raised:
        check_range("--seed", -1, params.RANGES["seed"])
    assert str(raised.value) == (
        "invalid value for --seed: -1; allowed range is [0, 9223372036854775807]"
    )


def test_with_values_keeps_other_fields():
    changed = Parameters().with_values(rank=32)
    assert changed.rank == 32
    assert changed.reg_param == params.DEFAULT_REG_PARAM


def test_to_dict_is_json_ready():
    values = Parameters(rank_grid=(4, 8)).to_dict()
    assert values["rank_grid"] == [4, 8]
    assert isinstance(values["reg_grid"], list)
