"""Deletion order and cleanup that let ``cdk destroy`` remove a non-production environment.

CloudFormation deletes resources in the reverse order of their dependencies and
deletes unrelated resources in parallel. Two EMR behaviours break a plain stack:

- The cluster writes logs to the log bucket until it has terminated. Nothing in
  the template orders the cluster against the custom resource that empties the
  bucket, so both run at once. The emptying function of aws-cdk-lib 2.275 denies
  s3:PutObject before it starts, so late log writes fail rather than leave objects
  behind (which would make DeleteBucket fail with BucketNotEmpty), but the cluster
  then shuts down with its log writes denied. Deleting the cluster first removes
  the race instead of relying on that deny.
- EMR adds rules to its managed security groups that name the other groups as
  sources. A referenced group cannot be deleted, so the groups and the VPC stay.

:class:`Lifecycle` adds the dependencies that delete the cluster first, then
revokes the rules between the groups, then lets CloudFormation delete the groups.
In a non-production environment it also applies the DESTROY removal policy to
every resource, which overrides construct defaults such as RETAIN on log groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
import jsii
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct
from constructs import IConstruct

ASSET_DIRECTORY = Path(__file__).resolve().parent / "assets" / "lifecycle"
CLEANUP_RESOURCE_TYPE = "Custom::SecurityGroupCleanup"

# The child id aws-s3 gives the custom resource that empties a bucket with
# autoDeleteObjects (aws-cdk-lib 2.x).
AUTO_DELETE_CHILD_ID = "AutoDeleteObjectsCustomResource"


class SecurityGroupCleanup(Construct):
    """A custom resource that revokes rules between ``security_groups`` when it is deleted.

    It depends on the groups, so CloudFormation deletes it, and runs the revocation,
    before it deletes any of them. Resources that must be gone before the revocation
    (the cluster, whose service re-adds the rules while it runs) are passed to
    :meth:`delete_before`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        security_groups: Sequence[ec2.ISecurityGroup],
    ) -> None:
        super().__init__(scope, construct_id)
        if not security_groups:
            raise ValueError("SecurityGroupCleanup needs at least one security group")
        stack = cdk.Stack.of(self)
        group_ids = [group.security_group_id for group in security_groups]

        # An explicit log group, because the one Lambda creates on first use is not
        # part of the stack and would outlive it.
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Revokes rules between the EMR security groups when the stack is deleted",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress"],
                resources=[
                    stack.format_arn(
                        service="ec2", resource="security-group", resource_name=group_id
                    )
                    for group_id in group_ids
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules"],
                resources=["*"],
            )
        )
        # The acknowledgement covers the role's policy, its only child with statements.
        cdk.Validations.of(self.role).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason=(
                    "ec2:DescribeSecurityGroups and ec2:DescribeSecurityGroupRules do not support "
                    "resource-level permissions; revocation is limited to the listed groups by ARN"
                ),
            )
        )

        # Outside the VPC on purpose: a function with network interfaces in the VPC
        # would itself keep subnets and security groups from being deleted.
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="security_group_cleanup.handler",
            code=lambda_.Code.from_asset(str(ASSET_DIRECTORY)),
            timeout=cdk.Duration.minutes(5),
            role=self.role,
            log_group=self.log_group,
            description="Revokes rules between the EMR security groups before they are deleted",
        )
        self.resource = cdk.CustomResource(
            self,
            "Resource",
            service_token=self.function.function_arn,
            resource_type=CLEANUP_RESOURCE_TYPE,
            properties={"SecurityGroupIds": group_ids},
            # Fail the deletion after 10 minutes instead of CloudFormation's default hour
            # when the function sends no response.
            service_timeout=cdk.Duration.minutes(10),
        )
        # The function must keep its permissions until the Delete request has run.
        self.resource.node.add_dependency(self.role)
        cdk.Aspects.of(stack).add(_DeleteRuleResourcesFirst(self.resource))

    def delete_before(self, *constructs: IConstruct) -> None:
        """Make CloudFormation delete ``constructs`` completely before the rules are revoked."""
        for construct in constructs:
            construct.node.add_dependency(self.resource)


@jsii.implements(cdk.IAspect)
class _DeleteRuleResourcesFirst:
    """Make the stack's own ingress and egress rule resources depend on the cleanup.

    CloudFormation then deletes the rules it created itself first, and the cleanup
    revokes only what is left, the rules EMR added. Without this the cleanup and
    CloudFormation could revoke the same rule at the same time.
    """

    def __init__(self, cleanup: cdk.CustomResource) -> None:
        self._cleanup = cleanup

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, (ec2.CfnSecurityGroupIngress, ec2.CfnSecurityGroupEgress)):
            if cdk.Stack.of(node) is cdk.Stack.of(self._cleanup):
                node.node.add_dependency(self._cleanup)


def delete_after_cluster(cluster: IConstruct, buckets: Sequence[s3.IBucket]) -> None:
    """Make CloudFormation delete ``cluster`` before it empties or deletes any of ``buckets``.

    For a bucket with autoDeleteObjects the cluster depends on the custom resource
    that empties it, so the bucket is emptied only after the cluster has terminated
    and can no longer write logs to it. Other buckets are ordered directly.
    """
    for bucket in buckets:
        emptier = bucket.node.try_find_child(AUTO_DELETE_CHILD_ID)
        cluster.node.add_dependency(emptier if emptier is not None else bucket)


class Lifecycle(Construct):
    """Deletion order and cleanup for one environment's stack.

    ``destroy_everything`` applies the DESTROY removal policy to every resource in
    the stack, which overrides RETAIN on data buckets too. Pass True only for
    environments whose data may be lost, such as CI and development.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: IConstruct,
        security_groups: Sequence[ec2.ISecurityGroup],
        buckets: Sequence[s3.IBucket],
        destroy_everything: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group_cleanup = SecurityGroupCleanup(
            self, "SecurityGroupCleanup", security_groups=security_groups
        )
        self.security_group_cleanup.delete_before(cluster)
        delete_after_cluster(cluster, buckets)
        if destroy_everything:
            cdk.RemovalPolicies.of(cdk.Stack.of(self)).destroy()
