"""The course-style ALS workflow, kept as the benchmark's point of comparison.

    python -m bench.baseline --source DIR --output DIR [--master local[*]]

It does what a MovieLens ALS tutorial does, on purpose. It reads CSV with
schema inference and caches nothing. It searches the grid one fit at a time and
trains a fresh model for every iteration count in the study. It recommends for
all users and joins the titles afterwards. It uses the same split fractions,
seed, iteration study and rank and regParam grid as the pipeline's defaults in
spark_jobs.params, and the same rating-scale RMSE, so only the way of working
differs. Prints one JSON object with the phase times and the test RMSE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs import params
from spark_jobs.session import local_driver_memory


def fit(train, rank: int, reg_param: float, max_iter: int, seed: int):
    als = ALS(
        rank=rank,
        regParam=reg_param,
        maxIter=max_iter,
        seed=seed,
        userCol="userId",
        itemCol="movieId",
        ratingCol="rating",
        coldStartStrategy="drop",
    )
    return als.fit(train)


def rmse(model, data) -> float:
    evaluator = RegressionEvaluator(
        metricName="rmse", labelCol="rating", predictionCol="prediction"
    )
    return evaluator.evaluate(model.transform(data))


def run(spark: SparkSession, source: str, output: str) -> dict:
    """Run the tutorial workflow on ``source`` (ratings.csv, movies.csv) and return its figures."""
    seconds: dict[str, float] = {}
    started = time.monotonic()
    ratings = spark.read.csv(f"{source}/ratings.csv", header=True, inferSchema=True)
    movies = spark.read.csv(f"{source}/movies.csv", header=True, inferSchema=True)
    train, test = ratings.randomSplit(
        [1 - params.DEFAULT_TEST_FRACTION, params.DEFAULT_TEST_FRACTION], seed=params.DEFAULT_SEED
    )
    fit_part, validation = train.randomSplit(
        [1 - params.DEFAULT_VALIDATION_FRACTION, params.DEFAULT_VALIDATION_FRACTION],
        seed=params.DEFAULT_SEED,
    )
    seconds["load_and_split"] = time.monotonic() - started

    mark = time.monotonic()
    study = {}
    for max_iter in range(1, params.DEFAULT_STUDY_MAX_ITER + 1):
        model = fit(
            fit_part, params.DEFAULT_RANK, params.DEFAULT_REG_PARAM, max_iter, params.DEFAULT_SEED
        )
        study[max_iter] = rmse(model, validation)
    grid = {}
    for rank in params.DEFAULT_RANK_GRID:
        for reg_param in params.DEFAULT_REG_GRID:
            model = fit(fit_part, rank, reg_param, params.DEFAULT_MAX_ITER, params.DEFAULT_SEED)
            grid[(rank, reg_param)] = rmse(model, validation)
    best_rank, best_reg = min(grid, key=grid.get)
    seconds["tune"] = time.monotonic() - mark

    mark = time.monotonic()
    model = fit(train, best_rank, best_reg, params.DEFAULT_MAX_ITER, params.DEFAULT_SEED)
    test_rmse = rmse(model, test)
    seconds["train_and_evaluate"] = time.monotonic() - mark

    mark = time.monotonic()
    recommendations = (
        model.recommendForAllUsers(params.DEFAULT_TOP_K)
        .select("userId", F.explode("recommendations").alias("recommendation"))
        .select("userId", "recommendation.movieId", "recommendation.rating")
        .join(movies, on="movieId")
    )
    recommendations.write.mode("overwrite").csv(f"{output}/recommendations", header=True)
    seconds["recommend"] = time.monotonic() - mark
    seconds["total"] = time.monotonic() - started
    return {
        "test_rmse": test_rmse,
        "rank": best_rank,
        "reg_param": best_reg,
        "max_iter": params.DEFAULT_MAX_ITER,
        "validation_rmse_by_iterations": study,
        "fits": len(study) + len(grid) + 1,
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--source", required=True, help="directory with ratings.csv, movies.csv")
    parser.add_argument("--output", required=True, help="directory for the recommendations")
    parser.add_argument("--master", default="local[*]", help="Spark master (default local[*])")
    args = parser.parse_args(argv)
    # Same machine share as the pipeline's session, with Spark's other defaults.
    spark = (
        SparkSession.builder.master(args.master)
        .appName("course-style baseline")
        .config("spark.driver.memory", local_driver_memory())
        .config("spark.driver.host", os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"))
        .config("spark.driver.bindAddress", os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    # ALS cuts its lineage at checkpoints only when a checkpoint directory is
    # set, and 20 iterations without one can overflow the driver's stack.
    spark.sparkContext.setCheckpointDir(f"{args.output}/checkpoints")
    result = run(spark, args.source, args.output)
    spark.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
