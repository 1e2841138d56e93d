"""The teardown command against moto, with every resource created by the tests themselves."""

from __future__ import annotations

import json
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infra import naming
from ops import teardown

REGION = "us-east-1"
ENVIRONMENT = "ci-1"
OTHER_ENVIRONMENT = "ci-2"
FAST = teardown.Waits(poll_seconds=1, cluster_timeout_seconds=5, stack_timeout_seconds=5)

ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
# A stack with one Lambda function, whose log group Lambda would create outside the stack.
STACK_TEMPLATE = {
    "Resources": {
        "Role": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": ROLE_POLICY}},
        "Function": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Runtime": "python3.12",
                "Handler": "index.handler",
                "Role": {"Fn::GetAtt": ["Role", "Arn"]},
                "Code": {"ZipFile": "def handler(event, context):\n    return None\n"},
            },
        },
    }
}
STATE_MACHINE_DEFINITION = json.dumps(
    {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 3600, "End": True}}}
)


def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def session(monkeypatch):
    fake_credentials(monkeypatch)
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.fixture(scope="module")
def applied():
    """Two environments and foreign resources, after a dry run and then --apply on one of them.

    Built once because moto's CloudFormation makes each environment take seconds.
    """
    with pytest.MonkeyPatch.context() as monkeypatch, mock_aws():
        fake_credentials(monkeypatch)
        session = boto3.Session(region_name=REGION)
        ids = create_environment(session, ENVIRONMENT, tags_for(ENVIRONMENT))
        other = create_environment(session, OTHER_ENVIRONMENT, tags_for(OTHER_ENVIRONMENT))
        untagged = create_untagged(session)

        dry_run = teardown.teardown(session, environment=ENVIRONMENT)
        after_dry_run = existing(session, ids)
        report = teardown.teardown(session, environment=ENVIRONMENT, apply=True, waits=FAST)
        kept_object = session.client("s3").get_object(Bucket=untagged["bucket"], Key="keep.txt")
        results = {
            "dry_run": dry_run,
            "after_dry_run": after_dry_run,
            "report": report,
            "after_apply": existing(session, ids),
            "other_after_apply": existing(session, other),
            "untagged_after_apply": existing(session, untagged),
            "kept_object": kept_object["Body"].read(),
        }
    # The mock ends here, so the function-scoped tests below start from empty moto state.
    return results


def tags_for(environment: str | None, *, project: bool = True) -> dict[str, str]:
    tags = {}
    if project:
        tags[naming.PROJECT_TAG] = naming.PROJECT
    if environment is not None:
        tags[naming.ENVIRONMENT_TAG] = environment
    return tags


def key_value(tags: dict[str, str], key: str = "Key", value: str = "Value") -> list[dict]:
    return [{key: k, value: v} for k, v in tags.items()]


def create_environment(session, environment: str, tags: dict[str, str]) -> dict[str, str]:
    """Create one resource of each kind the teardown handles; return their identifiers."""
    suffix = environment.replace("-", "")
    ids: dict[str, str] = {}

    cloudformation = session.client("cloudformation")
    stack = cloudformation.create_stack(
        StackName=naming.stack_name(environment),
        TemplateBody=json.dumps(STACK_TEMPLATE),
        Capabilities=["CAPABILITY_IAM"],
    )
    ids["stack"] = stack["StackId"]
    summaries = cloudformation.list_stack_resources(StackName=stack["StackId"])
    function_name = [
        summary["PhysicalResourceId"]
        for summary in summaries["StackResourceSummaries"]
        if summary["ResourceType"] == "AWS::Lambda::Function"
    ][0]
    ids["function_log_group"] = f"/aws/lambda/{function_name}"
    # Lambda would create this untagged log group on the function's first run.
    session.client("logs").create_log_group(logGroupName=ids["function_log_group"])
    # A log group of a function that CloudFormation already deleted with its stack.
    stack_name = naming.stack_name(environment)
    ids["orphan_log_group"] = f"/aws/lambda/{stack_name}-CustomS3AutoDeleteObjectsCustomRes-X1Y2"
    session.client("logs").create_log_group(logGroupName=ids["orphan_log_group"])

    ids["cluster"] = create_cluster(session, f"cluster-{suffix}", tags)

    stepfunctions = session.client("stepfunctions")
    machine = stepfunctions.create_state_machine(
        name=f"pipeline-{suffix}",
        definition=STATE_MACHINE_DEFINITION,
        roleArn="arn:aws:iam::123456789012:role/pipeline",
        tags=key_value(tags, "key", "value"),
    )
    ids["state_machine"] = machine["stateMachineArn"]
    execution = stepfunctions.start_execution(stateMachineArn=machine["stateMachineArn"])
    ids["execution"] = execution["executionArn"]

    ec2 = session.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    group_ids = []
    for role in ("primary", "core"):
        group = ec2.create_security_group(
            GroupName=f"{role}-{suffix}",
            Description=f"EMR {role}",
            VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": key_value(tags)}],
        )
        group_ids.append(group["GroupId"])
    primary_id, core_id = group_ids
    for group_id, peer_id in ((primary_id, core_id), (core_id, primary_id)):
        ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": peer_id}]}],
        )
    ids["primary_group"], ids["core_group"] = primary_id, core_id

    s3 = session.client("s3")
    bucket = f"als-recommender-test-logs-{suffix}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": key_value(tags)})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="emr-logs/step.log", Body=b"first")
    s3.put_object(Bucket=bucket, Key="emr-logs/step.log", Body=b"second")
    s3.delete_object(Bucket=bucket, Key="emr-logs/step.log")
    s3.put_object(Bucket=bucket, Key="runs/run-1/metrics.json", Body=b"{}")
    ids["bucket"] = bucket

    log_group = f"/als-recommender/{environment}/pipeline"
    session.client("logs").create_log_group(logGroupName=log_group, tags=tags)
    ids["log_group"] = log_group

    secret = session.client("secretsmanager").create_secret(
        Name=f"als-recommender/{environment}/jupyter",
        SecretString="generated",
        Tags=key_value(tags),
    )
    ids["secret"] = secret["ARN"]
    return ids


