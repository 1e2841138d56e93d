"""Split stage: a seeded, deterministic train/test split of the validated ratings.

By default (``--split-method hash``) each rating goes to the test set when a
hash of (userId, movieId, seed) falls below the test fraction. Unlike
``randomSplit``, which samples by partition and row position, the hash depends
only on the row itself, so the two sides stay disjoint and complete however
often and however partitioned Spark re-evaluates the input.

``--split-method per-user`` orders each user's ratings by the same hash and
holds out the test fraction of them, rounded, keeping at least one in training.
A user with too few ratings for the rounded share to reach one has no test
rating.

``--train`` and ``--test`` use an existing split instead (ml-100k
ships u1..u5), read and validated line by line as the load stage reads ratings.
As in load, a file with more than ``--max-quarantine-fraction`` of its lines
rejected stops the stage, and nothing is committed.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from typing import NoReturn

from pyspark.sql import Column
from pyspark.sql import DataFrame
from pyspark.sql import SparkSession
from pyspark.sql import Window
from pyspark.sql import functions as F

from spark_jobs import formats
from spark_jobs import fs
from spark_jobs import layout as paths
from spark_jobs.commit import StageCommit
from spark_jobs.commit import read_manifest
from spark_jobs.context import StageContext
from spark_jobs.errors import InputDataError
from spark_jobs.layout import RunLayout
from spark_jobs.schema import MOVIE
from spark_jobs.schema import RATING
from spark_jobs.schema import REASON
from spark_jobs.schema import TIMESTAMP
from spark_jobs.schema import USER
from spark_jobs.stages.load import local_or_uri
from spark_jobs.stages.load import over_threshold

logger = logging.getLogger(__name__)

# Hash buckets: the fraction of rows in the test set is resolved to 1 / HASH_BUCKETS.
HASH_BUCKETS = 1_000_000
# Split report, written beside the two tables.
SPLIT_REPORT = "split/report.json"
# Lines of --train and --test files that failed a check, with the file, line and reason.
SPLIT_QUARANTINE = "split/quarantine"

RATING_COLUMNS = (USER, MOVIE, RATING, TIMESTAMP)

METHOD_DESCRIPTIONS = {
    "hash": "each rating by a hash of (userId, movieId, seed)",
    "per-user": (
        "per user: the test fraction of each user's ratings, in the order of a hash of "
        "(userId, movieId, seed); at least one rating stays in training"
    ),
    "files": "the given --train and --test files",
}


def hash_fraction(seed: int, *columns: str) -> Column:
    """Return a value in [0, 1) fixed by the row's ``columns`` and ``seed``, uniform over rows."""
    hashed = F.xxhash64(*[F.col(name) for name in columns], F.lit(seed))
    return F.pmod(hashed, F.lit(HASH_BUCKETS)) / F.lit(float(HASH_BUCKETS))


def held_out(fraction: float, seed: int) -> Column:
    """Return the column that is true where ``random_split`` with this fraction and seed holds out a rating."""
    return hash_fraction(seed, USER, MOVIE) < F.lit(fraction)


def random_split(
    ratings: DataFrame, test_fraction: float, seed: int
) -> tuple[DataFrame, DataFrame]:
    """Return (train, test): each rating lands in test when its hash falls below test_fraction.

    Deterministic for a seed and disjoint by construction; the test share is
    test_fraction in expectation.
    """
    marked = ratings.withColumn("_in_test", held_out(test_fraction, seed))
    train = marked.filter(~F.col("_in_test")).drop("_in_test")
    test = marked.filter(F.col("_in_test")).drop("_in_test")
    return train, test


def per_user_split(
    ratings: DataFrame, test_fraction: float, seed: int
) -> tuple[DataFrame, DataFrame]:
    """Return (train, test) holding out about test_fraction of each user's ratings.

    Each user's ratings are ordered by a seeded hash; the first
    round(count * (1 - test_fraction)) go to train, at least one, the rest to test.
    """
    order = Window.partitionBy(USER).orderBy(hash_fraction(seed, USER, MOVIE), F.col(MOVIE))
    counts = Window.partitionBy(USER)
    train_size = F.greatest(F.lit(1), F.round(F.count(F.lit(1)).over(counts) * (1 - test_fraction)))
    marked = ratings.withColumn("_in_test", F.row_number().over(order) > train_size)
    train = marked.filter(~F.col("_in_test")).drop("_in_test")
    test = marked.filter(F.col("_in_test")).drop("_in_test")
    return train, test


