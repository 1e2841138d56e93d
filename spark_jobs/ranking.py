"""Ranking metrics at k: precision, recall, NDCG and MAP of top-k lists against held-out movies.

Relevance is binary: a recommended movie is relevant when the user rated it in the
held-out set, whatever the rating. The per-user definitions are the usual ones
(as in Spark's RankingMetrics):

- precision@k = hits in the first k / k
- recall@k = hits in the first k / number of relevant movies
- NDCG@k = DCG / ideal DCG, where a hit at 1-based position i adds 1 / log2(i + 1)
  and the ideal list puts min(k, relevant) hits first
- AP@k = sum of precision@i over the positions i <= k that hold a hit, divided by
  min(k, number of relevant movies); MAP@k is its mean over users

Each metric is averaged over the users that have at least one relevant movie and
received a list.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from collections.abc import Sequence
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.schema import MOVIE
from spark_jobs.schema import RANK
from spark_jobs.schema import USER

METRIC_NAMES = ("precision", "recall", "ndcg", "map")

PROTOCOL = (
    "For each user with held-out ratings and a training history, the top-k list is drawn "
    "from the movies that user did not rate in training. A listed movie counts as a hit when "
    "the user rated it in the held-out set, whatever the rating. precision@k = hits / k; "
    "recall@k = hits / held-out movies; NDCG@k uses gain 1 / log2(position + 1) with binary "
    "relevance; MAP@k averages precision at each hit over min(k, held-out movies). Metrics "
    "are means over those users."
)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def precision_at_k(recommended: Sequence[Any], relevant: Collection[Any], k: int) -> float:
    """Return the share of the first k recommendations that are relevant, over k."""
    _check_k(k)
    hits = sum(1 for item in recommended[:k] if item in relevant)
    return hits / k


def recall_at_k(recommended: Sequence[Any], relevant: Collection[Any], k: int) -> float:
    """Return the share of relevant items found in the first k; 0 when nothing is relevant."""
    _check_k(k)
    if not relevant:
        return 0.0
    hits = sum(1 for item in recommended[:k] if item in relevant)
    return hits / len(relevant)


def ndcg_at_k(recommended: Sequence[Any], relevant: Collection[Any], k: int) -> float:
    """Return binary-relevance NDCG of the first k recommendations; 0 when nothing is relevant."""
    _check_k(k)
    if not relevant:
        return 0.0
    dcg = sum(
        1.0 / math.log2(position + 2)
        for position, item in enumerate(recommended[:k])
        if item in relevant
    )
    ideal = sum(1.0 / math.log2(position + 2) for position in range(min(k, len(relevant))))
    return dcg / ideal


def average_precision_at_k(recommended: Sequence[Any], relevant: Collection[Any], k: int) -> float:
    """Return AP@k: precision at each hit within the first k, summed, over min(k, relevant)."""
    _check_k(k)
    if not relevant:
        return 0.0
    hits = 0
    total = 0.0
    for position, item in enumerate(recommended[:k]):
        if item in relevant:
            hits += 1
            total += hits / (position + 1)
    return total / min(k, len(relevant))


def user_metrics(recommended: Sequence[Any], relevant: Collection[Any], k: int) -> dict[str, float]:
    """Return precision, recall, NDCG and AP at k of one user's list."""
    relevant = set(relevant)
    return {
        "precision": precision_at_k(recommended, relevant, k),
        "recall": recall_at_k(recommended, relevant, k),
        "ndcg": ndcg_at_k(recommended, relevant, k),
        "map": average_precision_at_k(recommended, relevant, k),
    }


LIST = "list"


def ranking_metrics(lists: DataFrame, relevant: DataFrame, k: int) -> dict[str, Any]:
    """Return mean precision, recall, NDCG and MAP at k over users, and the user count.

    ``lists`` has one row per recommendation (userId, rank, movieId), rank starting
    at 1; ``relevant`` has the held-out (userId, movieId) pairs. Users found in
    only one of the two are left out; ``users`` counts those evaluated. Raises
    ValueError when no user is in both.
    """
    by_list = ranking_metrics_by_list(lists.withColumn(LIST, F.lit("")), relevant, k)
    if "" not in by_list:
        raise ValueError("no user has both a top-k list and held-out ratings")
    return by_list[""]


def ranking_metrics_by_list(lists: DataFrame, relevant: DataFrame, k: int) -> dict[str, Any]:
    """Return ranking_metrics for each value of the ``list`` column of ``lists``, in one pass.

    A list name is missing from the result when none of its users has held-out ratings.
    """
    _check_k(k)
    ordered = lists.groupBy(LIST, USER).agg(
        F.sort_array(F.collect_list(F.struct(F.col(RANK), F.col(MOVIE)))).alias("ordered")
    )
    held_out = relevant.groupBy(USER).agg(F.collect_set(MOVIE).alias("relevant"))
    joined = ordered.join(held_out, USER).select(
        LIST, F.col("ordered." + MOVIE).alias("recommended"), "relevant"
    )

    def score(row: Any) -> tuple[str, tuple[float, float, float, float, int]]:
        values = user_metrics(row["recommended"], row["relevant"], k)
        return row[LIST], (values["precision"], values["recall"], values["ndcg"], values["map"], 1)

    def add(left: tuple, right: tuple) -> tuple:
        return tuple(a + b for a, b in zip(left, right, strict=True))

    results: dict[str, Any] = {}
    for name, totals in joined.rdd.map(score).reduceByKey(add).collect():
        users = totals[-1]
        result: dict[str, Any] = {
            f"{metric}_at_{k}": value / users
            for metric, value in zip(METRIC_NAMES, totals, strict=False)
        }
        result["k"] = k
        result["users"] = users
        results[name] = result
    return results
