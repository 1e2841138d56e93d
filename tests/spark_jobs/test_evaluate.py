"""Evaluate stage: ranking metrics beside RMSE in metrics.json, with the protocol."""

from __future__ import annotations

import pytest

from spark_jobs import fs
from spark_jobs.stages import evaluate
from tests.spark_jobs.stage_inputs import SMALL_MODEL
from tests.spark_jobs.stage_inputs import context_for
from tests.spark_jobs.stage_inputs import trained_run

pytestmark = pytest.mark.spark

K = SMALL_MODEL["top_k"]


@pytest.fixture(scope="module")
def evaluated(spark, tmp_path_factory):
    layout = trained_run(spark, tmp_path_factory)
    summary = evaluate.run(context_for(spark, layout, explicit={"top_k": K}))
    return summary, fs.read_json(spark, layout.metrics)


def test_metrics_keep_rating_error(evaluated):
    _, metrics = evaluated
    assert "rmse" in metrics
    assert "mae" in metrics


def test_ranking_section_states_protocol(evaluated):
    _, metrics = evaluated
    ranking = metrics["ranking"]
    assert ranking["k"] == K
    assert "held-out" in ranking["protocol"]
    assert ranking["default_list"] in ranking["lists"]
    assert ranking["default_list_models"]
    assert ranking["split"]["split_method"] == "hash"
    assert ranking["split"]["test_fraction"] == 0.2


def test_course_and_ranking_lists_compared(evaluated):
    _, metrics = evaluated
    assert set(metrics["ranking"]["lists"]) == {"rating", "implicit", f"reranked_{K}"}


def test_ranking_metrics_are_fractions(evaluated):
    _, metrics = evaluated
    for name, values in metrics["ranking"]["lists"].items():
        for metric in ("precision", "recall", "ndcg", "map"):
            value = values[f"{metric}_at_{K}"]
            assert 0.0 <= value <= 1.0, (name, metric, value)
        assert values["users"] > 0


def test_split_settings_fill_missing_method():
    files = {"train": "/data/u1.base", "test": "/data/u1.test"}
    hashed = {"seed": 42, "test_fraction": 0.2}
    per_user = {**hashed, "split_method": "per-user"}
    assert evaluate.split_settings(files)["split_method"] == "files"
    assert evaluate.split_settings(hashed)["split_method"] == "hash"
    assert evaluate.split_settings(per_user) == per_user
