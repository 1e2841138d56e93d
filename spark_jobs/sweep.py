"""Tune's sweep: explicit ALS at every (rank, regParam), scored on validation after each iteration.

Spark's ALS returns only its final factors, so a study of RMSE against the number
of iterations costs one Spark fit per iteration count: 210 ALS iterations for 1..20
at a single grid point. This solver fits each grid point once and scores the
validation ratings after every iteration, so one pass gives the whole table of
RMSE by rank, regParam and iterations.

It minimises the objective of Spark's explicit ALS (``pyspark.ml.recommendation.ALS``
with ``implicitPrefs=False``, ``nonnegative=False``, Spark 3.5): squared error plus
``regParam * n * |factor|^2`` for each user and movie with ``n`` ratings. As in
Spark, factors start as Gaussian vectors scaled to unit length, and each iteration
solves the movie factors, then the user factors. The random start differs from
Spark's. So the RMSE after k iterations is close to a Spark fit's but not equal,
and a test compares the two on MovieLens.

Each grid point is one Spark task running NumPy on a broadcast copy of the ratings.
Every Python worker loads its own copy, at about 24 bytes per training rating. That suits the MovieLens catalogues up to ml-32m on
executors with a few GiB; beyond that, train with explicit ``--rank``,
``--reg-param`` and ``--max-iter`` instead of tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.model import MOVIE_BIAS
from spark_jobs.model import RESIDUAL
from spark_jobs.model import USER_BIAS
from spark_jobs.model import Baseline
from spark_jobs.model import FactorTables
from spark_jobs.model import RatingScale
from spark_jobs.schema import MOVIE
from spark_jobs.schema import RATING
from spark_jobs.schema import USER

# Upper bound on the float64 values in one batch of padded factors (64 MiB).
GRAM_BATCH_VALUES = 8 * 1024 * 1024

BASE = "base"


class SingularSystemError(ValueError):
    """An ALS normal equation had no unique solution, which only regParam 0 allows."""


@dataclass(frozen=True)
class RatingsByRow:
    """Ratings as compressed sparse rows: row i's columns are ``columns[indptr[i]:indptr[i+1]]``."""

    indptr: np.ndarray
    columns: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray, columns: np.ndarray, values: np.ndarray, n_rows: int):
        order = np.argsort(rows, kind="stable")
        counts = np.bincount(rows, minlength=n_rows)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, columns[order].astype(np.int32), values[order].astype(np.float32))

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)


@dataclass(frozen=True)
class SweepData:
    """Dense-indexed fit residuals, both ways round, and the validation ratings to score."""

    user_ids: np.ndarray
    movie_ids: np.ndarray
    by_user: RatingsByRow
    by_movie: RatingsByRow
    validation_users: np.ndarray
    validation_movies: np.ndarray
    # Global mean plus both biases for each validation rating: the prediction before ALS.
    validation_base: np.ndarray
    validation_ratings: np.ndarray
    scale_min: float
    scale_max: float

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_movies(self) -> int:
        return len(self.movie_ids)

    @property
    def n_validation(self) -> int:
        return len(self.validation_ratings)


def _partition_arrays(columns: list[str], dtypes: list[Any]):
    def convert(rows: Iterable[Any]) -> Iterator[tuple[np.ndarray, ...]]:
        values: list[list[Any]] = [[] for _ in columns]
        for row in rows:
            for position, column in enumerate(columns):
                values[position].append(row[column])
        yield tuple(np.asarray(value, dtype=dtype) for value, dtype in zip(values, dtypes, strict=True))

    return convert


def collect_arrays(frame: DataFrame, columns: list[str], dtypes: list[Any]) -> list[np.ndarray]:
    """Return ``columns`` of ``frame`` as NumPy arrays, converted inside each partition."""
    parts = frame.select(*columns).rdd.mapPartitions(_partition_arrays(columns, dtypes)).collect()
    if not parts:
        return [np.empty(0, dtype=dtype) for dtype in dtypes]
    return [np.concatenate([part[i] for part in parts]) for i in range(len(columns))]


