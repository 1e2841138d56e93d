"""Tune stage: choose ALS parameters and the default top-k list on a validation split.

The validation split is carved from the training split only; the test split is
never read. Tune fits the bias baseline once, then:

1. the sweep (``spark_jobs.sweep``): ALS on the residuals at every rank x regParam
   of the grid, scored on the validation ratings after each of 1..study_max_iter
   iterations. The lowest validation RMSE in that table picks rank, regParam and
   maxIter, and its row of the table is the course's RMSE-against-iterations study;
2. at the same time, the Bayesian rating model (``spark_jobs.bayes``) on the same
   fit set, unless the fit set is larger than ``bayes.MAX_RATINGS``. The rating
   model with the lower validation RMSE is the one train fits;
3. the ranking model: implicit-feedback ALS alone or blended with EASE
   (``spark_jobs.ease``), whichever has the best mean precision@k over this
   validation split and two more carved with other seeds;
4. precision@k, then NDCG@k, of each way to build the top-k list on the
   validation ratings, which picks the default list.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait
from typing import Any

import numpy as np
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame

from spark_jobs import bayes
from spark_jobs import ease
from spark_jobs import fs
from spark_jobs import implicit
from spark_jobs import layout as paths
from spark_jobs.commit import StageCommit
from spark_jobs.commit import read_manifest
from spark_jobs.context import StageContext
from spark_jobs.model import ALS_KIND
from spark_jobs.model import BAYES_KIND
from spark_jobs.model import Baseline
from spark_jobs.model import FactorTables
from spark_jobs.model import RatingModel
from spark_jobs.model import RatingScale
from spark_jobs.model import fit_baseline
from spark_jobs.model import fit_implicit
from spark_jobs.params import Parameters
from spark_jobs.ranking import ranking_metrics_by_list
from spark_jobs.schema import MOVIE
from spark_jobs.schema import RATING
from spark_jobs.schema import USER
from spark_jobs.stages.split import held_out
from spark_jobs.stages.split import random_split
from spark_jobs.stages.split import rating_scale
from spark_jobs.steps import STAGE_PARAMETERS
from spark_jobs.sweep import SweepData
from spark_jobs.sweep import collect_arrays
from spark_jobs.sweep import factor_tables
from spark_jobs.sweep import prepare as prepare_sweep
from spark_jobs.sweep import sweep
from spark_jobs.topk import IMPLICIT_ORDER
from spark_jobs.topk import RATING_ORDER
from spark_jobs.topk import RERANKED
from spark_jobs.topk import ListSpec
from spark_jobs.topk import top_k_lists

logger = logging.getLogger(__name__)

TUNING_CSV = "tuning/results.csv"

# Candidate pool sizes for the reranked list, as multiples of k.
CANDIDATE_MULTIPLES = (1, 2, 4)
# How many carves of the training split score each ranker. Their mean precision@k
# decides, because on ml-100k a candidate's precision@10 differed by up to 0.008
# between carves, more than the gaps between the best candidates.
RANKER_CARVES = 3
# Decimal digits of precision@k that the list choice compares. One hit in users * k list
# slots is 1e-8 or more up to 100 million slots (5 million users at k = 20).
PRECISION_DIGITS = 9
# How often tune repeats its cancel of the Spark jobs still running after a failure.
CANCEL_POLL_SECONDS = 0.5


def validation_split(train: DataFrame, params: Parameters) -> tuple[DataFrame, DataFrame]:
    """Return (fit, validation) carved from the training ratings only.

    The hash seed differs from the test split's (seed + 1): with the same seed every
    training row would hash above the test fraction again.
    """
    return random_split(train, params.validation_fraction, params.seed + 1)


def als_rating_model(
    fit: DataFrame,
    baseline: Baseline,
    scale: RatingScale,
    data: SweepData,
    point: dict[str, Any],
    params: Parameters,
) -> RatingModel:
    """Return the ALS rating model at grid point ``point``, fitted by the sweep's solver.

    It costs a fraction of a Spark fit.
    """
    factors = factor_tables(
        fit.sparkSession,
        data,
        rank=point["rank"],
        reg_param=point["regParam"],
        max_iter=point["maxIter"],
        seed=params.seed,
    )
    return RatingModel(baseline, factors, scale)


def ranker_carves(
    train: DataFrame, params: Parameters
) -> list[tuple[ease.Interactions, ease.Interactions]]:
    """Return the (fit, validation) interactions of each ranker carve, from one pass over train.

    Carve i is ``random_split`` of the training split with seed + 1 + i, so the
    first is tune's validation split.
    """
    seeds = [params.seed + offset for offset in range(1, RANKER_CARVES + 1)]
    held_out_columns = [f"_held_out_{position}" for position in range(len(seeds))]
    flags = [
        held_out(params.validation_fraction, seed).alias(name)
        for seed, name in zip(seeds, held_out_columns, strict=True)
    ]
    users, movies, ratings, *held_flags = collect_arrays(
        train.select(USER, MOVIE, RATING, *flags),
        [USER, MOVIE, RATING, *held_out_columns],
        [np.int64, np.int64, np.float32] + [np.bool_] * len(held_out_columns),
    )
    return [
        (
            ease.Interactions.of_arrays(users[~flag], movies[~flag], ratings[~flag]),
            ease.Interactions.of_arrays(users[flag], movies[flag], ratings[flag]),
        )
        for flag in held_flags
    ]


def choose_ranker(
    train: DataFrame, fit: DataFrame, n_fit: int, params: Parameters
) -> tuple[dict[str, Any], dict[str, Any], ALSModel | FactorTables | ease.BlendedRanker]:
    """Return the chosen ranker ({"weight", "l2"}), how it was chosen, and the model on ``fit``.

    ALS alone and each (weight, l2) of the blend grid are scored by precision@k on
    RANKER_CARVES carves of the training split: tune's validation split and others
    hashed with the next seeds. One carve alone is too noisy to separate them. The
    implicit ALS fits are NumPy fits, one Spark task per carve. When the blend is
    left out, the model is a Spark fit on ``fit``.
    """
    started = time.monotonic()
    reason = None
    if n_fit > ease.MAX_RATINGS:
        reason = f"the fit set has {n_fit} ratings, above the limit of {ease.MAX_RATINGS}"
    else:
        carves = ranker_carves(train, params)
        interactions = carves[0][0]
        reason = ease.fits(interactions)
    if reason is not None:
        logger.info("tune: ALS alone ranks; the EASE blend is left out because %s", reason)
        return dict(ease.ALS_ONLY), {"skipped": reason}, fit_implicit(fit, params)
    k = params.top_k
    # The driver computes each carve's EASE scores while the workers fit ALS.
    with ThreadPoolExecutor(max_workers=1) as pool:
        fitted = pool.submit(
            implicit.fit_in_tasks,
            fit.sparkSession.sparkContext,
            [(carve_fit.by_user(), carve_fit.by_movie()) for carve_fit, _ in carves],
            implicit.ImplicitSettings.of(params),
        )
        scorers = [
            ease.CarveScorer.of(carve_fit, carve_validation)
            for carve_fit, carve_validation in carves
        ]
        factors = fitted.result()
    tables = [
        scorer.table(users, movies, k)
        for scorer, (users, movies) in zip(scorers, factors, strict=True)
    ]
    chosen, rows = ease.choose(tables)
    precision = {(row["weight"], row["l2"]): row["precision"] for row in rows}
    described = (
        "ALS alone"
        if chosen["weight"] == 0.0
        else f"ALS blended with EASE, weight {chosen['weight']:g}, l2 {chosen['l2']:g}"
    )
    logger.info(
        "tune: ranker %s: mean validation precision@%d %.4f, ALS alone %.4f, in %.1f s",
        described,
        k,
        precision[(chosen["weight"], chosen["l2"])],
        precision[(0.0, None)],
        time.monotonic() - started,
    )
    users, movies = factors[0]
    model: FactorTables | ease.BlendedRanker = FactorTables.of(
        fit.sparkSession, interactions.user_ids, users, interactions.movie_ids, movies
    )
    if chosen["weight"] > 0:
        model = ease.blended_ranker(model, interactions, chosen["weight"], chosen["l2"])
    carve_names = ["validation"] + [
        f"hash seed + {offset}" for offset in range(2, RANKER_CARVES + 1)
    ]
    return chosen, {"carves": carve_names, "k": k, "table": rows}, model


def choose_list(
    fit: DataFrame,
    validation: DataFrame,
    rating_model: RatingModel,
    ranking_model: Any,
    params: Parameters,
) -> tuple[ListSpec, list[dict[str, Any]]]:
    """Measure each way to build the top-k list on the validation ratings and pick the best.

    The list with the best precision@k wins, and NDCG@k breaks ties. ``reranked``
    with k candidates holds the same movies as ``implicit`` in predicted-rating
    order, so the two always tie on precision, and NDCG@k decides whether the
    default list reads in the ranking model's order or from the highest predicted
    rating down.
    """
    k = params.top_k
    specs = [ListSpec(RATING_ORDER), ListSpec(IMPLICIT_ORDER)]
    specs += [ListSpec(RERANKED, multiple * k) for multiple in CANDIDATE_MULTIPLES]
    users = validation.select("userId").distinct()
    lists = top_k_lists(rating_model, ranking_model, fit, k, specs, users=users)
    by_list = ranking_metrics_by_list(lists, validation, k)
    measured = []
    for spec in specs:
        metrics = by_list[spec.name]
        measured.append({**spec.to_dict(), **metrics})
        logger.info(
            "tune: %s list -> validation precision@%d %.4f",
            spec.name,
            k,
            metrics[f"precision_at_{k}"],
        )
    return best_list(measured, k), measured


def best_list(measured: list[dict[str, Any]], k: int) -> ListSpec:
    """Return the measured list with the best precision@k, then the best NDCG@k.

    Precision is rounded before the comparison: it is a float sum over users in an
    order Spark does not fix, so two lists with the same hits may differ in the last
    bits. Lists with different hit counts differ by at least 1 / (users * k).
    """

    def key(entry: dict[str, Any]) -> tuple[float, float]:
        return round(entry[f"precision_at_{k}"], PRECISION_DIGITS), entry[f"ndcg_at_{k}"]

    best = max(measured, key=key)
    return ListSpec(best["strategy"], best["candidates"])


def score_bayes(
    fit: DataFrame, validation: DataFrame, scale: RatingScale, settings: bayes.ChainSettings
) -> tuple[bayes.BayesData, bayes.Posterior, float]:
    """Sample the Bayesian model on the fit set; return its data, posterior and validation RMSE."""
    started = time.monotonic()
    data, posterior = bayes.sample(fit, validation, scale, settings)
    rmse = bayes.validation_rmse(data, posterior)
    logger.info(
        "tune: Bayesian model, rank %d, %d samples -> validation RMSE %.4f in %.1f s",
        settings.rank,
        settings.samples,
        rmse,
        time.monotonic() - started,
    )
    return data, posterior, rmse


def sweep_beside_sampler(
    spark_context: Any,
    run_sweep: Callable[[], list[dict[str, Any]]],
    run_sampler: Callable[[], Any] | None,
) -> tuple[list[dict[str, Any]], Any]:
    """Run the sweep and the sampler side by side and return both results.

    The sampler is one long task, so it starts first. When either fails, tune
    cancels the other's Spark jobs and raises the first error, rather than waiting
    for the other to finish. The other's job may not have started yet, so the
    cancelling repeats until the other has stopped. It cancels every job of the
    Spark context, because these two are the only jobs running at that point.
    """
    sampler_failed = threading.Event()
    sweep_over = threading.Event()

    def sample_or_cancel() -> Any:
        try:
            return run_sampler()
        except Exception as error:
            if sweep_over.is_set():
                raise
            sampler_failed.set()
            logger.error("tune: the Bayesian sampler failed, so tune cancels the sweep: %s", error)
            _cancel_until(spark_context, sweep_over.wait)
            raise

    with ThreadPoolExecutor(max_workers=1) as pool:
        sampled = pool.submit(sample_or_cancel) if run_sampler is not None else None
        try:
            table = run_sweep()
        except BaseException:
            # BaseException too: after Ctrl-C the sampler must still be cancelled.
            sweep_over.set()
            if sampler_failed.is_set():
                raise sampled.exception() from None
            logger.error("tune: the sweep failed, so tune cancels the Bayesian sampler")
            if sampled is not None and not sampled.done():
                _cancel_until(spark_context, lambda timeout: not wait([sampled], timeout).not_done)
            raise
        sweep_over.set()
        return table, sampled.result() if sampled is not None else None


def _cancel_until(spark_context: Any, stopped: Callable[[float], bool]) -> None:
    """Cancel every Spark job, again every CANCEL_POLL_SECONDS, until ``stopped(timeout)`` is true.

    ``stopped`` waits up to its timeout for the other side to stop and returns whether it has.
    """
    spark_context.cancelAllJobs()
    while not stopped(CANCEL_POLL_SECONDS):
        spark_context.cancelAllJobs()


def plot_sweep(table: list[dict[str, Any]], best: dict[str, Any]) -> bytes:
    """Return a PNG of validation RMSE against ALS iterations, one line per grid point.

    The line of ``best``, the point with the lowest RMSE, is drawn thicker.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import MaxNLocator

    figure, axes = pyplot.subplots(figsize=(8, 5), dpi=100)
    try:
        for (rank, reg_param), rows in _curves(table).items():
            is_best = (rank, reg_param) == (best["rank"], best["regParam"])
            axes.plot(
                [row["maxIter"] for row in rows],
                [row["rmse"] for row in rows],
                marker="o" if is_best else None,
                linewidth=2.5 if is_best else 1.0,
                label=f"rank {rank}, regParam {reg_param:g}" + (" (lowest RMSE)" if is_best else ""),
            )
        axes.set_title("Validation RMSE against ALS iterations")
        axes.set_xlabel("ALS iterations (maxIter)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("RMSE")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="x-small", ncol=2)
        buffer = io.BytesIO()
        figure.tight_layout()
        figure.savefig(buffer, format="png")
    finally:
        pyplot.close(figure)
    return buffer.getvalue()


def _curves(table: list[dict[str, Any]]) -> dict[tuple[int, float], list[dict[str, Any]]]:
    curves: dict[tuple[int, float], list[dict[str, Any]]] = {}
    for row in table:
        curves.setdefault((row["rank"], row["regParam"]), []).append(row)
    return curves


def results_csv(table: list[dict[str, Any]]) -> str:
    """Return the sweep table as CSV: rank, regParam, maxIter, rmse."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "regParam", "maxIter", "rmse"])
    for row in table:
        writer.writerow([row["rank"], row["regParam"], row["maxIter"], row["rmse"]])
    return buffer.getvalue()


def run(context: StageContext) -> dict[str, Any]:
    spark, layout, params = context.spark, context.layout, context.params
    started = time.monotonic()
    split = read_manifest(spark, layout, "split")
    load_scale = rating_scale(fs.read_json(spark, layout.load_report))
    scale = RatingScale(load_scale.minimum, load_scale.maximum)
    # Only the training split is read, so the test ratings cannot influence any choice.
    train = spark.read.parquet(layout.split_train).cache()
    fit, validation = validation_split(train, params)
    fit = fit.cache()
    validation = validation.cache()
    n_fit, n_validation = fit.count(), validation.count()
    baseline = fit_baseline(fit)
    residuals = baseline.residuals(fit).cache()
    residuals.count()

    points = [(rank, reg) for rank in params.rank_grid for reg in params.reg_grid]
    # The chain often runs on after the sweep's tasks are done, so it may use every core.
    settings = bayes.ChainSettings.of(
        params.bayes_rank,
        params.bayes_samples,
        params.seed,
        threads=bayes.chain_threads(spark.sparkContext),
    )
    with_bayes = n_fit <= bayes.MAX_RATINGS
    sweep_started = time.monotonic()
    data = prepare_sweep(residuals, validation, baseline, scale)
    table, bayes_result = sweep_beside_sampler(
        spark.sparkContext,
        lambda: sweep(
            spark.sparkContext,
            data,
            points,
            max_iter=params.study_max_iter,
            seed=params.seed,
        ),
        (lambda: score_bayes(fit, validation, scale, settings)) if with_bayes else None,
    )
    logger.info(
        "tune: swept %d grid points over 1..%d iterations in %.1f s",
        len(points),
        params.study_max_iter,
        time.monotonic() - sweep_started,
    )
    best = min(table, key=lambda row: row["rmse"])
    best_als = {
        "rank": best["rank"],
        "regParam": best["regParam"],
        "maxIter": best["maxIter"],
        "validation_rmse": best["rmse"],
    }
    # "model" and "validation_rmse" describe the chosen rating model. "als" and "bayes"
    # contain each kind's settings, so train can fit either one when an option requests
    # it. "bayes" is missing when the sampler was skipped.
    chosen: dict[str, Any] = {
        "model": ALS_KIND,
        "validation_rmse": best["rmse"],
        "als": best_als,
    }
    rating_models = [{"model": ALS_KIND, **best_als}]
    if bayes_result is None:
        rating_models.append(
            {
                "model": BAYES_KIND,
                "skipped": f"the fit set has {n_fit} ratings, above the sampler's limit of "
                f"{bayes.MAX_RATINGS}",
            }
        )
        rating_model = als_rating_model(fit, baseline, scale, data, best_als, params)
    else:
        bayes_data, posterior, bayes_rmse = bayes_result
        rating_models.append(
            {"model": BAYES_KIND, "validation_rmse": bayes_rmse, **settings.to_dict()}
        )
        chosen["bayes"] = {**settings.to_dict(), "validation_rmse": bayes_rmse}
        if bayes_rmse < best["rmse"]:
            chosen["model"] = BAYES_KIND
            chosen["validation_rmse"] = bayes_rmse
            rating_model = bayes.rating_model(spark, bayes_data, posterior, scale, settings)
        else:
            rating_model = als_rating_model(fit, baseline, scale, data, best_als, params)
    grid = [row for row in table if row["maxIter"] == params.study_max_iter]
    study = _curves(table)[(best["rank"], best["regParam"])]
    ranker, rankers, ranking_model = choose_ranker(train, fit, n_fit, params)
    chosen["ranker"] = ranker
    list_spec, lists = choose_list(fit, validation, rating_model, ranking_model, params)
    chosen["list"] = list_spec.to_dict()
    results = {
        "validation": {
            "method": "hash of (userId, movieId, seed + 1) over the training split",
            "fraction": params.validation_fraction,
            "n_fit": n_fit,
            "n_validation": n_validation,
        },
        "grid": grid,
        "iterations": study,
        "sweep": table,
        "rating_models": rating_models,
        "rankers": rankers,
        "lists": lists,
        "chosen": chosen,
    }
    parameters = {
        name: value
        for name, value in params.to_dict().items()
        if name in STAGE_PARAMETERS["tune"]
    }
    with StageCommit(
        spark, layout, "tune", inputs={"split": split}, parameters=parameters
    ) as commit:
        fs.write_json(spark, commit.staging_path(paths.TUNING_RESULTS), results)
        fs.write_text(spark, commit.staging_path(TUNING_CSV), results_csv(table))
        fs.write_bytes(spark, commit.staging_path(paths.TUNING_PLOT), plot_sweep(table, best_als))
        commit.counts.update(
            {"n_fit": n_fit, "n_validation": n_validation, "grid_points": len(points)}
        )
    cached = (
        train,
        fit,
        validation,
        residuals,
        baseline.user_bias,
        baseline.movie_bias,
        rating_model.baseline.user_bias,
        rating_model.baseline.movie_bias,
    )
    for frame in cached:
        frame.unpersist()
    rating_model_settings = next(
        entry for entry in rating_models if entry["model"] == chosen["model"]
    )
    described = {
        name: value
        for name, value in rating_model_settings.items()
        if name not in ("model", "validation_rmse")
    }
    logger.info(
        "tune: chose the %s rating model (%s), validation RMSE %.4f; best ALS: rank %d, "
        "regParam %g, maxIter %d, validation RMSE %.4f; list %s in %.1f s",
        chosen["model"],
        ", ".join(f"{name} {value}" for name, value in described.items()),
        chosen["validation_rmse"],
        best["rank"],
        best["regParam"],
        best["maxIter"],
        best["rmse"],
        list_spec.name,
        time.monotonic() - started,
    )
    return {"rating_model": rating_model_settings, "ranker": ranker, "list": chosen["list"]}
