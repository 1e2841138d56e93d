"""The rating model: global mean plus damped user and movie biases, with ALS on the residuals.

A prediction is ``mean + user_bias + movie_bias + ALS(user, movie)``, clipped to the
dataset's rating scale. The biases absorb how generous a user is and how well liked a
movie is, so ALS only has to model the interaction between the two. A prediction outside
the scale can only be further from the true rating than the nearest end, so it is clipped.

``spark_jobs.bayes`` fits the other rating model, a Bayesian factorisation whose
posterior means fill the same RatingModel. Tune picks whichever scores better on
validation ratings.

The ranking model is ALS on implicit feedback, where every rating is a positive signal.
It ranks unseen movies far better than the rating model, and the rating model then
predicts how much a user would like each of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import numpy as np
from pyspark.ml.recommendation import ALS
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs import fs
from spark_jobs.layout import join_uri
from spark_jobs.params import Parameters
from spark_jobs.schema import MOVIE
from spark_jobs.schema import PREDICTION
from spark_jobs.schema import RATING
from spark_jobs.schema import USER

logger = logging.getLogger(__name__)

USER_BIAS = "user_bias"
MOVIE_BIAS = "movie_bias"
RESIDUAL = "residual"
FACTOR_PREDICTION = "factor_prediction"

# Bias damping: a user's or movie's bias is its summed deviation divided by
# (count + damping), so a bias from a handful of ratings shrinks towards zero.
# Values as in Koren's baseline predictors, fixed rather than tuned.
DEFAULT_USER_DAMPING = 15.0
DEFAULT_MOVIE_DAMPING = 10.0

# ALS checkpoints its factor lineage every CHECKPOINT_INTERVAL iterations, so 50
# or more iterations do not overflow the stack when the lineage is serialised. It
# needs the session's checkpoint directory (spark_jobs.session sets one). Each
# checkpoint writes factors to disk, and Spark 3.5's explicit ALS also checkpoints
# after its first iteration, so a fit no longer than one interval skips them.
# Twenty unbroken iterations of rank 2 overflowed a task's stack in about half of
# the runs on Spark 3.5.6 in local mode.
CHECKPOINT_INTERVAL = 10
UNCHECKPOINTED_MAX_ITER = CHECKPOINT_INTERVAL

# Maximum ALS blocks. Each block is one task per iteration, so more blocks than
# cores only adds scheduling cost on small data.
MAX_BLOCKS = 10

# Implicit-feedback confidence is 1 + alpha * rating.
DEFAULT_IMPLICIT_ALPHA = 1.0

ALS_KIND = "als"
BAYES_KIND = "bayes"
MODEL_DESCRIPTIONS = {
    ALS_KIND: "biases plus ALS on residuals",
    BAYES_KIND: "Bayesian matrix factorisation: posterior means of biases and factors (Gibbs sampling)",
}

_MODEL_JSON = "model.json"
_ALS_MODEL_FORMAT = "als_model"
_TABLES_FORMAT = "parquet_tables"
_FACTORS = "factors"
_USER_BIAS = "user_bias"
_MOVIE_BIAS = "movie_bias"
_USER_FACTORS = "user_factors"
_ITEM_FACTORS = "item_factors"


def checkpoint_interval(max_iter: int) -> int:
    """Return ALS's checkpointInterval for a fit of ``max_iter`` iterations (-1 for none)."""
    return -1 if max_iter <= UNCHECKPOINTED_MAX_ITER else CHECKPOINT_INTERVAL


@dataclass(frozen=True)
class RatingScale:
    """The closed interval that ratings of a data set fall in."""

    minimum: float
    maximum: float

    def __post_init__(self) -> None:
        if not self.minimum < self.maximum:
            raise ValueError(
                f"rating scale minimum {self.minimum} must be below maximum {self.maximum}"
            )

    @classmethod
    def of(cls, ratings: DataFrame) -> RatingScale:
        """Return the smallest and largest rating in ``ratings``."""
        row = ratings.agg(F.min(RATING).alias("low"), F.max(RATING).alias("high")).first()
        if row is None or row["low"] is None:
            raise ValueError("cannot take the rating scale of an empty ratings table")
        return cls(float(row["low"]), float(row["high"]))

    def to_dict(self) -> dict[str, float]:
        return {"min": self.minimum, "max": self.maximum}


