"""The load stage: MovieLens files in, validated ratings and movies Parquet out.

Every input line is either accepted or quarantined with its reason and line
number, and load_report.json accounts for each file. When more than
``max_quarantine_fraction`` of a file's rows are quarantined, the stage commits
nothing but still publishes the quarantine and the report for the user to read.

load_report.json contains:

- ``status`` ("accepted" or "rejected"), ``layout``, ``source`` and ``dataset``;
- ``rating_scale`` ({"min", "max", "step"} in stars), which train uses to clip
  predictions, and ``titles_known`` (false for the built-in sample);
- ``rows_read``, ``rows_accepted``, ``rows_quarantined`` and
  ``quarantined_by_reason`` summed over the input files, and the same per file
  under ``files`` ("ratings", "movies") with the file's URI and header lines;
- ``movies``, ``ratings_without_movie``, ``max_quarantine_fraction``,
  ``files_over_threshold`` and ``quarantine`` (the URI of the quarantined rows).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs import datasets
from spark_jobs import formats
from spark_jobs import fs
from spark_jobs import layout as run_layout
from spark_jobs.commit import StageCommit
from spark_jobs.context import StageContext
from spark_jobs.errors import InputDataError
from spark_jobs.formats import Layout
from spark_jobs.formats import TextFile
from spark_jobs.layout import RunLayout
from spark_jobs.schema import MOVIE
from spark_jobs.schema import MOVIES_SCHEMA
from spark_jobs.schema import RATINGS_SCHEMA
from spark_jobs.schema import REASON
from spark_jobs.schema import USER

logger = logging.getLogger(__name__)

ID_COLUMNS = {"ratings": formats.RATING_IDS, "movies": MOVIE}

# Path of the sample below the pyspark package (pip) and below $SPARK_HOME (as on EMR).
# NOTE: only the pip location is exercised here; the $SPARK_HOME one is untested on EMR.
SAMPLE_RELATIVE_PATH = os.path.join("data", "mllib", "als", "sample_movielens_ratings.txt")
BUILTIN_SAMPLE_SOURCE = "builtin-sample"


@dataclass(frozen=True)
class Source:
    """A resolved --source: its layout, where its files are, and its identity.

    ``files`` maps "ratings" and "movies" to file URIs. The built-in sample is read
    on the driver into ``sample_data``, so executors need no copy of it, and its
    ``files`` entry is the driver's local path.
    """

    layout: Layout
    description: str
    files: Mapping[str, str]
    fingerprint: str
    sample_data: bytes | None = None

    @property
    def dataset(self) -> str:
        return f"{self.layout.name}:{self.description}@{self.fingerprint}"


def builtin_sample_path() -> str:
    """Return the local path of the sample ratings file that ships with pyspark or Spark.

    Raises InputDataError naming the places searched when neither has it.
    """
    import pyspark

    candidates = [os.path.join(os.path.dirname(pyspark.__file__), SAMPLE_RELATIVE_PATH)]
    spark_home = os.environ.get("SPARK_HOME")
    if spark_home:
        candidates.append(os.path.join(spark_home, SAMPLE_RELATIVE_PATH))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise InputDataError(
        f"the built-in sample ratings file was not found in {candidates}; "
        f"pass --source with a MovieLens directory or a dataset name."
    )


def local_or_uri(source: str) -> str:
    """Return ``source`` as a URI: an existing local path becomes an absolute file: URI.

    ``file://localhost/PATH`` becomes ``file:///PATH`` (``layout.without_localhost``).
    """
    source = run_layout.without_localhost(source)
    if "://" in source or source.startswith("file:"):
        return source.rstrip("/")
    if os.path.exists(source):
        return "file://" + os.path.abspath(source)
    return source.rstrip("/")


def _fingerprint(parts: Iterable[object]) -> str:
    return hashlib.sha256(json.dumps(list(parts)).encode("utf-8")).hexdigest()[:16]


def resolve_source(spark: SparkSession, source: str | None, layout: RunLayout) -> Source:
    """Return the Source for a --source value: None, a directory URI, or a dataset name.

    Raises InputDataError when the directory does not exist, has an unknown layout,
    lacks a file, or the dataset download fails.
    """
    if source is None:
        path = builtin_sample_path()
        with open(path, "rb") as sample:
            data = sample.read()
        return Source(
            layout=formats.BUILTIN_SAMPLE,
            description=BUILTIN_SAMPLE_SOURCE,
            files={"ratings": path},
            fingerprint="sha256:" + hashlib.sha256(data).hexdigest()[:16],
            sample_data=data,
        )
    # A local directory wins over a dataset name of the same spelling, as it does in
    # the command line's check that --output is not inside --source.
    if datasets.is_dataset_name(source) and not os.path.exists(source):
        directory = layout.source_copy(source)
        checksum = datasets.fetch(spark, source, directory)
        description, fingerprint = source, checksum
    else:
        directory = local_or_uri(source)
        description, fingerprint = directory, None
    if not fs.is_directory(spark, directory):
        raise InputDataError(
            f"source not found: {directory} is not a directory. Give a MovieLens directory, "
            f"an s3:// prefix, or one of the dataset names {', '.join(sorted(datasets.DATASETS))}."
        )
    detected = formats.detect_layout(fs.list_names(spark, directory), directory)
    files = {"ratings": f"{directory}/{detected.ratings.name}"}
    if detected.movies is not None:
        files["movies"] = f"{directory}/{detected.movies.name}"
    if fingerprint is None:
        statuses = [(role, *fs.status(spark, uri)) for role, uri in sorted(files.items())]
        fingerprint = "files:" + _fingerprint(statuses)
    return Source(detected, description, files, fingerprint)


def classify_ratings(lines: DataFrame, layout: Layout, uri: str) -> DataFrame:
    """Decode, parse and mark duplicate ratings; see formats.parse_ratings for the columns.

    ``uri`` names the file in the InputDataError that formats.header_positions raises,
    before any row is parsed, when the header line does not match the layout.
    """
    decoded, positions = formats.decode_with_header(lines, layout.ratings, uri)
    parsed = formats.parse_ratings(decoded, layout.ratings, layout.scale, positions)
    return formats.mark_duplicates(parsed, (USER, MOVIE), formats.DUPLICATE_RATING)


def classify_movies(lines: DataFrame, layout: Layout, uri: str) -> DataFrame:
    """Decode, parse and mark duplicate movies; see formats.parse_movies for the columns.

    ``uri`` is as in classify_ratings.
    """
    if layout.movies is None or layout.movies_format is None:
        raise ValueError(f"layout {layout.name} has no movies file")
    decoded, positions = formats.decode_with_header(lines, layout.movies, uri)
    parsed = formats.parse_movies(decoded, layout.movies, layout.movies_format, positions)
    return formats.mark_duplicates(parsed, (MOVIE,), formats.DUPLICATE_MOVIE)


def accepted_ratings(classified: DataFrame) -> DataFrame:
    """Return the valid rows of classify_ratings with the columns and types of RATINGS_SCHEMA."""
    return classified.filter(F.col(REASON).isNull()).select(
        *(F.col(field.name).cast(field.dataType) for field in RATINGS_SCHEMA.fields)
    )


def accepted_movies(classified: DataFrame) -> DataFrame:
    """Return the valid rows of classify_movies with the columns and types of MOVIES_SCHEMA."""
    return classified.filter(F.col(REASON).isNull()).select(
        *(F.col(field.name).cast(field.dataType) for field in MOVIES_SCHEMA.fields)
    )


def count_reasons(classified: DataFrame) -> dict[str | None, int]:
    """Return the number of rows per reason (None for accepted rows), in one Spark job."""
    rows = classified.groupBy(REASON).count().collect()
    return {row[REASON]: int(row["count"]) for row in rows}


def file_report(file_name: str, uri: str, reason_counts: Mapping[str | None, int]) -> dict:
    """Return the accounting of one input file from count_reasons."""
    by_reason = {
        reason: count
        for reason, count in sorted(reason_counts.items(), key=lambda item: str(item[0]))
        if reason is not None and reason != formats.HEADER_LINE
    }
    accepted = reason_counts.get(None, 0)
    quarantined = sum(by_reason.values())
    return {
        "file": file_name,
        "uri": uri,
        "header_lines": reason_counts.get(formats.HEADER_LINE, 0),
        "rows_read": accepted + quarantined,
        "rows_accepted": accepted,
        "rows_quarantined": quarantined,
        "quarantined_by_reason": by_reason,
    }


def total_report(file_reports: Iterable[Mapping[str, Any]]) -> dict:
    """Return rows_read, rows_accepted, rows_quarantined and reasons summed over files."""
    totals: dict[str, Any] = {
        "rows_read": 0,
        "rows_accepted": 0,
        "rows_quarantined": 0,
        "quarantined_by_reason": {},
    }
    for report in file_reports:
        for key in ("rows_read", "rows_accepted", "rows_quarantined"):
            totals[key] += report[key]
        for reason, count in report["quarantined_by_reason"].items():
            by_reason = totals["quarantined_by_reason"]
            by_reason[reason] = by_reason.get(reason, 0) + count
    return totals


def files_over_threshold(
    file_reports: Mapping[str, Mapping[str, Any]], max_fraction: float
) -> list[str]:
    """Return the roles of the files whose quarantined share exceeds ``max_fraction``."""
    return [
        role
        for role, report in sorted(file_reports.items())
        if over_threshold(report["rows_read"], report["rows_quarantined"], max_fraction)
    ]


def over_threshold(rows_read: int, rows_quarantined: int, max_fraction: float) -> bool:
    """Return whether a file's quarantined share exceeds ``max_fraction`` (never for 0 rows)."""
    return bool(rows_read) and rows_quarantined / rows_read > max_fraction