def prepare(
    residuals: DataFrame, validation: DataFrame, baseline: Baseline, scale: RatingScale
) -> SweepData:
    """Collect the fit residuals and the scorable validation ratings as dense-indexed arrays.

    Validation ratings of a user or movie with no fit rating are left out, as a
    Spark ALS model with ``coldStartStrategy="drop"`` leaves them out.
    """
    users, movies, residual = collect_arrays(
        residuals, [USER, MOVIE, RESIDUAL], [np.int64, np.int64, np.float32]
    )
    if len(residual) == 0:
        raise ValueError("the fit set is empty, so tune has no ratings to fit ALS on")
    user_ids, user_index = np.unique(users, return_inverse=True)
    movie_ids, movie_index = np.unique(movies, return_inverse=True)

    base = F.lit(baseline.global_mean) + F.col(USER_BIAS) + F.col(MOVIE_BIAS)
    scored = baseline.add_biases(validation).select(USER, MOVIE, RATING, base.alias(BASE))
    v_users, v_movies, v_ratings, v_base = collect_arrays(
        scored, [USER, MOVIE, RATING, BASE], [np.int64, np.int64, np.float64, np.float64]
    )
    v_user_index, v_movie_index, known = pair_positions(user_ids, movie_ids, v_users, v_movies)
    return SweepData(
        user_ids=user_ids,
        movie_ids=movie_ids,
        by_user=RatingsByRow.of(user_index, movie_index, residual, len(user_ids)),
        by_movie=RatingsByRow.of(movie_index, user_index, residual, len(movie_ids)),
        validation_users=v_user_index[known].astype(np.int32),
        validation_movies=v_movie_index[known].astype(np.int32),
        validation_base=v_base[known],
        validation_ratings=v_ratings[known],
        scale_min=scale.minimum,
        scale_max=scale.maximum,
    )


