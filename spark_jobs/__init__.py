"""ALS recommender pipeline for MovieLens ratings, run as PySpark stages.

Importing this package must not import pyspark: CDK synthesis imports
``spark_jobs.steps`` and ``spark_jobs.layout`` on machines without Spark.
"""

__version__ = "0.1.0"


def code_version() -> str:
    """Return the package version, plus the artifact's content hash when built as one."""
    try:
        from spark_jobs._build import CONTENT_HASH
    except ImportError:
        return __version__
    return f"{__version__}+{CONTENT_HASH}"
