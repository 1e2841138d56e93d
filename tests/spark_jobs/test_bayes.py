"""The Bayesian rating model: correct Gibbs conditionals, and its RMSE on MovieLens 100k."""

from __future__ import annotations

import numpy as np
import pytest

from spark_jobs import bayes
from spark_jobs.model import RatingScale
from spark_jobs.model import fit_baseline
from spark_jobs.model import rmse_and_mae
from spark_jobs.sweep import RatingsByRow
from spark_jobs.sweep import row_batches
from tests.spark_jobs.stage_inputs import synthetic_ratings

SCHEMA = "userId int, movieId int, rating float, timestamp long"
ML100K_SCHEMA = "userId int, movieId int, rating double, timestamp long"


def test_row_draws_follow_the_gaussian_conditional():
    """Many copies of one row: the draws' mean and covariance are A^-1 b and A^-1."""
    generator = np.random.default_rng(3)
    other = generator.normal(size=(5, 2))
    other_bias = generator.normal(size=5)
    columns = np.array([0, 1, 3, 4])
    values = generator.normal(size=4)
    copies = 20000
    ratings = RatingsByRow.of(
        np.repeat(np.arange(copies), len(columns)),
        np.tile(columns, copies),
        np.tile(values, copies),
        copies,
    )
    prior_mean = np.array([0.1, -0.2, 0.3])
    prior_precision = np.array([2.0, 1.0, 4.0])
    noise = 1.5
    draws = bayes.sample_rows(
        ratings, other, other_bias, prior_mean, prior_precision, noise, generator
    )
    design = np.hstack([np.ones((len(columns), 1)), other[columns]])
    targets = values.astype(np.float32).astype(np.float64) - other_bias[columns]
    precision = noise * design.T @ design + np.diag(prior_precision)
    mean = np.linalg.solve(precision, noise * design.T @ targets + prior_precision * prior_mean)
    np.testing.assert_allclose(draws.mean(axis=0), mean, atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), np.linalg.inv(precision), atol=0.01)