def cold_start_counts(train: DataFrame, test: DataFrame) -> dict[str, int]:
    """Count test rows whose user, movie, or either is absent from train."""
    users = train.select(USER).distinct().withColumn("_known_user", F.lit(True))
    movies = train.select(MOVIE).distinct().withColumn("_known_movie", F.lit(True))
    flagged = test.join(users, USER, "left").join(movies, MOVIE, "left")
    unseen_user = F.col("_known_user").isNull()
    unseen_movie = F.col("_known_movie").isNull()
    row = flagged.agg(
        F.sum(unseen_user.cast("int")).alias("user"),
        F.sum(unseen_movie.cast("int")).alias("movie"),
        F.sum((unseen_user | unseen_movie).cast("int")).alias("either"),
    ).first()
    return {
        "test_rows_unseen_user": int(row["user"] or 0),
        "test_rows_unseen_movie": int(row["movie"] or 0),
        "test_rows_cold_start": int(row["either"] or 0),
    }


def ratings_text_file(first_line: str) -> formats.TextFile:
    """Return how to parse a ratings file, judged from its first line.

    A line with a tab is ml-100k's u.data layout, one with "::" the .dat layout,
    otherwise comma-separated values with an optional header.
    """
    if "\t" in first_line:
        return formats.ML_100K.ratings
    if "::" in first_line:
        return formats.ML_1M.ratings
    return formats.MOVIELENS_CSV.ratings


def starts_with_number(line: str) -> bool:
    """Return whether the first comma-separated field of ``line`` is a number, as in a data row."""
    first_field = line.lstrip("\ufeff").split(",", 1)[0].strip()
    return re.match(formats.NUMBER_PATTERN, first_field) is not None


@dataclass(frozen=True)
class SplitFile:
    """One --train or --test file: its valid ratings, its rejected lines and their accounting.

    ``details`` describes the rejected lines for the log, or is None when there are none.
    """

    uri: str
    valid: DataFrame
    rejected: DataFrame
    accounting: dict[str, int]
    details: str | None


def read_split_file(spark: SparkSession, uri: str, scale: formats.RatingScale) -> SplitFile:
    """Return the valid ratings and the rejected lines of one existing split file.

    Lines are checked as the load stage checks them (ids, rating on the scale,
    timestamp, duplicates); rejected lines are counted per reason. Their
    source_file is the whole URI, so the two files' lines stay apart even when the
    files share a name. Raises InputDataError when the file is missing or empty.
    """
    if not fs.exists(spark, uri):
        raise InputDataError(f"split file not found: {uri}; check the --train and --test paths")
    first = spark.read.text(uri).first()
    if first is None:
        raise InputDataError(f"split file {uri} is empty; give a file with ratings")
    text_file = ratings_text_file(first["value"])
    lines = formats.read_lines(spark, uri, uri)
    if text_file.header is not None and not starts_with_number(first["value"]):
        # A CSV file with a header line: its columns are matched by name, as load does.
        decoded, positions = formats.decode_with_header(lines, text_file, uri, "split")
    else:
        decoded, positions = formats.decode_lines(lines, text_file), None
    parsed = formats.parse_ratings(decoded, text_file, scale, positions)
    parsed = formats.mark_duplicates(parsed, (USER, MOVIE), formats.DUPLICATE_RATING)
    parsed = parsed.filter(F.col(REASON).isNull() | (F.col(REASON) != formats.HEADER_LINE)).cache()
    reasons = {
        row[REASON]: int(row["count"])
        for row in parsed.filter(F.col(REASON).isNotNull()).groupBy(REASON).count().collect()
    }
    valid = parsed.filter(F.col(REASON).isNull()).select(*RATING_COLUMNS)
    accepted = valid.count()
    rejected = sum(reasons.values())
    details = None
    if rejected:
        details = formats.quarantine_details(
            uri,
            accepted + rejected,
            reasons,
            formats.first_quarantined_lines(parsed),
            text_file,
            formats.RATING_IDS,
            scale,
        )
    accounting = {"rows_read": accepted + rejected, "rows_accepted": accepted, **reasons}
    return SplitFile(uri, valid, formats.quarantined_rows(parsed), accounting, details)


def _no_valid_rating(split_file: SplitFile) -> str:
    found = split_file.details or "The file has a header line and nothing else."
    return (
        f"split file {split_file.uri} has no valid rating; expected lines of userId, movieId, "
        f"rating, timestamp.\n{found}"
    )


def _rejection(split_file: SplitFile, max_fraction: float) -> str | None:
    """Return why split stops on this file: no valid rating, or too many rejected lines."""
    accepted = split_file.accounting["rows_accepted"]
    read = split_file.accounting["rows_read"]
    if accepted == 0:
        return _no_valid_rating(split_file)
    if over_threshold(read, read - accepted, max_fraction):
        return (
            f"split file {split_file.uri} has too many invalid lines, over the limit of "
            f"--max-quarantine-fraction {max_fraction:g}, so nothing was committed. Fix the "
            f"file or raise the limit.\n{split_file.details}"
        )
    return None


