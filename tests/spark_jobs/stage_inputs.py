"""Hand-made run directories for stage tests: a committed load output without running load."""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Sequence
from pathlib import Path

from spark_jobs import fs
from spark_jobs import layout as paths
from spark_jobs.commit import StageCommit
from spark_jobs.context import StageContext
from spark_jobs.layout import RunLayout
from spark_jobs.params import Parameters
from spark_jobs.schema import MOVIES_SCHEMA
from spark_jobs.schema import RATINGS_SCHEMA

SYNTHETIC_SEED = 7
SYNTHETIC_USERS = 40
SYNTHETIC_MOVIES = 30
SYNTHETIC_RATINGS_PER_USER = 18


def synthetic_ratings(
    users: int = SYNTHETIC_USERS,
    movies: int = SYNTHETIC_MOVIES,
    per_user: int = SYNTHETIC_RATINGS_PER_USER,
    seed: int = SYNTHETIC_SEED,
) -> list[tuple[int, int, float, int]]:
    """Return whole-star ratings with a two-taste structure that ALS can learn.

    Each user and movie leans to one of two tastes; a user rates a movie of their
    taste 4 or 5 and the others 1 to 3. Movie popularity falls with the id, so
    low ids are rated more often.
    """
    generator = random.Random(seed)
    rows = []
    for user in range(1, users + 1):
        taste = user % 2
        weights = [1.0 / (movie**0.5) for movie in range(1, movies + 1)]
        chosen: set[int] = set()
        while len(chosen) < per_user:
            chosen.add(generator.choices(range(1, movies + 1), weights=weights)[0])
        for movie in sorted(chosen):
            if movie % 2 == taste:
                rating = generator.choice((4.0, 5.0))
            else:
                rating = generator.choice((1.0, 2.0, 3.0))
            rows.append((user, movie, rating, 1_000_000 + user * 1000 + movie))
    return rows


def synthetic_movies(movies: int = SYNTHETIC_MOVIES) -> list[tuple[int, str, str]]:
    genres = ("Comedy", "Drama")
    return [(movie, f"Movie {movie} (2000)", genres[movie % 2]) for movie in range(1, movies + 1)]


def write_loaded_run(
    spark,
    root: Path | str,
    ratings: Sequence[tuple[int, int, float, int]],
    movies: Sequence[tuple[int, str, str]] | None = None,
    *,
    scale: tuple[float, float, float] = (1.0, 5.0, 1.0),
    dataset: str = "handmade",
) -> RunLayout:
    """Commit ``ratings`` and ``movies`` as the load stage's output in a new run directory."""
    layout = RunLayout(str(root))
    movies = list(movies or [])
    with StageCommit(spark, layout, "load", dataset=dataset) as commit:
        spark.createDataFrame(list(ratings), RATINGS_SCHEMA).write.parquet(
            commit.staging_path(paths.RATINGS)
        )
        spark.createDataFrame(movies, MOVIES_SCHEMA).write.parquet(
            commit.staging_path(paths.MOVIES)
        )
        report = {
            "rows_read": len(ratings) + len(movies),
            "rows_accepted": len(ratings) + len(movies),
            "rows_quarantined": 0,
            "rating_scale": {"min": scale[0], "max": scale[1], "step": scale[2]},
            "titles_known": bool(movies),
        }
        fs.write_json(spark, commit.staging_path(paths.LOAD_REPORT), report)
    return layout


def context_for(
    spark,
    layout: RunLayout,
    *,
    explicit: dict | None = None,
    train: str | None = None,
    test: str | None = None,
    user: int | None = None,
) -> StageContext:
    """Return a StageContext as the command line would build it from ``explicit`` options."""
    explicit = dict(explicit or {})
    params = Parameters().with_values(**explicit).validate()
    return StageContext(
        spark=spark,
        layout=layout,
        params=params,
        explicit=frozenset(explicit),
        train=train,
        test=test,
        user=user,
    )


# Small model settings for stage tests: enough for ALS to learn the synthetic tastes.
SMALL_MODEL = {
    "rank": 3,
    "reg_param": 0.1,
    "max_iter": 5,
    "implicit_rank": 3,
    "implicit_max_iter": 3,
    "top_k": 5,
}

_TRAINED_RUNS: dict[str, RunLayout] = {}


def trained_run(spark, tmp_path_factory) -> RunLayout:
    """Return a run directory with load (synthetic, with titles), split and train committed.

    Built once per test session and shared: later stages only read it.
    """
    if "synthetic" not in _TRAINED_RUNS:
        from spark_jobs.stages import split
        from spark_jobs.stages import train

        root = tmp_path_factory.mktemp("trained") / "run"
        layout = write_loaded_run(spark, root, synthetic_ratings(), synthetic_movies())
        split.run(context_for(spark, layout))
        train.run(context_for(spark, layout, explicit=SMALL_MODEL))
        _TRAINED_RUNS["synthetic"] = layout
    return _TRAINED_RUNS["synthetic"]


_PIPELINE_RUNS: dict[str, tuple[RunLayout, int, str]] = {}


def pipeline_run(spark, tmp_path_factory, source: Path) -> tuple[RunLayout, int, str]:
    """Run ``python -m spark_jobs pipeline`` on ``source`` in this process, once per session.

    Returns the run directory, the exit status and what the command printed to
    stdout. The pipeline shares the test session's Spark session, because the
    command line reuses an active one.
    """
    from spark_jobs import cli

    key = str(source)
    if key not in _PIPELINE_RUNS:
        output = tmp_path_factory.mktemp("pipeline") / "run"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            status = cli.main(["pipeline", "--source", key, "--output", str(output)])
        _PIPELINE_RUNS[key] = (RunLayout(str(output)), status, printed.getvalue())
    return _PIPELINE_RUNS[key]
