"""EMR step definitions from the one step list, exportable for ``aws emr add-steps`` and Airflow.

Each stage becomes a command-runner.jar step that calls spark-submit with the
job artifact's entry point and package zip. The argument vectors come from
``spark_jobs.steps`` and nowhere else; the state machine in the stack uses the
same functions. Pure Python, without aws-cdk-lib, so it also works as a command::

    python -m infra.emr_steps --artifact s3://BUCKET/artifacts/spark_jobs/VERSION \\
        --output s3://BUCKET/runs/RUN --source s3://BUCKET/datasets/ml-latest-small \\
        --format cli > steps.json
    aws emr add-steps --cluster-id j-XXXX --steps file://steps.json

The ``boto3`` format is the ``Steps`` list of ``add_job_flow_steps``, which
Airflow's EmrAddStepsOperator takes as its ``steps`` argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.artifact import BOOTSTRAP_SCRIPT
from infra.artifact import ENTRY_POINT
from infra.artifact import PACKAGE_ZIP
from spark_jobs.layout import join_uri
from spark_jobs.steps import RunRequest
from spark_jobs.steps import Step
from spark_jobs.steps import build_steps
from spark_jobs.steps import submit_command

COMMAND_RUNNER_JAR = "command-runner.jar"

# Client mode runs the driver on the primary node, so the stage's summary and
# its error message land in the step's own stdout and stderr logs.
DEPLOY_MODE = "client"

# A batch of steps submitted at once must stop at the first failure, which
# CANCEL_AND_WAIT does by cancelling the steps still pending. It cancels every
# pending step on the cluster, other users' steps included.
BATCH_ACTION_ON_FAILURE = "CANCEL_AND_WAIT"

# Steps submitted one at a time (the state machine waits on each) need not
# cancel anything: the next step is never submitted after a failure.
SINGLE_ACTION_ON_FAILURE = "CONTINUE"


@dataclass(frozen=True)
class ArtifactLocation:
    """Location of one artifact version: its prefix URI (s3:// on EMR, a path locally)."""

    uri: str

    @property
    def entry_point(self) -> str:
        return join_uri(self.uri, ENTRY_POINT)

    @property
    def package_zip(self) -> str:
        return join_uri(self.uri, PACKAGE_ZIP)

    @property
    def bootstrap_script(self) -> str:
        return join_uri(self.uri, BOOTSTRAP_SCRIPT)


def step_name(run_id: str, stage: str) -> str:
    """Return the EMR step name of a stage in a run; the operator commands match on it."""
    return f"{run_id} {stage}"


def spark_submit_args(step: Step, artifact: ArtifactLocation) -> list[str]:
    """Return the command-runner.jar arguments that run one step on EMR."""
    return submit_command(
        step,
        entry_point=artifact.entry_point,
        py_files=artifact.package_zip,
        deploy_mode=DEPLOY_MODE,
    )


def emr_step(
    step: Step,
    artifact: ArtifactLocation,
    *,
    run_id: str,
    action_on_failure: str = BATCH_ACTION_ON_FAILURE,
) -> dict[str, Any]:
    """Return one step in the shape of boto3's ``add_job_flow_steps(Steps=[...])``."""
    return {
        "Name": step_name(run_id, step.name),
        "ActionOnFailure": action_on_failure,
        "HadoopJarStep": {
            "Jar": COMMAND_RUNNER_JAR,
            "Args": spark_submit_args(step, artifact),
        },
    }


def emr_steps(
    request: RunRequest,
    artifact: ArtifactLocation,
    *,
    run_id: str,
    action_on_failure: str = BATCH_ACTION_ON_FAILURE,
) -> list[dict[str, Any]]:
    """Return the run's steps in order, in boto3 shape."""
    return [
        emr_step(step, artifact, run_id=run_id, action_on_failure=action_on_failure)
        for step in build_steps(request)
    ]


def to_cli_steps(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Convert boto3-shaped steps to the JSON that ``aws emr add-steps --steps file://`` reads."""
    return [
        {
            "Type": "CUSTOM_JAR",
            "Name": step["Name"],
            "ActionOnFailure": step["ActionOnFailure"],
            "Jar": step["HadoopJarStep"]["Jar"],
            "Args": list(step["HadoopJarStep"]["Args"]),
        }
        for step in steps
    ]


def _run_id_from_output(output: str) -> str:
    return output.rstrip("/").rsplit("/", 1)[-1]


def build_parser() -> argparse.ArgumentParser:
    # Imported here: the stage option table lives with the stage command line.
    from spark_jobs.cli import PARAMETER_OPTIONS
    from spark_jobs.steps import option_name

    parser = argparse.ArgumentParser(
        prog="python -m infra.emr_steps",
        description="Print the pipeline's EMR steps as JSON for aws emr add-steps or boto3.",
    )
    parser.add_argument(
        "--artifact",
        required=True,
        help="s3:// prefix of a published artifact version (artifacts/spark_jobs/VERSION)",
    )
    parser.add_argument("--output", required=True, help="run directory URI (s3://)")
    parser.add_argument("--source", help="MovieLens directory URI (s3://) or dataset name")
    parser.add_argument("--train", help="existing training ratings file, used with --test")
    parser.add_argument("--test", help="existing test ratings file, used with --train")
    parser.add_argument("--no-tune", action="store_true", help="leave out the tune stage")
    parser.add_argument(
        "--run-id", help="prefix of the step names (default: last segment of --output)"
    )
    parser.add_argument(
        "--format",
        choices=("cli", "boto3"),
        default="cli",
        help="cli: for aws emr add-steps --steps file://; "
        "boto3: the Steps list of add_job_flow_steps",
    )
    parser.add_argument(
        "--action-on-failure",
        choices=(BATCH_ACTION_ON_FAILURE, SINGLE_ACTION_ON_FAILURE, "TERMINATE_CLUSTER"),
        default=BATCH_ACTION_ON_FAILURE,
        help="what EMR does after a step fails (default cancels the pending steps)",
    )
    for name, (value_type, help_text) in PARAMETER_OPTIONS.items():
        parser.add_argument(option_name(name), dest=name, type=value_type, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from spark_jobs.cli import PARAMETER_OPTIONS
    from spark_jobs.errors import ParameterError
    from spark_jobs.params import Parameters

    args = build_parser().parse_args(argv)
    parameters = {
        name: getattr(args, name) for name in PARAMETER_OPTIONS if getattr(args, name) is not None
    }
    try:
        Parameters().with_values(**parameters).validate()
        request = RunRequest(
            output=args.output,
            source=args.source,
            train=args.train,
            test=args.test,
            tune=not args.no_tune,
            parameters=parameters,
        )
    except (ParameterError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    steps = emr_steps(
        request,
        ArtifactLocation(args.artifact),
        run_id=args.run_id or _run_id_from_output(args.output),
        action_on_failure=args.action_on_failure,
    )
    document = to_cli_steps(steps) if args.format == "cli" else steps
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
