"""Train stage: final model, test metrics with cold start counted, parameter precedence."""

from __future__ import annotations

import logging
import math

import pytest

from spark_jobs import ease
from spark_jobs import fs
from spark_jobs import layout as paths
from spark_jobs.commit import StageCommit
from spark_jobs.commit import read_manifest
from spark_jobs.errors import InputDataError
from spark_jobs.model import RatingModel
from spark_jobs.model import rmse_and_mae
from spark_jobs.params import Parameters
from spark_jobs.stages import split
from spark_jobs.stages import train
from tests.spark_jobs.stage_inputs import SMALL_MODEL
from tests.spark_jobs.stage_inputs import context_for
from tests.spark_jobs.stage_inputs import synthetic_ratings
from tests.spark_jobs.stage_inputs import trained_run
from tests.spark_jobs.stage_inputs import write_loaded_run

pytestmark = pytest.mark.spark

TUNED = {
    "model": "als",
    "validation_rmse": 0.9,
    "als": {"rank": 2, "regParam": 0.2, "maxIter": 4, "validation_rmse": 0.9},
    "list": {"strategy": "rating", "candidates": 0},
}


def test_metrics_json_has_contract_fields(spark, tmp_path_factory):
    layout = trained_run(spark, tmp_path_factory)
    metrics = fs.read_json(spark, layout.metrics)
    for key in ("rmse", "mae", "n_train", "n_test", "n_test_scored", "params", "dataset"):
        assert key in metrics
    assert metrics["params"] == {"model": "als", "rank": 3, "regParam": 0.1, "maxIter": 5}
    assert metrics["dataset"] == "handmade"
    assert not math.isnan(metrics["rmse"])
    assert metrics["n_test_scored"] + metrics["n_test_cold_start_dropped"] == metrics["n_test"]


def test_model_directory_holds_both_models(spark, tmp_path_factory):
    layout = trained_run(spark, tmp_path_factory)
    assert fs.exists(spark, layout.path(train.RATING_MODEL))
    assert fs.exists(spark, layout.path(train.RANKING_MODEL))
    assert fs.read_json(spark, layout.path(train.MODEL_CHOICE))["default_list"]["strategy"]


def _commit_fake_tune(spark, layout, chosen=None):
    """Commit a tune stage whose only output is results.json with ``chosen`` (default TUNED)."""
    split_manifest = read_manifest(spark, layout, "split")
    inputs = {"split": split_manifest}
    with StageCommit(spark, layout, "tune", inputs=inputs, parameters={"top_k": 7}) as commit:
        results = {"chosen": TUNED if chosen is None else chosen}
        fs.write_json(spark, commit.staging_path(paths.TUNING_RESULTS), results)


