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