def pair_positions(
    user_ids: np.ndarray, movie_ids: np.ndarray, users: np.ndarray, movies: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return each (user, movie) pair's positions in the sorted ids, and where both are known."""
    user_positions = index_of(user_ids, users)
    movie_positions = index_of(movie_ids, movies)
    return user_positions, movie_positions, (user_positions >= 0) & (movie_positions >= 0)


def index_of(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Return each id's position in ``sorted_ids``, or -1 where it is absent."""
    positions = np.searchsorted(sorted_ids, ids)
    positions = np.minimum(positions, len(sorted_ids) - 1)
    return np.where(sorted_ids[positions] == ids, positions, -1)


def initial_factors(count: int, rank: int, generator: np.random.Generator) -> np.ndarray:
    """Return Gaussian factor vectors scaled to unit length, as Spark's ALS starts."""
    factors = generator.standard_normal((count, rank))
    return factors / np.linalg.norm(factors, axis=1, keepdims=True)


def row_batches(counts: np.ndarray, rank: int, at_once: int = 1) -> Iterator[np.ndarray]:
    """Yield batches of row numbers whose rating counts share a power-of-two width.

    A batch is padded to its width, so padding at most doubles the work. Its padded
    factors plus one rank x rank system per row contain at most GRAM_BATCH_VALUES /
    ``at_once`` values unless one row alone is wider, so a caller that holds
    ``at_once`` batches at a time stays within GRAM_BATCH_VALUES.
    """
    budget = GRAM_BATCH_VALUES // at_once
    widths = np.left_shift(1, np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64))
    for width in np.unique(widths):
        rows = np.flatnonzero(widths == width)
        per_batch = max(1, budget // ((int(width) + rank) * rank))
        for first in range(0, len(rows), per_batch):
            yield rows[first : first + per_batch]


def solve_factors(ratings: RatingsByRow, fixed: np.ndarray, reg_param: float) -> np.ndarray:
    """Return the least-squares factors of every row given the other side's ``fixed`` factors.

    Row i solves ``(Y_i^T Y_i + reg_param * n_i * I) x = Y_i^T r_i`` over its ``n_i``
    ratings, as Spark's explicit ALS does. Rows are padded with zeros to batches of
    equal width. Raises SingularSystemError when a system is singular, which needs
    regParam 0.
    """
    rank = fixed.shape[1]
    counts = ratings.counts
    factors = np.empty((len(counts), rank))
    for rows in row_batches(counts, rank):
        width = int(counts[rows].max())
        offsets = np.arange(width)
        present = offsets < counts[rows][:, None]
        positions = np.where(present, ratings.indptr[rows][:, None] + offsets, 0)
        others = fixed[ratings.columns[positions]] * present[..., None]
        values = np.where(present, ratings.values[positions], 0.0)
        penalty = reg_param * counts[rows]
        try:
            if width < rank:
                factors[rows] = _solve_through_ratings(others, values, present, penalty)
            else:
                factors[rows] = _solve_through_factors(others, values, penalty)
        except np.linalg.LinAlgError as error:
            raise SingularSystemError(
                f"ALS normal equations are singular at regParam {reg_param:g}. "
                f"Use a regParam above 0."
            ) from error
    return factors


def _solve_through_factors(others: np.ndarray, values: np.ndarray, penalty: np.ndarray):
    """Solve the rank x rank normal equations ``(Y^T Y + p I) x = Y^T r``."""
    rank = others.shape[2]
    transposed = others.transpose(0, 2, 1)
    gram = np.matmul(transposed, others)
    diagonal = np.arange(rank)
    gram[:, diagonal, diagonal] += penalty[:, None]
    rhs = np.matmul(transposed, values[..., None])
    return np.linalg.solve(gram, rhs)[..., 0]


def _solve_through_ratings(
    others: np.ndarray, values: np.ndarray, present: np.ndarray, penalty: np.ndarray
):
    """Solve the same system through the width x width matrix ``Y Y^T``, for rows with few ratings.

    ``(Y^T Y + p I)^-1 Y^T = Y^T (Y Y^T + p I)^-1``, so ``x = Y^T z`` where
    ``(Y Y^T + p I) z = r``, which is smaller when a row has fewer ratings than the
    rank. Padding positions get 1 on the diagonal so that their ``z`` is 0.
    """
    width = others.shape[1]
    kernel = np.matmul(others, others.transpose(0, 2, 1))
    diagonal = np.arange(width)
    kernel[:, diagonal, diagonal] += np.where(present, penalty[:, None], 1.0)
    weights = np.linalg.solve(kernel, values[..., None])
    return np.matmul(others.transpose(0, 2, 1), weights)[..., 0]


def validation_rmse(data: SweepData, users: np.ndarray, movies: np.ndarray) -> float:
    """Return the RMSE of the clipped predictions on the validation ratings."""
    interaction = np.einsum(
        "ij,ij->i", users[data.validation_users], movies[data.validation_movies]
    )
    prediction = np.clip(data.validation_base + interaction, data.scale_min, data.scale_max)
    return float(np.sqrt(np.mean((prediction - data.validation_ratings) ** 2)))


def fit_factors(
    data: SweepData, *, rank: int, reg_param: float, max_iter: int, seed: int, scored: bool = True
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Fit ALS for ``max_iter`` iterations.

    Returns the user and movie factors and, when ``scored``, the validation RMSE
    after each iteration.
    """
    generator = np.random.default_rng(seed)
    users = initial_factors(data.n_users, rank, generator)
    movies = initial_factors(data.n_movies, rank, generator)
    scores = []
    for _ in range(max_iter):
        movies = solve_factors(data.by_movie, users, reg_param)
        users = solve_factors(data.by_user, movies, reg_param)
        if scored:
            scores.append(validation_rmse(data, users, movies))
    return users, movies, scores


def rmse_by_iteration(
    data: SweepData, *, rank: int, reg_param: float, max_iter: int, seed: int
) -> list[float]:
    """Return the validation RMSE after each of ``max_iter`` ALS iterations."""
    _, _, scores = fit_factors(
        data, rank=rank, reg_param=reg_param, max_iter=max_iter, seed=seed
    )
    return scores


def factor_tables(
    spark: SparkSession, data: SweepData, *, rank: int, reg_param: float, max_iter: int, seed: int
) -> FactorTables:
    """Fit ALS on the driver and return its factors as DataFrames shaped like an ALSModel's."""
    users, movies, _ = fit_factors(
        data, rank=rank, reg_param=reg_param, max_iter=max_iter, seed=seed, scored=False
    )
    return FactorTables.of(spark, data.user_ids, users, data.movie_ids, movies)


def sweep(
    spark_context: Any,
    data: SweepData,
    points: list[tuple[int, float]],
    *,
    max_iter: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Return one row per (rank, regParam, iterations) with its validation RMSE.

    Each grid point runs as one Spark task on a broadcast copy of ``data``.
    """
    if data.n_validation == 0:
        raise ValueError(
            "no validation rating has a user and movie seen in the fit set, so tune "
            "cannot score any model; use a larger --validation-fraction or more ratings"
        )
    curves = run_tasks(
        spark_context,
        data,
        points,
        lambda shared, point: (point, _curve(shared, point, max_iter, seed)),
    )
    rows = []
    for (rank, reg_param), scores in curves:
        for iterations, rmse in enumerate(scores, start=1):
            rows.append({"rank": rank, "regParam": reg_param, "maxIter": iterations, "rmse": rmse})
    return rows


def run_tasks(
    spark_context: Any, data: Any, items: list[Any], task: Callable[[Any, Any], Any]
) -> list[Any]:
    """Return ``[task(data, item) for item in items]``, one Spark task per item.

    ``data`` is broadcast once, so every task reads the same copy.
    """
    shared = spark_context.broadcast(data)
    try:
        return (
            spark_context.parallelize(items, len(items))
            .map(lambda item: task(shared.value, item))
            .collect()
        )
    finally:
        shared.unpersist()


def _curve(data: SweepData, point: tuple[int, float], max_iter: int, seed: int) -> list[float]:
    rank, reg_param = point
    return rmse_by_iteration(data, rank=rank, reg_param=reg_param, max_iter=max_iter, seed=seed)