def _lines(spark: SparkSession, source: Source, role: str, text_file: TextFile) -> DataFrame:
    if source.sample_data is not None:
        return formats.lines_from_bytes(spark, text_file.name, source.sample_data)
    uri = source.files[role]
    if not fs.exists(spark, uri):
        raise InputDataError(f"input file not found: {uri}. Check --source.")
    return formats.read_lines(spark, uri, text_file.name)


def _rejection_message(
    details: Mapping[str, str], over: list[str], max_fraction: float, layout: RunLayout
) -> str:
    described = "\n".join(details[role] for role in over)
    return (
        f"too many invalid rows, over the limit of --max-quarantine-fraction {max_fraction:g}, "
        f"so nothing was committed:\n{described}\n"
        f"The rejected rows are in {layout.quarantine} and the counts in {layout.load_report}. "
        f"Fix the input or raise the limit."
    )


def run(context: StageContext) -> dict[str, Any]:
    """Load --source into validated ratings and movies, and commit them with the report.

    Raises InputDataError when the source is missing, unknown or empty, when the
    header line of a CSV file does not name the layout's columns, or when a file has
    more quarantined rows than --max-quarantine-fraction allows.
    """
    spark, layout, params = context.spark, context.layout, context.params
    started = time.monotonic()
    parameters = {
        "source": context.source,
        "max_quarantine_fraction": params.max_quarantine_fraction,
    }
    with StageCommit(spark, layout, "load", parameters=parameters) as commit:
        source = resolve_source(spark, context.source, layout)
        ratings_lines = _lines(spark, source, "ratings", source.layout.ratings)
        classified = {
            "ratings": classify_ratings(ratings_lines, source.layout, source.files["ratings"])
        }
        if source.layout.movies is not None:
            movies_lines = _lines(spark, source, "movies", source.layout.movies)
            classified["movies"] = classify_movies(
                movies_lines, source.layout, source.files["movies"]
            )
        for table in classified.values():
            table.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            summary = _write_outputs(spark, context, commit, source, classified)
        finally:
            for table in classified.values():
                table.unpersist()
    logger.info(
        "load: %d ratings and %d movies accepted, rows quarantined: %d, from %s (%s) in %.1f s",
        summary["ratings"],
        summary["movies"],
        summary["rows_quarantined"],
        source.description,
        source.layout.name,
        time.monotonic() - started,
    )
    return summary


