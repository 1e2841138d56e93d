"""MovieLens layouts: which files each one has, how to detect it, and how to parse its lines.

Every published MovieLens layout is described here as data (file names, separator,
field count, text encoding, rating scale). Parsing runs in the JVM as Spark SQL
expressions with no Python UDFs, so no rating passes through a Python worker.

Parsing never drops a line silently. Each line of an input file either becomes a
row or is marked with a quarantine reason, so for every file
``rows_read == rows_accepted + rows_quarantined``. Header lines of the CSV layouts
are the only lines that are neither; they are counted separately. The load and
split stages check a CSV file's header line before parsing its rows and match the
columns by name (header_positions), so their order in the file does not matter.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

from pyspark.sql import Column
from pyspark.sql import DataFrame
from pyspark.sql import SparkSession
from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType
from pyspark.sql.types import LongType
from pyspark.sql.types import StringType
from pyspark.sql.types import StructField
from pyspark.sql.types import StructType

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

logger = logging.getLogger(__name__)

# Text encodings, named as Java's Charset names them because Spark's decode() takes those.
UTF_8 = "UTF-8"
LATIN_1 = "ISO-8859-1"
# Decode a line as UTF-8 when its bytes are valid UTF-8, otherwise as Latin-1. Used for
# the movies.dat of ml-1m (Latin-1) and ml-10m, which share one layout description.
UTF_8_OR_LATIN_1 = "UTF-8, else ISO-8859-1"

# Quarantine reasons, as stored in the reason column and counted in load_report.json.
BLANK_LINE = "blank_line"
UNDECODABLE_BYTES = "undecodable_bytes"
WRONG_FIELD_COUNT = "wrong_field_count"
MISSING_ID = "missing_id"
INVALID_ID = "invalid_id"
INVALID_RATING = "invalid_rating"
NAN_RATING = "nan_rating"
RATING_OUT_OF_RANGE = "rating_out_of_range"
RATING_OFF_STEP = "rating_off_step"
INVALID_TIMESTAMP = "invalid_timestamp"
DUPLICATE_RATING = "duplicate_rating"
DUPLICATE_MOVIE = "duplicate_movie"
# The rule behind each reason, for error messages. {ids} names the id columns of the
# file; the other fields come from its layout.
REASON_RULES = {
    BLANK_LINE: "a line may not be blank",
    UNDECODABLE_BYTES: "a line must be valid {encoding} text",
    WRONG_FIELD_COUNT: "a line must have {fields} fields separated by {separator!r}{quoting}",
    MISSING_ID: "an id ({ids}) may not be empty",
    INVALID_ID: "an id ({ids}) must be a whole number from 0 to {max_id}",
    INVALID_RATING: "rating must be a number",
    NAN_RATING: "rating must be a number, not NaN",
    RATING_OUT_OF_RANGE: "rating must be from {minimum:g} to {maximum:g}",
    RATING_OFF_STEP: "rating must be {minimum:g} plus a whole number of {step:g} steps",
    INVALID_TIMESTAMP: "timestamp must be a whole number of seconds, or empty",
    DUPLICATE_RATING: "a (userId, movieId) pair may appear once, and the first line is kept",
    DUPLICATE_MOVIE: "a movieId may appear once, and the first line is kept",
}
# Error messages show this many quarantined lines of each reason, cut to EXAMPLE_WIDTH.
EXAMPLE_LINES = 3
EXAMPLE_WIDTH = 80
RATING_IDS = f"{USER} or {MOVIE}"
# Marks the header line of a CSV file in the reason column. It is not a quarantine
# reason: header lines are counted apart and written nowhere.
HEADER_LINE = "header_line"

# Column names used only between read_lines, decode_lines and the parsers.
BYTES = "bytes"
TEXT = "text"
VALID_ENCODING = "valid_encoding"
IS_HEADER = "is_header"

LINES_SCHEMA = StructType(
    [
        StructField(SOURCE_FILE, StringType(), nullable=False),
        StructField(LINE_NUMBER, LongType(), nullable=False),
        StructField(BYTES, BinaryType(), nullable=True),
    ]
)

# Genre names of the 19 flag columns at the end of ml-100k's u.item, in order (from u.genre).
ML_100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# The genres value of ml-latest for a movie without genres, also given to u.item rows
# without a genre flag.
NO_GENRES = "(no genres listed)"

MAX_ID = 2**31 - 1  # ids are stored as IntegerType
ROW_ID_BITS = 33  # monotonically_increasing_id() keeps the row index in the low 33 bits
# Tolerance when checking that a rating is a whole number of steps above the minimum.
STEP_TOLERANCE = 1e-6

NUMBER_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
ID_PATTERN = r"^[0-9]{1,10}$"
TIMESTAMP_PATTERN = r"^-?[0-9]{1,18}$"
# Fields of a movies.csv line, for csv_movie_pattern. The title may be double-quoted
# (with "" for a quote) and then may contain commas. Ids and genres never contain a comma.
CSV_PLAIN_FIELD = r"([^,]*)"
CSV_QUOTABLE_FIELD = r'("(?:[^"]|"")*"|[^,]*)'


@dataclass(frozen=True)
class RatingScale:
    """The ratings a layout allows: ``minimum`` to ``maximum`` in whole ``step``s (stars)."""

    minimum: float
    maximum: float
    step: float

    def to_dict(self) -> dict[str, float]:
        return {"min": self.minimum, "max": self.maximum, "step": self.step}


HALF_STARS = RatingScale(minimum=0.5, maximum=5.0, step=0.5)
WHOLE_STARS = RatingScale(minimum=1.0, maximum=5.0, step=1.0)


@dataclass(frozen=True)
class TextFile:
    """One delimited text file of a layout.

    ``separator`` is a literal string (not a regular expression). ``header`` is the
    first line when the file has one; it is compared without case or surrounding spaces.
    """

    name: str
    separator: str
    field_count: int
    encoding: str = UTF_8
    header: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names of ``header`` in the layout's order (empty without a header)."""
        if self.header is None:
            return ()
        return tuple(self.header.split(self.separator))

    def default_positions(self) -> tuple[int, ...]:
        """Return the position of each column in a file laid out in the layout's order."""
        return tuple(range(self.field_count))


