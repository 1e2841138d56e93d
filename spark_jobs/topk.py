"""Top-k movie lists per user from the fitted factor models, never a movie the user rated.

Three ways to build a list, all returning the rating model's predicted rating for
every listed movie:

- ``rating``: every unrated movie ordered by predicted rating (the course's list).
- ``implicit``: ordered by the implicit-feedback ranking model's score.
- ``reranked``: the ranking model's top ``candidates`` movies, then ordered by
  predicted rating. With ``candidates == k`` the list contains exactly the ranking
  model's top k, so it keeps its precision and recall, shown in rating order.

Scores are computed in the Python workers with numpy: the movie factors are
broadcast (movies x rank floats) and each partition scores its users against all
movies in chunks, so the cost grows with users x movies but nothing of that size
is ever materialised. A ranking model blended with EASE (``spark_jobs.ease``)
also broadcasts EASE's weights, and each user's EASE scores come from the movies
that user rated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType
from pyspark.sql.types import IntegerType
from pyspark.sql.types import StringType
from pyspark.sql.types import StructField
from pyspark.sql.types import StructType

from spark_jobs.ease import BlendedRanker
from spark_jobs.ease import blend_scores
from spark_jobs.model import MOVIE_BIAS
from spark_jobs.model import USER_BIAS
from spark_jobs.model import RatingModel
from spark_jobs.schema import MOVIE
from spark_jobs.schema import PREDICTED_RATING
from spark_jobs.schema import RANK
from spark_jobs.schema import USER

logger = logging.getLogger(__name__)

RATING_ORDER = "rating"
IMPLICIT_ORDER = "implicit"
RERANKED = "reranked"
STRATEGIES = (RATING_ORDER, IMPLICIT_ORDER, RERANKED)

SCORE = "score"

# Users scored together in one matrix product; bounds worker memory to
# USER_CHUNK x movies floats.
USER_CHUNK = 256

LIST = "list"

LIST_SCHEMA = StructType(
    [
        StructField(USER, IntegerType(), nullable=False),
        StructField(RANK, IntegerType(), nullable=False),
        StructField(MOVIE, IntegerType(), nullable=False),
        StructField(PREDICTED_RATING, DoubleType(), nullable=False),
        StructField(SCORE, DoubleType(), nullable=False),
    ]
)
NAMED_LIST_SCHEMA = StructType(
    [StructField(LIST, StringType(), nullable=False), *LIST_SCHEMA.fields]
)


@dataclass(frozen=True)
class ListSpec:
    """How to build a list: the strategy and, for ``reranked``, the candidate pool size."""

    strategy: str
    candidates: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown list strategy {self.strategy!r}; allowed: {STRATEGIES}")
        if self.strategy == RERANKED and self.candidates < 1:
            raise ValueError("the reranked strategy needs a candidate pool of at least 1")

    @property
    def name(self) -> str:
        if self.strategy == RERANKED:
            return f"{RERANKED}_{self.candidates}"
        return self.strategy

    @property
    def needs_ranking_model(self) -> bool:
        return self.strategy != RATING_ORDER

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "candidates": self.candidates, "name": self.name}


def _movie_matrices(
    rating_model: RatingModel, ranking_model: ALSModel | BlendedRanker | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Return movie ids (sorted), rating-model vectors [factors, bias, 1] and ranking vectors.

    Movies without ranking factors get zero vectors, so they score 0 there.
    """
    rows = (
        rating_model.factors.itemFactors.withColumnRenamed("id", MOVIE)
        .join(rating_model.baseline.movie_bias, MOVIE)
        .select(MOVIE, "features", MOVIE_BIAS)
        .orderBy(MOVIE)
        .collect()
    )
    ids = np.array([row[MOVIE] for row in rows], dtype=np.int64)
    rating_vectors = np.array(
        [list(row["features"]) + [row[MOVIE_BIAS], 1.0] for row in rows], dtype=np.float64
    )
    ranking_vectors = None
    if ranking_model is not None:
        rank = ranking_model.rank
        ranking_vectors = np.zeros((len(ids), rank), dtype=np.float64)
        for row in ranking_model.itemFactors.collect():
            position = np.searchsorted(ids, row["id"])
            if position < len(ids) and ids[position] == row["id"]:
                ranking_vectors[position] = row["features"]
    return ids, rating_vectors, ranking_vectors