def ratings_without_movie(ratings: DataFrame, movies: DataFrame) -> int:
    """Return how many ratings name a movieId that the movies table does not contain."""
    known = F.broadcast(movies.select(MOVIE).distinct())
    return ratings.join(known, on=MOVIE, how="left_anti").count()


def _build_report(
    source: Source,
    reports: Mapping[str, dict[str, Any]],
    unknown_movies: int | None,
    max_fraction: float,
    layout: RunLayout,
) -> dict[str, Any]:
    movies_accepted = reports["movies"]["rows_accepted"] if "movies" in reports else 0
    over = files_over_threshold(reports, max_fraction)
    return {
        "status": "rejected" if over else "accepted",
        "layout": source.layout.name,
        "source": source.description,
        "dataset": source.dataset,
        "rating_scale": source.layout.scale.to_dict(),
        "titles_known": movies_accepted > 0,
        "movies": movies_accepted,
        # Accepted ratings whose movie is missing from the movies file; null without one.
        "ratings_without_movie": unknown_movies,
        "max_quarantine_fraction": max_fraction,
        "files_over_threshold": over,
        "files": dict(reports),
        "quarantine": layout.quarantine,
        **total_report(reports.values()),
    }


def _quarantine_table(classified: Mapping[str, DataFrame]) -> DataFrame:
    tables = [formats.quarantined_rows(table) for table in classified.values()]
    union = tables[0]
    for table in tables[1:]:
        union = union.unionByName(table)
    return union