def reason_rule(
    reason: str, text_file: TextFile, ids: str, scale: RatingScale, quoted: bool = False
) -> str:
    """Return the rule that a row quarantined for ``reason`` broke, with its columns and range.

    ``ids`` names the file's id columns, such as "userId or movieId". ``quoted`` is true
    when a field may contain the separator inside double quotes, as a title in
    movies.csv may.
    """
    rule = REASON_RULES.get(reason)
    if rule is None:
        return f"unknown reason {reason!r}"
    return rule.format(
        ids=ids,
        fields=text_file.field_count,
        separator=text_file.separator,
        quoting=" (a title containing it goes in double quotes)" if quoted else "",
        encoding=text_file.encoding,
        minimum=scale.minimum,
        maximum=scale.maximum,
        step=scale.step,
        max_id=MAX_ID,
    )


@dataclass(frozen=True)
class Layout:
    """A MovieLens file layout: its files, how their movie lines are laid out and its scale.

    ``movies_format`` is "csv" (quoted titles), "dat" (``::`` separated) or "item"
    (ml-100k's u.item with genre flags), or None when the layout has no movies file.
    """

    name: str
    datasets: tuple[str, ...]
    ratings: TextFile
    movies: TextFile | None
    movies_format: str | None
    scale: RatingScale

    def expected_files(self) -> tuple[str, ...]:
        if self.movies is None:
            return (self.ratings.name,)
        return (self.ratings.name, self.movies.name)

    def describe(self) -> str:
        files = " and ".join(self.expected_files())
        return f"{self.name} ({', '.join(self.datasets)}): {files}"


