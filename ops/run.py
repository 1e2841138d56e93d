"""Start the pipeline on a deployed environment and follow its steps until it ends.

    python -m ops run --environment dev --run-id first --dataset ml-latest-small
    python -m ops run --environment dev --run-id big --dataset s3://bucket/ml-32m --transient

The command starts an execution of the environment's state machine, then polls
Step Functions and the EMR steps of the run, printing each step's state as it
changes. At the end it prints where the results are, or which step failed and
where its log is. Exit status: 0 when the run succeeded, 1 when it failed, timed
out or was stopped, 2 for a problem the operator must fix first (environment
not found, missing credentials, invalid run id, terminated cluster).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError

from infra import naming
from infra.emr_steps import step_name
from ops.environment import Environment
from ops.environment import OpsError
from ops.environment import find_environment
from ops.environment import open_session
from ops.environment import translate_aws_error
from spark_jobs.layout import METRICS
from spark_jobs.layout import RECOMMENDATIONS_CSV
from spark_jobs.steps import RunRequest
from spark_jobs.steps import build_steps

logger = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 30.0

# EMR states in which a cluster accepts no more steps.
ENDED_CLUSTER_STATES = frozenset({"TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"})
ACTIVE_CLUSTER_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")

# Steps are created after the execution starts; EMR timestamps have a coarser
# resolution than Step Functions' start date, so allow this much earlier.
STEP_TIME_SLACK = datetime.timedelta(seconds=5)


@dataclass
class RunProgress:
    """Follower state: the run's cluster, and each stage's EMR step id and last seen state."""

    execution_arn: str
    started: datetime.datetime
    cluster_id: str | None = None
    step_states: dict[str, str] = field(default_factory=dict)
    step_ids: dict[str, str] = field(default_factory=dict)


def expected_stages() -> list[str]:
    """Return the stage names the state machine runs, in order (it always tunes)."""
    return [step.name for step in build_steps(RunRequest(output="-", source="-"))]


def execution_name(run_id: str, now: datetime.datetime) -> str:
    """Return a unique execution name: the run id and the UTC start time."""
    return f"{run_id}-{now.strftime('%Y%m%dT%H%M%SZ')}"


def check_run_id(run_id: str) -> None:
    """Raise OpsError unless ``run_id`` can name an S3 prefix, an EMR step and a cluster."""
    if not naming.RUN_ID_PATTERN.match(run_id):
        raise OpsError(
            f"invalid run id {run_id!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit"
        )


def check_cluster_usable(emr, cluster_id: str, environment: str) -> None:
    """Raise OpsError when the environment's cluster has ended and can take no steps."""
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    state = cluster["Status"]["State"]
    if state in ENDED_CLUSTER_STATES:
        reason = cluster["Status"].get("StateChangeReason", {}).get("Message", "")
        raise OpsError(
            f"the cluster {cluster_id} of environment {environment!r} is {state}"
            f"{': ' + reason if reason else ''}. Rerun with --transient to run on a new "
            f"cluster, or redeploy the environment to get a new one"
        )


def start_run(
    stepfunctions,
    environment: Environment,
    *,
    run_id: str,
    dataset: str,
    transient: bool,
    now: datetime.datetime,
) -> str:
    """Start an execution of the environment's state machine; return its ARN."""
    execution_input = {"runId": run_id, "dataset": dataset, "transient": transient}
    response = stepfunctions.start_execution(
        stateMachineArn=environment.state_machine_arn,
        name=execution_name(run_id, now),
        input=json.dumps(execution_input),
    )
    logger.info("started execution %s with input %s", response["executionArn"], execution_input)
    return response["executionArn"]


def find_transient_cluster(
    emr, environment: str, run_id: str, since: datetime.datetime
) -> str | None:
    """Return the id of the cluster this run created, once it exists; None before that."""
    name = naming.transient_cluster_name(environment, run_id)
    candidates = []
    for page in emr.get_paginator("list_clusters").paginate(CreatedAfter=since - STEP_TIME_SLACK):
        for cluster in page["Clusters"]:
            if cluster["Name"] == name:
                created = cluster["Status"]["Timeline"]["CreationDateTime"]
                candidates.append((created, cluster["Id"]))
    return max(candidates)[1] if candidates else None


