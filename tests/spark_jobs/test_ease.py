"""The EASE blend: closed-form weights, blended order, persistence and top-k lists."""

from __future__ import annotations

import numpy as np
import pytest

from spark_jobs import ease
from spark_jobs.model import RatingScale
from spark_jobs.model import fit_ranking_model
from spark_jobs.model import fit_rating_model
from spark_jobs.ranking import precision_at_k
from spark_jobs.topk import IMPLICIT_ORDER
from spark_jobs.topk import ListSpec
from spark_jobs.topk import top_k_lists
from tests.spark_jobs.stage_inputs import synthetic_ratings

SCHEMA = "userId int, movieId int, rating float, timestamp long"


def test_weights_are_ridge_fits():
    """Each column of B is the ridge fit of that movie from the others (Lagrangian form)."""
    generator = np.random.default_rng(1)
    marks = (generator.random((40, 6)) < 0.4).astype(float)
    l2 = 2.0
    weights = ease.item_weights(marks, l2)
    assert np.allclose(np.diag(weights), 0.0)
    for movie in range(6):
        others = [column for column in range(6) if column != movie]
        design = marks[:, others]
        expected = np.linalg.solve(
            design.T @ design + l2 * np.eye(5), design.T @ marks[:, movie]
        )
        np.testing.assert_allclose(weights[others, movie], expected, atol=1e-10)


def test_weights_reject_l2_of_zero():
    with pytest.raises(ValueError, match="l2"):
        ease.item_weights(np.eye(3), 0.0)


def test_blend_extremes_match_each_model():
    generator = np.random.default_rng(2)
    als = generator.normal(size=(3, 8))
    ease_scores = generator.normal(size=(3, 5))
    columns = np.array([0, 2, 3, 5, 7])
    alone = ease.blend_scores(als, ease_scores, columns, 0.0)
    assert (np.argsort(alone, axis=1) == np.argsort(als, axis=1)).all()
    only_ease = ease.blend_scores(als, ease_scores, columns, 1.0)[:, columns]
    assert (np.argsort(only_ease, axis=1) == np.argsort(ease_scores, axis=1)).all()


def test_blend_weighs_each_model_by_its_spread():
    als = np.array([[0.0, 2.0, 4.0]])  # standard deviation 1.633
    ease_scores = np.array([[1.0, -1.0]])  # standard deviation 1
    blended = ease.blend_scores(als, ease_scores, np.array([0, 2]), 0.5)
    expected = 0.5 * als / als.std() + 0.5 * np.array([[1.0, 0.0, -1.0]])
    np.testing.assert_allclose(blended, expected)


def test_most_rated_keeps_busiest_movies():
    interactions = ease.Interactions(
        user_ids=np.array([1, 2, 3]),
        movie_ids=np.array([10, 20, 30, 40]),
        users=np.array([0, 1, 2, 0, 1, 0]),
        movies=np.array([3, 3, 3, 1, 1, 0]),
        ratings=np.ones(6, dtype=np.float32),
    )
    assert ease.most_rated(interactions, limit=2).tolist() == [1, 3]


def test_choose_averages_carves_breaks_ties():
    first = {(0.0, None): 0.30, (0.5, 100.0): 0.32, (0.5, 300.0): 0.30}
    second = {(0.0, None): 0.30, (0.5, 100.0): 0.26, (0.5, 300.0): 0.30}
    chosen, rows = ease.choose([first, second])
    assert chosen == {"weight": 0.0, "l2": None}
    assert {(row["weight"], row["l2"]): row["precision"] for row in rows}[(0.5, 100.0)] == pytest.approx(0.29)


@pytest.fixture(scope="module")
def blended(spark):
    ratings = spark.createDataFrame(synthetic_ratings(), SCHEMA).cache()
    als = fit_ranking_model(ratings, rank=3, reg_param=0.1, max_iter=3, seed=1)
    return ratings, als, ease.blended_ranker(als, ease.Interactions.of(ratings), 0.5, 5.0)