def block_count(spark: SparkSession) -> int:
    """Return the number of ALS user and item blocks: one per core, at most MAX_BLOCKS."""
    return max(1, min(MAX_BLOCKS, spark.sparkContext.defaultParallelism))


@dataclass
class Baseline:
    """Global mean plus damped user and movie biases, fitted on one training set."""

    global_mean: float
    user_bias: DataFrame
    movie_bias: DataFrame

    def add_biases(self, pairs: DataFrame) -> DataFrame:
        """Return ``pairs`` with user_bias and movie_bias; rows of unknown users or movies drop."""
        return pairs.join(self.user_bias, USER).join(self.movie_bias, MOVIE)

    def residuals(self, ratings: DataFrame) -> DataFrame:
        """Return (userId, movieId, residual): what the biases leave of each rating."""
        with_biases = self.add_biases(ratings)
        residual = F.col(RATING) - F.lit(self.global_mean) - F.col(USER_BIAS) - F.col(MOVIE_BIAS)
        return with_biases.select(USER, MOVIE, residual.cast("float").alias(RESIDUAL))


def fit_baseline(
    ratings: DataFrame,
    *,
    user_damping: float = DEFAULT_USER_DAMPING,
    movie_damping: float = DEFAULT_MOVIE_DAMPING,
) -> Baseline:
    """Fit the global mean, then movie biases, then user biases on what the movie biases leave.

    The bias tables are cached: every later fit and prediction joins them.
    """
    global_mean = ratings.agg(F.avg(RATING)).first()[0]
    if global_mean is None:
        raise ValueError("cannot fit biases on an empty ratings table")
    global_mean = float(global_mean)
    movie_bias = (
        ratings.groupBy(MOVIE)
        .agg(
            (F.sum(F.col(RATING) - global_mean) / (F.count(F.lit(1)) + movie_damping)).alias(
                MOVIE_BIAS
            )
        )
        .cache()
    )
    user_bias = (
        ratings.join(movie_bias, MOVIE)
        .groupBy(USER)
        .agg(
            (
                F.sum(F.col(RATING) - global_mean - F.col(MOVIE_BIAS))
                / (F.count(F.lit(1)) + user_damping)
            ).alias(USER_BIAS)
        )
        .cache()
    )
    return Baseline(global_mean, user_bias, movie_bias)


def factor_estimator(
    *,
    rank: int,
    reg_param: float,
    max_iter: int,
    seed: int,
    blocks: int,
    implicit: bool = False,
    alpha: float = DEFAULT_IMPLICIT_ALPHA,
) -> ALS:
    """Return an ALS estimator for residuals (explicit) or for ratings as implicit feedback."""
    estimator = ALS(
        userCol=USER,
        itemCol=MOVIE,
        ratingCol=RATING if implicit else RESIDUAL,
        rank=rank,
        regParam=reg_param,
        maxIter=max_iter,
        seed=seed,
        numUserBlocks=blocks,
        numItemBlocks=blocks,
        implicitPrefs=implicit,
        alpha=alpha,
        nonnegative=False,
        coldStartStrategy="drop",
        checkpointInterval=checkpoint_interval(max_iter),
    )
    return estimator.setPredictionCol(FACTOR_PREDICTION)


