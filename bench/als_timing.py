"""Seconds per ALS iteration, in a Spark session configured as the pipeline's.

    python -m bench.als_timing --ratings RUN/split/train --rank 10 --iterations 2,7

Fits explicit ALS on the Parquet ratings once to warm up the JVM, then with
each of the two iteration counts, and reports the time difference divided by
the iteration difference. The difference cancels the cost both fits share
(block building, the final factor DataFrames), so what is left is the cost
of one iteration. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import psutil
from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS

from spark_jobs import params
from spark_jobs.model import block_count
from spark_jobs.schema import MOVIE
from spark_jobs.schema import RATING
from spark_jobs.schema import USER
from spark_jobs.session import build_session


def tree_cpu_seconds() -> float:
    """Return the user plus system CPU seconds so far of this process and its children (the JVM)."""
    total = 0.0
    me = psutil.Process()
    for member in [me, *me.children(recursive=True)]:
        times = member.cpu_times()
        total += times.user + times.system
    return total


def fit_seconds(
    ratings, *, rank: int, reg_param: float, max_iter: int, blocks: int
) -> tuple[float, float]:
    """Return the wall and CPU seconds of one ALS fit, forcing both factor tables to be computed."""
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
    cpu_started = tree_cpu_seconds()
    model = als.fit(ratings)
    model.userFactors.count()
    model.itemFactors.count()
    return time.monotonic() - started, tree_cpu_seconds() - cpu_started


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
    # A first, uncounted fit pays for JIT compilation and class loading, which
    # would otherwise inflate the low fit and bias the difference.
    fit_seconds(ratings, max_iter=1, **options)
    low_seconds, low_cpu = fit_seconds(ratings, max_iter=low, **options)
    high_seconds, high_cpu = fit_seconds(ratings, max_iter=high, **options)
    spark.stop()
    result = {
        "ratings": rows,
        "rank": args.rank,
        "blocks": blocks,
        "fit_seconds": {str(low): round(low_seconds, 2), str(high): round(high_seconds, 2)},
        "seconds_per_iteration": (high_seconds - low_seconds) / (high - low),
        "cpu_seconds_per_iteration": (high_cpu - low_cpu) / (high - low),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
