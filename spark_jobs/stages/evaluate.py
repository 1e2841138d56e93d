"""Evaluate stage: ranking metrics of each way to build the top-k list, beside RMSE and MAE.

Every list is drawn from the movies a user did not rate in training and scored
against that user's test ratings (see spark_jobs.ranking for the definitions).
The results extend metrics.json, which train wrote, with the protocol stated
beside the numbers and the list recommend writes by default.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from spark_jobs import fs
from spark_jobs import layout as paths
from spark_jobs.commit import StageCommit
from spark_jobs.commit import check_lineage
from spark_jobs.commit import read_manifest
from spark_jobs.context import StageContext
from spark_jobs.ease import load_ranking_model
from spark_jobs.layout import join_uri
from spark_jobs.model import RatingModel
from spark_jobs.ranking import PROTOCOL
from spark_jobs.ranking import ranking_metrics_by_list
from spark_jobs.schema import USER
from spark_jobs.stages.train import MODEL_CHOICE
from spark_jobs.stages.train import RANKING_MODEL
from spark_jobs.stages.train import RATING_MODEL
from spark_jobs.stages.train import warn_if_k_differs
from spark_jobs.topk import IMPLICIT_ORDER
from spark_jobs.topk import RATING_ORDER
from spark_jobs.topk import RERANKED
from spark_jobs.topk import ListSpec
from spark_jobs.topk import top_k_lists

logger = logging.getLogger(__name__)

EVALUATION_JSON = "evaluation/ranking.json"

LIST_DESCRIPTIONS = {
    RATING_ORDER: "every unrated movie ordered by the rating model's predicted rating",
    IMPLICIT_ORDER: "ordered by the implicit-feedback ranking model's score",
    "reranked": (
        "the implicit-feedback ranking model's top candidates, ordered by the rating "
        "model's predicted rating"
    ),
}


def lists_to_compare(default: ListSpec, k: int) -> list[ListSpec]:
    """Return the lists to score: rating, implicit, reranked with k candidates and the default.

    The default is left out when it is one of the other three.
    """
    specs = [ListSpec(RATING_ORDER), ListSpec(IMPLICIT_ORDER), ListSpec(RERANKED, k)]
    if default.name not in {spec.name for spec in specs}:
        specs.append(default)
    return specs


def default_list_models(default: ListSpec, metrics: dict[str, Any]) -> str:
    """Return which models produced the default list, from train's metrics."""
    rating = metrics.get("rating_model", {}).get("kind", "biases plus ALS on residuals")
    ranking = metrics.get("ranking_model", {}).get("kind", "ALS on implicit feedback")
    if default.strategy == RATING_ORDER:
        return f"rating model ({rating})"
    if default.strategy == IMPLICIT_ORDER:
        return f"ranking model ({ranking})"
    return f"candidates from the ranking model ({ranking}), ordered by the rating model ({rating})"


def split_settings(parameters: dict[str, Any]) -> dict[str, Any]:
    """Return the split manifest's parameters with ``split_method`` always present.

    Split manifests written before the option existed lack it: their split was the
    given files when ``train`` is present, and the hash split otherwise.
    """
    settings = dict(parameters)
    settings.setdefault("split_method", "files" if "train" in settings else "hash")
    return settings


def run(context: StageContext) -> dict[str, Any]:
    spark, layout, params = context.spark, context.layout, context.params
    started = time.monotonic()
    train_manifest = read_manifest(spark, layout, "train")
    split = read_manifest(spark, layout, "split")
    check_lineage({"train": train_manifest, "split": split})
    k = params.top_k

    rating_model = RatingModel.load(spark, join_uri(layout.root, RATING_MODEL))
    ranking_model = load_ranking_model(spark, join_uri(layout.root, RANKING_MODEL))
    model_choice = fs.read_json(spark, join_uri(layout.root, MODEL_CHOICE))
    warn_if_k_differs("evaluate", model_choice, k)
    choice = model_choice["default_list"]
    default = ListSpec(choice["strategy"], choice["candidates"])
    train = spark.read.parquet(layout.split_train).cache()
    test = spark.read.parquet(layout.split_test).cache()
    users = test.select(USER).distinct()

    specs = lists_to_compare(default, k)
    lists = top_k_lists(rating_model, ranking_model, train, k, specs, users=users)
    by_list = ranking_metrics_by_list(lists, test, k)
    results = {}
    for spec in specs:
        results[spec.name] = {
            **by_list[spec.name],
            "list": spec.to_dict(),
            "description": LIST_DESCRIPTIONS[spec.strategy],
        }
        logger.info(
            "evaluate: %s list, precision@%d %.4f, NDCG@%d %.4f over %d users",
            spec.name,
            k,
            results[spec.name][f"precision_at_{k}"],
            k,
            results[spec.name][f"ndcg_at_{k}"],
            results[spec.name]["users"],
        )
    metrics = fs.read_json(spark, layout.metrics)
    metrics["ranking"] = {
        "k": k,
        "protocol": PROTOCOL,
        "split": split_settings(split.parameters),
        "default_list": default.name,
        "default_list_source": (
            "chosen by tune on validation ratings carved from the training split"
            if metrics.get("params_source") == "tune"
            else "built-in default (this run had no tune stage)"
        ),
        "default_list_models": default_list_models(default, metrics),
        "lists": results,
    }
    parameters = {"top_k": k, "default_list": default.to_dict()}
    inputs = {"train": train_manifest, "split": split}
    with StageCommit(spark, layout, "evaluate", inputs=inputs, parameters=parameters) as commit:
        fs.write_json(spark, commit.staging_path(EVALUATION_JSON), metrics["ranking"])
        fs.write_json(spark, commit.staging_path(paths.METRICS), metrics)
        commit.counts.update(
            {name: values[f"precision_at_{k}"] for name, values in results.items()}
        )
    train.unpersist()
    test.unpersist()
    logger.info("evaluate: %d lists compared in %.1f s", len(results), time.monotonic() - started)
    return {
        "k": k,
        "default_list": default.name,
        **{
            name: {metric: values[f"{metric}_at_{k}"] for metric in ("precision", "ndcg")}
            for name, values in results.items()
        },
    }
