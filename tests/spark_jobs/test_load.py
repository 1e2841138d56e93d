"""The load stage end to end: real MovieLens files, every layout, quarantine and the threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_jobs import fs
from spark_jobs.commit import read_manifest
from spark_jobs.context import StageContext
from spark_jobs.errors import InputDataError
from spark_jobs.errors import UncommittedInputError
from spark_jobs.layout import RunLayout
from spark_jobs.params import Parameters
from spark_jobs.schema import LINE_NUMBER
from spark_jobs.schema import MOVIE
from spark_jobs.schema import MOVIES_SCHEMA
from spark_jobs.schema import QUARANTINE_SCHEMA
from spark_jobs.schema import RATINGS_SCHEMA
from spark_jobs.schema import RAW_LINE
from spark_jobs.schema import REASON
from spark_jobs.schema import SOURCE_FILE
from spark_jobs.schema import TITLE
from spark_jobs.stages import load

pytestmark = pytest.mark.spark


def run_load(spark, output: Path, source: str | None, **parameters) -> dict:
    context = StageContext(
        spark=spark,
        layout=RunLayout(str(output)),
        params=Parameters(**parameters),
        source=source,
    )
    return load.run(context)


def read_report(output: Path) -> dict:
    return json.loads((output / "load_report.json").read_text())


def types_of(schema) -> list[tuple[str, str]]:
    return [(field.name, field.dataType.simpleString()) for field in schema.fields]


@pytest.fixture(scope="module")
def ml_latest_small_run(spark, ml_latest_small, tmp_path_factory):
    output = tmp_path_factory.mktemp("load") / "run"
    summary = run_load(spark, output, str(ml_latest_small))
    return output, summary


def test_load_ml_latest_small_counts(ml_latest_small_run):
    output, summary = ml_latest_small_run
    report = read_report(output)

    assert summary["ratings"] == 100_836
    assert summary["movies"] == 9_742
    assert report["layout"] == "movielens-csv"
    assert report["files"]["ratings"]["rows_read"] == 100_836
    assert report["files"]["ratings"]["header_lines"] == 1
    assert report["files"]["movies"]["rows_accepted"] == 9_742
    assert report["rows_quarantined"] == 0
    assert report["ratings_without_movie"] == 0
    assert report["rating_scale"] == {"min": 0.5, "max": 5.0, "step": 0.5}
    assert report["titles_known"] is True
    assert report["status"] == "accepted"


def test_load_ml_latest_small_outputs(spark, ml_latest_small_run):
    output, _ = ml_latest_small_run
    ratings = spark.read.parquet(str(output / "ratings"))
    movies = spark.read.parquet(str(output / "movies"))
    quarantine = spark.read.parquet(str(output / "quarantine"))

    assert ratings.count() == 100_836
    assert types_of(ratings.schema) == types_of(RATINGS_SCHEMA)
    assert types_of(movies.schema) == types_of(MOVIES_SCHEMA)
    assert types_of(quarantine.schema) == types_of(QUARANTINE_SCHEMA)
    assert quarantine.count() == 0
    title = movies.filter(f"{MOVIE} = 11").first()[TITLE]
    assert title == "American President, The (1995)"


def test_load_ml_latest_small_manifest(spark, ml_latest_small, ml_latest_small_run):
    output, _ = ml_latest_small_run
    manifest = read_manifest(spark, RunLayout(str(output)), "load")

    assert manifest.dataset.startswith(f"movielens-csv:file://{ml_latest_small}@files:")
    assert manifest.counts["ratings"] == 100_836
    assert manifest.outputs == ["load_report.json", "movies", "quarantine", "ratings"]


def test_load_ml_100k(spark, ml_100k, tmp_path):
    summary = run_load(spark, tmp_path / "run", str(ml_100k))
    movies = spark.read.parquet(str(tmp_path / "run" / "movies"))
    report = read_report(tmp_path / "run")

    assert summary["ratings"] == 100_000
    assert summary["movies"] == 1_682
    assert report["layout"] == "ml-100k"
    assert report["rating_scale"] == {"min": 1.0, "max": 5.0, "step": 1.0}
    assert movies.filter(f"{MOVIE} = 543").first()[TITLE] == "Misérables, Les (1995)"


def test_load_builtin_sample(spark, tmp_path):
    summary = run_load(spark, tmp_path / "run", None)
    report = read_report(tmp_path / "run")
    ratings = spark.read.parquet(str(tmp_path / "run" / "ratings"))
    movies = spark.read.parquet(str(tmp_path / "run" / "movies"))

    assert summary["ratings"] == 1_501
    assert report["layout"] == "builtin-sample"
    assert report["source"] == "builtin-sample"
    assert report["titles_known"] is False
    assert report["ratings_without_movie"] is None
    assert report["rating_scale"] == {"min": 1.0, "max": 5.0, "step": 1.0}
    assert ratings.agg({"userId": "min"}).first()[0] == 0
    assert movies.count() == 0
    assert types_of(movies.schema) == types_of(MOVIES_SCHEMA)


# Small copies of the layouts that are too large to keep in ../shared/movielens.
HAND_MADE_LAYOUTS = {
    "ml-1m": {
        "ratings.dat": b"1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n",
        "movies.dat": "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "3::Misérables, Les (1995)::Drama\n".encode("latin-1"),
        "users.dat": b"1::F::1::10::48067\n2::M::56::16::70072\n",
    },
    "ml-10m": {
        "ratings.dat": b"1::122::5::838985046\n1::185::4.5::838983525\n2::122::0.5::838983392\n",
        "movies.dat": b"122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::Action\n",
        "tags.dat": b"15::4973::excellent!::1215184630\n",
    },
    "movielens-csv": {
        "ratings.csv": b"userId,movieId,rating,timestamp\r\n1,296,5.0,1147880044\r\n"
        b"1,306,3.5,1147868817\r\n2,296,0.5,1147868828\r\n",
        "movies.csv": b'movieId,title,genres\r\n296,Pulp Fiction (1994),Comedy|Crime|Drama\r\n'
        b'306,"Three Colors: Red (Trois couleurs: Rouge) (1994)",Drama\r\n',
        "genome-tags.csv": b"tagId,tag\n1,007\n",
    },
}


@pytest.mark.parametrize("layout_name", sorted(HAND_MADE_LAYOUTS))
def test_load_hand_made_layout(spark, tmp_path, layout_name):
    source = tmp_path / "source"
    source.mkdir()
    for name, data in HAND_MADE_LAYOUTS[layout_name].items():
        (source / name).write_bytes(data)

    summary = run_load(spark, tmp_path / "run", str(source))
    report = read_report(tmp_path / "run")

    assert report["layout"] == layout_name
    assert summary["ratings"] == 3
    assert report["rows_quarantined"] == 0
    assert report["titles_known"] is True


def test_load_ml_1m_titles_are_latin1(spark, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name, data in HAND_MADE_LAYOUTS["ml-1m"].items():
        (source / name).write_bytes(data)
    run_load(spark, tmp_path / "run", str(source))
    movies = spark.read.parquet(str(tmp_path / "run" / "movies"))
    assert movies.filter(f"{MOVIE} = 3").first()[TITLE] == "Misérables, Les (1995)"


# --- quarantine and the threshold -----------------------------------------------------


def write_csv_source(
    directory: Path,
    rating_lines: list[str],
    movie_lines: tuple[str, ...] = ("1,A (2000),Drama",),
    ratings_header: str | None = "userId,movieId,rating,timestamp",
    movies_header: str | None = "movieId,title,genres",
) -> Path:
    """Write a ratings.csv and a movies.csv. A header of None leaves that file without one."""
    directory.mkdir()
    ratings = [ratings_header] if ratings_header is not None else []
    movies = [movies_header] if movies_header is not None else []
    (directory / "ratings.csv").write_text("\n".join([*ratings, *rating_lines]) + "\n")
    (directory / "movies.csv").write_text("\n".join([*movies, *movie_lines]) + "\n")
    return directory


def test_load_names_rule_and_first_lines(spark, tmp_path, caplog):
    good = [f"{user},1,4.0,1" for user in range(1, 99)]
    bad = [f"{user},x{user},4.0,1" for user in range(1, 6)]
    source = write_csv_source(tmp_path / "source", good + bad)

    with caplog.at_level("WARNING", logger="spark_jobs.stages.load"):
        run_load(spark, tmp_path / "run", str(source), max_quarantine_fraction=0.1)

    warning = caplog.text
    assert "ratings.csv: 5 of 103 rows quarantined" in warning
    assert "invalid_id, 5 rows (first line 100: '1,x1,4.0,1'; line 101: '2,x2,4.0,1'; " in warning
    assert "line 102: '3,x3,4.0,1'): an id (userId or movieId) must be a whole number from 0 to " in warning
    assert "line 103" not in warning
    assert str(tmp_path / "run" / "quarantine") in warning


def test_load_quarantines_bad_rows_with_line_numbers(spark, tmp_path):
    good = [f"{user},1,4.0,1" for user in range(1, 7)] + ["7,5,4.0,1"]  # movie 5 is unknown
    bad = ["1,1,4.5,2", "x,1,3.0,1", "", "9,1,7.0,1"]
    movies = ("1,A (2000),Drama", "1,B (2001),Drama")
    source = write_csv_source(tmp_path / "source", good + bad, movies)

    summary = run_load(spark, tmp_path / "run", str(source), max_quarantine_fraction=0.5)
    report = read_report(tmp_path / "run")
    quarantine = spark.read.parquet(str(tmp_path / "run" / "quarantine"))
    rows = {(row[SOURCE_FILE], row[LINE_NUMBER]): row for row in quarantine.collect()}

    ratings = report["files"]["ratings"]
    assert ratings["rows_read"] == 11
    assert ratings["rows_accepted"] == 7
    assert ratings["rows_quarantined"] == 4
    assert ratings["rows_read"] == ratings["rows_accepted"] + ratings["rows_quarantined"]
    assert ratings["quarantined_by_reason"] == {
        "blank_line": 1,
        "duplicate_rating": 1,
        "invalid_id": 1,
        "rating_out_of_range": 1,
    }
    assert report["files"]["movies"]["quarantined_by_reason"] == {"duplicate_movie": 1}
    assert report["rows_quarantined"] == 5
    assert report["ratings_without_movie"] == 1
    assert summary["ratings"] == 7
    assert rows[("ratings.csv", 9)][REASON] == "duplicate_rating"
    assert rows[("ratings.csv", 9)][RAW_LINE] == "1,1,4.5,2"
    assert rows[("ratings.csv", 10)][REASON] == "invalid_id"
    assert rows[("ratings.csv", 11)][REASON] == "blank_line"
    assert rows[("ratings.csv", 12)][REASON] == "rating_out_of_range"
    assert rows[("movies.csv", 3)][REASON] == "duplicate_movie"


def test_load_over_threshold_commits_nothing(spark, tmp_path):
    good = [f"{user},1,4.0,1" for user in range(1, 99)]
    bad = ["1,2,NaN,1", "2,2,9,1"]
    source = write_csv_source(tmp_path / "source", good + bad)
    output = tmp_path / "run"

    with pytest.raises(InputDataError) as raised:
        run_load(spark, output, str(source), max_quarantine_fraction=0.01)

    message = str(raised.value)
    assert "ratings.csv: 2 of 100 rows quarantined" in message
    assert "nan_rating, 1 row (line 100: '1,2,NaN,1'): rating must be a number, not NaN" in message
    assert "rating_out_of_range, 1 row (line 101: '2,2,9,1'): rating must be from 0.5 to 5" in message
    assert "--max-quarantine-fraction 0.01" in message
    assert str(output / "quarantine") in message
    assert str(output / "load_report.json") in message
    assert not (output / "_staging").exists()
    with pytest.raises(UncommittedInputError, match="python -m spark_jobs load"):
        read_manifest(spark, RunLayout(str(output)), "load")
    assert not (output / "ratings").exists()
    assert read_report(output)["status"] == "rejected"
    assert read_report(output)["files_over_threshold"] == ["ratings"]
    assert spark.read.parquet(str(output / "quarantine")).count() == 2


def test_rejected_load_replaces_earlier_load(spark, tmp_path):
    output = tmp_path / "run"
    good = [f"{user},1,4.0,1" for user in range(1, 99)]
    run_load(spark, output, str(write_csv_source(tmp_path / "first", good)))
    rejected = write_csv_source(tmp_path / "second", good + ["1,2,NaN,1", "2,2,9,1"])

    with pytest.raises(InputDataError):
        run_load(spark, output, str(rejected), max_quarantine_fraction=0.01)

    # The report describes the rejected source, so the earlier ratings must not stay beside it.
    assert not (output / "ratings").exists()
    assert not (output / "_manifests" / "load.json").exists()
    assert read_report(output)["status"] == "rejected"
    assert str(tmp_path / "second") in read_report(output)["source"]


def test_load_at_default_threshold_commits(spark, tmp_path):
    good = [f"{user},1,4.0,1" for user in range(1, 100)]
    source = write_csv_source(tmp_path / "source", good + ["1,2,NaN,1"])
    summary = run_load(spark, tmp_path / "run", str(source))  # exactly 1% quarantined
    assert summary["ratings"] == 99
    assert summary["rows_quarantined"] == 1


# --- CSV header lines ----------------------------------------------------------------


def test_load_reads_reordered_ratings_header(spark, tmp_path):
    lines = ["296,1,5.0,1147880044", "306,1,3.5,1147868817", "296,2,0.5,1147868828"]
    movies = ("296,Pulp Fiction (1994),Crime", "306,Red (1994),Drama")
    source = write_csv_source(
        tmp_path / "source", lines, movies, ratings_header="movieId,userId,rating,timestamp"
    )

    # A high limit, so that a header read as a bad row would not stop the load either.
    run_load(spark, tmp_path / "run", str(source), max_quarantine_fraction=0.5)
    report = read_report(tmp_path / "run")
    ratings = spark.read.parquet(str(tmp_path / "run" / "ratings"))
    quarantine = spark.read.parquet(str(tmp_path / "run" / "quarantine"))
    rated = {(row["userId"], row[MOVIE]): row["rating"] for row in ratings.collect()}

    assert rated == {(1, 296): 5.0, (1, 306): 3.5, (2, 296): 0.5}
    assert report["files"]["ratings"]["header_lines"] == 1
    assert report["files"]["ratings"]["rows_read"] == 3
    assert report["rows_quarantined"] == 0
    assert report["ratings_without_movie"] == 0
    assert quarantine.count() == 0


def test_load_reads_reordered_movies_header(spark, tmp_path):
    movies = (
        '306,Drama,"Red, White (1994)"',
        "296,Crime,Pulp Fiction (1994)",
        "1,Comedy,Toy Story (1995)",
        "2,Action,Heat (1995)",
    )
    ratings = ["1,296,5.0,1", "1,306,4.0,1"]
    header = "movieId,genres,title"
    source = write_csv_source(tmp_path / "source", ratings, movies, movies_header=header)

    run_load(spark, tmp_path / "run", str(source), max_quarantine_fraction=0.5)
    report = read_report(tmp_path / "run")
    movies_table = spark.read.parquet(str(tmp_path / "run" / "movies"))
    rows = {row[MOVIE]: (row[TITLE], row["genres"]) for row in movies_table.collect()}

    assert rows[306] == ("Red, White (1994)", "Drama")
    assert rows[296] == ("Pulp Fiction (1994)", "Crime")
    assert len(rows) == 4
    assert report["files"]["movies"]["header_lines"] == 1
    assert report["files"]["movies"]["rows_quarantined"] == 0
    assert report["ratings_without_movie"] == 0


def assert_nothing_committed(spark, output: Path) -> None:
    assert not (output / "ratings").exists()
    assert not (output / "load_report.json").exists()
    with pytest.raises(UncommittedInputError):
        read_manifest(spark, RunLayout(str(output)), "load")


def test_load_missing_column_names_file_and_column(spark, tmp_path):
    source = write_csv_source(
        tmp_path / "source", ["1,296,1147880044"], ratings_header="userId,movieId,timestamp"
    )
    output = tmp_path / "run"

    with pytest.raises(InputDataError) as raised:
        run_load(spark, output, str(source))

    message = str(raised.value)
    assert f"invalid header line in file://{source}/ratings.csv" in message
    assert "found 'userId,movieId,timestamp', which is missing the column rating." in message
    assert "Expected a header line with the columns userId,movieId,rating,timestamp" in message
    assert "wrong_field_count" not in message
    assert_nothing_committed(spark, output)


def test_load_rejects_renamed_column(spark, tmp_path):
    header = "userId,movieId,score,timestamp"
    source = write_csv_source(tmp_path / "source", ["1,296,5.0,1147880044"], ratings_header=header)
    output = tmp_path / "run"

    with pytest.raises(InputDataError) as raised:
        run_load(spark, output, str(source))

    message = str(raised.value)
    assert f"file://{source}/ratings.csv" in message
    assert "is missing the column rating and has the unknown column 'score'" in message
    assert_nothing_committed(spark, output)


def test_load_rejects_extra_column(spark, tmp_path):
    header = "userId,movieId,rating,timestamp,tag"
    lines = ["1,296,5.0,1147880044,good"]
    source = write_csv_source(tmp_path / "source", lines, ratings_header=header)
    output = tmp_path / "run"

    with pytest.raises(InputDataError) as raised:
        run_load(spark, output, str(source))

    message = str(raised.value)
    assert f"found '{header}', which has the unknown column 'tag'" in message
    assert_nothing_committed(spark, output)


def test_load_rejects_renamed_movies_column(spark, tmp_path):
    header = "movieId,name,genres"
    source = write_csv_source(tmp_path / "source", ["1,1,5.0,1"], movies_header=header)
    output = tmp_path / "run"

    with pytest.raises(InputDataError) as raised:
        run_load(spark, output, str(source))

    message = str(raised.value)
    assert f"invalid header line in file://{source}/movies.csv" in message
    assert "is missing the column title and has the unknown column 'name'" in message
    assert "Expected a header line with the columns movieId,title,genres" in message
    assert_nothing_committed(spark, output)


def test_load_rejects_headerless_ratings_csv(spark, tmp_path):
    lines = ["1,296,5.0,1147880044", "1,306,3.5,1147868817"]
    source = write_csv_source(tmp_path / "source", lines, ratings_header=None)
    output = tmp_path / "run"

    with pytest.raises(InputDataError) as raised:
        run_load(spark, output, str(source))

    message = str(raised.value)
    assert f"missing header line in file://{source}/ratings.csv" in message
    assert "line 1 is the data row '1,296,5.0,1147880044'" in message
    assert "Add the header line as line 1 and rerun load." in message
    assert_nothing_committed(spark, output)


# --- errors that stop the load ----------------------------------------------------------


def test_load_missing_source_directory(spark, tmp_path):
    with pytest.raises(InputDataError, match="source not found") as raised:
        run_load(spark, tmp_path / "run", str(tmp_path / "nowhere"))
    assert "ml-latest-small" in str(raised.value)


def test_load_missing_movies_file(spark, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(InputDataError, match="u.item is missing"):
        run_load(spark, tmp_path / "run", str(source))


def test_load_empty_ratings_file(spark, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    (source / "movies.csv").write_text("movieId,title,genres\n1,A (2000),Drama\n")
    with pytest.raises(InputDataError) as raised:
        run_load(spark, tmp_path / "run", str(source))
    message = str(raised.value)
    assert "ratings.csv is empty" in message
    assert not fs.exists(spark, str(tmp_path / "run" / "_manifests" / "load.json"))


def test_localhost_file_uri_becomes_plain_file_uri():
    assert load.local_or_uri("file://localhost/data/ml-100k/") == "file:///data/ml-100k"
    assert load.local_or_uri("file:///data/ml-100k") == "file:///data/ml-100k"
    assert load.local_or_uri("s3://bucket/ml-100k/") == "s3://bucket/ml-100k"
