"""Finding a deployed environment in moto's CloudFormation, and the failures an operator sees."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infra import naming
from ops.environment import CredentialsError
from ops.environment import EnvironmentNotFoundError
from ops.environment import OpsError
from ops.environment import find_environment

REGION = "eu-west-1"

OUTPUTS = {
    naming.OUTPUT_DATA_BUCKET: "data-bucket",
    naming.OUTPUT_LOGS_BUCKET: "logs-bucket",
    naming.OUTPUT_CLUSTER_ID: "j-0123456789ABC",
    naming.OUTPUT_STATE_MACHINE_ARN: f"arn:aws:states:{REGION}:123456789012:stateMachine:p",
}


def template(outputs: dict[str, str]) -> str:
    """A stack with one resource moto can create and the given literal outputs."""
    return json.dumps(
        {
            "Resources": {"Marker": {"Type": "AWS::S3::Bucket"}},
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
    )


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield boto3.Session(region_name=REGION)


def deploy(session: boto3.Session, environment: str, outputs: dict[str, str]) -> None:
    session.client("cloudformation").create_stack(
        StackName=naming.stack_name(environment), TemplateBody=template(outputs)
    )


def test_outputs_read_by_key(aws):
    deploy(aws, "dev", OUTPUTS)
    environment = find_environment("dev", aws)

    assert environment.stack_name == "als-recommender-dev"
    assert environment.region == REGION
    assert environment.data_bucket == "data-bucket"
    assert environment.cluster_id == "j-0123456789ABC"
    assert environment.state_machine_arn == OUTPUTS[naming.OUTPUT_STATE_MACHINE_ARN]


def test_missing_stack_lists_deployed_environments(aws):
    deploy(aws, "prod", OUTPUTS)
    deploy(aws, "ci-7", OUTPUTS)

    with pytest.raises(EnvironmentNotFoundError) as raised:
        find_environment("dev", aws)

    message = str(raised.value)
    assert "no stack als-recommender-dev in eu-west-1" in message
    assert "npx cdk deploy -c environment=dev" in message
    assert "Deployed environments in eu-west-1: ci-7, prod" in message


def test_missing_output_asks_for_redeploy(aws):
    deploy(aws, "dev", {naming.OUTPUT_DATA_BUCKET: "data-bucket"})
    environment = find_environment("dev", aws)

    with pytest.raises(OpsError) as raised:
        environment.output(naming.OUTPUT_STATE_MACHINE_ARN)

    assert naming.OUTPUT_STATE_MACHINE_ARN in str(raised.value)
    assert "npx cdk deploy -c environment=dev" in str(raised.value)


def test_failed_stack_rejected(aws):
    from moto.cloudformation.models import cloudformation_backends
    from moto.core import DEFAULT_ACCOUNT_ID

    deploy(aws, "dev", OUTPUTS)
    for stack in cloudformation_backends[DEFAULT_ACCOUNT_ID][REGION].stacks.values():
        stack.status = "ROLLBACK_COMPLETE"

    with pytest.raises(OpsError) as raised:
        find_environment("dev", aws)

    assert "ROLLBACK_COMPLETE" in str(raised.value)
    assert "python -m ops teardown --environment dev" in str(raised.value)


def test_invalid_environment_name_rejected(aws):
    with pytest.raises(OpsError) as raised:
        find_environment("Dev_1", aws)

    assert "invalid environment name 'Dev_1'" in str(raised.value)


def test_rejected_credentials_reported(aws):
    deploy(aws, "dev", OUTPUTS)

    def expired(**_):
        raise ClientError(
            {"Error": {"Code": "ExpiredToken", "Message": "The security token expired"}},
            "DescribeStacks",
        )

    aws.events.register("before-call.cloudformation.DescribeStacks", expired)

    with pytest.raises(CredentialsError) as raised:
        find_environment("dev", aws)

    assert "rejected the credentials" in str(raised.value)
    assert "ExpiredToken" in str(raised.value)


def without_credentials(monkeypatch, tmp_path) -> None:
    """Leave botocore no credential source, and no instance metadata service to ask."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def test_missing_credentials_reported(monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    session = boto3.Session(region_name=REGION)
    session.events.register("before-send", refuse_to_send)

    with pytest.raises(CredentialsError) as raised:
        find_environment("dev", session)

    assert "no AWS credentials found" in str(raised.value)
    assert "aws sso login" in str(raised.value)


def refuse_to_send(request, **_):
    """Stop any request before it leaves the machine: these tests never talk to AWS."""
    raise AssertionError(f"a request was about to be sent to {request.url}")
