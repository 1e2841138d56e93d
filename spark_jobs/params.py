"""Pipeline parameters: every default in one place, validated before Spark starts.

Pure Python, so the command line can reject nonsense without starting a JVM and
the infrastructure can import the defaults.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import replace
from typing import Any

from spark_jobs.errors import ParameterError

DEFAULT_SEED = 42
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_VALIDATION_FRACTION = 0.2
DEFAULT_RANK = 10
DEFAULT_REG_PARAM = 0.1
DEFAULT_MAX_ITER = 15
DEFAULT_TOP_K = 20
DEFAULT_STUDY_MAX_ITER = 20
DEFAULT_RANK_GRID = (8, 16, 32)
DEFAULT_REG_GRID = (0.05, 0.1, 0.2)
DEFAULT_MAX_QUARANTINE_FRACTION = 0.01
# The implicit-feedback ALS that ranks unseen movies for the top-k lists. These
# values had the best or second-best precision@10 among rank 16..64, regParam
# 0.01..2 and alpha 0.5..5 on validation ratings carved from the training split
# (per-user 75/25) of ml-100k, and beat the earlier rank 64, regParam 0.05 there
# and on ml-latest-small.
DEFAULT_IMPLICIT_RANK = 32
DEFAULT_IMPLICIT_REG_PARAM = 0.5
DEFAULT_IMPLICIT_MAX_ITER = 10
DEFAULT_IMPLICIT_ALPHA = 1.0
# The rating model train fits when tune has not chosen one: "als" (biases plus ALS
# on the residuals, the course's model) or "bayes" (spark_jobs.bayes).
RATING_MODELS = ("als", "bayes")
DEFAULT_RATING_MODEL = "als"
# The Bayesian model's rank and Gibbs samples; the first fifth of the samples are
# burn-in. On a validation carve of ml-100k's u1.base, rank 16 with 100 samples
# scored 0.9007 RMSE; rank 8 scored 0.9018, rank 32 0.9008, and rank 16 with 50
# or 200 samples 0.9075 or 0.9026.
DEFAULT_BAYES_RANK = 16
DEFAULT_BAYES_SAMPLES = 100
# Split methods for the test ratings. "hash" puts a rating in test when a hash of
# (userId, movieId, seed) falls below the test fraction. "per-user" holds out that
# fraction of each user's ratings, rounded, so nearly every user is tested.
SPLIT_METHODS = ("hash", "per-user")
DEFAULT_SPLIT_METHOD = "hash"
# Top-k lists that recommend can write. "default" is the one tune measured best, and
# "reranked" is the ranking model's top k in predicted-rating order.
ORDERINGS = ("default", "rating", "implicit", "reranked")
DEFAULT_ORDERING = "default"
# The allowed values of each parameter that takes a name, for validate() and the help.
NAMED_CHOICES = {
    "rating_model": RATING_MODELS,
    "split_method": SPLIT_METHODS,
    "ordering": ORDERINGS,
}


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric parameter. A bound of None means no bound."""

    minimum: float | None = None
    maximum: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True

    def contains(self, value: float) -> bool:
        # NaN fails every comparison and infinity is outside every range the help shows.
        if not math.isfinite(value):
            return False
        if self.minimum is not None:
            if value < self.minimum or (value == self.minimum and not self.min_inclusive):
                return False
        if self.maximum is not None:
            if value > self.maximum or (value == self.maximum and not self.max_inclusive):
                return False
        return True

    def text(self) -> str:
        """Return the range in interval notation, for example ``[1, 1000]`` or ``(0, 1)``."""
        low = "-inf" if self.minimum is None else _bound_text(self.minimum)
        high = "inf" if self.maximum is None else _bound_text(self.maximum)
        left = "[" if self.min_inclusive and self.minimum is not None else "("
        right = "]" if self.max_inclusive and self.maximum is not None else ")"
        return f"{left}{low}, {high}{right}"


