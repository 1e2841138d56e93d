"""Tune's implicit ALS solves the confidence-weighted system exactly and fits as well as Spark."""

from __future__ import annotations

import numpy as np
import pytest

from spark_jobs import ease
from spark_jobs import implicit
from spark_jobs.model import fit_implicit
from spark_jobs.params import Parameters
from spark_jobs.schema import RATINGS_SCHEMA
from spark_jobs.stages.split import random_split
from spark_jobs.sweep import RatingsByRow
from spark_jobs.sweep import SingularSystemError
from spark_jobs.sweep import initial_factors

RANK = 5


def random_pairs(n_users: int, n_movies: int, n_pairs: int, seed: int):
    generator = np.random.default_rng(seed)
    users = generator.integers(0, n_users, n_pairs)
    movies = generator.integers(0, n_movies, n_pairs)
    pairs = np.unique(np.stack([users, movies], axis=1), axis=0)
    # Half-star ratings, with a few zeros: a zero has confidence 1 and preference 0.
    values = generator.integers(0, 11, len(pairs)) / 2.0
    by_user = RatingsByRow.of(pairs[:, 0], pairs[:, 1], values, n_users)
    by_movie = RatingsByRow.of(pairs[:, 1], pairs[:, 0], values, n_movies)
    return by_user, by_movie


def dense_solution(by_user: RatingsByRow, fixed: np.ndarray, row: int, reg: float, alpha: float):
    """Solve one row over every column, with the confidences written out in full."""
    start, stop = by_user.indptr[row], by_user.indptr[row + 1]
    ratings = np.zeros(len(fixed))
    ratings[by_user.columns[start:stop]] = by_user.values[start:stop]
    confidence = 1.0 + alpha * np.abs(ratings)
    preference = (ratings > 0).astype(float)
    positives = int(np.sum(ratings > 0))
    system = fixed.T @ (confidence[:, None] * fixed) + reg * positives * np.eye(fixed.shape[1])
    return np.linalg.solve(system, fixed.T @ (confidence * preference))


def test_solve_matches_dense_solution():
    by_user, _ = random_pairs(40, 30, 500, seed=1)
    fixed = np.random.default_rng(2).normal(size=(30, RANK))
    solved = implicit.solve_rows(by_user, fixed, reg_param=0.2, alpha=1.5)
    assert by_user.counts.min() >= 1
    for row in range(40):
        np.testing.assert_allclose(
            solved[row], dense_solution(by_user, fixed, row, 0.2, 1.5), rtol=1e-6, atol=1e-9
        )


def test_solve_rejects_singular_system():
    by_user, _ = random_pairs(5, 30, 40, seed=3)
    with pytest.raises(SingularSystemError, match="regParam 0"):
        implicit.solve_rows(by_user, np.zeros((30, RANK)), reg_param=0.0, alpha=1.0)


def test_objective_never_rises():
    """Each half-step minimises the objective exactly over one side's factors."""
    by_user, by_movie = random_pairs(30, 25, 300, seed=4)
    generator = np.random.default_rng(5)
    users = initial_factors(30, RANK, generator)
    movies = initial_factors(25, RANK, generator)
    objectives = [implicit.objective(by_user, users, movies, 0.1, 2.0)]
    for _ in range(5):
        movies = implicit.solve_rows(by_movie, users, 0.1, 2.0)
        objectives.append(implicit.objective(by_user, users, movies, 0.1, 2.0))
        users = implicit.solve_rows(by_user, movies, 0.1, 2.0)
        objectives.append(implicit.objective(by_user, users, movies, 0.1, 2.0))
    for earlier, later in zip(objectives, objectives[1:], strict=False):
        assert later <= earlier + 1e-9 * abs(earlier)
    assert objectives[-1] < objectives[0]


@pytest.mark.spark
def test_tasks_match_driver_fit(spark):
    fit_sets = [random_pairs(30, 25, 300, seed=6), random_pairs(20, 35, 200, seed=7)]
    settings = implicit.ImplicitSettings(rank=RANK, reg_param=0.1, max_iter=3, alpha=1.0, seed=8)
    fitted = implicit.fit_in_tasks(spark.sparkContext, fit_sets, settings)
    assert len(fitted) == 2
    for (users, movies), fit_set in zip(fitted, fit_sets, strict=True):
        expected_users, expected_movies = implicit.fit_factors(*fit_set, settings)
        np.testing.assert_allclose(users, expected_users, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(movies, expected_movies, rtol=1e-5, atol=1e-6)


@pytest.mark.spark
def test_fit_matches_spark_als(spark, ml_latest_small):
    """On real ratings the NumPy fit reaches Spark's objective and ranks as well.

    The random starts differ, so the factors differ. The objective and the
    held-out precision@20 of both fits must agree.
    """
    ratings = (
        spark.read.options(header=True)
        .schema(RATINGS_SCHEMA)
        .csv(str(ml_latest_small / "ratings.csv"))
    )
    fit, held_out = random_split(ratings, 0.2, 42)
    interactions = ease.Interactions.of(fit)
    held_out_interactions = ease.Interactions.of(held_out)
    params = Parameters()
    settings = implicit.ImplicitSettings.of(params)
    by_user = interactions.by_user()
    ours = implicit.fit_factors(by_user, interactions.by_movie(), settings)
    theirs = ease.factor_arrays(fit_implicit(fit, params), interactions)
    objectives = [
        implicit.objective(by_user, *factors, settings.reg_param, settings.alpha)
        for factors in (ours, theirs)
    ]
    assert objectives[0] == pytest.approx(objectives[1], rel=0.005)
    precision = [
        ease.precision_table(interactions, held_out_interactions, *factors, 20)[(0.0, None)]
        for factors in (ours, theirs)
    ]
    assert abs(precision[0] - precision[1]) < 0.01, precision
    assert min(precision) > 0.1