def _write_outputs(
    spark: SparkSession,
    context: StageContext,
    commit: StageCommit,
    source: Source,
    classified: Mapping[str, DataFrame],
) -> dict[str, Any]:
    layout, max_fraction = context.layout, context.params.max_quarantine_fraction
    file_names = {"ratings": source.layout.ratings.name}
    if source.layout.movies is not None:
        file_names["movies"] = source.layout.movies.name
    reports = {
        role: file_report(file_names[role], source.files[role], count_reasons(table))
        for role, table in classified.items()
    }
    ratings_report = reports["ratings"]
    if ratings_report["rows_accepted"] == 0 and ratings_report["rows_quarantined"] == 0:
        raise InputDataError(
            f"the ratings file {ratings_report['uri']} is empty: it has no data lines. "
            f"Check that the download or copy is complete, or point --source elsewhere."
        )

    ratings = accepted_ratings(classified["ratings"])
    if "movies" in classified:
        movies = accepted_movies(classified["movies"])
        unknown_movies = ratings_without_movie(ratings, movies)
    else:
        movies = spark.createDataFrame([], MOVIES_SCHEMA)
        unknown_movies = None
    report = _build_report(source, reports, unknown_movies, max_fraction, layout)

    _quarantine_table(classified).write.mode("overwrite").parquet(
        commit.staging_path(run_layout.QUARANTINE)
    )
    fs.write_json(spark, commit.staging_path(run_layout.LOAD_REPORT), report)
    text_files = {"ratings": source.layout.ratings, "movies": source.layout.movies}
    details = {
        role: formats.quarantine_details(
            reports[role]["file"],
            reports[role]["rows_read"],
            reports[role]["quarantined_by_reason"],
            formats.first_quarantined_lines(table),
            text_files[role],
            ID_COLUMNS[role],
            source.layout.scale,
            quoted=role == "movies" and source.layout.movies_format == "csv",
        )
        for role, table in classified.items()
        if reports[role]["rows_quarantined"]
    }
    for role, described in details.items():
        if role not in report["files_over_threshold"]:
            logger.warning("load: %s\nThe rejected rows are in %s", described, layout.quarantine)
    if unknown_movies:
        logger.warning(
            "load: %d accepted ratings name a movie missing from %s",
            unknown_movies,
            file_names["movies"],
        )
    if report["files_over_threshold"]:
        commit.publish_rejected((run_layout.QUARANTINE, run_layout.LOAD_REPORT))
        raise InputDataError(
            _rejection_message(details, report["files_over_threshold"], max_fraction, layout)
        )

    ratings.write.mode("overwrite").parquet(commit.staging_path(run_layout.RATINGS))
    movies.write.mode("overwrite").parquet(commit.staging_path(run_layout.MOVIES))
    commit.dataset = source.dataset
    commit.counts.update(
        {
            "rows_read": report["rows_read"],
            "rows_accepted": report["rows_accepted"],
            "rows_quarantined": report["rows_quarantined"],
            "ratings": ratings_report["rows_accepted"],
            "movies": report["movies"],
        }
    )
    return {
        "layout": source.layout.name,
        "source": source.description,
        "ratings": ratings_report["rows_accepted"],
        "movies": report["movies"],
        "rows_quarantined": report["rows_quarantined"],
        "titles_known": report["titles_known"],
        "load_report": layout.load_report,
    }
