"""The metrics check that CI runs on a pipeline run's metrics.json."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_metrics.py"


def load_script():
    spec = importlib.util.spec_from_file_location("check_metrics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_metrics = load_script()


def good_metrics() -> dict:
    return {
        "rmse": 0.88,
        "mae": 0.67,
        "n_test_scored": 19347,
        "ranking": {
            "k": 20,
            "default_list": "reranked_20",
            "lists": {"reranked_20": {"precision_at_20": 0.22, "ndcg_at_20": 0.30}},
        },
    }


def test_good_metrics_pass():
    assert check_metrics.check(good_metrics(), max_rmse=0.95) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"rmse": 1.04}, "above the bound"),
        ({"rmse": math.nan}, "not a finite number"),
        ({"rmse": None}, "not a finite number"),
        ({"n_test_scored": 0}, "n_test_scored"),
        ({"ranking": None}, "ranking is missing"),
    ],
)
def test_bad_metrics_fail(change, expected):
    metrics = {**good_metrics(), **change}

    failures = check_metrics.check(metrics, max_rmse=0.95)

    assert len(failures) == 1
    assert expected in failures[0]


def test_zero_precision_fails():
    metrics = good_metrics()
    metrics["ranking"]["lists"]["reranked_20"]["precision_at_20"] = 0.0

    failures = check_metrics.check(metrics, max_rmse=0.95)

    assert failures == ["precision_at_20 of the default list 'reranked_20' is not positive"]


def test_main_exit_status(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(good_metrics()), encoding="utf-8")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**good_metrics(), "rmse": 1.2}), encoding="utf-8")

    assert check_metrics.main([str(good)]) == 0
    assert check_metrics.main([str(bad)]) == 1
    assert check_metrics.main([str(tmp_path / "missing.json")]) == 2
    assert "rmse 1.2000 is above the bound" in capsys.readouterr().out