@dataclass(frozen=True)
class EaseTerm:
    """EASE's part of a blended ranking, over the movie positions ``columns`` of the ids."""

    columns: np.ndarray
    weights: np.ndarray
    weight: float

    @classmethod
    def of(cls, ranker: BlendedRanker, ids: np.ndarray) -> EaseTerm:
        positions = np.searchsorted(ids, ranker.movie_ids)
        positions = np.minimum(positions, len(ids) - 1)
        known = ids[positions] == ranker.movie_ids
        return cls(positions[known], ranker.weights[np.ix_(known, known)], ranker.weight)

    def scores(self, n_movies: int, rated: Sequence[np.ndarray]) -> np.ndarray:
        """Return each user's EASE scores over ``columns``: the sum of B's rows of rated movies."""
        slot = np.full(n_movies, -1, dtype=np.int64)
        slot[self.columns] = np.arange(len(self.columns))
        result = np.zeros((len(rated), len(self.columns)))
        for row, positions in enumerate(rated):
            covered = slot[positions]
            covered = covered[covered >= 0]
            if len(covered):
                result[row] = self.weights[covered].sum(axis=0)
        return result


def _user_rows(
    rating_model: RatingModel,
    ranking_model: ALSModel | BlendedRanker | None,
    rated: DataFrame,
    users: DataFrame | None,
) -> DataFrame:
    """Return one row per user: rating vector [factors, 1, bias], ranking vector, rated movies."""
    rating_users = (
        rating_model.factors.userFactors.withColumnRenamed("id", USER)
        .join(rating_model.baseline.user_bias, USER)
        .select(
            USER,
            F.concat(
                F.col("features"), F.array(F.lit(1.0).cast("float"), F.col(USER_BIAS).cast("float"))
            ).alias("rating_vector"),
        )
    )
    if users is not None:
        rating_users = rating_users.join(users.select(USER).distinct(), USER)
    if ranking_model is not None:
        ranking_users = ranking_model.userFactors.select(
            F.col("id").alias(USER), F.col("features").alias("ranking_vector")
        )
        rating_users = rating_users.join(ranking_users, USER, "left")
    else:
        rating_users = rating_users.withColumn("ranking_vector", F.lit(None).cast("array<float>"))
    history = rated.groupBy(USER).agg(F.collect_list(MOVIE).alias("rated"))
    return rating_users.join(history, USER, "left")


def _top_positions(scores: np.ndarray, count: int) -> np.ndarray:
    """Return the positions of the ``count`` highest finite scores, best first, ties by position."""
    finite = np.isfinite(scores)
    count = min(count, int(finite.sum()))
    if count == 0:
        return np.empty(0, dtype=np.int64)
    if count < len(scores):
        chosen = np.argpartition(-scores, count - 1)[:count]
    else:
        chosen = np.arange(len(scores))
    chosen = chosen[np.isfinite(scores[chosen])]
    # lexsort sorts by the last key first: score descending, then position.
    return chosen[np.lexsort((chosen, -scores[chosen]))]


def _rated_positions(ids: np.ndarray, rated: Sequence[int] | None) -> np.ndarray:
    """Return the positions in ``ids`` (sorted) of the rated movies that appear there."""
    if not rated:
        return np.empty(0, dtype=np.int64)
    rated_ids = np.asarray(rated, dtype=np.int64)
    positions = np.searchsorted(ids, rated_ids)
    inside = positions < len(ids)
    positions = positions[inside]
    return positions[ids[positions] == rated_ids[inside]]


