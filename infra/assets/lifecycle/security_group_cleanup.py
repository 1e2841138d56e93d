"""CloudFormation custom resource that revokes rules between security groups on stack deletion.

EMR adds ingress rules to the managed security groups of a cluster, and some of
those rules name another group as the source. A group that another group's rule
refers to cannot be deleted (DependencyViolation), so the groups, and with them
the VPC, outlive ``cdk destroy``. On Delete this handler revokes every ingress and
egress rule of the listed groups that refers to a security group, after the
cluster is gone, so CloudFormation can then delete the groups. Create and Update
do nothing.

Resource properties: ``SecurityGroupIds``, a list of group ids.
"""

from __future__ import annotations

import json
import logging
import urllib.request

import boto3
from botocore.exceptions import ClientError

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

# A group that is already gone has no rules left to revoke.
MISSING_GROUP_ERRORS = {"InvalidGroup.NotFound"}


def revoke_group_references(ec2, group_ids: list[str]) -> list[str]:
    """Revoke the rules of ``group_ids`` whose source or destination is a security group.

    Rules with CIDR or prefix-list peers stay, because they do not block deleting
    a group. Returns the ids of the revoked rules. Groups that no longer exist are
    skipped. Raises botocore's ClientError for any other EC2 failure.
    """
    revoked: list[str] = []
    for group_id in group_ids:
        try:
            rules = _group_rules(ec2, group_id)
        except ClientError as error:
            if error.response["Error"]["Code"] in MISSING_GROUP_ERRORS:
                logger.info("security group %s not found, nothing to revoke", group_id)
                continue
            raise
        referencing = [rule for rule in rules if "ReferencedGroupInfo" in rule]
        ingress = [rule["SecurityGroupRuleId"] for rule in referencing if not rule["IsEgress"]]
        egress = [rule["SecurityGroupRuleId"] for rule in referencing if rule["IsEgress"]]
        if ingress:
            ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=ingress)
        if egress:
            ec2.revoke_security_group_egress(GroupId=group_id, SecurityGroupRuleIds=egress)
        logger.info(
            "security group %s: revoked %d ingress and %d egress rules that refer to groups",
            group_id,
            len(ingress),
            len(egress),
        )
        revoked.extend(ingress + egress)
    return revoked


def _group_rules(ec2, group_id: str) -> list[dict]:
    # DescribeSecurityGroupRules with a group-id filter does not fail for a missing
    # group, so DescribeSecurityGroups checks that the group exists first.
    ec2.describe_security_groups(GroupIds=[group_id])
    paginator = ec2.get_paginator("describe_security_group_rules")
    pages = paginator.paginate(Filters=[{"Name": "group-id", "Values": [group_id]}])
    return [rule for page in pages for rule in page["SecurityGroupRules"]]


def send_response(event: dict, status: str, reason: str, physical_id: str) -> None:
    """Upload the custom resource result to the pre-signed ResponseURL CloudFormation waits on."""
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:1000],
            "PhysicalResourceId": physical_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": {},
        }
    ).encode()
    # The pre-signed URL is signed for an empty content type.
    request = urllib.request.Request(
        event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": ""}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        logger.info("sent %s to CloudFormation, HTTP %s", status, response.status)


def handler(event: dict, context) -> None:
    """Handle one CloudFormation request and always report SUCCESS or FAILED to it.

    A Delete that fails reports FAILED with the EC2 error, so the stack deletion
    stops at this resource instead of waiting on the security groups.
    """
    physical_id = event.get("PhysicalResourceId") or f"{event['LogicalResourceId']}-cleanup"
    logger.info("%s request for %s", event["RequestType"], physical_id)
    try:
        if event["RequestType"] == "Delete":
            group_ids = event["ResourceProperties"].get("SecurityGroupIds")
            if not isinstance(group_ids, list) or not all(isinstance(g, str) for g in group_ids):
                raise ValueError(f"SecurityGroupIds must be a list of group ids, got {group_ids!r}")
            revoked = revoke_group_references(boto3.client("ec2"), group_ids)
            reason = f"revoked {len(revoked)} rules"
        else:
            reason = "nothing to do until the stack is deleted"
    # Any error must still reach CloudFormation, which otherwise waits an hour for a reply.
    except Exception as error:  # noqa: BLE001
        logger.exception("security group cleanup failed")
        send_response(event, "FAILED", f"security group cleanup failed: {error}", physical_id)
        return
    send_response(event, "SUCCESS", reason, physical_id)
