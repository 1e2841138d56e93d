"""The run command against moto: start, follow the EMR steps, report results or the failed step.

moto runs no state machine and no Spark. Each test scripts what Step Functions
and EMR would do (add the run's steps, move them through their states, end the
execution) in the ``sleep`` the command calls between polls, and the command
reads all of it back through boto3.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID

from infra import naming
from ops import run as run_command
from tests.ops.test_environment import REGION
from tests.ops.test_environment import template
from tests.ops.test_environment import without_credentials

ENVIRONMENT = "dev"
DATA_BUCKET = "data-bucket"
LOG_URI = "s3://logs-bucket/emr-logs/"
STAGES = run_command.expected_stages()


@pytest.fixture
def world(monkeypatch):
    """A deployed environment in moto: buckets, the cluster, the state machine and the stack."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        s3 = session.client("s3")
        for bucket in (DATA_BUCKET, "logs-bucket"):
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
        cluster_id = create_cluster(session, naming.stack_name(ENVIRONMENT))
        state_machine = session.client("stepfunctions").create_state_machine(
            name="pipeline",
            definition=json.dumps({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}),
            roleArn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/pipeline",
        )["stateMachineArn"]
        outputs = {
            naming.OUTPUT_DATA_BUCKET: DATA_BUCKET,
            naming.OUTPUT_LOGS_BUCKET: "logs-bucket",
            naming.OUTPUT_CLUSTER_ID: cluster_id,
            naming.OUTPUT_STATE_MACHINE_ARN: state_machine,
        }
        session.client("cloudformation").create_stack(
            StackName=naming.stack_name(ENVIRONMENT), TemplateBody=template(outputs)
        )
        yield {"session": session, "cluster_id": cluster_id, "state_machine": state_machine}


def create_cluster(session: boto3.Session, name: str) -> str:
    return session.client("emr").run_job_flow(
        Name=name,
        ReleaseLabel="emr-7.13.0",
        LogUri=LOG_URI,
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "SlaveInstanceType": "m5.xlarge",
            "InstanceCount": 3,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="instance-profile",
        ServiceRole="service-role",
    )["JobFlowId"]


def arguments(*extra: str) -> argparse.Namespace:
    return run_command.build_parser().parse_args(
        ["--environment", ENVIRONMENT, "--run-id", "first", "--dataset", "ml-latest-small"]
        + list(extra)
    )


class ScriptedPipeline:
    """Plays the state machine and EMR between polls: one change per poll, in order.

    Like the state machine, it adds each stage's step only after the previous
    one completed, and adds none after a failure.
    """

    def __init__(self, session: boto3.Session, *, fail_stage: str | None = None,
                 transient: bool = False, cluster_id: str | None = None) -> None:
        self.session = session
        self.fail_stage = fail_stage
        self.transient = transient
        self.cluster_id = cluster_id
        self.actions: list[Callable[[], None]] = []
        self.polls = 0
        if transient:
            self.actions.append(self.create_transient_cluster)
        for stage in STAGES:
            self.actions.append(lambda stage=stage: self.add_step(stage))
            self.actions.append(lambda stage=stage: self.set_step(stage, "RUNNING"))
            if stage == fail_stage:
                self.actions.append(lambda stage=stage: self.set_step(stage, "FAILED"))
                self.actions.append(lambda: self.end_execution("FAILED"))
                break
            self.actions.append(lambda stage=stage: self.set_step(stage, "COMPLETED"))
        else:
            self.actions.append(lambda: self.end_execution("SUCCEEDED"))

    def __call__(self, seconds: float) -> None:
        assert seconds == run_command.DEFAULT_POLL_SECONDS
        self.polls += 1
        self.actions.pop(0)()

    def create_transient_cluster(self) -> None:
        name = naming.transient_cluster_name(ENVIRONMENT, "first")
        self.cluster_id = create_cluster(self.session, name)

    def add_step(self, stage: str) -> None:
        self.session.client("emr").add_job_flow_steps(
            JobFlowId=self.cluster_id,
            Steps=[
                {
                    "Name": f"first {stage}",
                    "ActionOnFailure": "CONTINUE",
                    "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit"]},
                }
            ],
        )
        self.set_step(stage, "PENDING")

    def backend_cluster(self):
        from moto.emr.models import emr_backends

        return emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[self.cluster_id]

    def set_step(self, stage: str, state: str) -> None:
        (step,) = [step for step in self.backend_cluster().steps if step.name == f"first {stage}"]
        step.state = state

    def end_execution(self, status: str) -> None:
        from moto.stepfunctions.models import stepfunctions_backends

        backend = stepfunctions_backends[DEFAULT_ACCOUNT_ID][REGION]
        for machine in backend.state_machines:
            for execution in machine.executions:
                execution.status = status


def lines_of(reported: list[str]) -> str:
    return "\n".join(reported)


