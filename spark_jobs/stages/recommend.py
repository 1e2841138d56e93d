"""Recommend stage: the top-k movies for every user, never one the user already rated.

The list is the one tune measured best unless ``--ordering`` requests another.
``rating`` gives the course's list, every unrated movie ordered by predicted
rating, and ``reranked`` the ranking model's top k in predicted-rating order.
Each row carries the rating model's predicted rating and the movie's title and
genres. Data sets without a movies file (the built-in sample) have no titles:
the title and genres columns stay empty and the summary marks titles as unknown.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs import fs
from spark_jobs import layout as paths
from spark_jobs.commit import StageCommit
from spark_jobs.commit import check_lineage
from spark_jobs.commit import read_manifest
from spark_jobs.context import StageContext
from spark_jobs.ease import load_ranking_model
from spark_jobs.errors import InputDataError
from spark_jobs.layout import join_uri
from spark_jobs.model import RatingModel
from spark_jobs.schema import GENRES
from spark_jobs.schema import MOVIE
from spark_jobs.schema import PREDICTED_RATING
from spark_jobs.schema import RANK
from spark_jobs.schema import RECOMMENDATIONS_SCHEMA
from spark_jobs.schema import TITLE
from spark_jobs.schema import USER
from spark_jobs.stages.train import MODEL_CHOICE
from spark_jobs.stages.train import RANKING_MODEL
from spark_jobs.stages.train import RATING_MODEL
from spark_jobs.stages.train import warn_if_k_differs
from spark_jobs.topk import IMPLICIT_ORDER
from spark_jobs.topk import RATING_ORDER
from spark_jobs.topk import RERANKED
from spark_jobs.topk import ListSpec
from spark_jobs.topk import top_k

logger = logging.getLogger(__name__)

TITLE_UNKNOWN = "title unknown: this data set has no movies file"
# Users shown in the stage summary when no --user is given.
SAMPLE_LENGTH = 5


def list_spec(ordering: str, default: dict[str, Any], k: int) -> ListSpec:
    """Return the list to build for an --ordering value."""
    if ordering == "rating":
        return ListSpec(RATING_ORDER)
    if ordering == "implicit":
        return ListSpec(IMPLICIT_ORDER)
    if ordering == "reranked":
        return ListSpec(RERANKED, k)
    return ListSpec(default["strategy"], default["candidates"])


def rated_pairs(ratings: DataFrame, train: DataFrame, test: DataFrame) -> DataFrame:
    """Return every (userId, movieId) the user rated: loaded ratings and both split sides.

    The split sides matter when they came from --train/--test files rather than
    from the loaded ratings.
    """
    columns = [USER, MOVIE]
    return (
        ratings.select(*columns)
        .unionByName(train.select(*columns))
        .unionByName(test.select(*columns))
        .distinct()
    )


def with_titles(lists: DataFrame, movies: DataFrame) -> DataFrame:
    """Return the lists joined with title and genres, in the recommendations schema."""
    joined = lists.join(movies.select(MOVIE, TITLE, GENRES), MOVIE, "left")
    return joined.select(
        *[F.col(field.name).cast(field.dataType) for field in RECOMMENDATIONS_SCHEMA.fields]
    )


def titles_known(report: dict[str, Any], movies: DataFrame) -> bool:
    """Return whether the load stage had a movies file, from load_report.json or the table."""
    if "titles_known" in report:
        return bool(report["titles_known"])
    return movies.limit(1).count() > 0


def user_list(recommendations: DataFrame, user: int, known_titles: bool) -> list[dict[str, Any]]:
    """Return one user's recommendations as dicts, best first."""
    rows = recommendations.filter(F.col(USER) == user).orderBy(RANK).collect()
    return [
        {
            "rank": row[RANK],
            "movieId": row[MOVIE],
            "title": row[TITLE] if known_titles else TITLE_UNKNOWN,
            "genres": row[GENRES],
            "predicted_rating": round(row[PREDICTED_RATING], 3),
        }
        for row in rows
    ]


