"""Explore: summary statistics of the validated ratings, as JSON, and two PNG plots.

Writes ``explore/summary.json`` (users, movies, ratings, sparsity, rating
histogram, ratings-per-user and ratings-per-movie quantiles, most-rated movies
with their titles when the data set has a movies file), ``explore/rating_distribution.png``
and ``explore/long_tail.png``.

Per-user and per-movie counts are reduced in Spark to a frequency table (how
many users have exactly n ratings), which is small whatever the data size, so
exact quantiles and the long-tail curve are computed on the driver from it.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs import fs
from spark_jobs.commit import StageCommit
from spark_jobs.commit import read_manifest
from spark_jobs.context import StageContext
from spark_jobs.schema import MOVIE
from spark_jobs.schema import RATING
from spark_jobs.schema import TITLE
from spark_jobs.schema import USER

logger = logging.getLogger(__name__)

STAGE = "explore"
SUMMARY = "explore/summary.json"
RATING_PLOT = "explore/rating_distribution.png"
LONG_TAIL_PLOT = "explore/long_tail.png"

# Column names of the intermediate tables.
COUNT = "count"
MEAN_RATING = "mean_rating"
ENTITIES = "entities"

QUANTILE_PROBABILITIES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
MOST_RATED_LIMIT = 20
# The head of the long tail: the most-rated share of movies whose share of all
# ratings the summary reports.
HEAD_SHARE = 0.1


def rating_histogram(ratings: DataFrame) -> DataFrame:
    """Return (rating, count) for every rating value present, in ascending rating order."""
    return ratings.groupBy(RATING).agg(F.count(F.lit(1)).alias(COUNT)).orderBy(RATING)


def ratings_per_user(ratings: DataFrame) -> DataFrame:
    """Return (userId, count): how many ratings each user gave."""
    return ratings.groupBy(USER).agg(F.count(F.lit(1)).alias(COUNT))


def ratings_per_movie(ratings: DataFrame) -> DataFrame:
    """Return (movieId, count, mean_rating) for every movie with at least one rating."""
    return ratings.groupBy(MOVIE).agg(
        F.count(F.lit(1)).alias(COUNT),
        F.avg(RATING).alias(MEAN_RATING),
    )


def count_frequencies(counts: DataFrame) -> DataFrame:
    """Return (count, entities): how many users or movies have exactly ``count`` ratings.

    ``counts`` is the output of ratings_per_user or ratings_per_movie. The result
    has one row per distinct count, in ascending order.
    """
    return counts.groupBy(COUNT).agg(F.count(F.lit(1)).alias(ENTITIES)).orderBy(COUNT)


def most_rated_movies(
    per_movie: DataFrame, movies: DataFrame, limit: int = MOST_RATED_LIMIT
) -> DataFrame:
    """Return the ``limit`` most-rated movies: (movieId, title, count, mean_rating).

    Ties in count go to the lower movie id, so the list is deterministic. The
    title is null for a movie missing from ``movies``.
    """
    top = per_movie.orderBy(F.desc(COUNT), F.asc(MOVIE)).limit(limit)
    titles = movies.select(MOVIE, TITLE)
    return (
        top.join(F.broadcast(titles), on=MOVIE, how="left")
        .select(MOVIE, TITLE, COUNT, MEAN_RATING)
        .orderBy(F.desc(COUNT), F.asc(MOVIE))
    )


def quantiles_from_frequencies(
    frequencies: Sequence[tuple[int, int]], probabilities: Sequence[float]
) -> dict[str, float]:
    """Return exact quantiles of the values that ``(value, multiplicity)`` pairs describe.

    Uses linear interpolation between the two nearest ranks, the default of
    ``numpy.quantile``. Keys are the probabilities formatted with ``:g``.
    Raises ValueError when the pairs describe no values.
    """
    pairs = sorted((value, multiplicity) for value, multiplicity in frequencies if multiplicity)
    total = sum(multiplicity for _, multiplicity in pairs)
    if total == 0:
        raise ValueError("cannot take quantiles of an empty frequency table")

    def value_at(index: int) -> int:
        seen = 0
        for value, multiplicity in pairs:
            seen += multiplicity
            if index < seen:
                return value
        return pairs[-1][0]

    result = {}
    for probability in probabilities:
        position = probability * (total - 1)
        lower = int(position)
        fraction = position - lower
        low_value = value_at(lower)
        high_value = value_at(min(lower + 1, total - 1))
        result[f"{probability:g}"] = low_value + (high_value - low_value) * fraction
    return result


def head_share(frequencies: Sequence[tuple[int, int]], share: float = HEAD_SHARE) -> float:
    """Return the fraction of all ratings held by the most-rated ``share`` of entities."""
    descending = sorted(frequencies, reverse=True)
    entities = sum(multiplicity for _, multiplicity in descending)
    ratings = sum(value * multiplicity for value, multiplicity in descending)
    remaining = max(1, round(entities * share))
    in_head = 0
    for value, multiplicity in descending:
        taken = min(multiplicity, remaining)
        in_head += value * taken
        remaining -= taken
        if remaining == 0:
            break
    return in_head / ratings


def describe_counts(frequencies: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Return the entity total, mean, quantiles and head share of a frequency table."""
    entities = sum(multiplicity for _, multiplicity in frequencies)
    ratings = sum(value * multiplicity for value, multiplicity in frequencies)
    return {
        "mean": ratings / entities,
        "quantiles": quantiles_from_frequencies(frequencies, QUANTILE_PROBABILITIES),
        f"top_{round(HEAD_SHARE * 100)}_percent_share_of_ratings": head_share(frequencies),
    }


