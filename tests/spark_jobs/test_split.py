"""Split stage: deterministic, disjoint hash split; cold-start counts; existing split files."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from spark_jobs import fs
from spark_jobs.errors import InputDataError
from spark_jobs.stages import split
from tests.spark_jobs.stage_inputs import context_for
from tests.spark_jobs.stage_inputs import synthetic_ratings
from tests.spark_jobs.stage_inputs import write_loaded_run

pytestmark = pytest.mark.spark

SEED = 42
TEST_FRACTION = 0.2
# 2,000 rows: the test share of a fair hash split lies within 0.2 +- 0.04 with
# probability above 99.9% (binomial standard deviation 0.009).
FRACTION_TOLERANCE = 0.04


def _pairs(frame):
    return {(row["userId"], row["movieId"]) for row in frame.select("userId", "movieId").collect()}


def _counts_by_user(frame):
    return {row["userId"]: row["count"] for row in frame.groupBy("userId").count().collect()}


@pytest.fixture(scope="module")
def ratings(spark):
    rows = [
        (user, movie, float(1 + (user + movie) % 5), 0) for user in range(40) for movie in range(50)
    ]
    return spark.createDataFrame(rows, "userId int, movieId int, rating float, timestamp long")


def test_random_split_is_disjoint_and_complete(ratings):
    train, test = split.random_split(ratings, TEST_FRACTION, SEED)
    train_pairs, test_pairs = _pairs(train), _pairs(test)
    assert not train_pairs & test_pairs
    assert train_pairs | test_pairs == _pairs(ratings)


def test_random_split_test_share_near_fraction(ratings):
    _, test = split.random_split(ratings, TEST_FRACTION, SEED)
    share = test.count() / ratings.count()
    assert abs(share - TEST_FRACTION) < FRACTION_TOLERANCE


def test_random_split_survives_repartitioning(ratings):
    _, first = split.random_split(ratings, TEST_FRACTION, SEED)
    shuffled = ratings.repartition(7).orderBy(F.rand(3))
    _, second = split.random_split(shuffled, TEST_FRACTION, SEED)
    assert _pairs(first) == _pairs(second)


def test_random_split_depends_on_seed(ratings):
    _, first = split.random_split(ratings, TEST_FRACTION, SEED)
    _, second = split.random_split(ratings, TEST_FRACTION, SEED + 1)
    assert _pairs(first) != _pairs(second)


def test_per_user_split_holds_out_each_user(ratings):
    train, test = split.per_user_split(ratings, 0.25, SEED)
    train_counts = _counts_by_user(train)
    test_counts = _counts_by_user(test)
    assert not _pairs(train) & _pairs(test)
    for user in range(40):
        assert train_counts[user] == round(50 * 0.75)
        assert test_counts[user] == 50 - round(50 * 0.75)


def test_small_users_stay_in_training(spark):
    schema = "userId int, movieId int, rating float, timestamp long"
    rows = [
        (user, movie, 4.0, 0) for user, count in ((1, 1), (2, 2), (3, 3)) for movie in range(count)
    ]
    train, test = split.per_user_split(spark.createDataFrame(rows, schema), 0.2, SEED)
    train_counts = _counts_by_user(train)
    test_counts = _counts_by_user(test)
    # round(n * 0.8) stays in training: 1 of 1, 2 of 2 and 2 of 3.
    assert train_counts == {1: 1, 2: 2, 3: 2}
    assert test_counts == {3: 1}


def test_cold_start_counts_unseen_users_and_movies(spark):
    schema = "userId int, movieId int, rating float, timestamp long"
    train = spark.createDataFrame([(1, 10, 4.0, 0), (2, 20, 3.0, 0)], schema)
    test = spark.createDataFrame(
        [(1, 20, 4.0, 0), (3, 10, 2.0, 0), (1, 30, 5.0, 0), (4, 40, 1.0, 0)], schema
    )
    counts = split.cold_start_counts(train, test)
    assert counts["test_rows_unseen_user"] == 2
    assert counts["test_rows_unseen_movie"] == 2
    assert counts["test_rows_cold_start"] == 3


def test_ratings_text_file_detects_separator():
    assert split.ratings_text_file("1\t2\t3\t4").separator == "\t"
    assert split.ratings_text_file("1::2::3::4").separator == "::"
    assert split.ratings_text_file("userId,movieId,rating,timestamp").separator == ","


def test_run_writes_reproducible_split(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    first = split.run(context_for(spark, layout))
    first_test = _pairs(spark.read.parquet(layout.split_test))
    second = split.run(context_for(spark, layout))
    second_test = _pairs(spark.read.parquet(layout.split_test))
    report = fs.read_json(spark, layout.path(split.SPLIT_REPORT))
    assert first == second
    assert first_test == second_test
    assert first["n_train"] + first["n_test"] == len(synthetic_ratings())
    assert report["n_test"] == first["n_test"]
    assert "test_rows_cold_start" in report


def test_per_user_run_tests_every_user(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    counts = split.run(context_for(spark, layout, explicit={"split_method": "per-user"}))
    ratings = spark.read.parquet(layout.ratings)
    _, expected_test = split.per_user_split(ratings, TEST_FRACTION, SEED)
    test = spark.read.parquet(layout.split_test)
    train = spark.read.parquet(layout.split_train)
    report = fs.read_json(spark, layout.path(split.SPLIT_REPORT))
    manifest = fs.read_json(spark, layout.manifest("split"))
    tested_users = {row["userId"] for row in test.select("userId").distinct().collect()}
    all_users = {row["userId"] for row in ratings.select("userId").distinct().collect()}
    assert _pairs(test) == _pairs(expected_test)
    assert not _pairs(train) & _pairs(test)
    assert tested_users == all_users
    assert counts["n_test"] == len(_pairs(expected_test))
    assert report["method"].startswith("per user")
    assert manifest["parameters"]["split_method"] == "per-user"


def split_files(tmp_path, train_text: str, test_text: str, names=("u1.base", "u1.test")):
    """Write a --train and a --test file with these contents and return their paths."""
    train_file = tmp_path / names[0]
    test_file = tmp_path / names[1]
    train_file.write_text(train_text)
    test_file.write_text(test_text)
    return train_file, test_file


def test_run_reads_existing_split_files(spark, tmp_path, caplog):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    train_file, test_file = split_files(
        tmp_path,
        "1\t1\t5\t881250949\n1\t2\t3\t881250949\n2\t1\t4\t881250949\n",
        # One valid row, one rating off the 1-5 scale, one duplicate and one bad id.
        "2\t2\t2\t881250949\n2\t3\t9\t881250949\n2\t2\t1\t1\nx\t1\t4\t1\n",
    )
    # Three of the test file's four lines are bad, so the limit is raised to accept them.
    explicit = {"max_quarantine_fraction": 0.75}
    with caplog.at_level("WARNING", logger="spark_jobs.stages.split"):
        summary = split.run(
            context_for(
                spark, layout, explicit=explicit, train=str(train_file), test=str(test_file)
            )
        )
    report = fs.read_json(spark, layout.path(split.SPLIT_REPORT))
    quarantine = spark.read.parquet(layout.path(split.SPLIT_QUARANTINE)).collect()
    assert summary["n_train"] == 3
    assert summary["n_test"] == 1
    assert report["split_method"] == "files"
    assert report["method"] == split.METHOD_DESCRIPTIONS["files"]
    assert report["test_file"]["rows_read"] == 4
    assert report["test_file"]["rows_accepted"] == 1
    assert report["test_file"]["rating_out_of_range"] == 1
    assert report["test_file"]["duplicate_rating"] == 1
    assert report["test_file"]["invalid_id"] == 1
    assert sorted((row.source_file, row.line_number, row.reason) for row in quarantine) == [
        (f"file://{test_file}", 2, "rating_out_of_range"),
        (f"file://{test_file}", 3, "duplicate_rating"),
        (f"file://{test_file}", 4, "invalid_id"),
    ]
    assert f"{test_file}: 3 of 4 rows quarantined" in caplog.text
    assert (
        "rating_out_of_range, 1 row (line 2: '2\\t3\\t9\\t881250949'): rating must be from 1 to 5"
        in caplog.text
    )
    assert layout.path(split.SPLIT_QUARANTINE) in caplog.text


def test_split_files_recorded_as_uris(spark, tmp_path, monkeypatch):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split_files(tmp_path, "1\t1\t5\t1\n2\t1\t4\t1\n", "1\t2\t3\t1\n")
    monkeypatch.chdir(tmp_path)
    split.run(context_for(spark, layout, train="u1.base", test="u1.test"))
    report = fs.read_json(spark, layout.path(split.SPLIT_REPORT))
    assert report["train"] == f"file://{tmp_path}/u1.base"
    assert report["test"] == f"file://{tmp_path}/u1.test"


def test_run_rejects_file_without_ratings(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    train_file, test_file = split_files(tmp_path, "1\t1\t5\t881250949\n", "2\t2\t0\t881250949\n")
    with pytest.raises(InputDataError) as raised:
        split.run(context_for(spark, layout, train=str(train_file), test=str(test_file)))
    message = str(raised.value)
    quarantine = spark.read.parquet(layout.path(split.SPLIT_QUARANTINE)).collect()
    assert f"split file file://{test_file} has no valid rating" in message
    assert (
        "rating_out_of_range, 1 row (line 1: '2\\t2\\t0\\t881250949'): rating must be from 1 to 5"
        in message
    )
    assert f"The rejected lines are in {layout.path(split.SPLIT_QUARANTINE)}" in message
    assert [(row.source_file, row.line_number, row.reason) for row in quarantine] == [
        (f"file://{test_file}", 1, "rating_out_of_range")
    ]
    assert not (tmp_path / "run" / "_staging").exists()
    assert not (tmp_path / "run" / "_manifests" / "split.json").exists()


def test_run_rejects_file_over_quarantine_limit(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    good = "".join(f"1\t{movie}\t4\t881250949\n" for movie in range(1, 10))
    # One bad line in ten: over a limit of 0.05, within one of 0.1.
    train_file, test_file = split_files(tmp_path, good + "1\t99\t9\t881250949\n", "1\t50\t3\t1\n")
    strict = {"max_quarantine_fraction": 0.05}
    with pytest.raises(InputDataError) as raised:
        split.run(
            context_for(spark, layout, explicit=strict, train=str(train_file), test=str(test_file))
        )
    message = str(raised.value)
    quarantine = spark.read.parquet(layout.path(split.SPLIT_QUARANTINE)).collect()
    assert f"split file file://{train_file} has too many invalid lines" in message
    assert "--max-quarantine-fraction 0.05" in message
    assert "line 10: '1\\t99\\t9\\t881250949'" in message
    assert [(row.line_number, row.reason) for row in quarantine] == [(10, "rating_out_of_range")]
    assert not (tmp_path / "run" / "_manifests" / "split.json").exists()

    lenient = {"max_quarantine_fraction": 0.1}
    summary = split.run(
        context_for(spark, layout, explicit=lenient, train=str(train_file), test=str(test_file))
    )
    assert summary["n_train"] == 9


def test_run_rejects_header_only_file(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    header = "userId,movieId,rating,timestamp\n"
    train_file, test_file = split_files(
        tmp_path, f"{header}1,1,5,881250949\n", header, names=("train.csv", "test.csv")
    )
    with pytest.raises(InputDataError, match="has a header line and nothing else"):
        split.run(context_for(spark, layout, train=str(train_file), test=str(test_file)))


def test_run_reads_csv_split_columns_by_name(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    header = "movieId,rating,timestamp,userId\n"
    train_file, test_file = split_files(
        tmp_path,
        f"{header}1,5,881250949,1\n2,3,881250949,1\n1,4,881250949,2\n",
        # Without a header line the columns are in the layout's order.
        "2,2,2,881250949\n",
        names=("train.csv", "test.csv"),
    )
    summary = split.run(context_for(spark, layout, train=str(train_file), test=str(test_file)))
    train_rows = spark.read.parquet(layout.split_train).collect()
    assert summary["n_train"] == 3
    assert sorted((row.userId, row.movieId, row.rating) for row in train_rows) == [
        (1, 1, 5.0),
        (1, 2, 3.0),
        (2, 1, 4.0),
    ]


def test_run_rejects_csv_split_renamed_column(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    train_file, test_file = split_files(
        tmp_path,
        "userId,movieId,score,timestamp\n1,1,5,881250949\n",
        "2,2,2,881250949\n",
        names=("train.csv", "test.csv"),
    )
    with pytest.raises(InputDataError) as raised:
        split.run(context_for(spark, layout, train=str(train_file), test=str(test_file)))
    message = str(raised.value)
    assert f"invalid header line in file://{train_file}" in message
    assert "missing the column rating" in message
    assert "rerun split" in message


def test_run_missing_split_file_names_it(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    missing = str(tmp_path / "absent.test")
    with pytest.raises(InputDataError, match="absent.test"):
        split.run(context_for(spark, layout, train=missing, test=missing))