def test_prior_draws_centre_on_the_values():
    generator = np.random.default_rng(5)
    values = generator.normal(loc=[1.0, -2.0], scale=[0.5, 2.0], size=(20000, 2))
    means, precisions = [], []
    for _ in range(50):
        mean, precision = bayes.sample_prior(values, generator)
        means.append(mean)
        precisions.append(precision)
    np.testing.assert_allclose(np.mean(means, axis=0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(np.mean(precisions, axis=0), [4.0, 0.25], rtol=0.05)


def test_chain_settings_reject_burn_in_past_the_samples():
    with pytest.raises(ValueError, match="burn-in"):
        bayes.ChainSettings(rank=2, samples=10, burn_in=10, seed=1)
    with pytest.raises(ValueError, match="rank"):
        bayes.ChainSettings(rank=0, samples=10, burn_in=1, seed=1)
    with pytest.raises(ValueError, match="threads"):
        bayes.ChainSettings(rank=2, samples=10, burn_in=1, seed=1, threads=0)


def uneven_data() -> bayes.BayesData:
    """Users with 1 to 60 ratings, so each side's rows fall into several batches."""
    generator = np.random.default_rng(11)
    users, movies = [], []
    for user in range(120):
        count = 1 + user % 60
        users += [user] * count
        movies += list(generator.choice(90, size=count, replace=False))
    users, movies = np.array(users), np.array(movies)
    ratings = generator.integers(1, 6, size=len(users)).astype(np.float64)
    user_ids, user_index = np.unique(users, return_inverse=True)
    movie_ids, movie_index = np.unique(movies, return_inverse=True)
    centred = ratings - ratings.mean()
    empty = np.empty(0, dtype=np.int32)
    return bayes.BayesData(
        user_ids=user_ids,
        movie_ids=movie_ids,
        global_mean=float(ratings.mean()),
        by_user=RatingsByRow.of(user_index, movie_index, centred, len(user_ids)),
        by_movie=RatingsByRow.of(movie_index, user_index, centred, len(movie_ids)),
        validation_users=empty,
        validation_movies=empty,
        validation_ratings=np.empty(0),
        scale_min=1.0,
        scale_max=5.0,
    )


def test_row_draws_ignore_batch_order():
    data = uneven_data()
    assert len(list(row_batches(data.by_user.counts, 4))) >= 3
    other = np.random.default_rng(1).normal(size=(len(data.movie_ids), 3))
    arguments = (data.by_user, other, np.zeros(len(other)), np.zeros(4), np.ones(4), 2.0)

    def backwards(function, batches):
        return [function(batch) for batch in reversed(list(batches))]

    in_order = bayes.sample_rows(*arguments, np.random.default_rng(9))
    reversed_order = bayes.sample_rows(*arguments, np.random.default_rng(9), backwards)
    np.testing.assert_array_equal(in_order, reversed_order)


def test_threads_leave_the_chain_unchanged():
    data = uneven_data()
    single = bayes.sample_posterior(data, bayes.ChainSettings.of(3, 10, 5, threads=1))
    threaded = bayes.sample_posterior(data, bayes.ChainSettings.of(3, 10, 5, threads=3))
    np.testing.assert_array_equal(single.user_factors, threaded.user_factors)
    np.testing.assert_array_equal(single.movie_bias, threaded.movie_bias)
    assert single.noise_precision == threaded.noise_precision


class FakeContext:
    """The parts of a SparkContext that chain_threads reads."""

    def __init__(self, master: str, parallelism: int, conf: dict[str, str]):
        self.master = master
        self.defaultParallelism = parallelism
        self._conf = conf

    def getConf(self):  # noqa: N802 - the SparkContext method name
        return self._conf


@pytest.mark.parametrize(
    ("master", "parallelism", "conf", "threads"),
    [
        ("local[*]", 2, {}, 2),
        ("local[16]", 16, {}, bayes.MAX_THREADS),
        ("yarn", 64, {"spark.executor.cores": "3"}, 3),
        ("yarn", 64, {}, 1),
    ],
)
def test_chain_threads_are_one_executors_cores(master, parallelism, conf, threads):
    assert bayes.chain_threads(FakeContext(master, parallelism, conf)) == threads


@pytest.mark.spark
def test_prepare_drops_unseen_validation_rows(spark):
    fit = spark.createDataFrame(synthetic_ratings(), SCHEMA)
    seen = [(1, 1, 3.0, 0), (2, 2, 5.0, 0)]
    unseen = [(999, 1, 4.0, 0), (1, 999, 4.0, 0)]
    validation = spark.createDataFrame(seen + unseen, SCHEMA)
    data = bayes.prepare(fit, validation, RatingScale(1.0, 5.0))
    assert sorted(data.validation_ratings) == [3.0, 5.0]
    assert data.n_ratings == fit.count()


@pytest.mark.spark
def test_rating_model_predicts_what_the_sampler_scores(spark):
    """The Spark model's RMSE equals the NumPy validation RMSE of the same posterior."""
    ratings = spark.createDataFrame(synthetic_ratings(), SCHEMA)
    fit, validation = ratings.randomSplit([0.8, 0.2], seed=4)
    scale = RatingScale(1.0, 5.0)
    data = bayes.prepare(fit, validation, scale)
    settings = bayes.ChainSettings(rank=3, samples=20, burn_in=5, seed=7)
    posterior = bayes.run_chain(spark.sparkContext, data, settings)
    model = bayes.rating_model(spark, data, posterior, scale, settings)
    spark_rmse, _ = rmse_and_mae(model.predict(validation))
    assert spark_rmse == pytest.approx(bayes.validation_rmse(data, posterior), abs=1e-4)
    assert model.kind == "bayes"


@pytest.mark.spark
def test_empty_validation_is_an_error(spark):
    fit = spark.createDataFrame(synthetic_ratings(), SCHEMA)
    validation = spark.createDataFrame([(999, 999, 4.0, 0)], SCHEMA)
    data = bayes.prepare(fit, validation, RatingScale(1.0, 5.0))
    posterior = bayes.sample_posterior(data, bayes.ChainSettings(2, 3, 1, 1))
    with pytest.raises(ValueError, match="--validation-fraction"):
        bayes.validation_rmse(data, posterior)


@pytest.mark.spark
def test_ml100k_fold_beats_biases_alone(spark, ml_100k):
    """On fold u1 the sampler scores in the 0.88..0.92 band, well below the damped biases."""
    fit = spark.read.csv(str(ml_100k / "u1.base"), sep="\t", schema=ML100K_SCHEMA)
    test = spark.read.csv(str(ml_100k / "u1.test"), sep="\t", schema=ML100K_SCHEMA)
    scale = RatingScale(1.0, 5.0)
    data = bayes.prepare(fit, test, scale)
    posterior = bayes.run_chain(
        spark.sparkContext, data, bayes.ChainSettings(rank=16, samples=60, burn_in=12, seed=42)
    )
    rmse = bayes.validation_rmse(data, posterior)
    baseline = fit_baseline(fit)
    biases = (
        baseline.add_biases(test)
        .selectExpr(f"{baseline.global_mean} + user_bias + movie_bias AS raw", "rating")
        .selectExpr("least(greatest(raw, 1.0), 5.0) AS prediction", "rating")
    )
    biases_rmse, _ = rmse_and_mae(biases)
    assert 0.88 <= rmse <= 0.92
    assert rmse < biases_rmse - 0.03
