"""MovieLens layouts, line numbering, decoding and parsing, on small hand-made files."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_jobs import formats
from spark_jobs.errors import InputDataError
from spark_jobs.schema import GENRES
from spark_jobs.schema import LINE_NUMBER
from spark_jobs.schema import MOVIE
from spark_jobs.schema import RATING
from spark_jobs.schema import RAW_LINE
from spark_jobs.schema import REASON
from spark_jobs.schema import SOURCE_FILE
from spark_jobs.schema import TIMESTAMP
from spark_jobs.schema import TITLE
from spark_jobs.schema import USER

pytestmark = pytest.mark.spark


def write_file(directory: Path, name: str, data: bytes) -> str:
    path = directory / name
    path.write_bytes(data)
    return str(path)


def parsed_ratings(spark, directory: Path, layout: formats.Layout, data: bytes) -> dict:
    """Return {line_number: row} of parse_ratings over ``data`` written as the ratings file."""
    uri = write_file(directory, layout.ratings.name, data)
    lines = formats.read_lines(spark, uri, layout.ratings.name)
    decoded = formats.decode_lines(lines, layout.ratings)
    parsed = formats.parse_ratings(decoded, layout.ratings, layout.scale)
    return {row[LINE_NUMBER]: row for row in parsed.collect()}


def parsed_movies(spark, directory: Path, layout: formats.Layout, data: bytes) -> dict:
    uri = write_file(directory, layout.movies.name, data)
    lines = formats.read_lines(spark, uri, layout.movies.name)
    decoded = formats.decode_lines(lines, layout.movies)
    parsed = formats.parse_movies(decoded, layout.movies, layout.movies_format)
    return {row[LINE_NUMBER]: row for row in parsed.collect()}


def parsed_with_header(spark, directory: Path, text_file: formats.TextFile, data: bytes) -> dict:
    """Return {line_number: row} of a MovieLens CSV file parsed as load does, header first."""
    layout = formats.MOVIELENS_CSV
    uri = write_file(directory, text_file.name, data)
    lines = formats.read_lines(spark, uri, text_file.name)
    decoded, positions = formats.decode_with_header(lines, text_file, uri)
    if text_file == layout.ratings:
        parsed = formats.parse_ratings(decoded, text_file, layout.scale, positions)
    else:
        parsed = formats.parse_movies(decoded, text_file, layout.movies_format, positions)
    return {row[LINE_NUMBER]: row for row in parsed.collect()}


# --- layout detection ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["ratings.csv", "movies.csv", "links.csv", "tags.csv"], formats.MOVIELENS_CSV),
        (["ratings.dat", "movies.dat", "users.dat"], formats.ML_1M),
        (["ratings.dat", "movies.dat", "tags.dat"], formats.ML_10M),
        (["ratings.dat", "movies.dat"], formats.ML_10M),
        (["u.data", "u.item", "u1.base", "u1.test"], formats.ML_100K),
    ],
)
def test_detect_layout_from_files(names, expected):
    assert formats.detect_layout(names, "/data") == expected


def test_detect_layout_names_missing_movies_file():
    with pytest.raises(InputDataError) as raised:
        formats.detect_layout(["ratings.csv", "links.csv"], "s3://bucket/ml")
    message = str(raised.value)
    assert "movies.csv is missing" in message
    assert "s3://bucket/ml" in message


def test_detect_layout_unknown_lists_every_layout():
    with pytest.raises(InputDataError) as raised:
        formats.detect_layout(["notes.txt"], "/data/x")
    message = str(raised.value)
    assert "unknown MovieLens layout in /data/x" in message
    assert "found notes.txt" in message
    for expected in ("ratings.csv and movies.csv", "ratings.dat and movies.dat", "u.data and u.item"):
        assert expected in message


QUARANTINE_REASONS = (
    formats.BLANK_LINE,
    formats.UNDECODABLE_BYTES,
    formats.WRONG_FIELD_COUNT,
    formats.MISSING_ID,
    formats.INVALID_ID,
    formats.INVALID_RATING,
    formats.NAN_RATING,
    formats.RATING_OUT_OF_RANGE,
    formats.RATING_OFF_STEP,
    formats.INVALID_TIMESTAMP,
    formats.DUPLICATE_RATING,
    formats.DUPLICATE_MOVIE,
)


@pytest.mark.parametrize("reason", QUARANTINE_REASONS)
def test_every_reason_has_a_rule(reason):
    rule = formats.reason_rule(reason, formats.ML_100K.ratings, formats.RATING_IDS, formats.WHOLE_STARS)
    assert not rule.startswith("unknown reason")
    assert "{" not in rule


def test_rules_name_columns_and_range():
    ratings = formats.MOVIELENS_CSV.ratings
    movies = formats.MOVIELENS_CSV.movies

    def rule(reason, text_file, ids, quoted=False):
        return formats.reason_rule(reason, text_file, ids, formats.HALF_STARS, quoted)

    assert rule(formats.RATING_OUT_OF_RANGE, ratings, formats.RATING_IDS) == (
        "rating must be from 0.5 to 5"
    )
    assert rule(formats.RATING_OFF_STEP, ratings, formats.RATING_IDS) == (
        "rating must be 0.5 plus a whole number of 0.5 steps"
    )
    assert rule(formats.INVALID_ID, movies, MOVIE) == (
        "an id (movieId) must be a whole number from 0 to 2147483647"
    )
    assert rule(formats.WRONG_FIELD_COUNT, movies, MOVIE, quoted=True) == (
        "a line must have 3 fields separated by ',' (a title containing it goes in double quotes)"
    )
    assert rule("no_such_reason", ratings, formats.RATING_IDS) == "unknown reason 'no_such_reason'"


def test_detect_layout_empty_directory():
    with pytest.raises(InputDataError, match="found nothing"):
        formats.detect_layout([], "/data/empty")


# --- reading lines --------------------------------------------------------------------


@pytest.fixture
def tiny_file_splits(spark):
    """Make Spark cut files into 200-byte splits, so a small file spans several partitions."""
    conf = spark.conf
    saved = {
        key: conf.get(key)
        for key in ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")
    }
    conf.set("spark.sql.files.maxPartitionBytes", "200")
    conf.set("spark.sql.files.openCostInBytes", "0")
    yield
    for key, value in saved.items():
        conf.set(key, value)


def test_read_lines_numbers_lines_across_partitions(spark, tmp_path, tiny_file_splits):
    count = 120
    data = b"".join(f"line {number}\n".encode() for number in range(1, count + 1))
    uri = write_file(tmp_path, "numbered.txt", data)

    lines = formats.read_lines(spark, uri, "numbered.txt")
    rows = lines.collect()

    assert lines.rdd.getNumPartitions() > 1
    assert len(rows) == count
    for row in rows:
        assert bytes(row[formats.BYTES]) == f"line {row[LINE_NUMBER]}".encode()
    assert {row[SOURCE_FILE] for row in rows} == {"numbered.txt"}


def test_read_lines_empty_file(spark, tmp_path):
    uri = write_file(tmp_path, "empty.txt", b"")
    assert formats.read_lines(spark, uri, "empty.txt").count() == 0


def test_lines_from_bytes_matches_read_lines(spark, tmp_path):
    data = b"a\r\nb\n\nc"
    uri = write_file(tmp_path, "x.txt", data)
    from_file = [(r[LINE_NUMBER], bytes(r[formats.BYTES])) for r in
                 formats.read_lines(spark, uri, "x.txt").collect()]
    from_driver = [(r[LINE_NUMBER], bytes(r[formats.BYTES])) for r in
                   formats.lines_from_bytes(spark, "x.txt", data).collect()]
    assert sorted(from_file) == sorted(from_driver)
    assert sorted(from_driver) == [(1, b"a\r"), (2, b"b"), (3, b""), (4, b"c")]


def test_decode_lines_strips_bom_and_crlf(spark, tmp_path):
    data = "\ufeffuserId,movieId,rating,timestamp\r\n1,2,3.5,4\r\n".encode()
    rows = parsed_ratings(spark, tmp_path, formats.MOVIELENS_CSV, data)
    assert rows[1][REASON] == formats.HEADER_LINE
    assert rows[2][REASON] is None
    assert rows[2][RAW_LINE] == "1,2,3.5,4"
    assert rows[2][RATING] == 3.5


def test_decode_lines_marks_invalid_utf8(spark, tmp_path):
    data = b"1::2::3::4\n1::3\xe9::3::4\n"
    rows = parsed_ratings(spark, tmp_path, formats.ML_1M, data)
    assert rows[1][REASON] is None
    assert rows[2][REASON] == formats.UNDECODABLE_BYTES


# --- parsing ratings --------------------------------------------------------------------


BAD_RATING_LINES = [
    ("", formats.BLANK_LINE),
    ("   ", formats.BLANK_LINE),
    ("1,2,3.0", formats.WRONG_FIELD_COUNT),
    ("1,2,3.0,4,5", formats.WRONG_FIELD_COUNT),
    ("1;2;3.0;4", formats.WRONG_FIELD_COUNT),
    ('"1,2",3.0,4', formats.INVALID_ID),
    (",2,3.0,4", formats.MISSING_ID),
    ("1,,3.0,4", formats.MISSING_ID),
    ("abc,2,3.0,4", formats.INVALID_ID),
    ("1,2x,3.0,4", formats.INVALID_ID),
    ("-1,2,3.0,4", formats.INVALID_ID),
    ("1,2.5,3.0,4", formats.INVALID_ID),
    ("99999999999,2,3.0,4", formats.INVALID_ID),
    ("1,2,good,4", formats.INVALID_RATING),
    ("1,2,,4", formats.INVALID_RATING),
    ("1,2,Infinity,4", formats.INVALID_RATING),
    ("1,2,NaN,4", formats.NAN_RATING),
    ("1,2,nan,4", formats.NAN_RATING),
    ("1,2,5.5,4", formats.RATING_OUT_OF_RANGE),
    ("1,2,0,4", formats.RATING_OUT_OF_RANGE),
    ("1,2,-1,4", formats.RATING_OUT_OF_RANGE),
    ("1,2,3.25,4", formats.RATING_OFF_STEP),
    ("1,2,3.0,noon", formats.INVALID_TIMESTAMP),
]


def test_parse_ratings_reasons(spark, tmp_path):
    lines = ["userId,movieId,rating,timestamp"] + [line for line, _ in BAD_RATING_LINES]
    rows = parsed_ratings(spark, tmp_path, formats.MOVIELENS_CSV, "\n".join(lines).encode())

    assert len(rows) == len(lines)
    for number, (line, reason) in enumerate(BAD_RATING_LINES, start=2):
        assert (line, rows[number][REASON]) == (line, reason)
        assert rows[number][RAW_LINE] == line
        assert rows[number][USER] is None


def test_parse_ratings_valid_values(spark, tmp_path):
    data = b"0::7::1::978300760\n2147483647::1::5:: 12 \n3::4::2.0::\n"
    rows = parsed_ratings(spark, tmp_path, formats.ML_1M, data)

    assert [rows[n][REASON] for n in (1, 2, 3)] == [None, None, None]
    assert (rows[1][USER], rows[1][MOVIE], rows[1][RATING], rows[1][TIMESTAMP]) == (
        0, 7, 1.0, 978300760)
    assert rows[2][USER] == 2147483647
    assert rows[2][TIMESTAMP] == 12
    assert rows[3][TIMESTAMP] is None


def test_parse_ratings_whole_star_scale_rejects_half_stars(spark, tmp_path):
    rows = parsed_ratings(spark, tmp_path, formats.ML_100K, b"1\t2\t3.5\t4\n1\t3\t3\t4\n")
    assert rows[1][REASON] == formats.RATING_OFF_STEP
    assert rows[2][REASON] is None


def test_parse_ratings_header_only_on_first_line(spark, tmp_path):
    data = b"1,2,3.0,4\nuserId,movieId,rating,timestamp\n"
    rows = parsed_ratings(spark, tmp_path, formats.MOVIELENS_CSV, data)
    assert rows[1][REASON] is None
    assert rows[2][REASON] == formats.INVALID_ID


def test_mark_duplicates_keeps_first_occurrence(spark, tmp_path):
    data = b"1,1,4.0,1\n1,2,bad,1\n1,2,3.0,1\n1,1,2.0,1\n2,1,2.0,1\n1,2,5.0,1\n"
    uri = write_file(tmp_path, "ratings.csv", data)
    layout = formats.MOVIELENS_CSV
    decoded = formats.decode_lines(formats.read_lines(spark, uri, "ratings.csv"), layout.ratings)
    parsed = formats.parse_ratings(decoded, layout.ratings, layout.scale)
    marked = formats.mark_duplicates(parsed, (USER, MOVIE), formats.DUPLICATE_RATING)
    reasons = {row[LINE_NUMBER]: row[REASON] for row in marked.collect()}

    assert reasons == {
        1: None,
        2: formats.INVALID_RATING,
        3: None,
        4: formats.DUPLICATE_RATING,
        5: None,
        6: formats.DUPLICATE_RATING,
    }


# --- CSV header lines -------------------------------------------------------------------

RATINGS_CSV = formats.MOVIELENS_CSV.ratings
MOVIES_CSV = formats.MOVIELENS_CSV.movies


@pytest.mark.parametrize(
    ("header", "positions"),
    [
        ("userId,movieId,rating,timestamp", (0, 1, 2, 3)),
        ("movieId,userId,rating,timestamp", (1, 0, 2, 3)),
        ("timestamp,rating,movieId,userId", (3, 2, 1, 0)),
        (" UserId , MOVIEID,rating,Timestamp ", (0, 1, 2, 3)),
    ],
)
def test_header_positions_match_by_name(header, positions):
    assert formats.header_positions(RATINGS_CSV, header, "s3://b/ratings.csv") == positions


def test_header_positions_movies_csv():
    assert formats.header_positions(MOVIES_CSV, "title,genres,movieId", "m.csv") == (2, 0, 1)


def header_error(text_file: formats.TextFile, line: str) -> str:
    with pytest.raises(InputDataError) as raised:
        formats.header_positions(text_file, line, "s3://bucket/ml/ratings.csv")
    return str(raised.value)


def test_header_positions_missing_column():
    message = header_error(RATINGS_CSV, "userId,movieId,timestamp")
    assert message.startswith(
        "invalid header line in s3://bucket/ml/ratings.csv: found 'userId,movieId,timestamp', "
        "which is missing the column rating. "
    )
    assert "Expected a header line with the columns userId,movieId,rating,timestamp, " in message
    assert "each once and in any order, because load matches the columns of ratings.csv " in message
    assert message.endswith("Correct line 1 of the file and rerun load.")


@pytest.mark.parametrize(
    ("header", "fault"),
    [
        (
            "userId,movieId,score,timestamp",
            "is missing the column rating and has the unknown column 'score'",
        ),
        ("userId,movieId,rating,timestamp,tag", "which has the unknown column 'tag'."),
        ("userId,movieId,rating,timestamp,", "which has the unknown column ''."),
        (
            "userId,userId,rating,timestamp",
            "is missing the column movieId and repeats the column 'userId'",
        ),
        (
            "userId;movieId;rating;timestamp",
            "is missing the columns userId, movieId, rating, timestamp "
            "and has the unknown column 'userId;movieId;rating;timestamp'",
        ),
        ("user,item,score,time", "has the unknown columns 'user', 'item', 'score', 'time'"),
    ],
)
def test_header_positions_rejects_mismatch(header, fault):
    message = header_error(RATINGS_CSV, header)
    assert f"invalid header line in s3://bucket/ml/ratings.csv: found {header!r}" in message
    assert fault in message


def test_header_positions_rejects_data_row():
    message = header_error(RATINGS_CSV, "1,296,5.0,1147880044")
    assert message.startswith(
        "missing header line in s3://bucket/ml/ratings.csv: "
        "line 1 is the data row '1,296,5.0,1147880044'. "
    )
    assert message.endswith("Add the header line as line 1 and rerun load.")


def test_header_positions_rejects_blank_line():
    message = header_error(RATINGS_CSV, "  ")
    assert message.startswith(
        "missing header line in s3://bucket/ml/ratings.csv: line 1 is blank. "
    )


def test_headerless_movies_csv_first_line_is_data():
    message = header_error(MOVIES_CSV, "1,Toy Story (1995),Animation")
    assert "line 1 is the data row '1,Toy Story (1995),Animation'" in message
    assert "the columns movieId,title,genres" in message


def test_parse_ratings_reordered_header(spark, tmp_path):
    data = (
        b"\xef\xbb\xbfmovieId,userId,timestamp,rating\r\n"
        b"296,1,1147880044,5.0\r\n"
        b"306,2,,3.5\r\n"
    )
    rows = parsed_with_header(spark, tmp_path, RATINGS_CSV, data)

    assert rows[1][REASON] == formats.HEADER_LINE
    assert (rows[2][USER], rows[2][MOVIE], rows[2][RATING], rows[2][TIMESTAMP]) == (
        1, 296, 5.0, 1147880044)
    assert (rows[3][USER], rows[3][MOVIE], rows[3][RATING], rows[3][TIMESTAMP]) == (
        2, 306, 3.5, None)
    assert rows[3][REASON] is None


def test_parse_ratings_checks_moved_fields(spark, tmp_path):
    data = b"rating,movieId,userId,timestamp\n9,2,1,1\n4.0,x,1,1\n4.0,2,1,noon\n"
    rows = parsed_with_header(spark, tmp_path, RATINGS_CSV, data)

    assert rows[2][REASON] == formats.RATING_OUT_OF_RANGE
    assert rows[3][REASON] == formats.INVALID_ID
    assert rows[4][REASON] == formats.INVALID_TIMESTAMP


def test_parse_movies_reordered_header(spark, tmp_path):
    data = (
        b'title,movieId,genres\n'
        b'"American President, The (1995)",11,Comedy|Romance\n'
        b'Plain (1999),13,Drama\n'
        b'"Unclosed, (1999),14,Drama\n'
    )
    rows = parsed_with_header(spark, tmp_path, MOVIES_CSV, data)

    assert rows[1][REASON] == formats.HEADER_LINE
    assert (rows[2][MOVIE], rows[2][TITLE], rows[2][GENRES]) == (
        11, "American President, The (1995)", "Comedy|Romance")
    assert (rows[3][MOVIE], rows[3][TITLE], rows[3][GENRES]) == (13, "Plain (1999)", "Drama")
    assert rows[4][REASON] == formats.WRONG_FIELD_COUNT


def test_decode_with_header_rejects_bad_header(spark, tmp_path):
    data = b"userId,movieId,timestamp\n1,296,1147880044\n"
    with pytest.raises(InputDataError, match="is missing the column rating"):
        parsed_with_header(spark, tmp_path, RATINGS_CSV, data)


def test_decode_with_header_empty_file(spark, tmp_path):
    assert parsed_with_header(spark, tmp_path, RATINGS_CSV, b"") == {}


def test_decode_with_header_leaves_headerless_layouts(spark, tmp_path):
    layout = formats.ML_100K
    uri = write_file(tmp_path, "u.data", b"196\t242\t3\t881250949\n")
    lines = formats.read_lines(spark, uri, "u.data")
    decoded, positions = formats.decode_with_header(lines, layout.ratings, uri)
    rows = formats.parse_ratings(decoded, layout.ratings, layout.scale, positions).collect()

    assert positions == (0, 1, 2, 3)
    assert [(row[REASON], row[USER], row[MOVIE]) for row in rows] == [(None, 196, 242)]


# --- parsing movies -----------------------------------------------------------------------


def test_parse_movies_csv_quoted_titles(spark, tmp_path):
    data = (
        b'movieId,title,genres\r\n'
        b'11,"American President, The (1995)",Comedy|Drama|Romance\r\n'
        b'12,"Story of ""Bob"", The (2001)",Drama\r\n'
        b'13,Plain (1999),(no genres listed)\r\n'
        b'14,"Unclosed, (1999),Drama\r\n'
        b'15,Extra,Field,Drama\r\n'
        b'x,Bad id (1999),Drama\r\n'
    )
    rows = parsed_movies(spark, tmp_path, formats.MOVIELENS_CSV, data)

    assert rows[1][REASON] == formats.HEADER_LINE
    assert (rows[2][MOVIE], rows[2][TITLE], rows[2][GENRES]) == (
        11, "American President, The (1995)", "Comedy|Drama|Romance")
    assert rows[3][TITLE] == 'Story of "Bob", The (2001)'
    assert rows[4][TITLE] == "Plain (1999)"
    assert rows[5][REASON] == formats.WRONG_FIELD_COUNT
    assert rows[6][REASON] == formats.WRONG_FIELD_COUNT
    assert rows[7][REASON] == formats.INVALID_ID


def test_parse_movies_dat_latin1_and_utf8(spark, tmp_path):
    data = (
        "1::Misérables, Les (1995)::Drama|Musical\n".encode("latin-1")
        + "2::Amélie (2001)::Comedy|Romance\n".encode()
        + b"3::Too::Many::Fields\n"
    )
    rows = parsed_movies(spark, tmp_path, formats.ML_1M, data)

    assert rows[1][TITLE] == "Misérables, Les (1995)"
    assert rows[1][GENRES] == "Drama|Musical"
    assert rows[2][TITLE] == "Amélie (2001)"
    assert rows[3][REASON] == formats.WRONG_FIELD_COUNT


def test_parse_movies_item_genre_flags(spark, tmp_path):
    flags_drama_musical = ["0"] * 19
    flags_drama_musical[8] = "1"
    flags_drama_musical[12] = "1"
    line_1 = "|".join(["543", "Misérables, Les (1995)", "01-Jan-1995", "", "http://x"]
                      + flags_drama_musical)
    line_2 = "|".join(["267", "unknown", "", "", ""] + ["0"] * 19)
    line_3 = "|".join(["9", "Short line", "", ""])
    data = "\n".join([line_1, line_2, line_3]).encode("latin-1")
    rows = parsed_movies(spark, tmp_path, formats.ML_100K, data)

    assert rows[1][TITLE] == "Misérables, Les (1995)"
    assert rows[1][GENRES] == "Drama|Musical"
    assert rows[2][GENRES] == formats.NO_GENRES
    assert rows[3][REASON] == formats.WRONG_FIELD_COUNT


def test_lines_from_bytes_strips_bom(spark):
    layout = formats.BUILTIN_SAMPLE
    data = b"\xef\xbb\xbf0::2::3::1424380312\r\n1::2::4::1424380312\r\n"
    lines = formats.lines_from_bytes(spark, layout.ratings.name, data)
    decoded = formats.decode_lines(lines, layout.ratings)
    rows = {row[LINE_NUMBER]: row for row in
            formats.parse_ratings(decoded, layout.ratings, layout.scale).collect()}

    assert rows[1][REASON] is None
    assert rows[1][RAW_LINE] == "0::2::3::1424380312"
    assert rows[1][USER] == 0
    assert rows[2][REASON] is None