def run_steps(emr, cluster_id: str, run_id: str, since: datetime.datetime) -> dict[str, dict]:
    """Return this run's EMR steps on a cluster by stage, the newest step of each stage."""
    names = {step_name(run_id, stage): stage for stage in expected_stages()}
    found: dict[str, dict] = {}
    for page in emr.get_paginator("list_steps").paginate(ClusterId=cluster_id):
        for step in page["Steps"]:
            stage = names.get(step["Name"])
            created = step["Status"]["Timeline"]["CreationDateTime"]
            if stage is None or created < since - STEP_TIME_SLACK:
                continue
            previous = found.get(stage)
            if previous is None or previous["Status"]["Timeline"]["CreationDateTime"] < created:
                found[stage] = step
    return found


def step_log_location(step: dict[str, Any], log_uri: str | None, cluster_id: str) -> str:
    """Return where a step's log is: EMR's FailureDetails.LogFile, or else the step's log prefix."""
    details = step["Status"].get("FailureDetails") or {}
    if details.get("LogFile"):
        return details["LogFile"]
    if not log_uri:
        return f"(the cluster {cluster_id} has no log URI; see the step in the EMR console)"
    base = log_uri.replace("s3n://", "s3://", 1).rstrip("/")
    return f"{base}/{cluster_id}/steps/{step['Id']}/"


def poll_once(
    clients: dict[str, Any],
    environment: Environment,
    progress: RunProgress,
    *,
    run_id: str,
    transient: bool,
    report: Callable[[str], None],
) -> dict[str, Any]:
    """Read the execution and the run's steps once, report changes, and return the execution."""
    execution = clients["stepfunctions"].describe_execution(executionArn=progress.execution_arn)
    if progress.cluster_id is None:
        if transient:
            progress.cluster_id = find_transient_cluster(
                clients["emr"], environment.name, run_id, progress.started
            )
            if progress.cluster_id is not None:
                report(f"cluster {progress.cluster_id} created for this run")
        else:
            progress.cluster_id = environment.cluster_id
    if progress.cluster_id is None:
        return execution
    stages = expected_stages()
    steps = run_steps(clients["emr"], progress.cluster_id, run_id, progress.started)
    for number, stage in enumerate(stages, start=1):
        step = steps.get(stage)
        if step is None:
            continue
        state = step["Status"]["State"]
        progress.step_ids[stage] = step["Id"]
        if progress.step_states.get(stage) != state:
            progress.step_states[stage] = state
            report(f"[{number}/{len(stages)}] {stage}: {state} ({step['Id']})")
    return execution