def summarize(ratings: DataFrame, movies: DataFrame) -> dict[str, Any]:
    """Return the explore summary of ``ratings`` (and titles from ``movies``) as plain values.

    Raises ValueError when ``ratings`` is empty: the load stage should have
    stopped the run before then.
    """
    histogram = [(row[RATING], row[COUNT]) for row in rating_histogram(ratings).collect()]
    total = sum(count for _, count in histogram)
    if total == 0:
        raise ValueError("the ratings table is empty; rerun the load stage on a non-empty source")

    per_user_frequencies = _collect_frequencies(ratings_per_user(ratings))
    per_movie = ratings_per_movie(ratings).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        per_movie_frequencies = _collect_frequencies(per_movie)
        top = most_rated_movies(per_movie, movies).collect()
    finally:
        per_movie.unpersist()

    users = sum(multiplicity for _, multiplicity in per_user_frequencies)
    rated_movies = sum(multiplicity for _, multiplicity in per_movie_frequencies)
    catalogue = movies.count()
    return {
        "users": users,
        "movies": rated_movies,
        "movies_in_catalogue": catalogue,
        "ratings": total,
        "sparsity": 1.0 - total / (users * rated_movies),
        "mean_rating": sum(float(value) * count for value, count in histogram) / total,
        "rating_histogram": {f"{float(value):.1f}": count for value, count in histogram},
        "ratings_per_user": describe_counts(per_user_frequencies),
        "ratings_per_movie": describe_counts(per_movie_frequencies),
        "ratings_per_user_frequencies": per_user_frequencies,
        "ratings_per_movie_frequencies": per_movie_frequencies,
        "titles_known": catalogue > 0,
        "most_rated_movies": [
            {
                MOVIE: row[MOVIE],
                TITLE: row[TITLE],
                "ratings": row[COUNT],
                MEAN_RATING: round(row[MEAN_RATING], 4),
            }
            for row in top
        ],
    }


def _collect_frequencies(counts: DataFrame) -> list[tuple[int, int]]:
    return [(row[COUNT], row[ENTITIES]) for row in count_frequencies(counts).collect()]


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def rating_distribution_png(histogram: dict[str, int], dataset: str) -> bytes:
    """Return a PNG bar chart of how many ratings each star value received."""
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    values = [float(value) for value in histogram]
    axes.bar(values, list(histogram.values()), width=0.4, color="tab:blue")
    axes.set_xticks(values)
    axes.set_xlabel("rating (stars)")
    axes.set_ylabel("ratings")
    axes.set_title(f"Rating distribution: {dataset}")
    return _png(figure)


def long_tail_png(
    per_movie: Sequence[tuple[int, int]], per_user: Sequence[tuple[int, int]], dataset: str
) -> bytes:
    """Return a PNG of ratings count against popularity rank, for movies and for users.

    Each panel is drawn from a frequency table: entities sorted by count,
    descending, so rank 1 is the most-rated movie or the most active user.
    """
    figure = Figure(figsize=(10, 4))
    for index, (name, frequencies) in enumerate((("movies", per_movie), ("users", per_user))):
        axes = figure.add_subplot(1, 2, index + 1)
        ranks, counts = _rank_curve(frequencies)
        axes.plot(ranks, counts, color="tab:orange" if name == "movies" else "tab:green")
        axes.set_yscale("log")
        axes.set_xlabel(f"{name[:-1]} rank by ratings count")
        axes.set_ylabel("ratings (log scale)")
        axes.set_title(f"Long tail of {name}: {dataset}")
    return _png(figure)


def _rank_curve(frequencies: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    # Two points per distinct count (first and last rank that has it) draw the
    # exact step curve without expanding the table to one point per entity.
    ranks: list[int] = []
    counts: list[int] = []
    rank = 0
    for value, multiplicity in sorted(frequencies, reverse=True):
        ranks += [rank + 1, rank + multiplicity]
        counts += [value, value]
        rank += multiplicity
    return ranks, counts


def run(context: StageContext) -> dict[str, Any]:
    """Summarise the committed ratings and movies and commit summary.json and the plots."""
    spark = context.spark
    layout = context.layout
    started = time.monotonic()
    load = read_manifest(spark, layout, "load")
    ratings = spark.read.parquet(layout.ratings).select(USER, MOVIE, RATING)
    movies = spark.read.parquet(layout.movies)

    with StageCommit(spark, layout, STAGE, inputs={"load": load}) as commit:
        # Four aggregations read the ratings; caching them saves three Parquet scans.
        ratings = ratings.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            summary = summarize(ratings, movies)
        finally:
            ratings.unpersist()
        summary["dataset"] = load.dataset
        fs.write_json(spark, commit.staging_path(SUMMARY), summary)
        fs.write_bytes(
            spark,
            commit.staging_path(RATING_PLOT),
            rating_distribution_png(summary["rating_histogram"], load.dataset),
        )
        fs.write_bytes(
            spark,
            commit.staging_path(LONG_TAIL_PLOT),
            long_tail_png(
                summary["ratings_per_movie_frequencies"],
                summary["ratings_per_user_frequencies"],
                load.dataset,
            ),
        )
        commit.counts.update(
            users=summary["users"], movies=summary["movies"], ratings=summary["ratings"]
        )

    logger.info(
        "explore: %d users, %d movies, %d ratings, sparsity %.5f, in %.1f s",
        summary["users"],
        summary["movies"],
        summary["ratings"],
        summary["sparsity"],
        time.monotonic() - started,
    )
    return {
        "users": summary["users"],
        "movies": summary["movies"],
        "ratings": summary["ratings"],
        "sparsity": round(summary["sparsity"], 6),
        "summary": layout.path(SUMMARY),
    }
