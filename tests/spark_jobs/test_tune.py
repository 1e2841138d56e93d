"""Tune stage: grid and iteration study on validation data carved from training only."""

from __future__ import annotations

import csv
import io
import math
import time

import pytest

from spark_jobs import fs
from spark_jobs.params import Parameters
from spark_jobs.stages import split
from spark_jobs.stages import tune
from spark_jobs.topk import ListSpec
from tests.spark_jobs.stage_inputs import context_for
from tests.spark_jobs.stage_inputs import synthetic_ratings
from tests.spark_jobs.stage_inputs import write_loaded_run

pytestmark = pytest.mark.spark

SMALL_TUNE = {
    "rank_grid": (2, 4),
    "reg_grid": (0.05, 0.3),
    "study_max_iter": 3,
    "top_k": 5,
    "implicit_rank": 3,
    "implicit_max_iter": 3,
    "bayes_rank": 2,
    "bayes_samples": 20,
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tuned(spark, tmp_path_factory):
    """A run tuned after its test split was deleted, so reading it would fail."""
    layout = write_loaded_run(spark, tmp_path_factory.mktemp("tune") / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    fs.delete(spark, layout.split_test)
    summary = tune.run(context_for(spark, layout, explicit=SMALL_TUNE))
    results = fs.read_json(spark, layout.tuning_results)
    return layout, summary, results


def test_tune_runs_without_test_split(spark, tuned):
    layout, _, results = tuned
    assert not fs.exists(spark, layout.split_test)
    assert results["chosen"]["als"]["rank"] in SMALL_TUNE["rank_grid"]


def test_summary_shows_chosen_models_settings(tuned):
    _, summary, results = tuned
    chosen = results["chosen"]
    rating_model = summary["rating_model"]
    assert rating_model["model"] == chosen["model"]
    assert rating_model["validation_rmse"] == chosen["validation_rmse"]
    assert summary["ranker"] == chosen["ranker"]
    assert summary["list"] == chosen["list"]
    assert rating_model["rank"] == chosen[chosen["model"]]["rank"]
    if chosen["model"] == "bayes":
        assert rating_model["rank"] == SMALL_TUNE["bayes_rank"]


def test_grid_covers_every_point(tuned):
    _, _, results = tuned
    points = {(row["rank"], row["regParam"]) for row in results["grid"]}
    assert points == {(2, 0.05), (2, 0.3), (4, 0.05), (4, 0.3)}


def test_sweep_covers_every_iteration(tuned):
    _, _, results = tuned
    cells = {(row["rank"], row["regParam"], row["maxIter"]) for row in results["sweep"]}
    assert len(cells) == len(results["sweep"]) == 2 * 2 * 3


def test_chosen_point_has_lowest_rmse(tuned):
    _, _, results = tuned
    best = min(results["sweep"], key=lambda row: row["rmse"])
    best_als = results["chosen"]["als"]
    assert best_als["rank"] == best["rank"]
    assert best_als["regParam"] == best["regParam"]
    assert best_als["maxIter"] == best["maxIter"]
    assert best_als["validation_rmse"] == best["rmse"]


def test_chosen_rating_model_has_lowest_rmse(tuned):
    _, _, results = tuned
    scored = {entry["model"]: entry["validation_rmse"] for entry in results["rating_models"]}
    assert set(scored) == {"als", "bayes"}
    assert scored["als"] == min(row["rmse"] for row in results["sweep"])
    chosen = results["chosen"]
    assert chosen["model"] == min(scored, key=scored.get)
    assert chosen["validation_rmse"] == min(scored.values())
    assert {kind: chosen[kind]["validation_rmse"] for kind in scored} == scored
    # Each kind's settings sit under its own key, never beside the chosen "model".
    assert "rank" not in chosen


def test_chosen_ranker_has_best_mean_precision(tuned):
    _, _, results = tuned
    rows = results["rankers"]["table"]
    best = max(row["precision"] for row in rows)
    chosen = results["chosen"]["ranker"]
    chosen_row = next(
        row for row in rows if (row["weight"], row["l2"]) == (chosen["weight"], chosen["l2"])
    )
    assert chosen_row["precision"] == best
    assert all(len(row["by_carve"]) == tune.RANKER_CARVES for row in rows)
    assert {row["weight"] for row in rows} == {0.0, 0.2, 0.3, 0.4, 0.5, 0.7}


def tune_one_point(spark, tmp_path) -> dict:
    """Split and tune synthetic ratings at a single grid point, and return tune's results."""
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    tune.run(context_for(spark, layout, explicit={**SMALL_TUNE, "rank_grid": (2,), "reg_grid": (0.1,)}))
    return fs.read_json(spark, layout.tuning_results)


def test_sampler_is_skipped_above_its_limit(spark, tmp_path, monkeypatch):
    monkeypatch.setattr(tune.bayes, "MAX_RATINGS", 10)
    results = tune_one_point(spark, tmp_path)
    skipped = next(entry for entry in results["rating_models"] if entry["model"] == "bayes")
    assert "limit of 10" in skipped["skipped"]
    assert results["chosen"]["model"] == "als"
    assert "als" in results["chosen"]
    assert "bayes" not in results["chosen"]


def test_blend_is_skipped_above_its_limit(spark, tmp_path, monkeypatch):
    monkeypatch.setattr(tune.ease, "MAX_USER_VALUES", 10)
    results = tune_one_point(spark, tmp_path)
    assert "limit of 10 values" in results["rankers"]["skipped"]
    assert results["chosen"]["ranker"] == {"weight": 0.0, "l2": None}
    assert "implicit" in {entry["name"] for entry in results["lists"]}


def test_study_is_chosen_points_curve(tuned):
    _, _, results = tuned
    best_als = results["chosen"]["als"]
    points = {(row["rank"], row["regParam"]) for row in results["iterations"]}
    assert points == {(best_als["rank"], best_als["regParam"])}


def test_study_spans_one_to_max_iterations(tuned):
    _, _, results = tuned
    assert [row["maxIter"] for row in results["iterations"]] == [1, 2, 3]


def test_default_list_is_best_measured(tuned):
    _, _, results = tuned
    k = SMALL_TUNE["top_k"]
    names = {entry["name"] for entry in results["lists"]}
    chosen = results["chosen"]["list"]
    best = max(
        results["lists"], key=lambda entry: (entry[f"precision_at_{k}"], entry[f"ndcg_at_{k}"])
    )
    assert {"rating", "implicit"} <= names
    assert (chosen["strategy"], chosen["candidates"]) == (best["strategy"], best["candidates"])


def _measured(strategy, candidates, precision, ndcg):
    return {
        "strategy": strategy,
        "candidates": candidates,
        "precision_at_10": precision,
        "ndcg_at_10": ndcg,
    }


def test_best_list_tie_goes_to_ndcg():
    measured = [
        _measured("rating", 0, 0.05, 0.06),
        _measured("implicit", 0, 0.20, 0.25),
        _measured("reranked", 10, 0.20, 0.23),
        _measured("reranked", 20, 0.18, 0.21),
    ]
    assert tune.best_list(measured, 10) == ListSpec("implicit")
    measured[2]["ndcg_at_10"] = 0.26
    assert tune.best_list(measured, 10) == ListSpec("reranked", 10)


def test_best_list_ignores_float_sum_order():
    tied = 0.3 * 943 / 943
    measured = [
        _measured("reranked", 10, math.nextafter(tied, 1.0), 0.23),
        _measured("implicit", 0, tied, 0.25),
    ]
    assert tune.best_list(measured, 10) == ListSpec("implicit")


def test_best_list_prefers_precision_over_ndcg():
    measured = [_measured("implicit", 0, 0.20, 0.30), _measured("reranked", 20, 0.21, 0.22)]
    assert tune.best_list(measured, 10) == ListSpec("reranked", 20)


def test_csv_and_plot_are_written(spark, tuned):
    layout, _, results = tuned
    rows = list(csv.DictReader(io.StringIO(fs.read_text(spark, layout.path(tune.TUNING_CSV)))))
    plot = fs.read_bytes(spark, layout.tuning_plot)
    assert len(rows) == len(results["sweep"])
    assert list(rows[0]) == ["rank", "regParam", "maxIter", "rmse"]
    assert plot.startswith(PNG_SIGNATURE)


def test_validation_split_is_inside_training(spark):
    schema = "userId int, movieId int, rating float, timestamp long"
    train = spark.createDataFrame(synthetic_ratings(), schema)
    fit, validation = tune.validation_split(train, context_for(spark, None).params)
    fit_pairs = {(row[0], row[1]) for row in fit.select("userId", "movieId").collect()}
    validation_pairs = {
        (row[0], row[1]) for row in validation.select("userId", "movieId").collect()
    }
    assert validation_pairs
    assert not fit_pairs & validation_pairs
    assert len(fit_pairs) + len(validation_pairs) == train.count()


def test_first_carve_is_validation_split(spark, tuned):
    """The carves come from one pass over train, and the first equals tune's validation split."""
    layout, _, _ = tuned
    train = spark.read.parquet(layout.split_train)
    params = Parameters()
    carves = tune.ranker_carves(train, params)
    assert len(carves) == tune.RANKER_CARVES
    fit, validation = tune.validation_split(train, params)

    def pairs(interactions):
        return sorted(
            zip(
                interactions.user_ids[interactions.users].tolist(),
                interactions.movie_ids[interactions.movies].tolist(),
                strict=True,
            )
        )

    def frame_pairs(frame):
        return sorted((row["userId"], row["movieId"]) for row in frame.collect())

    assert pairs(carves[0][0]) == frame_pairs(fit)
    assert pairs(carves[0][1]) == frame_pairs(validation)
    every = frame_pairs(train)
    for carve_fit, carve_validation in carves:
        assert sorted(pairs(carve_fit) + pairs(carve_validation)) == every
    assert pairs(carves[1][1]) != pairs(carves[0][1])


def blocking_job(spark_context, finished: list[str], name: str) -> None:
    """Run a one-task Spark job that sleeps for a minute unless it is cancelled."""
    spark_context.parallelize([0], 1).map(lambda value: time.sleep(60) or value).collect()
    finished.append(name)


def wait_for_running_job(spark_context) -> None:
    """Return once a Spark job is running (or after 30 s), so that a cancel has a job to stop."""
    tracker = spark_context.statusTracker()
    for _ in range(600):
        if tracker.getActiveJobsIds():
            return
        time.sleep(0.05)


def test_sampler_failure_cancels_sweep(spark):
    finished: list[str] = []

    def broken_sampler():
        raise ValueError("sampler failed")

    with pytest.raises(ValueError, match="sampler failed"):
        tune.sweep_beside_sampler(
            spark.sparkContext,
            lambda: blocking_job(spark.sparkContext, finished, "sweep"),
            broken_sampler,
        )
    assert finished == []


def test_sweep_failure_cancels_sampler(spark):
    finished: list[str] = []

    def broken_sweep():
        wait_for_running_job(spark.sparkContext)
        raise ValueError("sweep failed")

    with pytest.raises(ValueError, match="sweep failed"):
        tune.sweep_beside_sampler(
            spark.sparkContext,
            broken_sweep,
            lambda: blocking_job(spark.sparkContext, finished, "sampler"),
        )
    assert finished == []


def test_interrupted_sweep_cancels_sampler(spark):
    """Ctrl-C raises KeyboardInterrupt, which is no Exception, and must still stop the sampler."""
    finished: list[str] = []

    def interrupted_sweep():
        wait_for_running_job(spark.sparkContext)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune.sweep_beside_sampler(
            spark.sparkContext,
            interrupted_sweep,
            lambda: blocking_job(spark.sparkContext, finished, "sampler"),
        )
    assert finished == []


def test_sweep_and_sampler_both_return(spark):
    table, sampled = tune.sweep_beside_sampler(
        spark.sparkContext, lambda: [{"rmse": 1.0}], lambda: "posterior"
    )
    assert table == [{"rmse": 1.0}]
    assert sampled == "posterior"