def create_cluster(session, name: str, tags: dict[str, str], *, protected: bool = False) -> str:
    emr = session.client("emr")
    response = emr.run_job_flow(
        Name=name,
        ReleaseLabel="emr-7.13.0",
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "InstanceCount": 1,
            "KeepJobFlowAliveWhenNoSteps": True,
            "TerminationProtected": protected,
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
        Tags=key_value(tags),
    )
    return response["JobFlowId"]


def create_untagged(session) -> dict[str, str]:
    """Create resources outside the project: untagged, or tagged without the project tag."""
    ids = {}
    s3 = session.client("s3")
    s3.create_bucket(Bucket="someone-elses-bucket")
    s3.put_object(Bucket="someone-elses-bucket", Key="keep.txt", Body=b"keep")
    ids["bucket"] = "someone-elses-bucket"
    ids["cluster"] = create_cluster(session, "not-ours", tags_for(ENVIRONMENT, project=False))
    ec2 = session.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    ids["group"] = ec2.create_security_group(
        GroupName="not-ours", Description="not ours", VpcId=vpc_id
    )["GroupId"]
    # The same environment name in another region is another environment.
    west = session.client("s3", region_name="eu-west-1")
    ids["bucket_other_region"] = "als-recommender-test-logs-eu-west-1"
    west.create_bucket(
        Bucket=ids["bucket_other_region"],
        CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
    )
    west.put_bucket_tagging(
        Bucket=ids["bucket_other_region"], Tagging={"TagSet": key_value(tags_for(ENVIRONMENT))}
    )
    session.client("logs").create_log_group(logGroupName="/not-ours")
    ids["log_group"] = "/not-ours"
    ids["stack"] = session.client("cloudformation").create_stack(
        StackName="another-project-ci-1",
        TemplateBody=json.dumps(STACK_TEMPLATE),
        Capabilities=["CAPABILITY_IAM"],
    )["StackId"]
    return ids


def exists(session, kind: str, identifier: str) -> bool:
    """Return whether a resource still exists; a terminated cluster counts as gone."""
    try:
        if kind == "stack":
            stack = session.client("cloudformation").describe_stacks(StackName=identifier)
            return stack["Stacks"][0]["StackStatus"] != "DELETE_COMPLETE"
        if kind == "cluster":
            cluster = session.client("emr").describe_cluster(ClusterId=identifier)["Cluster"]
            return not cluster["Status"]["State"].startswith("TERMINATED")
        if kind == "state_machine":
            session.client("stepfunctions").describe_state_machine(stateMachineArn=identifier)
            return True
        if kind.endswith("group") and identifier.startswith("sg-"):
            session.client("ec2").describe_security_groups(GroupIds=[identifier])
            return True
        if kind.startswith("bucket"):
            session.client("s3").head_bucket(Bucket=identifier)
            return True
        if kind.endswith("log_group"):
            groups = session.client("logs").describe_log_groups(logGroupNamePrefix=identifier)
            return any(group["logGroupName"] == identifier for group in groups["logGroups"])
        if kind == "secret":
            session.client("secretsmanager").describe_secret(SecretId=identifier)
            return True
    except ClientError:
        return False
    raise AssertionError(f"unknown kind {kind}")


