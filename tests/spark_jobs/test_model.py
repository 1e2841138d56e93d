"""Rating model: damped biases, clipped predictions, cold start, save and load, long runs."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import functions as F

from spark_jobs.model import DEFAULT_MOVIE_DAMPING
from spark_jobs.model import DEFAULT_USER_DAMPING
from spark_jobs.model import UNCHECKPOINTED_MAX_ITER
from spark_jobs.model import RatingModel
from spark_jobs.model import RatingScale
from spark_jobs.model import checkpoint_interval
from spark_jobs.model import fit_baseline
from spark_jobs.model import fit_ranking_model
from spark_jobs.model import fit_rating_model
from spark_jobs.model import rmse_and_mae
from tests.spark_jobs.stage_inputs import synthetic_ratings

pytestmark = pytest.mark.spark

SCHEMA = "userId int, movieId int, rating float, timestamp long"
TOLERANCE = 1e-9
WHOLE_STARS = RatingScale(1.0, 5.0)


@pytest.fixture(scope="module")
def synthetic(spark):
    return spark.createDataFrame(synthetic_ratings(), SCHEMA).cache()


@pytest.fixture(scope="module")
def fitted(synthetic):
    return fit_rating_model(
        synthetic, rank=4, reg_param=0.05, max_iter=8, seed=1, scale=WHOLE_STARS
    )


def test_baseline_biases_are_damped(spark):
    ratings = spark.createDataFrame([(1, 10, 5.0, 0), (1, 20, 3.0, 0), (2, 10, 4.0, 0)], SCHEMA)
    baseline = fit_baseline(ratings)
    movie = {row["movieId"]: row["movie_bias"] for row in baseline.movie_bias.collect()}
    user = {row["userId"]: row["user_bias"] for row in baseline.user_bias.collect()}
    movie_10 = 1.0 / (2 + DEFAULT_MOVIE_DAMPING)
    movie_20 = -1.0 / (1 + DEFAULT_MOVIE_DAMPING)
    assert baseline.global_mean == pytest.approx(4.0, abs=TOLERANCE)
    assert movie[10] == pytest.approx(movie_10, abs=TOLERANCE)
    assert movie[20] == pytest.approx(movie_20, abs=TOLERANCE)
    assert user[1] == pytest.approx(
        ((1.0 - movie_10) + (-1.0 - movie_20)) / (2 + DEFAULT_USER_DAMPING), abs=TOLERANCE
    )
    assert user[2] == pytest.approx(-movie_10 / (1 + DEFAULT_USER_DAMPING), abs=TOLERANCE)


def test_predictions_stay_on_scale(fitted, synthetic):
    predictions = fitted.predict(synthetic)
    bounds = predictions.agg(F.min("prediction"), F.max("prediction")).first()
    assert bounds[0] >= WHOLE_STARS.minimum
    assert bounds[1] <= WHOLE_STARS.maximum


def test_model_learns_taste_structure(fitted, synthetic):
    # The synthetic ratings split users into two tastes. The ratings spread with a
    # standard deviation of about 1.4, so an RMSE below 0.9 means the model learned them.
    rmse, mae = rmse_and_mae(fitted.predict(synthetic))
    assert rmse < 0.9
    assert mae < rmse + TOLERANCE


def test_cold_start_rows_are_dropped(spark, fitted):
    pairs = spark.createDataFrame([(1, 1, 4.0, 0), (999, 1, 4.0, 0), (1, 999, 4.0, 0)], SCHEMA)
    scored = fitted.predict(pairs).collect()
    assert [(row["userId"], row["movieId"]) for row in scored] == [(1, 1)]


def test_save_and_load_round_trip(spark, fitted, synthetic, tmp_path):
    uri = str(tmp_path / "model")
    fitted.save(spark, uri)
    loaded = RatingModel.load(spark, uri)
    before = {
        (row["userId"], row["movieId"]): row["prediction"]
        for row in fitted.predict(synthetic).collect()
    }
    after = {
        (row["userId"], row["movieId"]): row["prediction"]
        for row in loaded.predict(synthetic).collect()
    }
    assert loaded.scale == fitted.scale
    assert loaded.params == fitted.params
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key] == pytest.approx(value, abs=1e-6)


def test_fifty_iterations_do_not_overflow_stack(synthetic):
    # Without checkpoints the lineage of 50 iterations overflows the driver's stack.
    model = fit_rating_model(
        synthetic, rank=2, reg_param=0.1, max_iter=50, seed=1, scale=WHOLE_STARS
    )
    rmse, _ = rmse_and_mae(model.predict(synthetic))
    assert not math.isnan(rmse)


def test_longest_uncheckpointed_fit_succeeds(synthetic):
    assert checkpoint_interval(UNCHECKPOINTED_MAX_ITER) == -1
    assert checkpoint_interval(UNCHECKPOINTED_MAX_ITER + 1) > 0
    model = fit_rating_model(
        synthetic,
        rank=2,
        reg_param=0.1,
        max_iter=UNCHECKPOINTED_MAX_ITER,
        seed=1,
        scale=WHOLE_STARS,
    )
    rmse, _ = rmse_and_mae(model.predict(synthetic))
    assert not math.isnan(rmse)


def test_ranking_model_scores_rated_movies_higher(synthetic):
    # Implicit ALS is fitted on who rated what, so rated pairs score above unrated ones.
    model = fit_ranking_model(synthetic, rank=4, reg_param=0.05, max_iter=5, seed=1)
    rated = model.transform(synthetic.select("userId", "movieId")).agg(F.avg("factor_prediction"))
    all_pairs = (
        synthetic.select("userId").distinct().crossJoin(synthetic.select("movieId").distinct())
    )
    unrated = all_pairs.join(synthetic, ["userId", "movieId"], "left_anti")
    unrated_mean = model.transform(unrated).agg(F.avg("factor_prediction"))
    assert rated.first()[0] > unrated_mean.first()[0]


def test_rmse_of_empty_predictions_raises(spark):
    empty = spark.createDataFrame([], "rating float, prediction double")
    with pytest.raises(ValueError, match="no predictions"):
        rmse_and_mae(empty)


def test_rating_scale_rejects_empty_interval():
    with pytest.raises(ValueError, match="below maximum"):
        RatingScale(5.0, 5.0)
