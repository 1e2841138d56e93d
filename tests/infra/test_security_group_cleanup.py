"""The security-group cleanup Lambda handler against moto's EC2 and a loopback response URL."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import HTTPServer

import boto3
import pytest
from moto import mock_aws

from infra.lifecycle import ASSET_DIRECTORY

REGION = "us-east-1"


def load_handler_module():
    spec = importlib.util.spec_from_file_location(
        "security_group_cleanup", ASSET_DIRECTORY / "security_group_cleanup.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cleanup = load_handler_module()


@pytest.fixture
def ec2(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


@pytest.fixture
def response_server() -> Iterator[tuple[str, list[dict]]]:
    """Serve a stand-in for CloudFormation's pre-signed response URL on 127.0.0.1."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 - name fixed by BaseHTTPRequestHandler
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/response", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def emr_like_groups(ec2) -> tuple[str, str]:
    """Create a primary and a core group that refer to each other, as EMR leaves them."""
    vpc_id = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    primary = ec2.create_security_group(GroupName="primary", Description="p", VpcId=vpc_id)
    core = ec2.create_security_group(GroupName="core", Description="c", VpcId=vpc_id)
    primary_id, core_id = primary["GroupId"], core["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=primary_id,
        IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": core_id}]}],
    )
    ec2.authorize_security_group_ingress(
        GroupId=core_id,
        IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": primary_id}]}],
    )
    ec2.authorize_security_group_ingress(
        GroupId=primary_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 9443,
                "ToPort": 9443,
                "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
            }
        ],
    )
    ec2.authorize_security_group_egress(
        GroupId=core_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8443,
                "ToPort": 8443,
                "UserIdGroupPairs": [{"GroupId": primary_id}],
            }
        ],
    )
    return primary_id, core_id


def group_rules(ec2, group_id: str) -> list[dict]:
    filters = [{"Name": "group-id", "Values": [group_id]}]
    return ec2.describe_security_group_rules(Filters=filters)["SecurityGroupRules"]


def cloudformation_event(request_type: str, url: str, group_ids: list[str]) -> dict:
    return {
        "RequestType": request_type,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/als-recommender-ci/1",
        "RequestId": "request-1",
        "LogicalResourceId": "SecurityGroupCleanup",
        "PhysicalResourceId": "SecurityGroupCleanup-cleanup",
        "ResourceType": "Custom::SecurityGroupCleanup",
        "ResourceProperties": {"SecurityGroupIds": group_ids},
    }


def test_revoke_removes_rules_between_groups(ec2):
    primary_id, core_id = emr_like_groups(ec2)

    revoked = cleanup.revoke_group_references(ec2, [primary_id, core_id])

    assert len(revoked) == 3
    for group_id in (primary_id, core_id):
        referencing = [rule for rule in group_rules(ec2, group_id) if "ReferencedGroupInfo" in rule]
        assert referencing == [], group_id


def test_revoke_keeps_cidr_rules(ec2):
    primary_id, core_id = emr_like_groups(ec2)

    cleanup.revoke_group_references(ec2, [primary_id, core_id])

    cidr_ingress = [
        rule["CidrIpv4"]
        for rule in group_rules(ec2, primary_id)
        if not rule["IsEgress"] and "CidrIpv4" in rule
    ]
    assert cidr_ingress == ["10.0.0.0/8"]


def test_revoke_skips_missing_group(ec2):
    primary_id, _core_id = emr_like_groups(ec2)

    revoked = cleanup.revoke_group_references(ec2, ["sg-0123456789abcdef0", primary_id])

    assert len(revoked) == 1


def test_revoke_leaves_groups_in_place(ec2):
    primary_id, core_id = emr_like_groups(ec2)

    cleanup.revoke_group_references(ec2, [primary_id, core_id])

    groups = ec2.describe_security_groups(GroupIds=[primary_id, core_id])["SecurityGroups"]
    assert len(groups) == 2


def test_handler_delete_revokes_and_reports_success(ec2, response_server):
    url, received = response_server
    primary_id, core_id = emr_like_groups(ec2)

    cleanup.handler(cloudformation_event("Delete", url, [primary_id, core_id]), None)

    assert len(received) == 1
    assert received[0]["Status"] == "SUCCESS"
    assert received[0]["PhysicalResourceId"] == "SecurityGroupCleanup-cleanup"
    assert received[0]["RequestId"] == "request-1"
    referencing = [rule for rule in group_rules(ec2, core_id) if "ReferencedGroupInfo" in rule]
    assert referencing == []


def test_handler_create_changes_nothing(ec2, response_server):
    url, received = response_server
    primary_id, core_id = emr_like_groups(ec2)
    before = len(group_rules(ec2, primary_id)) + len(group_rules(ec2, core_id))

    cleanup.handler(cloudformation_event("Create", url, [primary_id, core_id]), None)

    after = len(group_rules(ec2, primary_id)) + len(group_rules(ec2, core_id))
    assert received[0]["Status"] == "SUCCESS"
    assert after == before


def test_handler_reports_failure_with_reason(ec2, response_server):
    url, received = response_server
    event = cloudformation_event("Delete", url, [])
    event["ResourceProperties"]["SecurityGroupIds"] = "sg-0123456789abcdef0"

    cleanup.handler(event, None)

    assert received[0]["Status"] == "FAILED"
    assert "SecurityGroupIds must be a list" in received[0]["Reason"]
