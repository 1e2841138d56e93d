"""Names shared by the CDK app and the operator commands, without importing CDK.

The operator commands find a deployed environment by these names and tags, so
they must not drift from what the stack creates.
"""

from __future__ import annotations

import re

PROJECT = "als-recommender"

# Cost-allocation and discovery tags on every resource of an environment.
PROJECT_TAG = "project"
ENVIRONMENT_TAG = "environment"

# Stack output keys read by the operator commands.
OUTPUT_DATA_BUCKET = "DataBucketName"
OUTPUT_ARTIFACTS_BUCKET = "ArtifactsBucketName"
OUTPUT_LOGS_BUCKET = "LogsBucketName"
OUTPUT_CLUSTER_ID = "ClusterId"
OUTPUT_PRIMARY_DNS = "PrimaryNodeDnsName"
OUTPUT_STATE_MACHINE_ARN = "PipelineStateMachineArn"
OUTPUT_ARTIFACT_PREFIX = "JobArtifactPrefix"

ENVIRONMENT_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,23}$")


def stack_name(environment: str) -> str:
    """Return the CloudFormation stack name of an environment: ``als-recommender-<environment>``."""
    return f"{PROJECT}-{environment}"


# Prefixes in the data bucket used by the pipeline state machine. A dataset
# named NAME in an execution input is read from datasets/NAME/, and run RUN
# writes its run directory to runs/RUN/.
DATASETS_PREFIX = "datasets/"
RUNS_PREFIX = "runs/"

# Run ids become an S3 key segment, an EMR step name prefix and a cluster name.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def transient_cluster_name(environment: str, run_id: str) -> str:
    """Return the name of the cluster a pipeline run creates for itself."""
    return f"{stack_name(environment)}-run-{run_id}"