@dataclass(frozen=True)
class FactorTables:
    """User and movie factors fitted outside Spark's ALS, in the shape of an ALSModel's.

    ``userFactors`` and ``itemFactors`` have an ALSModel's columns (id int, features
    array<float>) and names, so code written for an ALSModel reads them unchanged.
    """

    userFactors: DataFrame
    itemFactors: DataFrame

    @classmethod
    def of(
        cls,
        spark: SparkSession,
        user_ids: np.ndarray,
        user_factors: np.ndarray,
        movie_ids: np.ndarray,
        movie_factors: np.ndarray,
    ) -> FactorTables:
        """Return tables of NumPy factors, one row per id, in the order given."""
        return cls(
            userFactors=_factor_frame(spark, user_ids, user_factors),
            itemFactors=_factor_frame(spark, movie_ids, movie_factors),
        )

    @property
    def rank(self) -> int:
        first = self.itemFactors.select("features").first()
        return 0 if first is None else len(first["features"])

    def save(self, uri: str) -> None:
        self.userFactors.write.mode("overwrite").parquet(join_uri(uri, _USER_FACTORS))
        self.itemFactors.write.mode("overwrite").parquet(join_uri(uri, _ITEM_FACTORS))

    @classmethod
    def load(cls, spark: SparkSession, uri: str) -> FactorTables:
        return cls(
            userFactors=spark.read.parquet(join_uri(uri, _USER_FACTORS)),
            itemFactors=spark.read.parquet(join_uri(uri, _ITEM_FACTORS)),
        )

    def transform(self, pairs: DataFrame) -> DataFrame:
        """Return ``pairs`` with the factor dot product. Pairs of unknown users or movies are dropped."""
        users = self.userFactors.select(
            F.col("id").alias(USER), F.col("features").alias("_user_features")
        )
        movies = self.itemFactors.select(
            F.col("id").alias(MOVIE), F.col("features").alias("_movie_features")
        )
        products = F.zip_with("_user_features", "_movie_features", lambda x, y: x * y)
        dot = F.aggregate(products, F.lit(0.0), lambda total, value: total + value)
        return (
            pairs.join(users, USER)
            .join(movies, MOVIE)
            .withColumn(FACTOR_PREDICTION, dot.cast("float"))
            .drop("_user_features", "_movie_features")
        )


def _factor_frame(spark: SparkSession, ids: np.ndarray, factors: np.ndarray) -> DataFrame:
    rows = [
        (int(identifier), vector.tolist())
        for identifier, vector in zip(ids, factors.astype(np.float32), strict=True)
    ]
    return spark.createDataFrame(rows, "id int, features array<float>")


@dataclass
class RatingModel:
    """A fitted rating model: baseline biases plus ALS factors of the residuals."""

    baseline: Baseline
    factors: ALSModel | FactorTables
    scale: RatingScale
    params: dict[str, Any] = field(default_factory=dict)

    def predict(self, pairs: DataFrame) -> DataFrame:
        """Return ``pairs`` with a ``prediction`` column on the rating scale.

        Rows whose user or movie the model has not seen (cold start) are dropped:
        the caller counts them as the rows missing from the result.
        """
        with_biases = self.baseline.add_biases(pairs)
        scored = self.factors.transform(with_biases)
        raw = (
            F.lit(self.baseline.global_mean)
            + F.col(USER_BIAS)
            + F.col(MOVIE_BIAS)
            + F.col(FACTOR_PREDICTION)
        )
        clipped = F.least(F.greatest(raw, F.lit(self.scale.minimum)), F.lit(self.scale.maximum))
        return scored.withColumn(PREDICTION, clipped.cast("double")).drop(
            USER_BIAS, MOVIE_BIAS, FACTOR_PREDICTION
        )

    @property
    def kind(self) -> str:
        """``als`` for biases plus ALS on the residuals, or the ``model`` named in params."""
        return str(self.params.get("model", ALS_KIND))

    def save(self, spark: SparkSession, uri: str) -> None:
        """Write the factors, bias tables and model.json under ``uri`` (any Hadoop URI)."""
        factors_uri = join_uri(uri, _FACTORS)
        if isinstance(self.factors, ALSModel):
            self.factors.write().overwrite().save(factors_uri)
            factors_format = _ALS_MODEL_FORMAT
        else:
            self.factors.save(factors_uri)
            factors_format = _TABLES_FORMAT
        self.baseline.user_bias.write.mode("overwrite").parquet(join_uri(uri, _USER_BIAS))
        self.baseline.movie_bias.write.mode("overwrite").parquet(join_uri(uri, _MOVIE_BIAS))
        description = {
            "kind": MODEL_DESCRIPTIONS.get(self.kind, self.kind),
            "model": self.kind,
            "factors_format": factors_format,
            "global_mean": self.baseline.global_mean,
            "scale": self.scale.to_dict(),
            "params": self.params,
        }
        fs.write_json(spark, join_uri(uri, _MODEL_JSON), description)

    @classmethod
    def load(cls, spark: SparkSession, uri: str) -> RatingModel:
        """Read a model written by ``save``."""
        description = fs.read_json(spark, join_uri(uri, _MODEL_JSON))
        baseline = Baseline(
            global_mean=float(description["global_mean"]),
            user_bias=spark.read.parquet(join_uri(uri, _USER_BIAS)).cache(),
            movie_bias=spark.read.parquet(join_uri(uri, _MOVIE_BIAS)).cache(),
        )
        scale = RatingScale(description["scale"]["min"], description["scale"]["max"])
        factors_uri = join_uri(uri, _FACTORS)
        factors: ALSModel | FactorTables
        if description.get("factors_format", _ALS_MODEL_FORMAT) == _TABLES_FORMAT:
            factors = FactorTables.load(spark, factors_uri)
        else:
            factors = ALSModel.load(factors_uri)
        return cls(baseline, factors, scale, dict(description.get("params", {})))


