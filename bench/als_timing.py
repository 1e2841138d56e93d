"""Seconds per ALS iteration, in a Spark session configured as the pipeline's.

    python -m bench.als_timing --ratings RUN/split/train --rank 10 --iterations 2,7

Fits explicit ALS on the Parquet ratings twice, with the two iteration counts,
and reports the time difference divided by the iteration difference. The
difference cancels the cost both fits share (block building, the final factor
DataFrames), so what is left is the cost of one iteration. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS

from spark_jobs import params
from spark_jobs.model import block_count
from spark_jobs.schema import MOVIE
from spark_jobs.schema import RATING
from spark_jobs.schema import USER
from spark_jobs.session import build_session


def fit_seconds(ratings, *, rank: int, reg_param: float, max_iter: int, blocks: int) -> float:
    """Return the wall time of one ALS fit, forcing both factor tables to be computed."""
    als = ALS(
        userCol=USER,
        itemCol=MOVIE,
        ratingCol=RATING,
        rank=rank,
        regParam=reg_param,
        maxIter=max_iter,
        seed=params.DEFAULT_SEED,
        numUserBlocks=blocks,
        numItemBlocks=blocks,
        checkpointInterval=10,
    )
    started = time.monotonic()
    model = als.fit(ratings)
    model.userFactors.count()
    model.itemFactors.count()
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.als_timing", description=__doc__)
    parser.add_argument(
        "--ratings", required=True, help="Parquet ratings (userId, movieId, rating)"
    )
    parser.add_argument("--rank", type=int, default=params.DEFAULT_RANK)
    parser.add_argument("--reg-param", type=float, default=params.DEFAULT_REG_PARAM)
    parser.add_argument(
        "--iterations", default="2,7", help="two comma-separated iteration counts (default 2,7)"
    )
    parser.add_argument(
        "--blocks", type=int, help="ALS user and item blocks (default: the pipeline's choice)"
    )
    args = parser.parse_args(argv)
    low, high = sorted(int(value) for value in args.iterations.split(","))
    spark = build_session("bench als_timing")
    ratings = spark.read.parquet(args.ratings).select(USER, MOVIE, RATING)
    ratings = ratings.persist(StorageLevel.MEMORY_AND_DISK)
    rows = ratings.count()
    blocks = args.blocks or block_count(spark)
    options = {"rank": args.rank, "reg_param": args.reg_param, "blocks": blocks}
    low_seconds = fit_seconds(ratings, max_iter=low, **options)
    high_seconds = fit_seconds(ratings, max_iter=high, **options)
    spark.stop()
    result = {
        "ratings": rows,
        "rank": args.rank,
        "blocks": blocks,
        "fit_seconds": {str(low): round(low_seconds, 2), str(high): round(high_seconds, 2)},
        "seconds_per_iteration": (high_seconds - low_seconds) / (high - low),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