MOVIELENS_CSV = Layout(
    name="movielens-csv",
    datasets=("ml-latest", "ml-latest-small", "ml-20m", "ml-25m", "ml-32m"),
    ratings=TextFile("ratings.csv", ",", 4, header="userId,movieId,rating,timestamp"),
    movies=TextFile("movies.csv", ",", 3, header="movieId,title,genres"),
    movies_format="csv",
    scale=HALF_STARS,
)
ML_1M = Layout(
    name="ml-1m",
    datasets=("ml-1m",),
    ratings=TextFile("ratings.dat", "::", 4),
    movies=TextFile("movies.dat", "::", 3, encoding=UTF_8_OR_LATIN_1),
    movies_format="dat",
    scale=WHOLE_STARS,
)
ML_10M = Layout(
    name="ml-10m",
    datasets=("ml-10m",),
    ratings=TextFile("ratings.dat", "::", 4),
    movies=TextFile("movies.dat", "::", 3, encoding=UTF_8_OR_LATIN_1),
    movies_format="dat",
    scale=HALF_STARS,
)
ML_100K = Layout(
    name="ml-100k",
    datasets=("ml-100k",),
    ratings=TextFile("u.data", "\t", 4),
    movies=TextFile("u.item", "|", 5 + len(ML_100K_GENRES), encoding=LATIN_1),
    movies_format="item",
    scale=WHOLE_STARS,
)
BUILTIN_SAMPLE = Layout(
    name="builtin-sample",
    datasets=("the sample_movielens_ratings.txt that pyspark ships",),
    ratings=TextFile("sample_movielens_ratings.txt", "::", 4),
    movies=None,
    movies_format=None,
    scale=WHOLE_STARS,
)

# Layouts that detect_layout recognises in a directory, in the order it tries them.
DIRECTORY_LAYOUTS = (MOVIELENS_CSV, ML_1M, ML_100K)
# ml-1m ships users.dat and ml-10m ships tags.dat beside the shared ratings.dat/movies.dat.
ML_1M_MARKER = "users.dat"


def detect_layout(names: Collection[str], source: str) -> Layout:
    """Return the layout whose ratings file is among ``names`` (the files in ``source``).

    Raises InputDataError naming the missing file when the ratings file is there but
    the movies file is not, and listing every layout's files when nothing matches.
    A ``::`` directory without users.dat is read as ml-10m, whose half-star scale
    also accepts every ml-1m rating.
    """
    present = set(names)
    for layout in DIRECTORY_LAYOUTS:
        if layout.ratings.name not in present:
            continue
        missing = [name for name in layout.expected_files() if name not in present]
        if missing:
            raise InputDataError(
                f"{source} looks like the {layout.name} layout ({layout.ratings.name} is there) "
                f"but {', '.join(missing)} is missing. Copy the complete data set into {source}."
            )
        if layout.movies_format == "dat" and ML_1M_MARKER not in present:
            logger.info("%s has no %s, so it is read as ml-10m (half stars)", source, ML_1M_MARKER)
            return ML_10M
        return layout
    expected = "; ".join(layout.describe() for layout in (MOVIELENS_CSV, ML_1M, ML_10M, ML_100K))
    found = ", ".join(sorted(present)) or "nothing"
    raise InputDataError(
        f"unknown MovieLens layout in {source}: found {found}. Expected one of: {expected}. "
        f"Point --source at an extracted MovieLens directory or give a dataset name."
    )


def read_lines(spark: SparkSession, uri: str, file_name: str) -> DataFrame:
    """Return one row per line of the text file at ``uri``: source_file, line_number, bytes.

    Line numbers are 1-based and exact even when Spark splits the file into several
    partitions. Lines end at "\\n" only; a trailing "\\r" stays in the bytes for
    decode_lines to remove. The file is read once into a local checkpoint in executor
    memory and disk, so the rows must fit there. Losing an executor then fails the
    job rather than renumbering lines.
    """
    # Spark reads a file split by split, and the partitions of one scan do not come
    # back ordered by offset. Within a partition the rows of each split are contiguous
    # and in file order, so a row's line number is the number of lines in the splits
    # before its own plus its position inside its split.
    position = F.col("_row_id").bitwiseAND(F.lit((1 << ROW_ID_BITS) - 1))
    raw = (
        spark.read.option("lineSep", "\n")
        .text(uri)
        .select(
            F.col("value").cast("binary").alias(BYTES),
            F.col("_metadata.file_block_start").alias("_block"),
            F.monotonically_increasing_id().alias("_row_id"),
        )
        .withColumn("_position", position)
    )
    # The split sizes of a scan depend on the cluster's parallelism when it runs, which
    # changes under dynamic allocation. Checkpointing fixes the splits and row ids, so
    # the per-split counts below and the numbered rows come from the same read.
    raw = raw.localCheckpoint(eager=True)
    splits = (
        raw.groupBy("_block")
        .agg(F.min("_position").alias("first"), F.count(F.lit(1)).alias("lines"))
        .orderBy("_block")
        .collect()
    )
    offsets = {}
    lines_before = 0
    for split in splits:
        offsets[split["_block"]] = lines_before + 1 - split["first"]
        lines_before += split["lines"]
    if not offsets:
        return spark.createDataFrame([], LINES_SCHEMA)
    offset_map = F.create_map(
        *chain.from_iterable((F.lit(k), F.lit(v)) for k, v in offsets.items())
    )
    return raw.select(
        F.lit(file_name).alias(SOURCE_FILE),
        (offset_map[F.col("_block")] + F.col("_position")).cast(LongType()).alias(LINE_NUMBER),
        F.col(BYTES),
    )