def _bound_text(bound: float) -> str:
    # An integer bound prints in full: "{:g}" would print 2**63 - 1 as 9.22337e+18.
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


FRACTION = Range(0, 1, min_inclusive=False, max_inclusive=False)
COUNT = Range(1, 1000)
NON_NEGATIVE = Range(0)

# The allowed range of each numeric parameter, for validate() and the help. A grid's
# range applies to each of its values.
RANGES = {
    # NumPy's generators reject a negative seed, and Spark's take a Java long.
    "seed": Range(0, 2**63 - 1),
    "test_fraction": FRACTION,
    "validation_fraction": FRACTION,
    "rank": COUNT,
    "reg_param": NON_NEGATIVE,
    "max_iter": COUNT,
    "top_k": COUNT,
    "study_max_iter": COUNT,
    "max_quarantine_fraction": Range(0, 1),
    "rank_grid": COUNT,
    "reg_grid": NON_NEGATIVE,
    "implicit_rank": COUNT,
    "implicit_reg_param": NON_NEGATIVE,
    "implicit_max_iter": COUNT,
    "implicit_alpha": NON_NEGATIVE,
    "bayes_rank": COUNT,
    "bayes_samples": Range(2, 100000),
}


def option_name(parameter: str) -> str:
    """Return the command-line option for a Parameters field: ``reg_param`` -> ``--reg-param``."""
    return "--" + parameter.replace("_", "-")


def check_range(option: str, value: float, allowed: Range) -> None:
    """Raise ParameterError naming ``option`` unless ``value`` is in ``allowed``."""
    if not allowed.contains(value):
        raise ParameterError(
            f"invalid value for {option}: {value!r}; allowed range is {allowed.text()}"
        )


@dataclass(frozen=True)
class Parameters:
    """The knobs of one run. Field names are the command-line option names with underscores."""

    seed: int = DEFAULT_SEED
    test_fraction: float = DEFAULT_TEST_FRACTION
    split_method: str = DEFAULT_SPLIT_METHOD
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    rank: int = DEFAULT_RANK
    reg_param: float = DEFAULT_REG_PARAM
    max_iter: int = DEFAULT_MAX_ITER
    top_k: int = DEFAULT_TOP_K
    study_max_iter: int = DEFAULT_STUDY_MAX_ITER
    rank_grid: tuple[int, ...] = DEFAULT_RANK_GRID
    reg_grid: tuple[float, ...] = DEFAULT_REG_GRID
    max_quarantine_fraction: float = DEFAULT_MAX_QUARANTINE_FRACTION
    implicit_rank: int = DEFAULT_IMPLICIT_RANK
    implicit_reg_param: float = DEFAULT_IMPLICIT_REG_PARAM
    implicit_max_iter: int = DEFAULT_IMPLICIT_MAX_ITER
    implicit_alpha: float = DEFAULT_IMPLICIT_ALPHA
    ordering: str = DEFAULT_ORDERING
    rating_model: str = DEFAULT_RATING_MODEL
    bayes_rank: int = DEFAULT_BAYES_RANK
    bayes_samples: int = DEFAULT_BAYES_SAMPLES

    def validate(self) -> Parameters:
        """Return self, or raise ParameterError naming the first invalid option."""
        for name, allowed in RANGES.items():
            value = getattr(self, name)
            for item in value if isinstance(value, tuple) else (value,):
                check_range(option_name(name), item, allowed)
        for name, allowed in NAMED_CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ParameterError(
                    f"invalid value for {option_name(name)}: {value!r}; "
                    f"allowed: {', '.join(allowed)}"
                )
        if not self.rank_grid:
            raise ParameterError("invalid value for --rank-grid: empty; give at least one rank")
        if not self.reg_grid:
            raise ParameterError("invalid value for --reg-grid: empty; give at least one value")
        return self

    def with_values(self, **changes: Any) -> Parameters:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["rank_grid"] = list(self.rank_grid)
        values["reg_grid"] = list(self.reg_grid)
        return values