@pytest.mark.spark
def test_lists_rank_by_the_blend(spark, blended):
    """The top-k code's implicit list equals the blend scored densely in NumPy."""
    ratings, als, ranker = blended
    rating_model = fit_rating_model(
        ratings, rank=2, reg_param=0.1, max_iter=3, seed=1, scale=RatingScale(1.0, 5.0)
    )
    k = 3
    lists = top_k_lists(rating_model, ranker, ratings, k, [ListSpec(IMPLICIT_ORDER)]).collect()
    interactions = ease.Interactions.of(ratings)
    users, movies = ease.factor_arrays(als, interactions)
    marks = interactions.marks()
    columns = ease.most_rated(interactions)
    scores = ease.blend_scores(
        users @ movies.T,
        marks[:, columns] @ ease.item_weights(marks[:, columns], 5.0),
        columns,
        0.5,
    )
    scores[marks > 0] = -np.inf
    for position, user in enumerate(interactions.user_ids):
        listed = sorted((row for row in lists if row["userId"] == user), key=lambda row: row["rank"])
        expected = interactions.movie_ids[np.argsort(-scores[position], kind="stable")[:k]]
        assert [row["movieId"] for row in listed] == expected.tolist(), user
        assert [row["score"] for row in listed] == pytest.approx(
            np.sort(scores[position])[::-1][:k], abs=1e-3
        )


@pytest.mark.spark
def test_ranker_saves_and_loads(spark, blended, tmp_path):
    _, _, ranker = blended
    uri = str(tmp_path / "ranking")
    ease.save_ranking_model(spark, ranker, uri)
    loaded = ease.load_ranking_model(spark, uri)
    assert isinstance(loaded, ease.BlendedRanker)
    assert (loaded.weight, loaded.l2, loaded.rank) == (0.5, 5.0, 3)
    np.testing.assert_array_equal(loaded.movie_ids, ranker.movie_ids)
    np.testing.assert_allclose(loaded.weights, ranker.weights)


@pytest.mark.spark
def test_plain_als_ranker_loads_as_als(spark, blended, tmp_path):
    _, als, _ = blended
    uri = str(tmp_path / "ranking")
    ease.save_ranking_model(spark, als, uri)
    assert not isinstance(ease.load_ranking_model(spark, uri), ease.BlendedRanker)


@pytest.mark.spark
def test_blend_is_left_out_above_its_limits(spark, blended, monkeypatch):
    ratings, _, _ = blended
    interactions = ease.Interactions.of(ratings)
    assert ease.fits(interactions) is None
    monkeypatch.setattr(ease, "MAX_USER_VALUES", 10)
    assert "above the limit of 10 values" in ease.fits(interactions)
    monkeypatch.setattr(ease, "MAX_RATINGS", 5)
    assert "above the limit of 5" in ease.fits(interactions)


@pytest.mark.spark
def test_precision_table_scores_like_the_ranking_metrics(spark, blended):
    """ALS alone in the table equals precision@k of the ALS lists, rated movies left out."""
    ratings, als, _ = blended
    fit, held_out = ratings.randomSplit([0.7, 0.3], seed=3)
    model = fit_ranking_model(fit, rank=3, reg_param=0.1, max_iter=3, seed=1)
    interactions = ease.Interactions.of(fit)
    k = 2
    users, movies = ease.factor_arrays(model, interactions)
    table = ease.precision_table(interactions, ease.Interactions.of(held_out), users, movies, k)
    scores = users @ movies.T
    scores[interactions.marks() > 0] = -np.inf
    relevant: dict[int, set[int]] = {}
    for row in held_out.collect():
        relevant.setdefault(row["userId"], set()).add(row["movieId"])
    expected = []
    for position, user in enumerate(interactions.user_ids):
        if int(user) in relevant:
            top = interactions.movie_ids[np.argsort(-scores[position], kind="stable")[:k]]
            expected.append(precision_at_k(top.tolist(), relevant[int(user)], k))
    assert table[(0.0, None)] == pytest.approx(np.mean(expected))
    assert len(table) == 1 + len(ease.L2_GRID) * (len(ease.WEIGHT_GRID) - 1)