def lines_from_bytes(spark: SparkSession, file_name: str, data: bytes) -> DataFrame:
    """Return the lines of ``data`` in the shape of read_lines, for files read on the driver."""
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()  # a final "\n" ends the last line, as in Hadoop's line reader
    rows = [(file_name, number, bytearray(piece)) for number, piece in enumerate(pieces, start=1)]
    return spark.createDataFrame(rows, LINES_SCHEMA)


def _decoded_text(encoding: str) -> tuple[Column, Column]:
    raw = F.col(BYTES)
    as_utf_8 = F.decode(raw, UTF_8)
    # Java replaces invalid UTF-8 with U+FFFD, so the bytes survive a round trip only
    # when they were valid.
    valid_utf_8 = F.encode(as_utf_8, UTF_8) == raw
    if encoding == UTF_8:
        return as_utf_8, valid_utf_8
    if encoding == LATIN_1:
        return F.decode(raw, LATIN_1), F.lit(True)
    if encoding == UTF_8_OR_LATIN_1:
        return F.when(valid_utf_8, as_utf_8).otherwise(F.decode(raw, LATIN_1)), F.lit(True)
    raise ValueError(f"unknown encoding {encoding!r}")


def decode_lines(lines: DataFrame, text_file: TextFile, header_required: bool = False) -> DataFrame:
    """Decode the bytes of each line and mark the header line.

    Adds ``text`` (without a trailing "\\r" or a leading byte-order mark),
    ``valid_encoding`` and ``is_header``, and drops ``bytes``. With
    ``header_required`` and a layout header, line 1 is the header, and the caller
    checks it with header_positions (decode_with_header does both). Otherwise line 1
    is the header only when it equals ``text_file.header`` without case or
    surrounding spaces.
    """
    text, valid = _decoded_text(text_file.encoding)
    text = F.regexp_replace(text, "\r\\z", "")
    text = F.when(F.col(LINE_NUMBER) == 1, F.regexp_replace(text, "^\ufeff", "")).otherwise(text)
    decoded = lines.withColumn(TEXT, text).withColumn(VALID_ENCODING, valid)
    if text_file.header is None:
        is_header = F.lit(False)
    elif header_required:
        is_header = F.col(LINE_NUMBER) == 1
    else:
        is_header = (F.col(LINE_NUMBER) == 1) & (
            F.lower(F.trim(F.col(TEXT))) == text_file.header.lower()
        )
    return decoded.withColumn(IS_HEADER, is_header).drop(BYTES)


def header_positions(
    text_file: TextFile, line: str, uri: str, stage: str = "load"
) -> tuple[int, ...]:
    """Match the header line of a CSV file to the layout's columns by name.

    ``line`` is the decoded line 1 of the file at ``uri``. Returns the position in
    the file of each of ``text_file.columns``, in the layout's order: (1, 0, 2, 3)
    for a ratings.csv whose header is movieId,userId,rating,timestamp. Names are
    compared without case or surrounding spaces. Raises InputDataError when line 1
    is blank or a data row, or when it lacks a column, repeats one, or has a column
    that the layout does not have.
    """
    canonical = {column.lower(): column for column in text_file.columns}
    found = [name.strip() for name in line.split(text_file.separator)]
    positions: dict[str, int] = {}
    unknown: list[str] = []
    repeated: list[str] = []
    for position, name in enumerate(found):
        column = canonical.get(name.lower())
        if column is None:
            unknown.append(name)
        elif column in positions:
            repeated.append(name)
        else:
            positions[column] = position
    missing = [column for column in text_file.columns if column not in positions]
    if not (missing or unknown or repeated):
        return tuple(positions[column] for column in text_file.columns)

    add_header = f"Add the header line as line 1 and rerun {stage}."
    if not line.strip():
        problem = f"missing header line in {uri}: line 1 is blank"
        raise _header_error(text_file, uri, problem, add_header, stage)
    # A data row in the layout's order starts with an id, which no column name matches.
    if not positions and re.match(NUMBER_PATTERN, found[0]):
        problem = f"missing header line in {uri}: line 1 is the data row {_shorten(line)!r}"
        raise _header_error(text_file, uri, problem, add_header, stage)
    faults = []
    if missing:
        faults.append(f"is missing the {_column_list(missing, quote=False)}")
    if unknown:
        faults.append(f"has the unknown {_column_list(unknown, quote=True)}")
    if repeated:
        faults.append(f"repeats the {_column_list(repeated, quote=True)}")
    found_line = _shorten(line)
    problem = f"invalid header line in {uri}: found {found_line!r}, which {' and '.join(faults)}"
    raise _header_error(
        text_file, uri, problem, f"Correct line 1 of the file and rerun {stage}.", stage
    )


