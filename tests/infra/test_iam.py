"""The cluster roles, built in an empty stack: trust, managed policy, PassRole and S3 scope."""

from __future__ import annotations

import json

import pytest

from infra.iam import ClusterRoles
from infra.storage import ARTIFACTS_PREFIX
from infra.storage import EMR_LOG_PREFIX
from infra.storage import Storage

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def built(build_in_empty_stack):
    parts = {}

    def build(stack):
        storage = Storage(stack, "Storage", retain=False, log_retention_days=30)
        parts["roles"] = ClusterRoles(
            stack,
            "Roles",
            data_bucket=storage.data_bucket,
            artifacts_bucket=storage.artifacts_bucket,
            artifacts_prefix=ARTIFACTS_PREFIX,
            logs_bucket=storage.logs_bucket,
            log_prefix=EMR_LOG_PREFIX,
        )
        parts["stack"] = stack
        parts["buckets"] = {
            name: stack.get_logical_id(getattr(storage, name).node.default_child)
            for name in ("data_bucket", "artifacts_bucket", "logs_bucket")
        }

    template = build_in_empty_stack(build)
    stack = parts["stack"]
    roles = parts["roles"]
    resources = template.to_json()["Resources"]
    ids = {
        "instance_role": stack.get_logical_id(roles.instance_role.node.default_child),
        "service_role": stack.get_logical_id(roles.service_role.node.default_child),
    }
    return resources, ids, parts["buckets"]


def role_statements(resources, role_id):
    """Return every statement of the inline policies attached to one role."""
    statements = []
    for resource in resources.values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        if {"Ref": role_id} in resource["Properties"]["Roles"]:
            statements.extend(resource["Properties"]["PolicyDocument"]["Statement"])
    return statements


def statement(statements, sid):
    (found,) = [item for item in statements if item.get("Sid") == sid]
    return found


def test_service_role_trusts_emr_of_this_account(built):
    resources, ids, _buckets = built
    trust = resources[ids["service_role"]]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert len(trust) == 1
    assert trust[0]["Principal"] == {"Service": "elasticmapreduce.amazonaws.com"}
    assert trust[0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }


def test_service_role_uses_managed_v2_policy(built):
    resources, ids, _buckets = built
    arns = resources[ids["service_role"]]["Properties"]["ManagedPolicyArns"]
    assert len(arns) == 1
    assert "service-role/AmazonEMRServicePolicy_v2" in json.dumps(arns[0])


def test_service_role_passes_only_instance_role(built):
    resources, ids, _buckets = built
    passing = statement(role_statements(resources, ids["service_role"]), "PassInstanceRole")
    assert passing["Action"] == "iam:PassRole"
    assert passing["Resource"] == {"Fn::GetAtt": [ids["instance_role"], "Arn"]}
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


def test_instance_role_trusts_ec2(built):
    resources, ids, _buckets = built
    trust = resources[ids["instance_role"]]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [item["Principal"] for item in trust] == [{"Service": "ec2.amazonaws.com"}]


def test_instance_profile_wraps_instance_role(built):
    resources, ids, _buckets = built
    profiles = [item for item in resources.values() if item["Type"] == "AWS::IAM::InstanceProfile"]
    assert len(profiles) == 1
    assert profiles[0]["Properties"]["Roles"] == [{"Ref": ids["instance_role"]}]


def test_instance_role_has_no_managed_policy(built):
    resources, ids, _buckets = built
    assert "ManagedPolicyArns" not in resources[ids["instance_role"]]["Properties"]


def object_resource(bucket_id, pattern):
    return {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, f"/{pattern}"]]}


def test_data_bucket_read_write(built):
    resources, ids, buckets = built
    objects = statement(role_statements(resources, ids["instance_role"]), "DataBucketObjects")
    assert objects["Resource"] == object_resource(buckets["data_bucket"], "*")
    assert "s3:PutObject" in objects["Action"]
    assert "s3:GetObject" in objects["Action"]


def test_artifacts_read_only_under_prefix(built):
    resources, ids, buckets = built
    objects = statement(role_statements(resources, ids["instance_role"]), "ArtifactsObjects")
    assert objects["Resource"] == object_resource(
        buckets["artifacts_bucket"], f"{ARTIFACTS_PREFIX}*"
    )
    assert "s3:PutObject" not in objects["Action"]
    assert "s3:DeleteObject" not in objects["Action"]


def test_logs_writable_under_prefix_only(built):
    resources, ids, buckets = built
    objects = statement(role_statements(resources, ids["instance_role"]), "LogsObjects")
    assert objects["Resource"] == object_resource(buckets["logs_bucket"], f"{EMR_LOG_PREFIX}*")
    assert "s3:PutObject" in objects["Action"]


def test_instance_role_has_no_wildcard_action_or_resource(built):
    resources, ids, _buckets = built
    for item in role_statements(resources, ids["instance_role"]):
        actions = item["Action"] if isinstance(item["Action"], list) else [item["Action"]]
        assert not [action for action in actions if "*" in action], item.get("Sid")
        assert item["Resource"] != "*", item.get("Sid")


def test_instance_role_s3_limited_to_stack_buckets(built):
    resources, ids, buckets = built
    allowed = set(buckets.values())
    for item in role_statements(resources, ids["instance_role"]):
        if not any(action.startswith("s3:") for action in item["Action"]):
            continue
        referenced = {reference[0] for reference in _get_att_targets(item["Resource"])}
        assert referenced, item.get("Sid")
        assert referenced <= allowed, item.get("Sid")


def _get_att_targets(value):
    if isinstance(value, dict):
        if "Fn::GetAtt" in value:
            yield value["Fn::GetAtt"]
        for nested in value.values():
            yield from _get_att_targets(nested)
    elif isinstance(value, list):
        for nested in value:
            yield from _get_att_targets(nested)
