"""Blended ranking model: implicit-feedback ALS plus EASE, an item-to-item model with a closed form.

EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", 2019) scores a
user's movies as ``x B``, where ``x`` marks the movies the user rated and

    P = (X^T X + l2 * I)^-1,    B = I - P / diag(P)   (so diag(B) = 0),

which is the least-squares fit of each movie's column from the others with no
movie predicting itself. It ranks by co-occurrence, where ALS ranks by latent
taste, and the two make different mistakes. The blend ranks a user's movies by

    (1 - weight) * als / sd(als) + weight * ease / sd(ease),

where each standard deviation is over that user's scores, so neither model's
scale dominates. Tune chooses l2 and the weight (weight 0 is ALS alone) by mean
precision@k on validation carves of the training split.

The top-k code computes the EASE term in the workers from each user's rated
movies, with B broadcast. EASE needs that dense movies x movies matrix, so it
covers the MAX_MOVIES movies with the most ratings; the others get no EASE
term. Tune leaves the blend out when the fit set has more than MAX_RATINGS
ratings, or when its users x movies scores would hold more than
MAX_USER_VALUES numbers, since tune scores them densely on the driver.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import SparkSession

from spark_jobs import fs
from spark_jobs.layout import join_uri
from spark_jobs.model import FactorTables
from spark_jobs.schema import MOVIE
from spark_jobs.schema import RATING
from spark_jobs.schema import USER
from spark_jobs.sweep import RatingsByRow
from spark_jobs.sweep import collect_arrays
from spark_jobs.sweep import index_of

logger = logging.getLogger(__name__)

MAX_MOVIES = 1500
MAX_RATINGS = 5_000_000
# Tune keeps about five dense users x movies float64 arrays at once on the driver,
# so this many values needs about 1 GB there.
MAX_USER_VALUES = 25_000_000

L2_GRID = (100.0, 300.0, 900.0)
# On three validation carves the best weight was 0.2 on ml-100k's per-user training
# split and 0.4 to 0.5 on ml-latest-small's, so the grid is finer below 0.5.
WEIGHT_GRID = (0.0, 0.2, 0.3, 0.4, 0.5, 0.7)

ALS_ONLY = {"weight": 0.0, "l2": None}

_ALS = "als"
_WEIGHTS = "ease_weights.npz"
_BLEND_JSON = "blend.json"


@dataclass(frozen=True)
class Interactions:
    """The fit ratings as dense index pairs: ``users[i]`` rated ``movies[i]`` as ``ratings[i]``."""

    user_ids: np.ndarray
    movie_ids: np.ndarray
    users: np.ndarray
    movies: np.ndarray
    ratings: np.ndarray

    @classmethod
    def of(cls, frame: DataFrame) -> Interactions:
        users, movies, ratings = collect_arrays(
            frame, [USER, MOVIE, RATING], [np.int64, np.int64, np.float32]
        )
        return cls.of_arrays(users, movies, ratings)

    @classmethod
    def of_arrays(cls, users: np.ndarray, movies: np.ndarray, ratings: np.ndarray) -> Interactions:
        user_ids, user_index = np.unique(users, return_inverse=True)
        movie_ids, movie_index = np.unique(movies, return_inverse=True)
        return cls(user_ids, movie_ids, user_index, movie_index, ratings)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.movie_ids)

    def by_user(self) -> RatingsByRow:
        return RatingsByRow.of(self.users, self.movies, self.ratings, len(self.user_ids))

    def by_movie(self) -> RatingsByRow:
        return RatingsByRow.of(self.movies, self.users, self.ratings, len(self.movie_ids))

    def marks(self) -> np.ndarray:
        """Return the users x movies matrix with 1 where the user rated the movie."""
        matrix = np.zeros(self.shape)
        matrix[self.users, self.movies] = 1.0
        return matrix


def fits(interactions: Interactions) -> str | None:
    """Return why the blend cannot be fitted on these interactions, or None when it can."""
    n_users, n_movies = interactions.shape
    if len(interactions.users) > MAX_RATINGS:
        return f"the fit set has {len(interactions.users)} ratings, above the limit of {MAX_RATINGS}"
    if n_users * n_movies > MAX_USER_VALUES:
        return (
            f"{n_users} users x {n_movies} movies of scores is above the limit of "
            f"{MAX_USER_VALUES} values"
        )
    return None


def most_rated(interactions: Interactions, limit: int = MAX_MOVIES) -> np.ndarray:
    """Return the positions of the ``limit`` most-rated movies, in id order (ties by id)."""
    counts = np.bincount(interactions.movies, minlength=len(interactions.movie_ids))
    chosen = np.argsort(-counts, kind="stable")[:limit]
    return np.sort(chosen)


def item_weights(marks: np.ndarray, l2: float, gram: np.ndarray | None = None) -> np.ndarray:
    """Return EASE's movies x movies weights B for the columns of ``marks``.

    ``gram`` is ``marks^T marks`` when the caller already has it.
    """
    if l2 <= 0:
        raise ValueError(f"EASE needs l2 above 0, got {l2}")
    if gram is None:
        gram = cooccurrence(marks)
    regularised = gram.astype(np.float64)
    regularised[np.diag_indices_from(regularised)] += l2
    inverse = np.linalg.inv(regularised)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


def cooccurrence(marks: np.ndarray) -> np.ndarray:
    """Return ``marks^T marks``: how many users rated both movies. float32 is exact for counts."""
    single = marks.astype(np.float32)
    return single.T @ single


def factor_arrays(model: ALSModel, interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Return the ALS user and movie factors in the interactions' dense order (zeros if absent)."""
    users = np.zeros((len(interactions.user_ids), model.rank))
    movies = np.zeros((len(interactions.movie_ids), model.rank))
    for target, ids, frame in (
        (users, interactions.user_ids, model.userFactors),
        (movies, interactions.movie_ids, model.itemFactors),
    ):
        rows = frame.collect()
        positions = index_of(ids, np.array([row["id"] for row in rows], dtype=np.int64))
        for position, row in zip(positions, rows, strict=True):
            if position >= 0:
                target[position] = row["features"]
    return users, movies