def follow(
    clients: dict[str, Any],
    environment: Environment,
    progress: RunProgress,
    *,
    run_id: str,
    transient: bool,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Poll until the execution leaves RUNNING; return its final description."""
    while True:
        execution = poll_once(
            clients, environment, progress, run_id=run_id, transient=transient, report=report
        )
        if execution["status"] != "RUNNING":
            # One more look at the steps: the last one may have ended since.
            poll_once(
                clients, environment, progress, run_id=run_id, transient=transient, report=report
            )
            return execution
        sleep(poll_seconds)


def report_success(
    clients: dict[str, Any], environment: Environment, run_id: str, report: Callable[[str], None]
) -> None:
    """Report where the run's results are, with the test metrics when they can be read."""
    bucket = environment.data_bucket
    run_prefix = f"{naming.RUNS_PREFIX}{run_id}"
    report(f"run {run_id} succeeded; results in s3://{bucket}/{run_prefix}/")
    report(f"  metrics:         s3://{bucket}/{run_prefix}/{METRICS}")
    report(f"  recommendations: s3://{bucket}/{run_prefix}/{RECOMMENDATIONS_CSV}")
    try:
        body = clients["s3"].get_object(Bucket=bucket, Key=f"{run_prefix}/{METRICS}")["Body"]
        metrics = json.loads(body.read())
    except (BotoCoreError, ClientError, ValueError) as error:
        logger.warning("could not read %s of run %s: %s", METRICS, run_id, error)
        return
    summary = ", ".join(
        f"{key} {metrics[key]:.4f}" if isinstance(metrics[key], float) else f"{key} {metrics[key]}"
        for key in ("rmse", "mae", "n_test_scored")
        if key in metrics
    )
    if summary:
        report(f"  test {summary}")


def report_failure(
    clients: dict[str, Any],
    progress: RunProgress,
    execution: dict[str, Any],
    report: Callable[[str], None],
) -> None:
    """Report the failed step with its reason and log location, or the execution's error."""
    report(f"run failed: execution {execution['status']}")
    failed = [stage for stage, state in progress.step_states.items() if state == "FAILED"]
    if failed and progress.cluster_id is not None:
        stage = failed[0]
        emr = clients["emr"]
        step = emr.describe_step(ClusterId=progress.cluster_id, StepId=progress.step_ids[stage])
        step = step["Step"]
        log_uri = emr.describe_cluster(ClusterId=progress.cluster_id)["Cluster"].get("LogUri")
        details = step["Status"].get("FailureDetails") or {}
        reason = details.get("Message") or details.get("Reason") or "no reason recorded"
        report(f"  step {stage} ({step['Id']}) failed: {reason}")
        report(f"  step log: {step_log_location(step, log_uri, progress.cluster_id)}")
    if execution.get("error") or execution.get("cause"):
        report(f"  {execution.get('error', '')}: {execution.get('cause', '')}")
    report(f"  execution: {progress.execution_arn}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ops run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--environment", required=True, help="environment name, as deployed")
    parser.add_argument(
        "--run-id", required=True, help="names the run directory s3://DATA/runs/RUN_ID/"
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="s3:// URI of a MovieLens directory, or a name under s3://DATA/datasets/",
    )
    parser.add_argument(
        "--transient",
        action="store_true",
        help="run on a new cluster that is terminated afterwards, not the environment's",
    )
    parser.add_argument(
        "--no-follow", action="store_true", help="start the execution and return at once"
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=DEFAULT_POLL_SECONDS,
        help=f"seconds between status checks (default {DEFAULT_POLL_SECONDS:g})",
    )
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    parser.add_argument("--profile", help="AWS named profile (default: the default chain)")
    return parser


def run(
    args: argparse.Namespace,
    *,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = print,
) -> int:
    """Carry out ``python -m ops run``; return the exit status. Raises OpsError."""
    check_run_id(args.run_id)
    session = open_session(region=args.region, profile=args.profile)
    environment = find_environment(args.environment, session)
    clients = {name: session.client(name) for name in ("stepfunctions", "emr", "s3")}
    if not args.transient:
        check_cluster_usable(clients["emr"], environment.cluster_id, environment.name)

    now = datetime.datetime.now(datetime.UTC)
    execution_arn = start_run(
        clients["stepfunctions"],
        environment,
        run_id=args.run_id,
        dataset=args.dataset,
        transient=args.transient,
        now=now,
    )
    where = "a transient cluster" if args.transient else f"cluster {environment.cluster_id}"
    report(f"started run {args.run_id} on {where}: {execution_arn}")
    if args.no_follow:
        return 0

    started = clients["stepfunctions"].describe_execution(executionArn=execution_arn)["startDate"]
    progress = RunProgress(execution_arn=execution_arn, started=started)
    execution = follow(
        clients,
        environment,
        progress,
        run_id=args.run_id,
        transient=args.transient,
        poll_seconds=args.poll_seconds,
        sleep=sleep,
        report=report,
    )
    if execution["status"] == "SUCCEEDED":
        report_success(clients, environment, args.run_id, report)
        return 0
    report_failure(clients, progress, execution, report)
    return 1


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(list(argv))
    try:
        return run(args)
    except OpsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as error:
        translated = translate_aws_error(error, "running the pipeline")
        print(f"error: {translated or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: the execution keeps running; follow it in the Step Functions console",
            file=sys.stderr,
        )
        return 130