def existing(session, ids: dict[str, str]) -> dict[str, bool]:
    """Map each identifier name in ``ids`` to whether that resource still exists."""
    return {
        kind: exists(session, kind, identifier)
        for kind, identifier in ids.items()
        if kind != "execution"
    }


def test_dry_run_deletes_nothing(applied):
    assert all(applied["after_dry_run"].values()), applied["after_dry_run"]
    statuses = {outcome.status for outcome in applied["dry_run"].outcomes}
    assert statuses == {teardown.WOULD_DELETE}


def test_dry_run_lists_every_kind(applied):
    kinds = [outcome.resource.kind for outcome in applied["dry_run"].outcomes]
    assert sorted(set(kinds)) == sorted(teardown.KIND_ORDER)
    assert kinds.count(teardown.SECURITY_GROUP) == 2
    assert kinds.count(teardown.LOG_GROUP) == 3
    assert len(kinds) == 10


def test_dry_run_lists_only_one_environment(applied):
    environments = {outcome.resource.environment for outcome in applied["dry_run"].outcomes}
    assert environments == {ENVIRONMENT}


def test_apply_deletes_everything_tagged(applied):
    assert applied["report"].remained == []
    for kind, still_there in applied["after_apply"].items():
        assert not still_there, kind


def test_apply_reports_each_deletion(applied):
    statuses = [outcome.status for outcome in applied["report"].outcomes]
    assert statuses == [teardown.DELETED] * 10


def test_apply_keeps_other_environment(applied):
    for kind, still_there in applied["other_after_apply"].items():
        assert still_there, kind


def test_apply_keeps_untagged_resources(applied):
    for kind, still_there in applied["untagged_after_apply"].items():
        assert still_there, kind
    assert applied["kept_object"] == b"keep"


def test_apply_stops_running_executions(session):
    ids = create_environment(session, ENVIRONMENT, tags_for(ENVIRONMENT))
    stepfunctions = session.client("stepfunctions")
    assert stepfunctions.describe_execution(executionArn=ids["execution"])["status"] == "RUNNING"

    teardown.stop_executions(
        session,
        [teardown.Resource(teardown.STATE_MACHINE, ids["state_machine"], ENVIRONMENT)],
    )

    assert stepfunctions.describe_execution(executionArn=ids["execution"])["status"] == "ABORTED"


def test_apply_empties_versioned_bucket(session):
    ids = create_environment(session, ENVIRONMENT, tags_for(ENVIRONMENT))
    s3 = session.client("s3")
    listing = s3.list_object_versions(Bucket=ids["bucket"])
    assert len(listing.get("Versions", [])) == 3
    assert len(listing.get("DeleteMarkers", [])) == 1

    removed = teardown.empty_bucket(s3, ids["bucket"])

    assert removed == 4
    listing = s3.list_object_versions(Bucket=ids["bucket"])
    assert listing.get("Versions", []) == []
    assert listing.get("DeleteMarkers", []) == []


def test_apply_revokes_rules_between_groups(session):
    ids = create_environment(session, ENVIRONMENT, tags_for(ENVIRONMENT))
    ec2 = session.client("ec2")

    revoked = teardown.revoke_group_references(ec2, ids["primary_group"])

    assert revoked == 1
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [ids["primary_group"]]}]
    )["SecurityGroupRules"]
    assert [rule for rule in rules if "ReferencedGroupInfo" in rule] == []


def test_apply_deletes_stack_function_log_group(applied):
    assert applied["after_dry_run"]["function_log_group"]
    assert not applied["after_apply"]["function_log_group"]


def test_apply_deletes_orphan_function_log_group(applied):
    assert applied["after_dry_run"]["orphan_log_group"]
    assert not applied["after_apply"]["orphan_log_group"]
    assert applied["other_after_apply"]["orphan_log_group"]


@pytest.mark.parametrize(
    ("name", "environment"),
    [
        ("/aws/lambda/als-recommender-ci-1-CustomS3AutoDeleteObjectsCustomRes-AB12", "ci-1"),
        ("/aws/lambda/als-recommender-ci-1-2-CustomCDKBucketDeployment-AB12", "ci-1-2"),
        ("/aws/lambda/als-recommender-dev-LifecycleSecurityGroupCleanupFunc-AB12", "dev"),
        ("/aws/lambda/other-project-ci-1-CustomS3AutoDelete-AB12", None),
        ("/aws/lambda/als-recommender-ci-1", None),
        ("/als-recommender/ci-1/pipeline", None),
    ],
)
def test_function_log_group_environment(name, environment):
    assert teardown.function_log_group_environment(name) == environment


