"""The tune sweep's ALS: exact normal-equation solves, and RMSE close to Spark's ALS."""

from __future__ import annotations

import numpy as np
import pytest

from spark_jobs import sweep
from spark_jobs.model import RatingScale
from spark_jobs.model import fit_baseline
from spark_jobs.model import fit_rating_model
from spark_jobs.model import rmse_and_mae
from spark_jobs.params import Parameters
from spark_jobs.schema import RATINGS_SCHEMA
from spark_jobs.stages.split import random_split
from spark_jobs.stages.tune import validation_split
from tests.spark_jobs.stage_inputs import synthetic_ratings

RANK = 6


def random_ratings(n_rows: int, n_columns: int, seed: int) -> sweep.RatingsByRow:
    """Return rows with 1 to 3 * RANK - 1 ratings each, so both solve paths run."""
    generator = np.random.default_rng(seed)
    rows, columns = [], []
    for row in range(n_rows):
        count = int(generator.integers(1, 3 * RANK))
        rows += [row] * count
        columns += list(generator.choice(n_columns, size=count, replace=False))
    values = generator.normal(size=len(rows))
    return sweep.RatingsByRow.of(np.array(rows), np.array(columns), values, n_rows)


def direct_solution(ratings: sweep.RatingsByRow, fixed: np.ndarray, row: int, reg: float):
    start, stop = ratings.indptr[row], ratings.indptr[row + 1]
    others = fixed[ratings.columns[start:stop]]
    values = ratings.values[start:stop].astype(np.float64)
    gram = others.T @ others + reg * (stop - start) * np.eye(fixed.shape[1])
    return np.linalg.solve(gram, others.T @ values)


def test_solve_matches_direct_solution():
    ratings = random_ratings(n_rows=50, n_columns=40, seed=1)
    fixed = np.random.default_rng(2).normal(size=(40, RANK))
    solved = sweep.solve_factors(ratings, fixed, reg_param=0.1)
    counts = ratings.counts
    assert counts.min() < RANK <= counts.max()
    for row in range(50):
        np.testing.assert_allclose(solved[row], direct_solution(ratings, fixed, row, 0.1))


def test_solve_rejects_singular_system():
    ratings = random_ratings(n_rows=5, n_columns=40, seed=3)
    fixed = np.zeros((40, RANK))
    with pytest.raises(sweep.SingularSystemError, match="regParam 0"):
        sweep.solve_factors(ratings, fixed, reg_param=0.0)


def test_batches_cover_rows_once():
    counts = np.array([1, 1, 2, 3, 4, 5, 8, 9, 200, 1, 7])
    batches = list(sweep.row_batches(counts, rank=4))
    covered = np.sort(np.concatenate(batches))
    np.testing.assert_array_equal(covered, np.arange(len(counts)))
    for rows in batches:
        widths = np.ceil(np.log2(counts[rows]))
        assert len(set(widths)) == 1


def test_batches_bound_systems_size(monkeypatch):
    """A batch's padded factors plus a rank x rank system per row fit the value budget."""
    monkeypatch.setattr(sweep, "GRAM_BATCH_VALUES", 10_000)
    rank = 32
    counts = np.ones(500, dtype=np.int64)
    batches = list(sweep.row_batches(counts, rank=rank))
    for rows in batches:
        assert len(rows) * (1 + rank) * rank <= 10_000
    assert sum(len(rows) for rows in batches) == 500


def test_batches_share_budget_when_held_together(monkeypatch):
    monkeypatch.setattr(sweep, "GRAM_BATCH_VALUES", 10_000)
    rank = 8
    counts = np.ones(500, dtype=np.int64)
    batches = list(sweep.row_batches(counts, rank=rank, at_once=4))
    for rows in batches:
        assert len(rows) * (1 + rank) * rank <= 2_500
    assert max(len(rows) for rows in batches) == 2_500 // ((1 + rank) * rank)
    assert sum(len(rows) for rows in batches) == 500