def blend_scores(
    als_scores: np.ndarray, ease_scores: np.ndarray, columns: np.ndarray, weight: float
) -> np.ndarray:
    """Return ``(1 - weight) * als / sd(als) + weight * ease / sd(ease)`` for each row.

    ``als_scores`` cover every movie; ``ease_scores`` cover the movies at positions
    ``columns``, and the others get no EASE term. A row's standard deviation is
    taken over the movies its scores cover; a constant row contributes nothing.
    """
    blended = als_scores * ((1.0 - weight) * _inverse_spread(als_scores))[:, None]
    blended[:, columns] += ease_scores * (weight * _inverse_spread(ease_scores))[:, None]
    return blended


def _inverse_spread(scores: np.ndarray) -> np.ndarray:
    spread = scores.std(axis=1)
    return np.divide(1.0, spread, out=np.zeros_like(spread), where=spread > 0)


@dataclass
class BlendedRanker:
    """Implicit ALS blended with EASE: what the top-k lists need to rank by the blend.

    ``als`` is a fitted ALSModel, or in tune the factor tables of a NumPy fit
    (``spark_jobs.implicit``), which tune scores but never saves.
    """

    als: ALSModel | FactorTables
    movie_ids: np.ndarray
    weights: np.ndarray
    weight: float
    l2: float

    @property
    def userFactors(self) -> DataFrame:  # noqa: N802 - the ALSModel attribute name
        return self.als.userFactors

    @property
    def itemFactors(self) -> DataFrame:  # noqa: N802 - the ALSModel attribute name
        return self.als.itemFactors

    @property
    def rank(self) -> int:
        return self.als.rank

    def save(self, spark: SparkSession, uri: str) -> None:
        self.als.write().overwrite().save(join_uri(uri, _ALS))
        buffer = io.BytesIO()
        np.savez(buffer, movie_ids=self.movie_ids, weights=self.weights.astype(np.float32))
        fs.write_bytes(spark, join_uri(uri, _WEIGHTS), buffer.getvalue())
        fs.write_json(spark, join_uri(uri, _BLEND_JSON), {"weight": self.weight, "l2": self.l2})

    @classmethod
    def load(cls, spark: SparkSession, uri: str) -> BlendedRanker:
        settings = fs.read_json(spark, join_uri(uri, _BLEND_JSON))
        arrays = np.load(io.BytesIO(fs.read_bytes(spark, join_uri(uri, _WEIGHTS))))
        return cls(
            als=ALSModel.load(join_uri(uri, _ALS)),
            movie_ids=arrays["movie_ids"],
            weights=arrays["weights"],
            weight=float(settings["weight"]),
            l2=float(settings["l2"]),
        )

    @staticmethod
    def is_saved_at(spark: SparkSession, uri: str) -> bool:
        return fs.exists(spark, join_uri(uri, _BLEND_JSON))


