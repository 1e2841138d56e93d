"""Recommend stage: top k per user, never a rated movie, ordered, titled or marked unknown."""

from __future__ import annotations

import csv
import io
import logging

import pytest
from pyspark.sql import functions as F

from spark_jobs import fs
from spark_jobs.errors import InputDataError
from spark_jobs.stages import recommend
from spark_jobs.stages import split
from spark_jobs.stages import train
from tests.spark_jobs.stage_inputs import SMALL_MODEL
from tests.spark_jobs.stage_inputs import SYNTHETIC_USERS
from tests.spark_jobs.stage_inputs import context_for
from tests.spark_jobs.stage_inputs import synthetic_ratings
from tests.spark_jobs.stage_inputs import trained_run
from tests.spark_jobs.stage_inputs import write_loaded_run

pytestmark = pytest.mark.spark

K = SMALL_MODEL["top_k"]


@pytest.fixture(scope="module")
def recommended(spark, tmp_path_factory):
    layout = trained_run(spark, tmp_path_factory)
    summary = recommend.run(context_for(spark, layout, explicit={"top_k": K}))
    rows = spark.read.parquet(layout.recommendations).collect()
    return layout, summary, rows


def _by_user(rows):
    lists: dict[int, list] = {}
    for row in sorted(rows, key=lambda row: (row["userId"], row["rank"])):
        lists.setdefault(row["userId"], []).append(row)
    return lists


def test_every_user_gets_k_distinct_movies(recommended):
    _, _, rows = recommended
    lists = _by_user(rows)
    assert len(lists) == SYNTHETIC_USERS
    for user, items in lists.items():
        assert len({item["movieId"] for item in items}) == K, user
        assert [item["rank"] for item in items] == list(range(1, K + 1)), user


def test_no_rated_movie_is_recommended(recommended):
    _, _, rows = recommended
    rated = {(user, movie) for user, movie, _, _ in synthetic_ratings()}
    recommended_pairs = {(row["userId"], row["movieId"]) for row in rows}
    assert not rated & recommended_pairs


def test_default_list_is_ranking_models_order(recommended):
    _, summary, _ = recommended
    assert summary["list"] == "implicit"


def test_titles_and_genres_joined(recommended):
    _, summary, rows = recommended
    assert summary["titles_known"] is True
    for row in rows:
        assert row["title"] == f"Movie {row['movieId']} (2000)"
        assert row["genres"] in {"Comedy", "Drama"}


def test_csv_matches_parquet(spark, recommended):
    layout, _, rows = recommended
    text = fs.read_text(spark, layout.recommendations_csv)
    records = list(csv.DictReader(io.StringIO(text)))
    assert list(records[0]) == ["userId", "rank", "movieId", "title", "genres", "predicted_rating"]
    assert len(records) == len(rows)
    assert (records[0]["userId"], records[0]["rank"]) == ("1", "1")


@pytest.mark.parametrize("ordering", ["rating", "reranked"])
def test_ordering_descends_by_predicted_rating(spark, tmp_path_factory, ordering):
    layout = trained_run(spark, tmp_path_factory)
    summary = recommend.run(
        context_for(spark, layout, explicit={"top_k": K, "ordering": ordering}, user=2)
    )
    rows = spark.read.parquet(layout.recommendations).collect()
    # Restore the default list for the other tests of this module.
    recommend.run(context_for(spark, layout, explicit={"top_k": K}))

    top = summary["top"]
    assert summary["list"] == (ordering if ordering == "rating" else f"reranked_{K}")
    assert summary["user"] == 2
    assert [item["rank"] for item in top] == list(range(1, K + 1))
    for user, items in _by_user(rows).items():
        ratings = [item["predicted_rating"] for item in items]
        assert ratings == sorted(ratings, reverse=True), user


@pytest.mark.parametrize(("ordering", "warned"), [("reranked", True), ("rating", False)])
def test_k_warning_for_ranking_model_lists(spark, tmp_path_factory, caplog, ordering, warned):
    layout = trained_run(spark, tmp_path_factory)
    choice_uri = layout.path(train.MODEL_CHOICE)
    choice = fs.read_json(spark, choice_uri)
    fs.write_json(spark, choice_uri, {**choice, "chosen_at_k": K + 1})
    try:
        with caplog.at_level(logging.WARNING, logger="spark_jobs.stages.recommend"):
            recommend.run(context_for(spark, layout, explicit={"top_k": K, "ordering": ordering}))
    finally:
        fs.write_json(spark, choice_uri, choice)
        recommend.run(context_for(spark, layout, explicit={"top_k": K}))

    assert (f"recommend: --top-k {K}, but tune chose" in caplog.text) is warned


def test_unknown_user_is_rejected(spark, tmp_path_factory):
    layout = trained_run(spark, tmp_path_factory)
    with pytest.raises(InputDataError, match="user 99999"):
        recommend.run(context_for(spark, layout, explicit={"top_k": K}, user=99999))


def test_titles_unknown_without_movies_file(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    train.run(context_for(spark, layout, explicit=SMALL_MODEL))
    summary = recommend.run(context_for(spark, layout, explicit={"top_k": K}, user=1))
    titles = spark.read.parquet(layout.recommendations).filter(F.col("title").isNotNull())
    assert summary["titles_known"] is False
    assert summary["top"][0]["title"] == recommend.TITLE_UNKNOWN
    assert titles.count() == 0
