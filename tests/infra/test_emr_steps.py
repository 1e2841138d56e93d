"""Tests for the EMR step definitions and their add-steps export."""

from __future__ import annotations

import json

import pytest

from infra import emr_steps
from infra.emr_steps import ArtifactLocation
from spark_jobs.steps import STAGES
from spark_jobs.steps import RunRequest
from spark_jobs.steps import build_steps

ARTIFACT = ArtifactLocation("s3://artifacts-bucket/artifacts/spark_jobs/0.1.0-0123456789abcdef/")
REQUEST = RunRequest(
    output="s3://data-bucket/runs/first",
    source="s3://data-bucket/datasets/ml-latest-small",
    parameters={"rank_grid": (8, 16), "seed": 7},
)


def test_artifact_location_uris() -> None:
    prefix = "s3://artifacts-bucket/artifacts/spark_jobs/0.1.0-0123456789abcdef"

    assert ARTIFACT.entry_point == f"{prefix}/main.py"
    assert ARTIFACT.package_zip == f"{prefix}/spark_jobs.zip"
    assert ARTIFACT.bootstrap_script == f"{prefix}/bootstrap/install_python_dependencies.sh"


def test_steps_follow_step_list() -> None:
    steps = emr_steps.emr_steps(REQUEST, ARTIFACT, run_id="first")

    assert [step["Name"] for step in steps] == [f"first {stage}" for stage in STAGES]
    for step, expected in zip(steps, build_steps(REQUEST), strict=True):
        args = step["HadoopJarStep"]["Args"]
        assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
        assert args[:3] == ["spark-submit", "--deploy-mode", "client"]
        assert args[3:6] == ["--py-files", ARTIFACT.package_zip, ARTIFACT.entry_point]
        assert tuple(args[6:]) == expected.args


def test_batch_steps_cancel_pending_on_failure() -> None:
    steps = emr_steps.emr_steps(REQUEST, ARTIFACT, run_id="first")

    assert {step["ActionOnFailure"] for step in steps} == {"CANCEL_AND_WAIT"}


def test_cli_format_matches_add_steps_shape() -> None:
    steps = emr_steps.emr_steps(REQUEST, ARTIFACT, run_id="first")
    cli_steps = emr_steps.to_cli_steps(steps)

    assert cli_steps[0]["Type"] == "CUSTOM_JAR"
    assert cli_steps[0]["Jar"] == "command-runner.jar"
    assert cli_steps[0]["Args"] == steps[0]["HadoopJarStep"]["Args"]
    assert set(cli_steps[0]) == {"Type", "Name", "ActionOnFailure", "Jar", "Args"}


def test_command_prints_boto3_steps(capsys: pytest.CaptureFixture[str]) -> None:
    status = emr_steps.main(
        [
            "--artifact", ARTIFACT.uri,
            "--output", "s3://data-bucket/runs/second/",
            "--source", "ml-latest-small",
            "--no-tune",
            "--rank", "12",
            "--format", "boto3",
        ]
    )
    steps = json.loads(capsys.readouterr().out)

    assert status == 0
    assert [step["Name"] for step in steps] == [
        f"second {stage}" for stage in STAGES if stage != "tune"
    ]
    train_args = steps[3]["HadoopJarStep"]["Args"]
    assert train_args[train_args.index("--rank") + 1] == "12"


def test_command_rejects_invalid_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    status = emr_steps.main(
        ["--artifact", ARTIFACT.uri, "--output", "s3://data-bucket/runs/x", "--rank", "0"]
    )

    assert status == 2
    assert "--rank" in capsys.readouterr().err
