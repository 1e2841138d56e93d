"""Ranking metrics on hand-made lists whose answers are worked out by hand."""

from __future__ import annotations

import math

import pytest

from spark_jobs.ranking import average_precision_at_k
from spark_jobs.ranking import ndcg_at_k
from spark_jobs.ranking import precision_at_k
from spark_jobs.ranking import ranking_metrics
from spark_jobs.ranking import recall_at_k
from spark_jobs.ranking import user_metrics

TOLERANCE = 1e-12


def test_perfect_ranking_scores_one():
    relevant = {1, 2, 3}
    metrics = user_metrics([1, 2, 3, 4, 5], relevant, 3)
    assert metrics["precision"] == pytest.approx(1.0, abs=TOLERANCE)
    assert metrics["recall"] == pytest.approx(1.0, abs=TOLERANCE)
    assert metrics["ndcg"] == pytest.approx(1.0, abs=TOLERANCE)
    assert metrics["map"] == pytest.approx(1.0, abs=TOLERANCE)


def test_reversed_ranking_scores_formula():
    # Two relevant movies placed last of five, k = 5: hits at positions 4 and 5.
    recommended = [10, 11, 12, 2, 1]
    relevant = {1, 2}
    expected_dcg = 1 / math.log2(5) + 1 / math.log2(6)
    expected_ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert precision_at_k(recommended, relevant, 5) == pytest.approx(2 / 5, abs=TOLERANCE)
    assert recall_at_k(recommended, relevant, 5) == pytest.approx(1.0, abs=TOLERANCE)
    assert ndcg_at_k(recommended, relevant, 5) == pytest.approx(
        expected_dcg / expected_ideal, abs=TOLERANCE
    )
    assert average_precision_at_k(recommended, relevant, 5) == pytest.approx(
        (1 / 4 + 2 / 5) / 2, abs=TOLERANCE
    )


def test_precision_divides_by_k_for_short_lists():
    assert precision_at_k([1], {1, 2}, 4) == pytest.approx(0.25, abs=TOLERANCE)


def test_recall_counts_only_first_k():
    assert recall_at_k([5, 1, 2], {1, 2}, 2) == pytest.approx(0.5, abs=TOLERANCE)


def test_map_divides_by_k_when_more_relevant():
    # One hit at position 1, k = 2, five relevant movies: AP = (1/1) / min(2, 5).
    assert average_precision_at_k([1, 9], {1, 2, 3, 4, 5}, 2) == pytest.approx(0.5, abs=TOLERANCE)


def test_no_relevant_scores_zero():
    metrics = user_metrics([1, 2], set(), 2)
    assert metrics == {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "map": 0.0}


@pytest.mark.parametrize("metric", [precision_at_k, recall_at_k, ndcg_at_k, average_precision_at_k])
def test_k_below_one_raises(metric):
    with pytest.raises(ValueError, match="k must be at least 1"):
        metric([1], {1}, 0)


@pytest.mark.spark
def test_spark_metrics_average_users(spark):
    # User 1 ranks perfectly, user 2 has one hit at position 2, user 3 has no
    # held-out ratings and user 4 no list: only users 1 and 2 count.
    lists = spark.createDataFrame(
        [(1, 2, 20), (1, 1, 10), (2, 1, 30), (2, 2, 40), (3, 1, 50)],
        "userId int, rank int, movieId int",
    )
    relevant = spark.createDataFrame(
        [(1, 10), (1, 20), (2, 40), (4, 10)], "userId int, movieId int"
    )
    result = ranking_metrics(lists, relevant, 2)
    second_ndcg = (1 / math.log2(3)) / 1.0
    assert result["users"] == 2
    assert result["precision_at_2"] == pytest.approx((1.0 + 0.5) / 2, abs=TOLERANCE)
    assert result["recall_at_2"] == pytest.approx((1.0 + 1.0) / 2, abs=TOLERANCE)
    assert result["ndcg_at_2"] == pytest.approx((1.0 + second_ndcg) / 2, abs=TOLERANCE)
    assert result["map_at_2"] == pytest.approx((1.0 + 0.5) / 2, abs=TOLERANCE)


@pytest.mark.spark
def test_spark_metrics_order_by_rank_column(spark):
    # Rows arrive out of order; rank, not row order, decides the positions.
    lists = spark.createDataFrame(
        [(1, 3, 30), (1, 1, 10), (1, 2, 20)], "userId int, rank int, movieId int"
    )
    relevant = spark.createDataFrame([(1, 10)], "userId int, movieId int")
    result = ranking_metrics(lists, relevant, 1)
    assert result["precision_at_1"] == pytest.approx(1.0, abs=TOLERANCE)


@pytest.mark.spark
def test_spark_metrics_without_common_users_raise(spark):
    lists = spark.createDataFrame([(1, 1, 10)], "userId int, rank int, movieId int")
    relevant = spark.createDataFrame([(2, 10)], "userId int, movieId int")
    with pytest.raises(ValueError, match="no user"):
        ranking_metrics(lists, relevant, 1)