def test_training_error_never_rises():
    """Each ALS half-step minimises the objective exactly, so it cannot increase."""
    generator = np.random.default_rng(5)
    n_users, n_movies = 30, 25
    users = generator.integers(0, n_users, 400)
    movies = generator.integers(0, n_movies, 400)
    pairs = np.unique(np.stack([users, movies], axis=1), axis=0)
    values = generator.normal(size=len(pairs))
    by_user = sweep.RatingsByRow.of(pairs[:, 0], pairs[:, 1], values, n_users)
    by_movie = sweep.RatingsByRow.of(pairs[:, 1], pairs[:, 0], values, n_movies)
    user_factors = sweep.initial_factors(n_users, 3, generator)
    objectives = []
    for _ in range(6):
        movie_factors = sweep.solve_factors(by_movie, user_factors, 0.1)
        user_factors = sweep.solve_factors(by_user, movie_factors, 0.1)
        error = np.sum(user_factors[pairs[:, 0]] * movie_factors[pairs[:, 1]], axis=1) - values
        penalty = 0.1 * (
            np.sum(by_user.counts * np.sum(user_factors**2, axis=1))
            + np.sum(by_movie.counts * np.sum(movie_factors**2, axis=1))
        )
        objectives.append(np.sum(error**2) + penalty)
    for earlier, later in zip(objectives, objectives[1:], strict=False):
        assert later <= earlier + 1e-9


@pytest.mark.spark
def test_prepare_drops_unseen_validation_rows(spark):
    schema = "userId int, movieId int, rating float, timestamp long"
    fit = spark.createDataFrame(synthetic_ratings(), schema)
    unseen = [(999, 1, 4.0, 0), (1, 999, 4.0, 0)]
    seen = [(1, 1, 3.0, 0), (2, 2, 5.0, 0)]
    validation = spark.createDataFrame(seen + unseen, schema)
    baseline = fit_baseline(fit)
    data = sweep.prepare(baseline.residuals(fit), validation, baseline, RatingScale(1.0, 5.0))
    assert data.n_validation == len(seen)
    assert sorted(data.validation_ratings) == [3.0, 5.0]


@pytest.mark.spark
def test_sweep_rejects_empty_validation(spark):
    schema = "userId int, movieId int, rating float, timestamp long"
    fit = spark.createDataFrame(synthetic_ratings(), schema)
    validation = spark.createDataFrame([(999, 999, 4.0, 0)], schema)
    baseline = fit_baseline(fit)
    data = sweep.prepare(baseline.residuals(fit), validation, baseline, RatingScale(1.0, 5.0))
    with pytest.raises(ValueError, match="--validation-fraction"):
        sweep.sweep(spark.sparkContext, data, [(2, 0.1)], max_iter=2, seed=1)


@pytest.mark.spark
def test_sweep_rmse_matches_spark_als(spark, ml_latest_small):
    """The sweep's RMSE after k iterations is within 0.01 of a Spark ALS fit with k iterations."""
    ratings = (
        spark.read.options(header=True)
        .schema(RATINGS_SCHEMA)
        .csv(str(ml_latest_small / "ratings.csv"))
    )
    train, _ = random_split(ratings, 0.2, 42)
    fit, validation = validation_split(train, Parameters())
    fit, validation = fit.cache(), validation.cache()
    scale = RatingScale(0.5, 5.0)
    baseline = fit_baseline(fit)
    residuals = baseline.residuals(fit).cache()
    data = sweep.prepare(residuals, validation, baseline, scale)
    table = sweep.sweep(spark.sparkContext, data, [(8, 0.1)], max_iter=10, seed=42)
    for iterations in (2, 10):
        ours = next(row["rmse"] for row in table if row["maxIter"] == iterations)
        model = fit_rating_model(
            fit,
            rank=8,
            reg_param=0.1,
            max_iter=iterations,
            seed=42,
            scale=scale,
            baseline=baseline,
            residuals=residuals,
        )
        theirs, _ = rmse_and_mae(model.predict(validation))
        assert abs(ours - theirs) < 0.01, (iterations, ours, theirs)


@pytest.mark.spark
def test_factor_tables_predict_like_arrays(spark):
    schema = "userId int, movieId int, rating float, timestamp long"
    fit = spark.createDataFrame(synthetic_ratings(), schema)
    baseline = fit_baseline(fit)
    data = sweep.prepare(baseline.residuals(fit), fit, baseline, RatingScale(1.0, 5.0))
    tables = sweep.factor_tables(spark, data, rank=3, reg_param=0.1, max_iter=4, seed=9)
    users, movies, _ = sweep.fit_factors(
        data, rank=3, reg_param=0.1, max_iter=4, seed=9, scored=False
    )
    pairs = spark.createDataFrame([(1, 2), (5, 3), (999, 1)], "userId int, movieId int")
    scored = {
        (row["userId"], row["movieId"]): row["factor_prediction"]
        for row in tables.transform(pairs).collect()
    }
    assert set(scored) == {(1, 2), (5, 3)}
    for (user, movie), value in scored.items():
        user_row = int(np.searchsorted(data.user_ids, user))
        movie_row = int(np.searchsorted(data.movie_ids, movie))
        assert value == pytest.approx(float(users[user_row] @ movies[movie_row]), abs=1e-4)
