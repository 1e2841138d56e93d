"""The step list: what each stage is given for a run request, and its spark-submit command."""

from __future__ import annotations

import pytest

from spark_jobs import cli
from spark_jobs.steps import STAGE_PARAMETERS
from spark_jobs.steps import STAGES
from spark_jobs.steps import RunRequest
from spark_jobs.steps import Step
from spark_jobs.steps import build_steps
from spark_jobs.steps import option_name
from spark_jobs.steps import submit_command


def steps_by_name(request: RunRequest) -> dict[str, tuple[str, ...]]:
    return {step.name: step.args for step in build_steps(request)}


def test_build_steps_runs_every_stage_in_order():
    steps = build_steps(RunRequest(output="s3://b/run"))
    assert [step.name for step in steps] == list(STAGES)
    for step in steps:
        assert step.args[:3] == (step.name, "--output", "s3://b/run")


def test_build_steps_without_tune():
    names = [step.name for step in build_steps(RunRequest(output="/r", tune=False))]
    assert "tune" not in names
    assert names == [stage for stage in STAGES if stage != "tune"]


def test_source_goes_to_load_only():
    args = steps_by_name(RunRequest(output="/r", source="ml-100k"))
    assert args["load"] == ("load", "--output", "/r", "--source", "ml-100k")
    for stage in STAGES[1:]:
        assert "--source" not in args[stage]


def test_existing_split_goes_to_split_only():
    request = RunRequest(output="/r", source="/d", train="/d/u1.base", test="/d/u1.test")
    args = steps_by_name(request)
    assert args["split"] == ("split", "--output", "/r", "--train", "/d/u1.base", "--test",
                             "/d/u1.test")
    assert "--train" not in args["train"]


def test_parameters_go_to_the_stages_that_take_them():
    parameters = {
        "seed": 7,
        "rank": 16,
        "reg_grid": (0.05, 0.1),
        "max_quarantine_fraction": 0.5,
        "split_method": "per-user",
    }
    args = steps_by_name(RunRequest(output="/r", parameters=parameters))

    assert args["load"][-2:] == ("--max-quarantine-fraction", "0.5")
    assert args["split"][-4:-2] == ("--max-quarantine-fraction", "0.5")
    assert ("--seed", "7") == args["split"][3:5]
    assert "--rank" in args["train"]
    assert args["train"][args["train"].index("--rank") + 1] == "16"
    assert args["tune"][args["tune"].index("--reg-grid") + 1] == "0.05,0.1"
    assert args["split"][-2:] == ("--split-method", "per-user")
    assert "--split-method" not in args["tune"]
    assert "--rank" not in args["split"]
    assert "--seed" not in args["load"]


def test_every_step_parses_on_the_command_line():
    parameters = {name: 1 for name in ("seed", "rank", "max_iter", "top_k")}
    request = RunRequest(output="/r", source="ml-100k", parameters=parameters)
    parser = cli.build_parser()
    for step in build_steps(request):
        parsed = parser.parse_args(list(step.args))
        assert parsed.command == step.name
        assert parsed.output == "/r"


def test_every_stage_parameter_is_a_command_line_option():
    for names in STAGE_PARAMETERS.values():
        for name in names:
            assert name in cli.PARAMETER_OPTIONS


def test_run_request_rejects_unknown_parameter():
    with pytest.raises(ValueError, match="unknown parameters \\['alpha'\\]"):
        RunRequest(output="/r", parameters={"alpha": 1})


def test_run_request_rejects_train_without_test():
    with pytest.raises(ValueError, match="train and test must be given together"):
        RunRequest(output="/r", train="/d/u1.base")


def test_request_rejects_files_without_source():
    with pytest.raises(ValueError, match="--train and --test need --source"):
        RunRequest(output="/r", train="/d/u1.base", test="/d/u1.test")


def test_request_rejects_fraction_with_files():
    with pytest.raises(ValueError, match="--test-fraction sets how split makes its own split"):
        RunRequest(output="/r", train="/a", test="/b", parameters={"test_fraction": 0.25})


def test_option_name():
    assert option_name("reg_param") == "--reg-param"
    assert option_name("seed") == "--seed"


def test_submit_command():
    step = Step(name="load", args=("load", "--output", "s3://b/r"))
    command = submit_command(
        step,
        entry_point="s3://b/artifacts/main.py",
        py_files="s3://b/artifacts/spark_jobs.zip",
        deploy_mode="cluster",
        spark_conf={"spark.b": "2", "spark.a": "1"},
    )
    assert command == [
        "spark-submit",
        "--deploy-mode", "cluster",
        "--conf", "spark.a=1",
        "--conf", "spark.b=2",
        "--py-files", "s3://b/artifacts/spark_jobs.zip",
        "s3://b/artifacts/main.py",
        "load", "--output", "s3://b/r",
    ]