def _reject_files(commit: StageCommit, layout: RunLayout, messages: list[str]) -> NoReturn:
    """Publish the staged quarantine, remove stale splits and raise with ``messages``."""
    commit.publish_rejected((SPLIT_QUARANTINE,))
    joined = "\n".join(messages)
    raise InputDataError(f"{joined}\nThe rejected lines are in {layout.path(SPLIT_QUARANTINE)}.")


def rating_scale(report: dict[str, Any]) -> formats.RatingScale:
    """Return the rating scale recorded in load_report.json (whole stars 1-5 when absent)."""
    recorded = report.get("rating_scale") or report.get("scale")
    if not recorded:
        logger.warning("load_report.json records no rating scale; assuming whole stars 1 to 5")
        return formats.WHOLE_STARS
    return formats.RatingScale(
        minimum=float(recorded["min"]), maximum=float(recorded["max"]), step=float(recorded["step"])
    )


def run(context: StageContext) -> dict[str, Any]:
    spark, layout, params = context.spark, context.layout, context.params
    started = time.monotonic()
    load = read_manifest(spark, layout, "load")
    existing = context.train is not None
    parameters: dict[str, Any] = {"seed": params.seed, "test_fraction": params.test_fraction}
    accounting: dict[str, Any] = {}
    files: list[SplitFile] = []
    if existing:
        scale = rating_scale(fs.read_json(spark, layout.load_report))
        # Absolute URIs, because the JVM resolves a relative path against its own working
        # directory, and a manifest read from another directory must name the same files.
        train_uri, test_uri = local_or_uri(context.train), local_or_uri(context.test)
        files = [read_split_file(spark, uri, scale) for uri in (train_uri, test_uri)]
        train, test = files[0].valid, files[1].valid
        accounting = {"train_file": files[0].accounting, "test_file": files[1].accounting}
        parameters = {
            "split_method": "files",
            "train": train_uri,
            "test": test_uri,
            "max_quarantine_fraction": params.max_quarantine_fraction,
        }
    else:
        ratings = spark.read.parquet(layout.ratings)
        parameters["split_method"] = params.split_method
        if params.split_method == "per-user":
            train, test = per_user_split(ratings, params.test_fraction, params.seed)
        else:
            train, test = random_split(ratings, params.test_fraction, params.seed)

    with StageCommit(
        spark, layout, "split", inputs={"load": load}, parameters=parameters
    ) as commit:
        if files:
            files[0].rejected.unionByName(files[1].rejected).write.parquet(
                commit.staging_path(SPLIT_QUARANTINE)
            )
            rejections = [
                _rejection(split_file, params.max_quarantine_fraction) for split_file in files
            ]
            messages = [message for message in rejections if message is not None]
            if messages:
                _reject_files(commit, layout, messages)
        train.write.parquet(commit.staging_path(paths.SPLIT_TRAIN))
        test.write.parquet(commit.staging_path(paths.SPLIT_TEST))
        staged_train = spark.read.parquet(commit.staging_path(paths.SPLIT_TRAIN))
        staged_test = spark.read.parquet(commit.staging_path(paths.SPLIT_TEST))
        n_train = staged_train.count()
        n_test = staged_test.count()
        if n_train == 0 or n_test == 0:
            raise InputDataError(
                f"split: the split left {n_train} training and {n_test} test ratings; both "
                f"must be non-empty. Load more ratings or change --test-fraction."
            )
        cold = cold_start_counts(staged_train, staged_test)
        report = {
            "method": METHOD_DESCRIPTIONS[parameters["split_method"]],
            "n_train": n_train,
            "n_test": n_test,
            **cold,
            **parameters,
            **accounting,
        }
        fs.write_json(spark, commit.staging_path(SPLIT_REPORT), report)
        commit.counts.update({"n_train": n_train, "n_test": n_test, **cold})
    for split_file in files:
        if split_file.details:
            logger.warning(
                "split: %s\nThe rejected lines are in %s",
                split_file.details,
                layout.path(SPLIT_QUARANTINE),
            )
    if cold["test_rows_cold_start"]:
        logger.warning(
            "split: %d of %d test rows have a user or movie unseen in training",
            cold["test_rows_cold_start"],
            n_test,
        )
    logger.info(
        "split: %d train and %d test ratings in %.1f s",
        n_train,
        n_test,
        time.monotonic() - started,
    )
    return {"n_train": n_train, "n_test": n_test, **cold}