def test_successful_run_reports_progress_and_results(world):
    world["session"].client("s3").put_object(
        Bucket=DATA_BUCKET,
        Key="runs/first/metrics.json",
        Body=json.dumps({"rmse": 0.8712, "mae": 0.67, "n_test_scored": 20000}),
    )
    pipeline = ScriptedPipeline(world["session"], cluster_id=world["cluster_id"])
    reported: list[str] = []

    status = run_command.run(arguments(), sleep=pipeline, report=reported.append)
    output = lines_of(reported)

    assert status == 0
    assert f"[1/{len(STAGES)}] load: PENDING" in output
    assert f"[1/{len(STAGES)}] load: RUNNING" in output
    assert f"[{len(STAGES)}/{len(STAGES)}] recommend: COMPLETED" in output
    assert f"results in s3://{DATA_BUCKET}/runs/first/" in output
    assert f"s3://{DATA_BUCKET}/runs/first/recommendations.csv" in output
    assert "test rmse 0.8712, mae 0.6700, n_test_scored 20000" in output


def test_execution_input_names_run_and_dataset(world):
    pipeline = ScriptedPipeline(world["session"], cluster_id=world["cluster_id"])

    run_command.run(arguments(), sleep=pipeline, report=lambda line: None)
    stepfunctions = world["session"].client("stepfunctions")
    (execution,) = stepfunctions.list_executions(stateMachineArn=world["state_machine"])[
        "executions"
    ]
    described = stepfunctions.describe_execution(executionArn=execution["executionArn"])

    assert json.loads(described["input"]) == {
        "runId": "first",
        "dataset": "ml-latest-small",
        "transient": False,
    }
    assert execution["name"].startswith("first-")


def test_failed_step_reports_log_location(world):
    cluster_id = world["cluster_id"]
    pipeline = ScriptedPipeline(world["session"], fail_stage="train", cluster_id=cluster_id)
    reported: list[str] = []

    status = run_command.run(arguments(), sleep=pipeline, report=reported.append)
    output = lines_of(reported)
    (failed,) = [line for line in reported if line.startswith("  step train (")]
    step_id = failed.split("(", 1)[1].split(")", 1)[0]

    assert status == 1
    assert "run failed: execution FAILED" in output
    assert f"  step log: s3://logs-bucket/emr-logs/{cluster_id}/steps/{step_id}/" in output
    assert "recommend" not in output
    assert "results in" not in output


def test_transient_run_follows_created_cluster(world):
    pipeline = ScriptedPipeline(world["session"], transient=True)
    reported: list[str] = []

    status = run_command.run(arguments("--transient"), sleep=pipeline, report=reported.append)
    output = lines_of(reported)

    assert status == 0
    assert pipeline.cluster_id != world["cluster_id"]
    assert f"cluster {pipeline.cluster_id} created for this run" in output
    assert f"[{len(STAGES)}/{len(STAGES)}] recommend: COMPLETED" in output


def test_terminated_cluster_suggests_transient(world, capsys):
    from moto.emr.models import emr_backends

    emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[world["cluster_id"]].state = "TERMINATED"

    status = run_command.main(
        ["--environment", ENVIRONMENT, "--run-id", "first", "--dataset", "ml-latest-small"]
    )
    error = capsys.readouterr().err

    assert status == 2
    assert "is TERMINATED" in error
    assert "--transient" in error


def test_missing_stack_exits_with_message(world, capsys):
    status = run_command.main(
        ["--environment", "staging", "--run-id", "first", "--dataset", "ml-latest-small"]
    )
    error = capsys.readouterr().err

    assert status == 2
    assert "environment 'staging' not found" in error
    assert "Deployed environments in eu-west-1: dev" in error


def test_missing_credentials_exits_with_message(monkeypatch, tmp_path, capsys):
    without_credentials(monkeypatch, tmp_path)

    status = run_command.main(
        ["--environment", ENVIRONMENT, "--run-id", "first", "--dataset", "ml-latest-small"]
    )
    error = capsys.readouterr().err

    assert status == 2
    assert "no AWS credentials found" in error


def test_invalid_run_id_rejected(capsys):
    status = run_command.main(
        ["--environment", ENVIRONMENT, "--run-id", "../first", "--dataset", "ml-latest-small"]
    )

    assert status == 2
    assert "invalid run id '../first'" in capsys.readouterr().err


def test_log_location_prefers_failure_details():
    step = {
        "Id": "s-1",
        "Status": {"FailureDetails": {"LogFile": "s3://logs/emr-logs/j-1/steps/s-1/stderr.gz"}},
    }

    assert run_command.step_log_location(step, LOG_URI, "j-1") == (
        "s3://logs/emr-logs/j-1/steps/s-1/stderr.gz"
    )


def test_log_location_from_cluster_log_uri():
    step = {"Id": "s-2", "Status": {}}

    assert run_command.step_log_location(step, "s3n://logs/emr-logs/", "j-1") == (
        "s3://logs/emr-logs/j-1/steps/s-2/"
    )