def _one_list(
    spec: ListSpec, predicted: np.ndarray, ranked: np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the movie positions of one user's list, best first, and the scores it is ordered by.

    Rated movies are already -inf in both score arrays.
    """
    if spec.strategy == RATING_ORDER:
        top = _top_positions(predicted, k)
        return top, predicted[top]
    if spec.strategy == IMPLICIT_ORDER:
        top = _top_positions(ranked, k)
        return top, ranked[top]
    pool = _top_positions(ranked, max(spec.candidates, k))
    top = pool[np.lexsort((pool, -predicted[pool]))][:k]
    return top, ranked[top]


def _score_partition(
    rows: Iterable[Any],
    *,
    ids: np.ndarray,
    rating_vectors: np.ndarray,
    ranking_vectors: np.ndarray | None,
    global_mean: float,
    scale: tuple[float, float],
    specs: Sequence[ListSpec],
    k: int,
    ease_term: EaseTerm | None = None,
) -> Iterator[tuple[str, int, int, int, float, float]]:
    rows = list(rows)
    for start in range(0, len(rows), USER_CHUNK):
        chunk = rows[start : start + USER_CHUNK]
        user_matrix = np.array([row["rating_vector"] for row in chunk], dtype=np.float64)
        predicted = user_matrix @ rating_vectors.T + global_mean
        ranked = None
        if ranking_vectors is not None:
            width = ranking_vectors.shape[1]
            ranking_matrix = np.array(
                [row["ranking_vector"] or np.zeros(width) for row in chunk], dtype=np.float64
            )
            ranked = ranking_matrix @ ranking_vectors.T
        rated = [_rated_positions(ids, row["rated"]) for row in chunk]
        if ranked is not None and ease_term is not None:
            ease_scores = ease_term.scores(len(ids), rated)
            ranked = blend_scores(ranked, ease_scores, ease_term.columns, ease_term.weight)
        for index, row in enumerate(chunk):
            exclude = rated[index]
            user_predicted = predicted[index]
            user_predicted[exclude] = -np.inf
            user_ranked = None
            if ranked is not None:
                user_ranked = ranked[index]
                user_ranked[exclude] = -np.inf
            for spec in specs:
                top, scores = _one_list(spec, user_predicted, user_ranked, k)
                ratings = np.clip(user_predicted[top], scale[0], scale[1])
                for position, movie_index in enumerate(top):
                    yield (
                        spec.name,
                        int(row[USER]),
                        position + 1,
                        int(ids[movie_index]),
                        float(ratings[position]),
                        float(scores[position]),
                    )


def top_k_lists(
    rating_model: RatingModel,
    ranking_model: ALSModel | BlendedRanker | None,
    rated: DataFrame,
    k: int,
    specs: Sequence[ListSpec],
    users: DataFrame | None = None,
) -> DataFrame:
    """Return the lists of several specs in one pass, named in a ``list`` column.

    Columns are list, userId, rank, movieId, predicted_rating and score, as in top_k.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not specs:
        raise ValueError("top_k_lists needs at least one list spec")
    needs_ranking = any(spec.needs_ranking_model for spec in specs)
    if needs_ranking and ranking_model is None:
        raise ValueError("the implicit and reranked lists need the ranking model")
    ranking_model = ranking_model if needs_ranking else None
    spark = rated.sparkSession
    ids, rating_vectors, ranking_vectors = _movie_matrices(rating_model, ranking_model)
    ease_term = (
        EaseTerm.of(ranking_model, ids) if isinstance(ranking_model, BlendedRanker) else None
    )
    broadcast = spark.sparkContext.broadcast((ids, rating_vectors, ranking_vectors, ease_term))
    global_mean = rating_model.baseline.global_mean
    scale = (rating_model.scale.minimum, rating_model.scale.maximum)
    user_rows = _user_rows(rating_model, ranking_model, rated, users)
    specs = list(specs)

    def score(rows: Iterable[Any]) -> Iterator[tuple[str, int, int, int, float, float]]:
        movie_ids, movie_rating_vectors, movie_ranking_vectors, movie_ease = broadcast.value
        return _score_partition(
            rows,
            ids=movie_ids,
            rating_vectors=movie_rating_vectors,
            ranking_vectors=movie_ranking_vectors,
            global_mean=global_mean,
            scale=scale,
            specs=specs,
            k=k,
            ease_term=movie_ease,
        )

    lists = user_rows.rdd.mapPartitions(score)
    return spark.createDataFrame(lists, NAMED_LIST_SCHEMA)


def top_k(
    rating_model: RatingModel,
    ranking_model: ALSModel | BlendedRanker | None,
    rated: DataFrame,
    k: int,
    spec: ListSpec,
    users: DataFrame | None = None,
) -> DataFrame:
    """Return (userId, rank, movieId, predicted_rating, score) lists of up to k movies per user.

    ``rated`` contains the (userId, movieId) pairs to exclude; ``users`` limits the
    lists to those users (default: every user the rating model was fitted on).
    Rank 1 is the best; ``predicted_rating`` is the rating model's clipped
    prediction and ``score`` the value the list is ordered by. Movies the rating
    model was not fitted on are never listed.
    """
    lists = top_k_lists(rating_model, ranking_model, rated, k, [spec], users)
    return lists.drop(LIST)