def test_tuned_parameters_used_unless_given(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    _commit_fake_tune(spark, layout)
    tuned = train.run(context_for(spark, layout, explicit={"implicit_max_iter": 2}))
    overridden = train.run(context_for(spark, layout, explicit={"rank": 5, "implicit_max_iter": 2}))
    choice = fs.read_json(spark, layout.path(train.MODEL_CHOICE))
    metrics = fs.read_json(spark, layout.metrics)
    assert tuned["params"] == {"model": "als", "rank": 2, "regParam": 0.2, "maxIter": 4}
    assert overridden["params"] == {"model": "als", "rank": 5, "regParam": 0.2, "maxIter": 4}
    assert metrics["params_given"] == ["--rank"]
    assert choice["default_list"]["strategy"] == "rating"
    assert choice["chosen_at_k"] == 7


def test_chosen_settings_reads_old_results(spark, tmp_path):
    # Results written before the "als" entry kept the best ALS point beside "model".
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    older = {
        "model": "bayes",
        "rank": 3,
        "regParam": 0.3,
        "maxIter": 5,
        "validation_rmse": 0.9,
        "bayes": {"rank": 4, "samples": 7, "burn_in": 1},
        "list": TUNED["list"],
    }
    _commit_fake_tune(spark, layout, older)
    tuned, _, _, _ = train.chosen_settings(context_for(spark, layout))
    assert tuned["model"] == "bayes"
    assert tuned["bayes_rank"] == 4
    assert tuned["bayes_samples"] == 7
    overridden, _, _, _ = train.chosen_settings(context_for(spark, layout, explicit={"rank": 6}))
    assert overridden["model"] == "als"
    assert overridden["rank"] == 6
    assert overridden["regParam"] == 0.3
    assert overridden["maxIter"] == 5


def test_split_rerun_drops_tunes_choice(spark, tmp_path, caplog):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    _commit_fake_tune(spark, layout)
    split.run(context_for(spark, layout, explicit={"seed": 7}))
    with caplog.at_level(logging.INFO, logger="spark_jobs.stages.train"):
        summary = train.run(context_for(spark, layout, explicit={"implicit_max_iter": 2}))
    metrics = fs.read_json(spark, layout.metrics)
    assert f"train: no committed tune output in {layout.root}" in caplog.text
    defaults = Parameters()
    assert (
        f"the ALS rating model (rank {defaults.rank}, regParam {defaults.reg_param:g}, "
        f"maxIter {defaults.max_iter})" in caplog.text
    )
    assert "the 'implicit' default list" in caplog.text
    assert metrics["params_source"] == "command line and defaults"
    assert summary["params"]["rank"] == Parameters().rank


def test_tuned_bayes_model_is_fitted_saved_and_reloaded(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    _commit_fake_tune(spark, layout, {**TUNED, "model": "bayes"})
    explicit = {"bayes_rank": 3, "bayes_samples": 10, "implicit_max_iter": 2}
    summary = train.run(context_for(spark, layout, explicit=explicit))
    metrics = fs.read_json(spark, layout.metrics)
    assert summary["params"] == {"model": "bayes", "rank": 3, "samples": 10, "burn_in": 2}
    assert metrics["rating_model"]["model"] == "bayes"
    model = RatingModel.load(spark, layout.path(train.RATING_MODEL))
    assert model.kind == "bayes"
    assert model.factors.rank == 3
    rmse, _ = rmse_and_mae(model.predict(spark.read.parquet(layout.split_test)))
    assert rmse == pytest.approx(metrics["rmse"])


def test_tuned_blend_is_the_saved_ranking_model(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    _commit_fake_tune(spark, layout, {**TUNED, "ranker": {"weight": 0.5, "l2": 5.0}})
    train.run(context_for(spark, layout, explicit={"implicit_max_iter": 2}))
    ranking = ease.load_ranking_model(spark, layout.path(train.RANKING_MODEL))
    metrics = fs.read_json(spark, layout.metrics)
    assert isinstance(ranking, ease.BlendedRanker)
    assert (ranking.weight, ranking.l2) == (0.5, 5.0)
    assert "EASE" in metrics["ranking_model"]["kind"]


def _commit_bayes_tune(spark, layout):
    bayes = {"rank": 2, "samples": 6, "burn_in": 1}
    _commit_fake_tune(spark, layout, {**TUNED, "model": "bayes", "bayes": bayes})


def test_tuned_bayes_settings_are_used(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    _commit_bayes_tune(spark, layout)
    summary = train.run(context_for(spark, layout, explicit={"implicit_max_iter": 2}))
    assert summary["params"] == {"model": "bayes", "rank": 2, "samples": 6, "burn_in": 1}


def test_als_option_asks_for_als_over_tuned_bayes(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    _commit_bayes_tune(spark, layout)
    summary = train.run(context_for(spark, layout, explicit={"rank": 5, "implicit_max_iter": 2}))
    assert summary["params"] == {"model": "als", "rank": 5, "regParam": 0.2, "maxIter": 4}


def test_overriding_options_are_logged(spark, tmp_path, caplog):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    # (tune's choice, option given to train, phrases the warning must contain)
    cases = [
        (
            {**TUNED, "model": "bayes"},
            {"max_iter": 3},
            ["--max-iter given", "instead of tune's choice, bayes"],
        ),
        (TUNED, {"bayes_rank": 3}, ["--bayes-rank not used", "--rating-model bayes"]),
    ]
    for chosen, explicit, phrases in cases:
        _commit_fake_tune(spark, layout, chosen)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="spark_jobs.stages.train"):
            settings, _, _, _ = train.chosen_settings(context_for(spark, layout, explicit=explicit))
        assert settings["model"] == "als", explicit
        for phrase in phrases:
            assert phrase in caplog.text, (explicit, phrase)


def test_rating_model_option_wins_over_tune(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    split.run(context_for(spark, layout))
    _commit_fake_tune(spark, layout)
    explicit = {"rating_model": "bayes", "bayes_samples": 5, "implicit_max_iter": 2}
    summary = train.run(context_for(spark, layout, explicit=explicit))
    assert summary["params"]["model"] == "bayes"


def test_no_scorable_test_rows_stops(spark, tmp_path):
    layout = write_loaded_run(spark, tmp_path / "run", synthetic_ratings())
    train_file = tmp_path / "train.tsv"
    test_file = tmp_path / "test.tsv"
    train_file.write_text("1\t1\t5\t1\n1\t2\t3\t1\n2\t1\t4\t1\n")
    test_file.write_text("3\t1\t5\t1\n1\t9\t2\t1\n")  # unseen user 3, unseen movie 9
    summary = split.run(context_for(spark, layout, train=str(train_file), test=str(test_file)))
    assert summary["test_rows_cold_start"] == 2
    with pytest.raises(InputDataError, match="cannot be scored"):
        train.run(context_for(spark, layout, explicit=SMALL_MODEL))


def test_k_other_than_tunes_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="spark_jobs.stages.evaluate"):
        train.warn_if_k_differs("evaluate", {"chosen_at_k": 10}, 10)
        assert caplog.text == ""
        train.warn_if_k_differs("evaluate", {"chosen_at_k": None}, 20)
        assert caplog.text == ""
        train.warn_if_k_differs("evaluate", {"chosen_at_k": 10}, 20)
    assert "evaluate: --top-k 20, but tune chose the default list" in caplog.text
    assert "at k = 10" in caplog.text
    assert caplog.records[0].name == "spark_jobs.stages.evaluate"
