"""The stage context: the session, the run directory and the options the command line passes."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

from pyspark.sql import SparkSession

from spark_jobs.layout import RunLayout
from spark_jobs.params import Parameters


@dataclass(frozen=True)
class StageContext:
    """Inputs of one stage run.

    ``explicit`` names the Parameters fields the user set on the command line;
    train uses the tuned parameters for the others when the run has them.
    """

    spark: SparkSession
    layout: RunLayout
    params: Parameters
    explicit: frozenset[str] = field(default_factory=frozenset)
    source: str | None = None
    train: str | None = None
    test: str | None = None
    user: int | None = None
