"""Column names and the schemas of the validated ratings and movies tables."""

from pyspark.sql.types import DoubleType
from pyspark.sql.types import FloatType
from pyspark.sql.types import IntegerType
from pyspark.sql.types import LongType
from pyspark.sql.types import StringType
from pyspark.sql.types import StructField
from pyspark.sql.types import StructType

USER = "userId"
MOVIE = "movieId"
RATING = "rating"
TIMESTAMP = "timestamp"
TITLE = "title"
GENRES = "genres"
PREDICTION = "prediction"
PREDICTED_RATING = "predicted_rating"
RANK = "rank"

# Quarantine columns: where a rejected row came from and why.
SOURCE_FILE = "source_file"
LINE_NUMBER = "line_number"
RAW_LINE = "raw_line"
REASON = "reason"

RATINGS_SCHEMA = StructType(
    [
        StructField(USER, IntegerType(), nullable=False),
        StructField(MOVIE, IntegerType(), nullable=False),
        StructField(RATING, FloatType(), nullable=False),
        StructField(TIMESTAMP, LongType(), nullable=True),
    ]
)

MOVIES_SCHEMA = StructType(
    [
        StructField(MOVIE, IntegerType(), nullable=False),
        StructField(TITLE, StringType(), nullable=True),
        StructField(GENRES, StringType(), nullable=True),
    ]
)

QUARANTINE_SCHEMA = StructType(
    [
        StructField(SOURCE_FILE, StringType(), nullable=False),
        StructField(LINE_NUMBER, LongType(), nullable=True),
        StructField(RAW_LINE, StringType(), nullable=True),
        StructField(REASON, StringType(), nullable=False),
    ]
)

RECOMMENDATIONS_SCHEMA = StructType(
    [
        StructField(USER, IntegerType(), nullable=False),
        StructField(RANK, IntegerType(), nullable=False),
        StructField(MOVIE, IntegerType(), nullable=False),
        StructField(TITLE, StringType(), nullable=True),
        StructField(GENRES, StringType(), nullable=True),
        StructField(PREDICTED_RATING, DoubleType(), nullable=True),
    ]
)