def test_protected_cluster_remains_with_reason(session, capsys):
    create_environment(session, ENVIRONMENT, tags_for(ENVIRONMENT))
    protected = create_cluster(session, "protected", tags_for(ENVIRONMENT), protected=True)

    status = teardown.main(
        ["--environment", ENVIRONMENT, "--apply", "--region", REGION, "--poll-seconds", "1"]
    )

    output = capsys.readouterr().out
    assert status == 1
    assert exists(session, "cluster", protected)
    assert f"remained      cluster         {ENVIRONMENT}" in output
    assert "termination protection is on" in output


def test_older_than_selects_old_environments(session):
    create_environment(session, ENVIRONMENT, tags_for(ENVIRONMENT))
    create_environment(session, OTHER_ENVIRONMENT, tags_for(OTHER_ENVIRONMENT))
    create_untagged(session)
    later = datetime.now(UTC) + timedelta(hours=3)

    report = teardown.teardown(session, older_than=timedelta(hours=2), now=later)

    assert report.environments == {ENVIRONMENT, OTHER_ENVIRONMENT}
    assert len(report.outcomes) == 20


def test_older_than_skips_young_environments(session):
    create_environment(session, ENVIRONMENT, tags_for(ENVIRONMENT))
    later = datetime.now(UTC) + timedelta(hours=1)

    report = teardown.teardown(session, older_than=timedelta(hours=2), now=later)

    assert report.environments == set()
    assert report.outcomes == []


def test_older_than_keeps_names_without_prefix(session):
    create_environment(session, ENVIRONMENT, tags_for(ENVIRONMENT))
    create_environment(session, "dev", tags_for("dev"))
    later = datetime.now(UTC) + timedelta(hours=3)

    report = teardown.teardown(session, older_than=timedelta(hours=2), prefix="ci-", now=later)

    assert report.environments == {ENVIRONMENT}
    assert {outcome.resource.environment for outcome in report.outcomes} == {ENVIRONMENT}


def test_old_environments_uses_oldest_resource():
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    resources = [
        teardown.Resource(teardown.STACK, "a-stack", "a", now - timedelta(hours=5)),
        teardown.Resource(teardown.CLUSTER, "a-cluster", "a", now - timedelta(minutes=10)),
        teardown.Resource(teardown.STACK, "b-stack", "b", now - timedelta(hours=1)),
        teardown.Resource(teardown.SECURITY_GROUP, "sg-c", "c", None),
    ]

    selected = teardown.old_environments(resources, timedelta(hours=2), now)

    assert selected == {"a"}


def test_main_dry_run_exits_zero(session, capsys):
    ids = create_environment(session, ENVIRONMENT, tags_for(ENVIRONMENT))

    status = teardown.main(["--environment", ENVIRONMENT, "--region", REGION])

    output = capsys.readouterr().out
    assert status == 0
    assert "would delete" in output
    assert "rerun with --apply" in output
    assert exists(session, "bucket", ids["bucket"])


def test_main_unknown_profile_is_an_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))

    status = teardown.main(["--environment", ENVIRONMENT, "--profile", "nobody"])

    assert status == 2
    assert "AWS profile 'nobody' not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--environment", "CI_1"],
        ["--older-than", "0"],
        ["--older-than", "soon"],
        ["--environment", "ci-1", "--older-than", "2"],
        ["--environment", "ci-1", "--prefix", "ci-"],
    ],
)
def test_main_rejects_invalid_options(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        teardown.main(argv)

    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_stack_function_log_groups_lists_functions(session):
    cloudformation = session.client("cloudformation")
    stack_id = cloudformation.create_stack(
        StackName=naming.stack_name(ENVIRONMENT),
        TemplateBody=json.dumps(STACK_TEMPLATE),
        Capabilities=["CAPABILITY_IAM"],
    )["StackId"]
    summaries = cloudformation.list_stack_resources(StackName=stack_id)["StackResourceSummaries"]
    function = [s for s in summaries if s["ResourceType"] == "AWS::Lambda::Function"][0]

    names = teardown.stack_function_log_groups(cloudformation, stack_id)

    assert names == [f"/aws/lambda/{function['PhysicalResourceId']}"]
