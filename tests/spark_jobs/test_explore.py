"""Tests of the explore stage: the DataFrame functions, the quantile maths and run()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spark_jobs import fs
from spark_jobs import layout as run_layout
from spark_jobs.commit import StageCommit
from spark_jobs.commit import read_manifest
from spark_jobs.context import StageContext
from spark_jobs.layout import RunLayout
from spark_jobs.params import Parameters
from spark_jobs.schema import MOVIES_SCHEMA
from spark_jobs.schema import RATINGS_SCHEMA
from spark_jobs.stages import explore

pytestmark = pytest.mark.spark

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (user, movie, rating): 3 users, 4 movies, 7 ratings.
SMALL_RATINGS = [
    (1, 10, 4.0),
    (1, 20, 3.5),
    (1, 30, 5.0),
    (2, 10, 4.0),
    (2, 20, 1.0),
    (3, 10, 0.5),
    (3, 40, 4.0),
]
SMALL_MOVIES = [
    (10, "Ten, The (1990)", "Drama"),
    (20, "Twenty (1991)", "Comedy"),
    (30, "Thirty (1992)", "Action"),
]


def ratings_frame(spark, rows):
    return spark.createDataFrame(
        [(user, movie, float(rating), 0) for user, movie, rating in rows], RATINGS_SCHEMA
    )


def movies_frame(spark, rows):
    return spark.createDataFrame(rows, MOVIES_SCHEMA)


def commit_load(spark, root, ratings, movies, dataset="hand-made"):
    """Commit ratings and movies as the load stage would, so explore can read them."""
    layout = RunLayout(str(root))
    with StageCommit(spark, layout, "load", dataset=dataset) as commit:
        ratings.write.parquet(commit.staging_path(run_layout.RATINGS))
        movies.write.parquet(commit.staging_path(run_layout.MOVIES))
    return layout


def run_explore(spark, layout):
    return explore.run(StageContext(spark=spark, layout=layout, params=Parameters()))


def test_rating_histogram_counts_each_value(spark):
    rows = explore.rating_histogram(ratings_frame(spark, SMALL_RATINGS)).collect()
    assert [(row["rating"], row["count"]) for row in rows] == [
        (0.5, 1),
        (1.0, 1),
        (3.5, 1),
        (4.0, 3),
        (5.0, 1),
    ]


def test_ratings_per_user_counts_each_user(spark):
    rows = explore.ratings_per_user(ratings_frame(spark, SMALL_RATINGS)).collect()
    assert sorted((row["userId"], row["count"]) for row in rows) == [(1, 3), (2, 2), (3, 2)]


def test_ratings_per_movie_counts_and_averages(spark):
    rows = explore.ratings_per_movie(ratings_frame(spark, SMALL_RATINGS)).collect()
    by_movie = {row["movieId"]: (row["count"], row["mean_rating"]) for row in rows}
    assert by_movie[10] == (3, pytest.approx(8.5 / 3, abs=1e-9))
    assert by_movie[20] == (2, pytest.approx(2.25, abs=1e-9))
    assert set(by_movie) == {10, 20, 30, 40}


def test_count_frequencies_groups_equal_counts(spark):
    per_user = explore.ratings_per_user(ratings_frame(spark, SMALL_RATINGS))
    rows = explore.count_frequencies(per_user).collect()
    assert [(row["count"], row["entities"]) for row in rows] == [(2, 2), (3, 1)]


def test_most_rated_movies_breaks_ties_by_id(spark):
    per_movie = explore.ratings_per_movie(ratings_frame(spark, SMALL_RATINGS))
    rows = explore.most_rated_movies(per_movie, movies_frame(spark, SMALL_MOVIES), 3).collect()
    assert [row["movieId"] for row in rows] == [10, 20, 30]
    assert rows[0]["title"] == "Ten, The (1990)"
    assert rows[0]["count"] == 3


def test_most_rated_movies_leaves_unknown_title_null(spark):
    per_movie = explore.ratings_per_movie(ratings_frame(spark, SMALL_RATINGS))
    rows = explore.most_rated_movies(per_movie, movies_frame(spark, SMALL_MOVIES), 4).collect()
    assert rows[3]["movieId"] == 40
    assert rows[3]["title"] is None


def test_quantiles_match_numpy_on_random_counts():
    rng = np.random.default_rng(7)
    values = rng.zipf(1.8, size=5000)
    distinct, multiplicity = np.unique(values, return_counts=True)
    frequencies = list(zip(distinct.tolist(), multiplicity.tolist(), strict=True))
    probabilities = (0.0, 0.1, 0.25, 0.5, 0.9, 0.99, 1.0)
    result = explore.quantiles_from_frequencies(frequencies, probabilities)
    for probability in probabilities:
        expected = float(np.quantile(values, probability))
        assert result[f"{probability:g}"] == pytest.approx(expected, rel=1e-12), probability


def test_quantiles_reject_empty_table():
    with pytest.raises(ValueError, match="empty"):
        explore.quantiles_from_frequencies([], (0.5,))


def test_head_share_of_skewed_counts():
    # Ten entities: one with 91 ratings, nine with 1. The top 10% is that one.
    assert explore.head_share([(91, 1), (1, 9)], share=0.1) == pytest.approx(0.91, abs=1e-12)


def test_head_share_splits_a_tied_count():
    # Four entities with 5 ratings each: the top half contains half the ratings.
    assert explore.head_share([(5, 4)], share=0.5) == pytest.approx(0.5, abs=1e-12)


def test_summarize_counts_and_sparsity(spark):
    summary = explore.summarize(
        ratings_frame(spark, SMALL_RATINGS), movies_frame(spark, SMALL_MOVIES)
    )
    assert summary["users"] == 3
    assert summary["movies"] == 4
    assert summary["movies_in_catalogue"] == 3
    assert summary["ratings"] == 7
    assert summary["sparsity"] == pytest.approx(1 - 7 / 12, abs=1e-12)
    assert summary["mean_rating"] == pytest.approx(22.0 / 7, abs=1e-12)
    assert summary["rating_histogram"]["4.0"] == 3
    assert summary["ratings_per_user"]["quantiles"]["0.5"] == 2
    assert summary["ratings_per_movie"]["quantiles"]["1"] == 3
    assert summary["titles_known"] is True


def test_summarize_rejects_empty_ratings(spark):
    with pytest.raises(ValueError, match="empty"):
        explore.summarize(ratings_frame(spark, []), movies_frame(spark, SMALL_MOVIES))


def test_run_commits_summary_and_plots(spark, tmp_path):
    layout = commit_load(
        spark, tmp_path, ratings_frame(spark, SMALL_RATINGS), movies_frame(spark, SMALL_MOVIES)
    )
    result = run_explore(spark, layout)
    summary = json.loads((tmp_path / "explore" / "summary.json").read_text())
    assert result["ratings"] == 7
    assert summary["dataset"] == "hand-made"
    assert summary["most_rated_movies"][0]["title"] == "Ten, The (1990)"
    for name in ("rating_distribution.png", "long_tail.png"):
        assert (tmp_path / "explore" / name).read_bytes().startswith(PNG_SIGNATURE), name
    manifest = read_manifest(spark, layout, "explore")
    assert manifest.counts == {"users": 3, "movies": 4, "ratings": 7}
    assert manifest.load_id == read_manifest(spark, layout, "load").load_id
    assert not fs.list_names(spark, layout.path(run_layout.STAGING))


def test_run_without_movies_says_titles_unknown(spark, tmp_path):
    layout = commit_load(
        spark, tmp_path, ratings_frame(spark, SMALL_RATINGS), movies_frame(spark, [])
    )
    run_explore(spark, layout)
    summary = json.loads((tmp_path / "explore" / "summary.json").read_text())
    assert summary["titles_known"] is False
    assert summary["most_rated_movies"][0]["title"] is None


def test_run_on_ml_latest_small(spark, tmp_path, ml_latest_small):
    options = {"header": "true", "quote": '"', "escape": '"'}
    ratings = (
        spark.read.options(**options)
        .schema(RATINGS_SCHEMA)
        .csv(str(ml_latest_small / "ratings.csv"))
    )
    movies = (
        spark.read.options(**options).schema(MOVIES_SCHEMA).csv(str(ml_latest_small / "movies.csv"))
    )
    layout = commit_load(spark, tmp_path, ratings, movies, dataset="ml-latest-small")
    run_explore(spark, layout)
    summary = json.loads((tmp_path / "explore" / "summary.json").read_text())
    # Published figures of ml-latest-small: 100,836 ratings by 610 users on 9,724 rated movies.
    assert summary["ratings"] == 100_836
    assert summary["users"] == 610
    assert summary["movies"] == 9_724
    assert summary["movies_in_catalogue"] == 9_742
    assert summary["sparsity"] == pytest.approx(1 - 100_836 / (610 * 9_724), abs=1e-12)
    # Every ml-latest-small user has at least 20 ratings.
    assert summary["ratings_per_user"]["quantiles"]["0"] == 20
    assert summary["most_rated_movies"][0]["title"] == "Forrest Gump (1994)"
    assert summary["most_rated_movies"][0]["ratings"] == 329
    assert sum(summary["rating_histogram"].values()) == 100_836
    assert set(summary["rating_histogram"]) == {f"{star / 2:.1f}" for star in range(1, 11)}
