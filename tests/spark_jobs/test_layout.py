"""The run directory layout: URI joining and the paths every stage reads and writes."""

from __future__ import annotations

import pytest

from spark_jobs import layout
from spark_jobs.layout import RunLayout
from spark_jobs.layout import join_uri
from spark_jobs.steps import STAGES


@pytest.mark.parametrize(
    ("base", "parts", "expected"),
    [
        ("s3://bucket/runs/", ("ratings",), "s3://bucket/runs/ratings"),
        ("s3://bucket/runs", ("/split/", "train"), "s3://bucket/runs/split/train"),
        ("/tmp/run", ("", "model"), "/tmp/run/model"),
        ("file:///tmp/run/", ("metrics.json",), "file:///tmp/run/metrics.json"),
    ],
)
def test_join_uri(base, parts, expected):
    assert join_uri(base, *parts) == expected


def test_run_layout_contract_paths():
    run = RunLayout("s3://bucket/run-1/")
    assert run.ratings == "s3://bucket/run-1/ratings"
    assert run.movies == "s3://bucket/run-1/movies"
    assert run.quarantine == "s3://bucket/run-1/quarantine"
    assert run.load_report == "s3://bucket/run-1/load_report.json"
    assert run.split_train == "s3://bucket/run-1/split/train"
    assert run.split_test == "s3://bucket/run-1/split/test"
    assert run.tuning_results == "s3://bucket/run-1/tuning/results.json"
    assert run.tuning_plot == "s3://bucket/run-1/tuning/rmse_vs_iterations.png"
    assert run.model == "s3://bucket/run-1/model"
    assert run.metrics == "s3://bucket/run-1/metrics.json"
    assert run.recommendations == "s3://bucket/run-1/recommendations"
    assert run.recommendations_csv == "s3://bucket/run-1/recommendations.csv"


def test_run_layout_bookkeeping_paths():
    run = RunLayout("/runs/a")
    assert run.manifest("load") == "/runs/a/_manifests/load.json"
    assert run.staging("train", "abc") == "/runs/a/_staging/train-abc"
    assert run.source_copy("ml-25m") == "/runs/a/_sources/ml-25m"


def test_every_stage_has_outputs():
    assert set(layout.STAGE_OUTPUTS) == set(STAGES)


def test_outputs_belong_to_one_stage_except_metrics():
    owners: dict[str, list[str]] = {}
    for stage, outputs in layout.STAGE_OUTPUTS.items():
        for output in outputs:
            owners.setdefault(output, []).append(stage)
    shared = {output: stages for output, stages in owners.items() if len(stages) > 1}
    assert shared == {layout.METRICS: ["train", "evaluate"]}


def test_bookkeeping_is_not_an_output():
    outputs = {output for outputs in layout.STAGE_OUTPUTS.values() for output in outputs}
    for name in (layout.MANIFESTS, layout.STAGING, layout.SOURCES):
        assert not any(output.startswith(name) for output in outputs)
