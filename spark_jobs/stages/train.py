"""Train stage: fit the final rating and ranking models on the whole training split.

The rating model is ALS on the bias residuals or the Bayesian factorisation of
``spark_jobs.bayes``. Parameters, and which rating model, come from the command
line when given there, else from the tune stage's choice when this run has one,
else from the defaults. The rating model is scored
on the test split: RMSE and MAE over the test rows whose user and movie appear in
training. The others (cold start) are dropped and counted, so RMSE is never NaN.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyspark.sql import DataFrame

from spark_jobs import bayes
from spark_jobs import ease
from spark_jobs import fs
from spark_jobs import layout as paths
from spark_jobs.commit import Manifest
from spark_jobs.commit import StageCommit
from spark_jobs.commit import check_lineage
from spark_jobs.commit import read_manifest
from spark_jobs.context import StageContext
from spark_jobs.errors import InputDataError
from spark_jobs.layout import join_uri
from spark_jobs.model import ALS_KIND
from spark_jobs.model import BAYES_KIND
from spark_jobs.model import MODEL_DESCRIPTIONS
from spark_jobs.model import RatingModel
from spark_jobs.model import RatingScale
from spark_jobs.model import fit_implicit
from spark_jobs.model import fit_rating_model
from spark_jobs.model import rmse_and_mae
from spark_jobs.stages.split import rating_scale
from spark_jobs.steps import option_name
from spark_jobs.topk import IMPLICIT_ORDER
from spark_jobs.topk import ListSpec

logger = logging.getLogger(__name__)

# Inside DIR/model: the rating model, the ranking model and which list is the default.
RATING_MODEL = "model/rating"
RANKING_MODEL = "model/ranking"
MODEL_CHOICE = "model/choice.json"

# Used when the run has no tune output: the ranking model's top k in its own order. In
# the tuned runs of the quality benchmark (ml-100k and ml-latest-small) this list tied
# for the best validation precision and had the best NDCG. The list by predicted rating
# alone was far behind (precision@20 0.051 against 0.157 on ml-latest-small).
DEFAULT_LIST_STRATEGY = IMPLICIT_ORDER

# The options that set each rating model's parameters.
MODEL_OPTIONS = {
    ALS_KIND: ("rank", "reg_param", "max_iter"),
    BAYES_KIND: ("bayes_rank", "bayes_samples"),
}


def chosen_settings(
    context: StageContext,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Manifest | None]:
    """Return (rating model settings, ranker, list spec dict, tune manifest or None).

    An option given on the command line wins over tune's choice, which wins over the
    default. An ALS option (rank, regParam, maxIter) given without --rating-model
    selects ALS, so the option is never ignored.
    """
    spark, layout, params = context.spark, context.layout, context.params
    settings = {
        "model": params.rating_model,
        "rank": params.rank,
        "regParam": params.reg_param,
        "maxIter": params.max_iter,
        "bayes_rank": params.bayes_rank,
        "bayes_samples": params.bayes_samples,
    }
    list_spec = ListSpec(DEFAULT_LIST_STRATEGY)
    ranker = dict(ease.ALS_ONLY)
    tune = None
    if fs.exists(spark, layout.manifest("tune")):
        tune = read_manifest(spark, layout, "tune")
        chosen = fs.read_json(spark, layout.tuning_results)["chosen"]
        if "rating_model" not in context.explicit:
            settings["model"] = chosen.get("model", ALS_KIND)
        # Results from before the "als" entry kept the ALS point at the top level.
        best_als = chosen.get("als", chosen)
        for field, key in (("rank", "rank"), ("reg_param", "regParam"), ("max_iter", "maxIter")):
            if field not in context.explicit:
                settings[key] = best_als[key]
        sampled = chosen.get("bayes", {})
        for field, key in (("bayes_rank", "rank"), ("bayes_samples", "samples")):
            if field not in context.explicit and key in sampled:
                settings[field] = sampled[key]
        als_options = given_options(context, MODEL_OPTIONS[ALS_KIND])
        if als_options and "rating_model" not in context.explicit and settings["model"] != ALS_KIND:
            logger.warning(
                "train: %s given, so train fits the ALS rating model instead of tune's "
                "choice, %s. Add --rating-model %s to keep tune's choice.",
                ", ".join(als_options),
                settings["model"],
                settings["model"],
            )
            settings["model"] = ALS_KIND
        list_spec = ListSpec(chosen["list"]["strategy"], chosen["list"]["candidates"])
        ranker = chosen.get("ranker", ranker)
    else:
        if settings["model"] == ALS_KIND:
            model_text = (
                f"ALS rating model (rank {settings['rank']}, regParam {settings['regParam']:g}, "
                f"maxIter {settings['maxIter']})"
            )
        else:
            model_text = (
                f"Bayesian rating model (rank {settings['bayes_rank']}, "
                f"samples {settings['bayes_samples']})"
            )
        logger.info(
            "train: no committed tune output in %s, so train uses the command line and the "
            "defaults: the %s, implicit ALS alone as the ranking model, and the '%s' default list",
            layout.root,
            model_text,
            list_spec.name,
        )
    for kind, names in MODEL_OPTIONS.items():
        unused = given_options(context, names)
        if kind != settings["model"] and unused:
            logger.warning(
                "train: %s not used: the option sets the %s rating model, and train fits %s. "
                "Add --rating-model %s to fit it.",
                ", ".join(unused),
                kind,
                settings["model"],
                kind,
            )
    return settings, ranker, list_spec.to_dict(), tune


def warn_if_k_differs(stage: str, choice: dict[str, Any], k: int) -> None:
    """Log a warning when ``k`` is not the k at which tune chose the default list."""
    chosen_at = choice.get("chosen_at_k")
    if chosen_at is not None and chosen_at != k:
        logging.getLogger(f"spark_jobs.stages.{stage}").warning(
            "%s: --top-k %d, but tune chose the default list and the ranking model by their "
            "precision at k = %d. "
            "Give tune and %s the same --top-k to compare like with like.",
            stage,
            k,
            chosen_at,
            stage,
        )


def given_options(context: StageContext, names: Iterable[str]) -> list[str]:
    """Return the options among the parameters ``names`` given on the command line, as typed."""
    return [option_name(name) for name in names if name in context.explicit]


def _sample_bayes(train: DataFrame, scale: RatingScale, chain: bayes.ChainSettings) -> RatingModel:
    data, posterior = bayes.sample(train, None, scale, chain)
    return bayes.rating_model(train.sparkSession, data, posterior, scale, chain)


def run(context: StageContext) -> dict[str, Any]:
    spark, layout, params = context.spark, context.layout, context.params
    started = time.monotonic()
    split = read_manifest(spark, layout, "split")
    load = read_manifest(spark, layout, "load")
    settings, ranker, list_spec, tune = chosen_settings(context)
    inputs = {"split": split, "load": load}
    if tune is not None:
        inputs["tune"] = tune
    # Here as well as at commit, so that mixed or stale inputs fail before the fits.
    check_lineage(inputs)
    load_scale = rating_scale(fs.read_json(spark, layout.load_report))
    scale = RatingScale(load_scale.minimum, load_scale.maximum)

    train = spark.read.parquet(layout.split_train).cache()
    test = spark.read.parquet(layout.split_test)
    n_train = train.count()
    # The sampler is one long task, so the ranking model and its EASE blend fit beside it.
    with ThreadPoolExecutor(max_workers=1) as pool:
        if settings["model"] == BAYES_KIND:
            chain = bayes.ChainSettings.of(
                settings["bayes_rank"],
                settings["bayes_samples"],
                params.seed,
                threads=bayes.chain_threads(spark.sparkContext),
            )
            settings = {"model": BAYES_KIND, **chain.to_dict()}
            sampled = pool.submit(_sample_bayes, train, scale, chain)
        ranking_model = fit_implicit(train, params)
        ranking_kind = "ALS on implicit feedback, confidence 1 + alpha * rating"
        if ranker["weight"] > 0:
            ranking_model = ease.blended_ranker(
                ranking_model, ease.Interactions.of(train), ranker["weight"], ranker["l2"]
            )
            ranking_kind += (
                f", blended with EASE (weight {ranker['weight']:g}, l2 {ranker['l2']:g})"
            )
        if settings["model"] == BAYES_KIND:
            rating_model = sampled.result()
        else:
            settings = {key: settings[key] for key in ("model", "rank", "regParam", "maxIter")}
            rating_model = fit_rating_model(
                train,
                rank=settings["rank"],
                reg_param=settings["regParam"],
                max_iter=settings["maxIter"],
                seed=params.seed,
                scale=scale,
            )
    predictions = rating_model.predict(test).cache()
    n_test = test.count()
    n_scored = predictions.count()
    if n_scored == 0:
        raise InputDataError(
            f"train: none of the {n_test} test ratings in {layout.split_test} has a user and a "
            f"movie seen in training, so the model cannot be scored. Rerun split with a smaller "
            f"--test-fraction, or give --train/--test files that share users and movies."
        )
    rmse, mae = rmse_and_mae(predictions)
    predictions.unpersist()
    dataset = load.dataset
    metrics = {
        "rmse": rmse,
        "mae": mae,
        "n_train": n_train,
        "n_test": n_test,
        "n_test_scored": n_scored,
        "n_test_cold_start_dropped": n_test - n_scored,
        "rating_model": {"kind": MODEL_DESCRIPTIONS[settings["model"]], **settings},
        "params": settings,
        "params_source": "tune" if tune is not None else "command line and defaults",
        "params_given": sorted(
            given_options(
                context, ("rating_model", *MODEL_OPTIONS[ALS_KIND], *MODEL_OPTIONS[BAYES_KIND])
            )
        ),
        "ranking_model": {
            "kind": ranking_kind,
            "ease_weight": ranker["weight"],
            "ease_l2": ranker["l2"],
            "rank": params.implicit_rank,
            "regParam": params.implicit_reg_param,
            "maxIter": params.implicit_max_iter,
            "alpha": params.implicit_alpha,
        },
        "default_list": list_spec,
        "rating_scale": scale.to_dict(),
        "dataset": dataset,
        "protocol": (
            "rating model fitted on split/train and scored on split/test; RMSE and MAE over "
            "the test rows whose user and movie appear in training, predictions clipped to "
            "the rating scale"
        ),
    }
    parameters = {**settings, "seed": params.seed, "ranker": ranker, "default_list": list_spec}
    with StageCommit(spark, layout, "train", inputs=inputs, parameters=parameters) as commit:
        rating_model.save(spark, commit.staging_path(RATING_MODEL))
        ease.save_ranking_model(spark, ranking_model, commit.staging_path(RANKING_MODEL))
        choice = {
            "default_list": list_spec,
            "chosen_at_k": tune.parameters.get("top_k") if tune is not None else None,
        }
        fs.write_json(spark, commit.staging_path(MODEL_CHOICE), choice)
        fs.write_json(spark, commit.staging_path(paths.METRICS), metrics)
        commit.counts.update(
            {"n_train": n_train, "n_test": n_test, "n_test_scored": n_scored, "rmse": rmse}
        )
    train.unpersist()
    logger.info(
        "train: %s rating model %s on %d ratings; test RMSE %.4f, MAE %.4f over "
        "%d of %d rows (%d cold start) in %.1f s",
        settings["model"],
        {key: value for key, value in settings.items() if key != "model"},
        n_train,
        rmse,
        mae,
        n_scored,
        n_test,
        n_test - n_scored,
        time.monotonic() - started,
    )
    return {
        "rmse": rmse,
        "mae": mae,
        "n_test_scored": n_scored,
        "n_test_cold_start_dropped": n_test - n_scored,
        "params": settings,
        "model": join_uri(layout.root, paths.MODEL),
    }