@dataclass(frozen=True)
class CarveScorer:
    """A validation carve ready to score rankers: its users' rated and held-out movies.

    Rows are the users with a held-out rating, in the dense order of the fit
    interactions. ``ease_scores`` maps each l2 of the grid to EASE's scores of the
    ``columns``. They do not depend on the ALS fit, so tune computes them while
    ALS fits.
    """

    evaluated: np.ndarray
    rated: np.ndarray
    relevant: np.ndarray
    columns: np.ndarray
    ease_scores: dict[float, np.ndarray]

    @classmethod
    def of(cls, interactions: Interactions, held_out: Interactions) -> CarveScorer:
        user_rows = index_of(interactions.user_ids, held_out.user_ids[held_out.users])
        movie_rows = index_of(interactions.movie_ids, held_out.movie_ids[held_out.movies])
        known = user_rows >= 0
        evaluated = np.unique(user_rows[known])
        seen = known & (movie_rows >= 0)
        relevant = np.zeros((len(evaluated), interactions.shape[1]), dtype=bool)
        relevant[np.searchsorted(evaluated, user_rows[seen]), movie_rows[seen]] = True
        marks = interactions.marks()
        columns = most_rated(interactions)
        ease_marks = marks[:, columns]
        gram = cooccurrence(ease_marks)
        evaluated_marks = ease_marks[evaluated]
        ease_scores = {
            l2: (evaluated_marks @ item_weights(ease_marks, l2, gram)).astype(np.float32)
            for l2 in L2_GRID
        }
        return cls(evaluated, marks[evaluated] > 0, relevant, columns, ease_scores)

    def table(
        self, als_users: np.ndarray, als_movies: np.ndarray, k: int
    ) -> dict[tuple[float, float | None], float]:
        """Return mean precision@k for ALS alone and every (weight, l2) of the grid.

        ``als_users`` and ``als_movies`` are the implicit ALS factors in the dense
        order of the fit interactions. The mean is over the users with a held-out
        rating. A list is the k best movies the user did not rate, and a hit is a
        held-out movie, as in ``spark_jobs.ranking``.
        """
        als_scores = als_users[self.evaluated] @ als_movies.T
        table: dict[tuple[float, float | None], float] = {}
        table[(0.0, None)] = self._mean_precision(als_scores, k)
        for l2, ease_scores in self.ease_scores.items():
            for weight in WEIGHT_GRID:
                if weight == 0.0:
                    continue
                scores = blend_scores(als_scores, ease_scores, self.columns, weight)
                table[(weight, l2)] = self._mean_precision(scores, k)
        return table

    def _mean_precision(self, scores: np.ndarray, k: int) -> float:
        if len(self.evaluated) == 0:
            return 0.0
        unrated = np.where(self.rated, -np.inf, scores)
        width = min(k, unrated.shape[1])
        top = np.argpartition(-unrated, width - 1, axis=1)[:, :width]
        listed = np.take_along_axis(np.isfinite(unrated), top, axis=1)
        hits = np.take_along_axis(self.relevant, top, axis=1) & listed
        return float(hits.sum(axis=1).mean() / k)


def precision_table(
    interactions: Interactions,
    held_out: Interactions,
    als_users: np.ndarray,
    als_movies: np.ndarray,
    k: int,
) -> dict[tuple[float, float | None], float]:
    """Return ``CarveScorer.table`` for one carve: precision@k of every ranker."""
    return CarveScorer.of(interactions, held_out).table(als_users, als_movies, k)


def choose(tables: list[dict[tuple[float, float | None], float]]) -> tuple[dict[str, Any], list]:
    """Return the (weight, l2) with the best precision averaged over carves, and the table.

    Ties go to the simpler model: a lower weight, then a lower l2.
    """
    rows = []
    for key in tables[0]:
        weight, l2 = key
        by_carve = [table[key] for table in tables]
        rows.append(
            {"weight": weight, "l2": l2, "precision": float(np.mean(by_carve)), "by_carve": by_carve}
        )
    best = max(rows, key=lambda row: (row["precision"], -row["weight"], -(row["l2"] or 0.0)))
    return {"weight": best["weight"], "l2": best["l2"]}, rows


def blended_ranker(
    als_model: ALSModel | FactorTables, interactions: Interactions, weight: float, l2: float
) -> BlendedRanker:
    """Return the blend of ``als_model`` with EASE fitted on ``interactions``."""
    columns = most_rated(interactions)
    marks = interactions.marks()[:, columns]
    weights = item_weights(marks, l2).astype(np.float32)
    return BlendedRanker(als_model, interactions.movie_ids[columns], weights, weight, l2)


def save_ranking_model(spark: SparkSession, model: ALSModel | BlendedRanker, uri: str) -> None:
    """Write a ranking model: implicit ALS alone, or blended with EASE."""
    if isinstance(model, BlendedRanker):
        model.save(spark, uri)
    else:
        model.write().overwrite().save(uri)


def load_ranking_model(spark: SparkSession, uri: str) -> ALSModel | BlendedRanker:
    """Read a model written by ``save_ranking_model``."""
    if BlendedRanker.is_saved_at(spark, uri):
        return BlendedRanker.load(spark, uri)
    return ALSModel.load(uri)