def fit_rating_model(
    ratings: DataFrame,
    *,
    rank: int,
    reg_param: float,
    max_iter: int,
    seed: int,
    scale: RatingScale,
    baseline: Baseline | None = None,
    residuals: DataFrame | None = None,
) -> RatingModel:
    """Fit biases (unless given) and ALS on the residuals of ``ratings``.

    Pass ``baseline`` and its cached ``residuals`` to fit many models on the same
    training set without recomputing them.
    """
    if baseline is None:
        baseline = fit_baseline(ratings)
    if residuals is None:
        residuals = baseline.residuals(ratings)
    spark = ratings.sparkSession
    estimator = factor_estimator(
        rank=rank, reg_param=reg_param, max_iter=max_iter, seed=seed, blocks=block_count(spark)
    )
    factors = estimator.fit(residuals)
    params = {
        "model": ALS_KIND, "rank": rank, "regParam": reg_param, "maxIter": max_iter, "seed": seed
    }
    return RatingModel(baseline, factors, scale, params)


def fit_ranking_model(
    ratings: DataFrame,
    *,
    rank: int,
    reg_param: float,
    max_iter: int,
    seed: int,
    alpha: float = DEFAULT_IMPLICIT_ALPHA,
) -> ALSModel:
    """Fit ALS on implicit feedback: every rating is a positive signal weighted by its value."""
    spark = ratings.sparkSession
    estimator = factor_estimator(
        rank=rank,
        reg_param=reg_param,
        max_iter=max_iter,
        seed=seed,
        blocks=block_count(spark),
        implicit=True,
        alpha=alpha,
    )
    return estimator.fit(ratings.select(USER, MOVIE, RATING))


def fit_implicit(ratings: DataFrame, params: Parameters) -> ALSModel:
    """Fit the implicit-feedback ranking model with the run's --implicit-* parameters."""
    return fit_ranking_model(
        ratings,
        rank=params.implicit_rank,
        reg_param=params.implicit_reg_param,
        max_iter=params.implicit_max_iter,
        alpha=params.implicit_alpha,
        seed=params.seed,
    )


def rmse_and_mae(predictions: DataFrame) -> tuple[float, float]:
    """Return (RMSE, MAE) of ``prediction`` against ``rating``; raises ValueError when empty."""
    row = predictions.agg(
        F.sqrt(F.avg((F.col(PREDICTION) - F.col(RATING)) ** 2)).alias("rmse"),
        F.avg(F.abs(F.col(PREDICTION) - F.col(RATING))).alias("mae"),
    ).first()
    if row is None or row["rmse"] is None:
        raise ValueError("no predictions to evaluate")
    return float(row["rmse"]), float(row["mae"])
