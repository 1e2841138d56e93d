"""Top-k lists: rated movies excluded, order by the list's score, reranked keeps candidates."""

from __future__ import annotations

import pytest

from spark_jobs.model import RatingScale
from spark_jobs.model import fit_ranking_model
from spark_jobs.model import fit_rating_model
from spark_jobs.topk import IMPLICIT_ORDER
from spark_jobs.topk import RATING_ORDER
from spark_jobs.topk import RERANKED
from spark_jobs.topk import ListSpec
from spark_jobs.topk import top_k
from spark_jobs.topk import top_k_lists
from tests.spark_jobs.stage_inputs import synthetic_ratings

pytestmark = pytest.mark.spark

K = 4
SPECS = [ListSpec(RATING_ORDER), ListSpec(IMPLICIT_ORDER), ListSpec(RERANKED, K)]


@pytest.fixture(scope="module")
def lists(spark):
    ratings = spark.createDataFrame(
        synthetic_ratings(), "userId int, movieId int, rating float, timestamp long"
    ).cache()
    rating_model = fit_rating_model(
        ratings, rank=3, reg_param=0.1, max_iter=5, seed=1, scale=RatingScale(1.0, 5.0)
    )
    ranking_model = fit_ranking_model(ratings, rank=3, reg_param=0.1, max_iter=3, seed=1)
    combined = top_k_lists(rating_model, ranking_model, ratings, K, SPECS).collect()
    single = top_k(rating_model, ranking_model, ratings, K, ListSpec(RATING_ORDER)).collect()
    return combined, single


def _by_list_and_user(rows):
    grouped: dict[tuple[str, int], list] = {}
    for row in sorted(rows, key=lambda row: (row["list"], row["userId"], row["rank"])):
        grouped.setdefault((row["list"], row["userId"]), []).append(row)
    return grouped


def test_lists_exclude_rated_movies(lists):
    combined, _ = lists
    rated = {(user, movie) for user, movie, _, _ in synthetic_ratings()}
    assert not {(row["userId"], row["movieId"]) for row in combined} & rated


def test_lists_follow_their_score(lists):
    combined, _ = lists
    for (name, user), rows in _by_list_and_user(combined).items():
        scores = [row["score"] for row in rows]
        assert len(rows) == K, (name, user)
        if name == RERANKED + f"_{K}":
            ratings = [row["predicted_rating"] for row in rows]
            assert ratings == sorted(ratings, reverse=True), (name, user)
        else:
            assert scores == sorted(scores, reverse=True), (name, user)


def test_reranked_keeps_implicit_candidates(lists):
    combined, _ = lists
    grouped = _by_list_and_user(combined)
    users = {user for name, user in grouped if name == IMPLICIT_ORDER}
    for user in users:
        implicit = {row["movieId"] for row in grouped[(IMPLICIT_ORDER, user)]}
        reranked = {row["movieId"] for row in grouped[(f"{RERANKED}_{K}", user)]}
        assert implicit == reranked, user


def test_single_list_matches_combined(lists):
    combined, single = lists
    from_combined = {
        (row["userId"], row["rank"], row["movieId"]) for row in combined if row["list"] == "rating"
    }
    assert {(row["userId"], row["rank"], row["movieId"]) for row in single} == from_combined


def test_predicted_ratings_on_scale(lists):
    combined, _ = lists
    assert all(1.0 <= row["predicted_rating"] <= 5.0 for row in combined)


def test_reranked_spec_needs_candidates():
    with pytest.raises(ValueError, match="candidate pool"):
        ListSpec(RERANKED, 0)
