"""Tests of the synthetic MovieLens generator at a small size."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bench import synthetic
from spark_jobs.context import StageContext
from spark_jobs.layout import RunLayout
from spark_jobs.params import Parameters

SMALL = synthetic.SyntheticConfig(users=300, movies=500, ratings=20_000, seed=11)
HALF_STARS = {star / 2 for star in range(1, 11)}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Generate SMALL once and return (directory, summary, ratings as arrays)."""
    directory = tmp_path_factory.mktemp("synthetic")
    summary = synthetic.generate(SMALL, directory)
    with open(directory / "ratings.csv", encoding="ascii", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = np.array([[float(field) for field in row] for row in reader])
    return directory, summary, header, rows


def test_ratings_header_matches_ml25m(generated):
    _, _, header, _ = generated
    assert header == ["userId", "movieId", "rating", "timestamp"]


def test_sizes_are_exact(generated):
    _, summary, _, rows = generated
    assert rows.shape[0] == SMALL.ratings
    assert len(np.unique(rows[:, 0])) == SMALL.users
    assert rows[:, 1].max() <= SMALL.movies
    assert summary["ratings"] == SMALL.ratings


def test_user_movie_pairs_are_distinct(generated):
    _, _, _, rows = generated
    pairs = rows[:, 0].astype(np.int64) * (SMALL.movies + 1) + rows[:, 1].astype(np.int64)
    assert np.unique(pairs).size == rows.shape[0]


def test_every_user_has_twenty_ratings(generated):
    _, _, _, rows = generated
    per_user = np.bincount(rows[:, 0].astype(np.int64))[1:]
    assert per_user.min() >= synthetic.MIN_RATINGS_PER_USER


def test_ratings_use_every_half_star(generated):
    _, _, _, rows = generated
    assert set(np.unique(rows[:, 2]).tolist()) == HALF_STARS


def test_mean_rating_is_movielens_like(generated):
    _, _, _, rows = generated
    # ml-25m's mean rating is 3.53; the generator centres on 3.55 before rounding.
    assert 3.2 < rows[:, 2].mean() < 3.8


def test_movie_popularity_has_long_tail(generated):
    _, _, _, rows = generated
    per_movie = np.sort(np.bincount(rows[:, 1].astype(np.int64))[1:])[::-1]
    top_tenth = per_movie[: SMALL.movies // 10].sum() / per_movie.sum()
    # Uniform popularity would give the top tenth about 10% of ratings, plus sampling noise.
    assert top_tenth > 0.3
    assert np.median(per_movie) < per_movie.mean()


def test_user_activity_is_skewed(generated):
    _, _, _, rows = generated
    per_user = np.bincount(rows[:, 0].astype(np.int64))[1:]
    assert per_user.max() > 4 * np.median(per_user)


def test_ratings_carry_movie_effects(generated):
    _, _, _, rows = generated
    # With movie biases of standard deviation 0.45, movie means spread far more
    # than the noise of averaging alone: compare even and odd ratings of each movie.
    movies = rows[:, 1].astype(np.int64)
    halves = []
    for parity in (0, 1):
        chosen = np.arange(rows.shape[0]) % 2 == parity
        sums = np.bincount(movies[chosen], weights=rows[chosen, 2], minlength=SMALL.movies + 1)
        counts = np.bincount(movies[chosen], minlength=SMALL.movies + 1)
        halves.append((sums, counts))
    enough = (halves[0][1] >= 20) & (halves[1][1] >= 20)
    means = [sums[enough] / counts[enough] for sums, counts in halves]
    assert enough.sum() >= 50
    assert np.corrcoef(means[0], means[1])[0, 1] > 0.5


def test_movies_file_quotes_titles_with_commas(generated):
    directory, _, _, _ = generated
    with open(directory / "movies.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["movieId", "title", "genres"]
    assert len(rows) == SMALL.movies + 1
    assert all(len(row) == 3 for row in rows)
    assert any("," in row[1] for row in rows[1:])


def test_same_seed_gives_identical_files(generated, tmp_path):
    directory, _, _, _ = generated
    synthetic.generate(SMALL, tmp_path)
    for name in ("ratings.csv", "movies.csv"):
        assert (tmp_path / name).read_bytes() == (directory / name).read_bytes(), name


def test_other_seed_gives_other_ratings(generated, tmp_path):
    directory, _, _, _ = generated
    other = synthetic.SyntheticConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1})
    synthetic.generate(other, tmp_path)
    assert (tmp_path / "ratings.csv").read_bytes() != (directory / "ratings.csv").read_bytes()


def test_summary_file_matches_return_value(generated):
    directory, summary, _, _ = generated
    assert json.loads((directory / "synthetic.json").read_text()) == summary


def test_impossible_size_is_rejected():
    too_few = synthetic.SyntheticConfig(users=100, movies=500, ratings=1_000)
    with pytest.raises(ValueError, match="at least 20"):
        too_few.validate()


def test_scaled_config_keeps_ml25m_ratio():
    config = synthetic.scaled_config(2_500_000)
    assert config.users == round(synthetic.ML25M_USERS / 10)
    assert config.ratings == 2_500_000


@pytest.mark.spark
def test_load_stage_reads_generated_files(spark, generated, tmp_path):
    from spark_jobs.stages import load

    directory, _, _, rows = generated
    layout = RunLayout(str(tmp_path / "run"))
    context = StageContext(spark=spark, layout=layout, params=Parameters(), source=str(directory))
    load.run(context)
    report = json.loads((tmp_path / "run" / "load_report.json").read_text())
    assert report["files"]["ratings"]["rows_accepted"] == SMALL.ratings
    assert report["files"]["movies"]["rows_accepted"] == SMALL.movies
    assert report["rows_quarantined"] == 0
    ratings = spark.read.parquet(layout.ratings)
    assert ratings.count() == SMALL.ratings
    assert ratings.agg({"rating": "sum"}).first()[0] == pytest.approx(rows[:, 2].sum(), abs=1e-3)
    assert spark.read.parquet(layout.movies).count() == SMALL.movies
