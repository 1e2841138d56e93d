"""The whole pipeline on ml-latest-small, run once and checked like a user would."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from spark_jobs import fs
from spark_jobs.steps import STAGES
from tests.spark_jobs.stage_inputs import pipeline_run

pytestmark = pytest.mark.spark

TOP_K = 20
# Required band for test RMSE of the default pipeline on the 80/20 seed-42 split.
RMSE_LOW = 0.80
RMSE_HIGH = 0.90


@pytest.fixture(scope="module")
def finished(spark, tmp_path_factory, ml_latest_small):
    layout, status, _ = pipeline_run(spark, tmp_path_factory, ml_latest_small)
    assert status == 0
    return layout


def test_summaries_print_in_stage_order(spark, tmp_path_factory, ml_latest_small):
    _, _, printed = pipeline_run(spark, tmp_path_factory, ml_latest_small)
    summaries, _ = json.JSONDecoder().raw_decode(printed)
    assert list(summaries) == list(STAGES)


@pytest.fixture(scope="module")
def recommendations(spark, finished):
    return spark.read.parquet(finished.recommendations).cache()


def test_every_stage_committed(spark, finished):
    for stage in STAGES:
        assert fs.exists(spark, finished.manifest(stage)), stage


def test_test_rmse_in_band(spark, finished):
    metrics = fs.read_json(spark, finished.metrics)
    assert RMSE_LOW <= metrics["rmse"] <= RMSE_HIGH
    assert metrics["n_test_scored"] > 0
    assert "ml-latest-small" in metrics["dataset"]


def test_metrics_report_ranking(spark, finished):
    ranking = fs.read_json(spark, finished.metrics)["ranking"]
    assert ranking["k"] == TOP_K
    assert ranking["default_list"] in ranking["lists"]


def test_every_user_gets_twenty_distinct(spark, finished, recommendations):
    users = spark.read.parquet(finished.ratings).select("userId").distinct().count()
    per_user = recommendations.groupBy("userId").agg(
        F.countDistinct("movieId").alias("movies"), F.count(F.lit(1)).alias("rows")
    )
    short = per_user.filter((F.col("movies") != TOP_K) | (F.col("rows") != TOP_K)).count()
    assert per_user.count() == users
    assert short == 0


def test_no_rated_movie_recommended(spark, finished, recommendations):
    ratings = spark.read.parquet(finished.ratings)
    overlap = recommendations.join(ratings, ["userId", "movieId"]).count()
    assert overlap == 0


def test_all_titles_known(recommendations):
    assert recommendations.filter(F.col("title").isNull()).count() == 0


def test_recommend_writes_tunes_list(spark, finished):
    chosen = fs.read_json(spark, finished.tuning_results)["chosen"]["list"]
    recommend = fs.read_json(spark, finished.manifest("recommend"))["parameters"]
    metrics = fs.read_json(spark, finished.metrics)
    assert recommend["list"] == chosen
    assert metrics["ranking"]["lists"][metrics["ranking"]["default_list"]]["list"] == chosen


def test_tuning_outputs_written(spark, finished):
    results = fs.read_json(spark, finished.tuning_results)
    assert len(results["iterations"]) >= 20
    assert fs.exists(spark, finished.tuning_plot)
