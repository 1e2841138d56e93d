"""Find a deployed environment by its name and read what its stack outputs.

An environment NAME is the CloudFormation stack ``als-recommender-NAME``
(``infra.naming``). Every failure that an operator can fix raises OpsError with
a message that names the fix: a stack that does not exist (listing the
environments that do), a stack that failed or is being deleted, an output the
stack predates, missing or rejected credentials, and a missing region.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import boto3
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError
from botocore.exceptions import NoCredentialsError
from botocore.exceptions import NoRegionError
from botocore.exceptions import PartialCredentialsError

from infra import naming

logger = logging.getLogger(__name__)

# Stack states in which the outputs exist and describe the deployed resources.
USABLE_STATUSES = frozenset(
    {
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
        "UPDATE_ROLLBACK_COMPLETE",
        "UPDATE_IN_PROGRESS",
        "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
        "IMPORT_COMPLETE",
        "IMPORT_ROLLBACK_COMPLETE",
    }
)

# Error codes AWS returns for credentials that exist but are not accepted.
REJECTED_CREDENTIAL_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "AuthFailure",
    }
)


class OpsError(Exception):
    """A failure the operator can fix; the commands print the message and exit with status 2."""


class EnvironmentNotFoundError(OpsError):
    """No stack of that environment exists in the region."""


class CredentialsError(OpsError):
    """No AWS credentials were found, or AWS rejected them."""


@dataclass(frozen=True)
class Environment:
    """A deployed environment: its name, stack, region and stack outputs by key."""

    name: str
    stack_name: str
    region: str
    outputs: Mapping[str, str]

    def output(self, key: str) -> str:
        """Return the stack output ``key``; raise OpsError when the stack has none."""
        try:
            return self.outputs[key]
        except KeyError:
            raise OpsError(
                f"stack {self.stack_name} has no output {key}; it was deployed by an older "
                f"version of this app. Redeploy it: npx cdk deploy -c environment={self.name}"
            ) from None

    @property
    def data_bucket(self) -> str:
        return self.output(naming.OUTPUT_DATA_BUCKET)

    @property
    def logs_bucket(self) -> str:
        return self.output(naming.OUTPUT_LOGS_BUCKET)

    @property
    def cluster_id(self) -> str:
        return self.output(naming.OUTPUT_CLUSTER_ID)

    @property
    def state_machine_arn(self) -> str:
        return self.output(naming.OUTPUT_STATE_MACHINE_ARN)

    @property
    def artifact_prefix(self) -> str:
        return self.output(naming.OUTPUT_ARTIFACT_PREFIX)


def open_session(*, region: str | None = None, profile: str | None = None) -> boto3.Session:
    """Return a boto3 session for a named profile (or the default chain) and region.

    Raises CredentialsError when the named profile does not exist.
    """
    try:
        return boto3.Session(profile_name=profile, region_name=region)
    except BotoCoreError as error:
        raise CredentialsError(
            f"AWS profile {profile!r} not found: {error}. List profiles with: "
            f"aws configure list-profiles"
        ) from error


def translate_aws_error(error: Exception, action: str) -> OpsError | None:
    """Return the OpsError for a credentials or region failure during ``action``, else None."""
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return CredentialsError(
            f"no AWS credentials found while {action}. Configure them (aws configure, "
            f"aws sso login, or AWS_PROFILE) and rerun."
        )
    if isinstance(error, NoRegionError):
        return OpsError(f"no AWS region set while {action}; pass --region or set AWS_REGION")
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in REJECTED_CREDENTIAL_CODES:
            return CredentialsError(
                f"AWS rejected the credentials while {action} ({code}). Refresh them "
                f"(aws sso login, or new access keys) and rerun."
            )
    return None


def find_environment(name: str, session: boto3.Session) -> Environment:
    """Return the deployed environment ``name`` with its stack outputs.

    Raises OpsError for an invalid name or an unusable stack,
    EnvironmentNotFoundError when the stack does not exist, and CredentialsError
    when credentials are missing or rejected.
    """
    if not naming.ENVIRONMENT_NAME_PATTERN.match(name):
        raise OpsError(
            f"invalid environment name {name!r}: expected a lower-case letter followed by up "
            f"to 23 lower-case letters, digits or hyphens"
        )
    stack_name = naming.stack_name(name)
    action = f"looking up stack {stack_name}"
    try:
        cloudformation = session.client("cloudformation")
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except (BotoCoreError, ClientError) as error:
        translated = translate_aws_error(error, action)
        if translated is not None:
            raise translated from error
        if _is_missing_stack(error):
            raise EnvironmentNotFoundError(
                _missing_message(name, stack_name, session, cloudformation)
            ) from error
        raise
    stack = stacks[0]
    status = stack["StackStatus"]
    if status not in USABLE_STATUSES:
        raise OpsError(
            f"stack {stack_name} is in state {status}, so environment {name!r} cannot run "
            f"anything. See its events in the CloudFormation console, then redeploy it "
            f"(npx cdk deploy -c environment={name}) or remove it (python -m ops teardown "
            f"--environment {name} --apply)"
        )
    outputs = {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}
    logger.info("found environment %s: stack %s (%s)", name, stack_name, status)
    return Environment(name, stack_name, session.region_name or "", outputs)


def _is_missing_stack(error: Exception) -> bool:
    if not isinstance(error, ClientError):
        return False
    details = error.response.get("Error", {})
    return details.get("Code") == "ValidationError" and "does not exist" in details.get(
        "Message", ""
    )


def deployed_environments(cloudformation) -> list[str]:
    """Return the names of the environments whose stacks exist in the client's region."""
    prefix = naming.stack_name("")
    names = []
    for page in cloudformation.get_paginator("list_stacks").paginate():
        for summary in page["StackSummaries"]:
            stack_name = summary["StackName"]
            if stack_name.startswith(prefix) and summary["StackStatus"] != "DELETE_COMPLETE":
                names.append(stack_name[len(prefix):])
    return sorted(set(names))


def _missing_message(name: str, stack_name: str, session: boto3.Session, cloudformation) -> str:
    region = session.region_name or "the default region"
    message = (
        f"environment {name!r} not found: no stack {stack_name} in {region}. "
        f"Check --environment and --region, or deploy it: npx cdk deploy -c environment={name}"
    )
    try:
        others = deployed_environments(cloudformation)
    except (BotoCoreError, ClientError) as error:
        logger.warning("could not list the deployed environments: %s", error)
        return message
    if others:
        message += f". Deployed environments in {region}: {', '.join(others)}"
    return message
