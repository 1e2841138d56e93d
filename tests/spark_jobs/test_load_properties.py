"""Property tests: generated malformed lines mixed with valid ones, through the real load parsing.

Each example builds a ratings file (optionally with a byte-order mark and CRLF
line ends, and with the header that its layout requires), reads it on the shared
Spark session with formats.read_lines (Hadoop's line reader) or
formats.lines_from_bytes (the driver path of the built-in sample), classifies it
with load.classify_ratings and checks the accounting.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from spark_jobs import formats
from spark_jobs.schema import LINE_NUMBER
from spark_jobs.schema import MOVIE
from spark_jobs.schema import RATING
from spark_jobs.schema import REASON
from spark_jobs.schema import USER
from spark_jobs.stages import load

pytestmark = pytest.mark.spark

LAYOUTS = (formats.MOVIELENS_CSV, formats.ML_10M, formats.ML_100K)
OTHER_SEPARATORS = (",", ";", "\t", "::", "|", " ")
# Small id ranges so that generated valid lines repeat (user, movie) pairs now and then.
ids = st.integers(min_value=0, max_value=12)


@dataclass(frozen=True)
class Line:
    """One generated line: its bytes and, for a valid line, the rating it must load as."""

    data: bytes
    valid: tuple[int, int, float] | None


def star_values(scale: formats.RatingScale) -> list[float]:
    count = round((scale.maximum - scale.minimum) / scale.step)
    return [scale.minimum + step * scale.step for step in range(count + 1)]


def rating_text(value: float, style: int) -> str:
    if style == 0 and value == int(value):
        return str(int(value))
    return f"{value:.{style or 1}f}"


@st.composite
def valid_line(draw, layout: formats.Layout) -> Line:
    user, movie = draw(ids), draw(ids)
    rating = draw(st.sampled_from(star_values(layout.scale)))
    timestamp = draw(st.one_of(st.just(""), st.integers(0, 2_000_000_000).map(str)))
    text = rating_text(rating, draw(st.integers(0, 2)))
    fields = [str(user), str(movie), text, timestamp]
    return Line(layout.ratings.separator.join(fields).encode(), (user, movie, rating))


@st.composite
def malformed_line(draw, layout: formats.Layout) -> Line:
    separator = layout.ratings.separator
    good = ["7", "9", "3", "123"]
    kind = draw(
        st.sampled_from(
            [
                "separator",
                "extra",
                "missing",
                "encoding",
                "quoted",
                "blank",
                "id",
                "nan",
                "range",
            ]
        )
    )
    if kind == "separator":
        other = draw(st.sampled_from([s for s in OTHER_SEPARATORS if s not in separator]))
        text = other.join(good)
    elif kind == "extra":
        text = separator.join([*good, draw(st.sampled_from(["", "x", "5"]))])
    elif kind == "missing":
        text = separator.join(good[: draw(st.integers(1, 3))])
    elif kind == "encoding":
        # Latin-1 bytes in a UTF-8 file: never valid UTF-8 on their own.
        field = draw(st.sampled_from([b"\xe9", b"\xff", b"3\xa0"]))
        return Line(separator.join(good[:2]).encode() + separator.encode() + field, None)
    elif kind == "quoted":
        text = separator.join(['"7,9"', "3", "123"]) if separator == "," else '"7,9",3,123'
    elif kind == "blank":
        text = draw(st.sampled_from(["", "  "]))
    elif kind == "id":
        bad_id = draw(st.sampled_from(["", "x1", "-3", "1.5", "99999999999"]))
        text = separator.join([bad_id, "9", "3", "123"])
    elif kind == "nan":
        text = separator.join(["7", "9", draw(st.sampled_from(["NaN", "nan"])), "123"])
    else:
        text = separator.join(["7", "9", draw(st.sampled_from(["0", "5.5", "-1", "6"])), "1"])
    return Line(text.encode(), None)


@st.composite
def ratings_file(draw):
    layout = draw(st.sampled_from(LAYOUTS))
    line = st.one_of(valid_line(layout), malformed_line(layout))
    lines = draw(st.lists(line, min_size=1, max_size=40))
    # load rejects a CSV file without its header line, so every CSV example has one.
    has_header = layout.ratings.header is not None
    return {
        "layout": layout,
        "lines": lines,
        "header": has_header,
        "bom": draw(st.booleans()),
        "crlf": draw(st.booleans()),
        "final_newline": draw(st.booleans()),
        "read_on_driver": draw(st.booleans()),
    }


def encode_file(case: dict) -> tuple[bytes, int]:
    """Return the file's bytes and the line number of its first data line."""
    end = b"\r\n" if case["crlf"] else b"\n"
    pieces = [line.data for line in case["lines"]]
    if case["header"]:
        pieces.insert(0, case["layout"].ratings.header.encode())
    # An empty last line exists only when a line end follows it.
    final_newline = case["final_newline"] or pieces[-1] == b""
    data = end.join(pieces) + (end if final_newline else b"")
    if case["bom"]:
        data = b"\xef\xbb\xbf" + data
    return data, 2 if case["header"] else 1


def expected_accepted(lines: list[Line], first_number: int) -> dict[int, tuple]:
    """Return {line_number: (user, movie, rating)} for the first valid line of each pair."""
    accepted: dict[int, tuple] = {}
    seen = set()
    for number, line in enumerate(lines, start=first_number):
        if line.valid is not None and line.valid[:2] not in seen:
            seen.add(line.valid[:2])
            accepted[number] = line.valid
    return accepted


@pytest.fixture(scope="module")
def small_splits(spark):
    """Cut files into 256-byte splits so larger examples span several partitions."""
    key = "spark.sql.files.maxPartitionBytes"
    saved = spark.conf.get(key)
    spark.conf.set(key, "256")
    yield
    spark.conf.set(key, saved)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=ratings_file())
def test_load_accounts_for_every_line(spark, small_splits, case):
    layout = case["layout"]
    data, first_number = encode_file(case)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / layout.ratings.name
        path.write_bytes(data)
        if case["read_on_driver"]:
            lines = formats.lines_from_bytes(spark, layout.ratings.name, data)
        else:
            lines = formats.read_lines(spark, str(path), layout.ratings.name)
        classified = load.classify_ratings(lines, layout, str(path))
        rows = classified.select(LINE_NUMBER, REASON, USER, MOVIE, RATING).collect()

    # Counting the collected rows saves a Spark job per example; test_load checks
    # count_reasons itself.
    reason_counts = Counter(row[REASON] for row in rows)
    report = load.file_report(layout.ratings.name, "ratings", reason_counts)

    accepted = {
        row[LINE_NUMBER]: (row[USER], row[MOVIE], row[RATING]) for row in rows if row[REASON] is None
    }
    expected = expected_accepted(case["lines"], first_number)
    data_numbers = {row[LINE_NUMBER] for row in rows if row[REASON] != formats.HEADER_LINE}

    assert report["rows_read"] == report["rows_accepted"] + report["rows_quarantined"]
    assert report["rows_read"] == len(case["lines"])
    assert report["header_lines"] == int(case["header"])
    assert data_numbers == set(range(first_number, first_number + len(case["lines"])))
    assert accepted == expected
