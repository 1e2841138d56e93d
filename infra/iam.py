"""The cluster's IAM roles: the EMR service role and the EC2 instance role and profile.

Both are created by the stack, so ``aws emr create-default-roles`` is never needed.
Custom automatic scaling policies on instance groups would need a third role
(EMR_AutoScaling_DefaultRole). The cluster uses EMR managed scaling instead,
which runs under the service role.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment
from aws_cdk import Stack
from aws_cdk import Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

EMR_SERVICE_POLICY = "service-role/AmazonEMRServicePolicy_v2"

# Object actions: explicit lists so no action wildcard reaches the policy.
READ_OBJECT_ACTIONS = ["s3:GetObject", "s3:GetObjectVersion"]
WRITE_OBJECT_ACTIONS = [
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]
BUCKET_READ_ACTIONS = ["s3:ListBucket", "s3:GetBucketLocation"]
BUCKET_WRITE_ACTIONS = ["s3:ListBucketMultipartUploads"]


class ClusterRoles(Construct):
    """The EMR service role and the instance role with its instance profile.

    The service role carries AmazonEMRServicePolicy_v2, which acts only on
    resources tagged ``for-use-with-amazon-emr-managed-policies=true``, plus
    ``iam:PassRole`` on the instance role alone. The instance role may read and
    write the data bucket, read ``artifacts_prefix`` in the artifacts bucket, and
    write ``log_prefix`` in the logs bucket. It has no other S3 access. Other constructs
    extend it through ``instance_role`` (for example to read a secret).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        data_bucket: s3.IBucket,
        artifacts_bucket: s3.IBucket,
        artifacts_prefix: str,
        logs_bucket: s3.IBucket,
        log_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        account = Stack.of(self).account

        self.instance_role = iam.Role(
            self,
            "InstanceRole",
            description="EC2 instance role of the EMR cluster nodes",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
        )
        self.instance_profile = iam.CfnInstanceProfile(
            self, "InstanceProfile", roles=[self.instance_role.role_name]
        )

        # The confused-deputy guard AWS documents for the EMR service role.
        self.service_role = iam.Role(
            self,
            "ServiceRole",
            description="EMR service role of the cluster",
            assumed_by=iam.ServicePrincipal(
                "elasticmapreduce.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": account}},
            ),
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(EMR_SERVICE_POLICY)],
        )
        self.service_role.add_to_policy(
            iam.PolicyStatement(
                sid="PassInstanceRole",
                actions=["iam:PassRole"],
                resources=[self.instance_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            )
        )
        Validations.of(self.service_role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{EMR_SERVICE_POLICY}]",
                reason="AmazonEMRServicePolicy_v2 is the service policy AWS maintains for EMR, "
                "and it acts only on resources tagged for-use-with-amazon-emr-managed-policies.",
            )
        )

        self._grant_bucket(data_bucket, "*", write=True, sid="DataBucket")
        self._grant_bucket(artifacts_bucket, f"{artifacts_prefix}*", write=False, sid="Artifacts")
        self._grant_bucket(logs_bucket, f"{log_prefix}*", write=True, sid="Logs")
        self._acknowledge_object_wildcards(
            [
                (data_bucket, "*", "jobs read inputs and write run directories anywhere in it"),
                (
                    artifacts_bucket,
                    f"{artifacts_prefix}*",
                    "the artifact version is chosen per run",
                ),
                (logs_bucket, f"{log_prefix}*", "EMR names log objects by cluster, step and node"),
            ]
        )

    def _grant_bucket(self, bucket: s3.IBucket, key_pattern: str, *, write: bool, sid: str) -> None:
        object_actions = READ_OBJECT_ACTIONS + (WRITE_OBJECT_ACTIONS if write else [])
        bucket_actions = BUCKET_READ_ACTIONS + (BUCKET_WRITE_ACTIONS if write else [])
        self.instance_role.add_to_policy(
            iam.PolicyStatement(
                sid=f"{sid}Objects",
                actions=object_actions,
                resources=[bucket.arn_for_objects(key_pattern)],
            )
        )
        self.instance_role.add_to_policy(
            iam.PolicyStatement(
                sid=f"{sid}Bucket", actions=bucket_actions, resources=[bucket.bucket_arn]
            )
        )

    def _acknowledge_object_wildcards(self, grants: list[tuple[s3.IBucket, str, str]]) -> None:
        for bucket, key_pattern, reason in grants:
            logical_id = Stack.of(bucket).get_logical_id(bucket.node.default_child)
            Validations.of(self.instance_role).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/{key_pattern}]",
                    reason=f"Object keys under {key_pattern} in this stack's own bucket, "
                    f"because {reason}.",
                )
            )