def _column_list(names: Sequence[str], quote: bool) -> str:
    noun = "column" if len(names) == 1 else "columns"
    formatted = [repr(name) if quote else name for name in names]
    return f"{noun} {', '.join(formatted)}"


def _header_error(
    text_file: TextFile, uri: str, problem: str, fix: str, stage: str
) -> InputDataError:
    expected = text_file.separator.join(text_file.columns)
    file_name = uri.rstrip("/").rsplit("/", 1)[-1]
    return InputDataError(
        f"{problem}. Expected a header line with the columns {expected}, each once and in "
        f"any order, because {stage} matches the columns of {file_name} by name. {fix}"
    )


def decode_with_header(
    lines: DataFrame, text_file: TextFile, uri: str, stage: str = "load"
) -> tuple[DataFrame, tuple[int, ...]]:
    """Decode the lines of the file at ``uri`` and match its header line by name.

    Returns the decoded lines and the position of each layout column, as
    header_positions does. A layout without a header, and an empty file, get the
    layout's order, so the caller reports an empty file as it does for any layout.
    Raises InputDataError as header_positions does, after one Spark job for line 1.
    """
    if text_file.header is None:
        return decode_lines(lines, text_file), text_file.default_positions()
    decoded = decode_lines(lines, text_file, header_required=True)
    first = decoded.filter(F.col(LINE_NUMBER) == 1).select(TEXT).first()
    if first is None:
        return decoded, text_file.default_positions()
    return decoded, header_positions(text_file, first[TEXT], uri, stage)


def _split_fields(text_file: TextFile) -> Column:
    # split() takes a Java regular expression; \Q..\E makes the separator literal.
    return F.split(F.col(TEXT), f"\\Q{text_file.separator}\\E", -1)


def _id_reason(field: Column) -> Column:
    value = F.trim(field)
    return (
        F.when(value == "", F.lit(MISSING_ID))
        .when(~value.rlike(ID_PATTERN), F.lit(INVALID_ID))
        .when(value.cast(LongType()) > MAX_ID, F.lit(INVALID_ID))
    )


def _rating_reason(field: Column, scale: RatingScale) -> Column:
    text = F.trim(field)
    value = text.cast("double")
    steps = (value - F.lit(scale.minimum)) / F.lit(scale.step)
    return (
        F.when(F.lower(text) == "nan", F.lit(NAN_RATING))
        .when(~text.rlike(NUMBER_PATTERN), F.lit(INVALID_RATING))
        .when((value < scale.minimum) | (value > scale.maximum), F.lit(RATING_OUT_OF_RANGE))
        .when(F.abs(steps - F.round(steps)) > STEP_TOLERANCE, F.lit(RATING_OFF_STEP))
    )


def _timestamp_reason(field: Column) -> Column:
    text = F.trim(field)
    return F.when((text != "") & ~text.rlike(TIMESTAMP_PATTERN), F.lit(INVALID_TIMESTAMP))


def _line_reason(field_count_ok: Column) -> Column:
    return (
        F.when(~F.col(VALID_ENCODING), F.lit(UNDECODABLE_BYTES))
        .when(F.trim(F.col(TEXT)) == "", F.lit(BLANK_LINE))
        .when(~field_count_ok, F.lit(WRONG_FIELD_COUNT))
    )