def _write_csv(recommendations: DataFrame, scratch: str, target: str) -> None:
    """Write one CSV file with a header at ``target`` through a Spark scratch directory."""
    spark = recommendations.sparkSession
    (
        recommendations.repartition(1)
        .sortWithinPartitions(USER, RANK)
        .write.option("header", True)
        .option("escape", '"')
        .csv(scratch)
    )
    parts = [name for name in fs.list_names(spark, scratch) if name.startswith("part-")]
    if len(parts) != 1:
        raise OSError(f"expected one CSV part file in {scratch}, found {parts}")
    fs.rename(spark, f"{scratch}/{parts[0]}", target)


def run(context: StageContext) -> dict[str, Any]:
    spark, layout, params = context.spark, context.layout, context.params
    started = time.monotonic()
    train_manifest = read_manifest(spark, layout, "train")
    load = read_manifest(spark, layout, "load")
    split = read_manifest(spark, layout, "split")
    check_lineage({"train": train_manifest, "load": load, "split": split})
    k = params.top_k

    rating_model = RatingModel.load(spark, join_uri(layout.root, RATING_MODEL))
    model_choice = fs.read_json(spark, join_uri(layout.root, MODEL_CHOICE))
    if params.ordering != "rating":
        # Tune chose the ranking model and the default list by their precision at its k.
        warn_if_k_differs("recommend", model_choice, k)
    default = model_choice["default_list"]
    spec = list_spec(params.ordering, default, k)
    ranking_model = (
        load_ranking_model(spark, join_uri(layout.root, RANKING_MODEL))
        if spec.needs_ranking_model
        else None
    )
    movies = spark.read.parquet(layout.movies)
    known_titles = titles_known(fs.read_json(spark, layout.load_report), movies)
    rated = rated_pairs(
        spark.read.parquet(layout.ratings),
        spark.read.parquet(layout.split_train),
        spark.read.parquet(layout.split_test),
    ).cache()
    if context.user is not None and rated.filter(F.col(USER) == context.user).limit(1).count() == 0:
        raise InputDataError(
            f"recommend: user {context.user} has no ratings in {layout.ratings}; "
            f"give the id of a user who rated at least one movie"
        )
    lists = top_k(rating_model, ranking_model, rated, k, spec)
    recommendations = with_titles(lists, movies)

    inputs = {"train": train_manifest, "load": load, "split": split}
    parameters = {"top_k": k, "ordering": params.ordering, "list": spec.to_dict()}
    with StageCommit(spark, layout, "recommend", inputs=inputs, parameters=parameters) as commit:
        parquet_path = commit.staging_path(paths.RECOMMENDATIONS)
        recommendations.write.parquet(parquet_path)
        written = spark.read.parquet(parquet_path)
        _write_csv(
            written,
            f"{commit.staging_root}/_csv",
            commit.staging_path(paths.RECOMMENDATIONS_CSV),
        )
        counts = written.agg(
            F.count(F.lit(1)).alias("rows"), F.countDistinct(USER).alias("users")
        ).first()
        commit.counts.update({"rows": counts["rows"], "users": counts["users"]})
    rated.unpersist()

    final = spark.read.parquet(layout.recommendations)
    shown_user = context.user
    if shown_user is None:
        first = final.agg(F.min(USER)).first()[0]
        shown_user = first
    shown = user_list(final, shown_user, known_titles) if shown_user is not None else []
    if context.user is None:
        shown = shown[:SAMPLE_LENGTH]
    if not known_titles:
        logger.warning("recommend: the data set has no movies file, so titles are unknown")
    logger.info(
        "recommend: %d rows for %d users (%s list, top %d) in %.1f s",
        counts["rows"],
        counts["users"],
        spec.name,
        k,
        time.monotonic() - started,
    )
    return {
        "rows": counts["rows"],
        "users": counts["users"],
        "list": spec.name,
        "titles_known": known_titles,
        "recommendations": layout.recommendations,
        "user": shown_user,
        "top": shown,
    }
