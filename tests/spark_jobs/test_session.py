"""Local session settings chosen from the input: pure functions, no Spark session."""

from __future__ import annotations

from spark_jobs import cli
from spark_jobs import session


def test_input_bytes_sums_directory(tmp_path):
    (tmp_path / "ratings.csv").write_bytes(b"x" * 100)
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "a.parquet").write_bytes(b"y" * 23)
    assert session.local_input_bytes([str(tmp_path)]) == 123
    assert session.local_input_bytes([f"file://{tmp_path}"]) == 123


def test_input_bytes_adds_files(tmp_path):
    first, second = tmp_path / "u1.base", tmp_path / "u1.test"
    first.write_bytes(b"x" * 10)
    second.write_bytes(b"x" * 5)
    assert session.local_input_bytes([str(first), str(second)]) == 15


def test_input_bytes_unknown_for_remote_or_missing(tmp_path):
    assert session.local_input_bytes(["s3://bucket/ml-25m"]) is None
    assert session.local_input_bytes(["ml-25m"]) is None
    assert session.local_input_bytes([str(tmp_path / "missing")]) is None


def test_java_options_only_for_small_inputs():
    limit = session.SHORT_RUN_INPUT_BYTES
    assert session.driver_java_options(limit - 1) == session.SHORT_RUN_JAVA_OPTIONS
    assert session.driver_java_options(limit) is None
    assert session.driver_java_options(None) is None


def test_input_uris_of_pipeline_and_stage():
    parser = cli.build_parser()
    pipeline = parser.parse_args(
        ["pipeline", "--output", "/r", "--source", "/d/ml-100k", "--train", "/d/u1.base",
         "--test", "/d/u1.test"]
    )
    assert cli.input_uris(pipeline) == ["/d/ml-100k", "/d/u1.base", "/d/u1.test"]
    train = parser.parse_args(["train", "--output", "/r"])
    assert cli.input_uris(train) == ["/r/ratings"]


def test_input_uris_default_to_builtin_sample():
    load = cli.build_parser().parse_args(["load", "--output", "/r"])
    (uri,) = cli.input_uris(load)
    assert uri.endswith("sample_movielens_ratings.txt")