def parse_ratings(
    decoded: DataFrame,
    text_file: TextFile,
    scale: RatingScale,
    positions: Sequence[int] | None = None,
) -> DataFrame:
    """Parse decoded rating lines into typed columns and a quarantine reason.

    Returns source_file, line_number, raw_line, reason, userId, movieId, rating,
    timestamp for every line. ``reason`` is null for a valid line, HEADER_LINE for
    the header, and otherwise the first check the line failed. The typed columns are
    null unless the line is valid. Duplicates are marked by mark_duplicates.
    ``positions`` gives the field positions of userId, movieId, rating and timestamp,
    as header_positions returns them, and defaults to that order.
    """
    user_at, movie_at, rating_at, timestamp_at = positions or text_file.default_positions()
    fields = _split_fields(text_file)
    data = decoded.withColumn("_fields", fields)
    field = F.col("_fields")
    reason = F.when(F.col(IS_HEADER), F.lit(HEADER_LINE)).otherwise(
        F.coalesce(
            _line_reason(F.size(field) == text_file.field_count),
            _id_reason(field[user_at]),
            _id_reason(field[movie_at]),
            _rating_reason(field[rating_at], scale),
            _timestamp_reason(field[timestamp_at]),
        )
    )
    valid = reason.isNull()
    timestamp = F.trim(field[timestamp_at])
    return data.select(
        F.col(SOURCE_FILE),
        F.col(LINE_NUMBER),
        F.col(TEXT).alias(RAW_LINE),
        reason.alias(REASON),
        F.when(valid, F.trim(field[user_at]).cast("int")).alias(USER),
        F.when(valid, F.trim(field[movie_at]).cast("int")).alias(MOVIE),
        F.when(valid, F.trim(field[rating_at]).cast("float")).alias(RATING),
        F.when(valid & (timestamp != ""), timestamp.cast(LongType())).alias(TIMESTAMP),
    )


def csv_movie_pattern(positions: Sequence[int]) -> str:
    """Return a regular expression that matches a movies.csv line, with one group per field.

    ``positions`` gives the field positions of movieId, title and genres. Only the
    title field may be double-quoted.
    """
    title_at = positions[1]
    fields = [
        CSV_QUOTABLE_FIELD if position == title_at else CSV_PLAIN_FIELD
        for position in range(len(positions))
    ]
    return "^" + ",".join(fields) + "$"


def _csv_movie_fields(
    data: DataFrame, positions: Sequence[int]
) -> tuple[DataFrame, Column, Column, Column, Column]:
    pattern = csv_movie_pattern(positions)
    movie_group, title_group, genres_group = (position + 1 for position in positions)
    text = F.col(TEXT)
    data = data.withColumn("_title", F.regexp_extract(text, pattern, title_group))
    quoted_title = F.col("_title")
    unquoted = F.regexp_replace(F.expr("substring(_title, 2, length(_title) - 2)"), '""', '"')
    title = F.when(quoted_title.startswith('"'), unquoted).otherwise(quoted_title)
    matches = text.rlike(pattern)
    movie_id = F.regexp_extract(text, pattern, movie_group)
    genres = F.regexp_extract(text, pattern, genres_group)
    return data, matches, movie_id, title, genres


def _item_genres(fields: Column) -> Column:
    first_flag = 5
    names = [
        F.when(F.trim(fields[first_flag + index]) == "1", F.lit(name))
        for index, name in enumerate(ML_100K_GENRES)
    ]
    joined = F.concat_ws("|", *names)
    return F.when(joined == "", F.lit(NO_GENRES)).otherwise(joined)


def parse_movies(
    decoded: DataFrame,
    text_file: TextFile,
    movies_format: str,
    positions: Sequence[int] | None = None,
) -> DataFrame:
    """Parse decoded movie lines into movieId, title, genres and a quarantine reason.

    Returns source_file, line_number, raw_line, reason, movieId, title, genres for
    every line, with ``reason`` set as in parse_ratings. The movie columns are null
    unless the line is valid. ``positions`` gives the field positions of movieId,
    title and genres in the "csv" format, the only one with a header, and defaults
    to that order.
    """
    data = decoded
    if movies_format == "csv":
        data, matches, movie_id, title, genres = _csv_movie_fields(
            data, positions or text_file.default_positions()
        )
    elif movies_format in ("dat", "item"):
        data = data.withColumn("_fields", _split_fields(text_file))
        fields = F.col("_fields")
        matches = F.size(fields) == text_file.field_count
        movie_id, title = fields[0], fields[1]
        genres = fields[2] if movies_format == "dat" else _item_genres(fields)
    else:
        raise ValueError(f"unknown movies format {movies_format!r}")
    reason = F.when(F.col(IS_HEADER), F.lit(HEADER_LINE)).otherwise(
        F.coalesce(_line_reason(matches), _id_reason(movie_id))
    )
    valid = reason.isNull()
    return data.select(
        F.col(SOURCE_FILE),
        F.col(LINE_NUMBER),
        F.col(TEXT).alias(RAW_LINE),
        reason.alias(REASON),
        F.when(valid, F.trim(movie_id).cast("int")).alias(MOVIE),
        F.when(valid, title).alias(TITLE),
        F.when(valid, genres).alias(GENRES),
    )


def mark_duplicates(parsed: DataFrame, keys: Collection[str], reason: str) -> DataFrame:
    """Set ``reason`` on every valid row whose ``keys`` repeat an earlier valid row.

    "Earlier" means a lower (source_file, line_number), so the first occurrence in
    the file is kept. Rows that already have a reason are left as they are.
    """
    order = Window.partitionBy(*keys).orderBy(
        F.col(REASON).isNotNull(), F.col(SOURCE_FILE), F.col(LINE_NUMBER)
    )
    occurrence = F.row_number().over(order)
    duplicate = F.col(REASON).isNull() & (occurrence > 1)
    return parsed.withColumn(REASON, F.when(duplicate, F.lit(reason)).otherwise(F.col(REASON)))


def quarantined_rows(classified: DataFrame) -> DataFrame:
    """Return the rows of a classified table that carry a quarantine reason."""
    is_quarantined = F.col(REASON).isNotNull() & (F.col(REASON) != HEADER_LINE)
    return classified.filter(is_quarantined).select(SOURCE_FILE, LINE_NUMBER, RAW_LINE, REASON)


def first_quarantined_lines(
    classified: DataFrame, per_reason: int = EXAMPLE_LINES
) -> dict[str, list[tuple[int, str]]]:
    """Return the first ``per_reason`` (line number, raw line) pairs of each quarantine reason."""
    order = Window.partitionBy(REASON).orderBy(SOURCE_FILE, LINE_NUMBER)
    rows = (
        quarantined_rows(classified)
        .withColumn("_position", F.row_number().over(order))
        .filter(F.col("_position") <= per_reason)
        .collect()
    )
    examples: dict[str, list[tuple[int, str]]] = {}
    for row in sorted(rows, key=lambda row: (row[REASON], row["_position"])):
        examples.setdefault(row[REASON], []).append((int(row[LINE_NUMBER]), row[RAW_LINE]))
    return examples


def quarantine_details(
    file_name: str,
    rows_read: int,
    reason_counts: Mapping[str, int],
    examples: Mapping[str, list[tuple[int, str]]],
    text_file: TextFile,
    ids: str,
    scale: RatingScale,
    quoted: bool = False,
) -> str:
    """Describe a file's quarantined rows: per reason, the count, the first lines and the rule.

    ``ids`` and ``quoted`` are as in ``reason_rule``.
    """
    quarantined = sum(reason_counts.values())
    lines = [f"{file_name}: {quarantined} of {rows_read} rows quarantined"]
    for reason, count in sorted(reason_counts.items()):
        shown_lines = "; ".join(
            f"line {number}: {_shorten(raw)!r}" for number, raw in examples.get(reason, [])
        )
        if count > len(examples.get(reason, [])):
            shown_lines = f"first {shown_lines}"
        noun = "row" if count == 1 else "rows"
        rule = reason_rule(reason, text_file, ids, scale, quoted)
        lines.append(f"  {reason}, {count} {noun} ({shown_lines}): {rule}")
    return "\n".join(lines)


def _shorten(raw: str | None) -> str:
    text = raw or ""
    return text if len(text) <= EXAMPLE_WIDTH else text[: EXAMPLE_WIDTH - 3] + "..."
