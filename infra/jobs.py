"""Publish the versioned job artifact to the artifacts bucket and expose where it lives.

The artifact directory is built offline by ``infra.artifact`` before synthesis and
uploaded as a CDK asset. A BucketDeployment copies it to
``artifacts/spark_jobs/<version>/`` in the artifacts bucket. Old versions stay
where they are, so a run can always be replayed with the code it ran.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment
from aws_cdk import Stack
from aws_cdk import Validations
from aws_cdk import aws_emr as emr
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from infra.artifact import BuiltArtifact
from infra.emr_steps import ArtifactLocation

BOOTSTRAP_ACTION_NAME = "Install the job's Python dependencies"

# The deployment function downloads the asset zip (about 40 MB per architecture)
# and extracts it in /tmp. At the 128 MB default the copy runs out of memory.
DEPLOYMENT_MEMORY_MB = 1024


class JobArtifact(Construct):
    """The job artifact published under its version prefix, and its bootstrap action.

    ``location`` gives the s3:// URIs of the entry point, the package zip and the
    bootstrap script. ``deployment`` must finish before any cluster that runs the
    bootstrap action is created: add it as a dependency of that cluster.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        artifact: BuiltArtifact,
    ) -> None:
        super().__init__(scope, construct_id)
        self.artifact = artifact
        self.bucket = bucket
        self.location = ArtifactLocation(bucket.s3_url_for_object(artifact.s3_prefix))

        self.deployment = s3deploy.BucketDeployment(
            self,
            "Deployment",
            sources=[s3deploy.Source.asset(str(artifact.directory))],
            destination_bucket=bucket,
            destination_key_prefix=f"{artifact.s3_prefix}/",
            # A new version goes to a new prefix. Neither pruning nor deleting on
            # update may remove the old prefixes, which older runs refer to.
            prune=False,
            retain_on_delete=True,
            memory_limit=DEPLOYMENT_MEMORY_MB,
        )
        self._acknowledge_findings()

    @property
    def version(self) -> str:
        """The artifact version, the last segment of its S3 prefix."""
        return self.artifact.version

    def bootstrap_action(self) -> emr.CfnCluster.BootstrapActionConfigProperty:
        """Return the bootstrap action that installs this version's pinned wheels on every node."""
        return emr.CfnCluster.BootstrapActionConfigProperty(
            name=BOOTSTRAP_ACTION_NAME,
            script_bootstrap_action=emr.CfnCluster.ScriptBootstrapActionConfigProperty(
                path=self.location.bootstrap_script, args=[self.location.uri]
            ),
        )

    def _acknowledge_findings(self) -> None:
        # BucketDeployment runs one Lambda function per stack and memory size,
        # created by CDK with its own role. These findings concern that function.
        self._acknowledge_role_findings()
        handler = Stack.of(self).node.try_find_child(
            f"Custom::CDKBucketDeployment{self._singleton_suffix()}"
        )
        if handler is not None:
            Validations.of(handler).acknowledge(
                Acknowledgment(
                    id="AwsSolutions-L1",
                    reason="CDK pins the runtime of its BucketDeployment function to the one "
                    "its handler and AWS CLI layer are tested with.",
                )
            )

    def _acknowledge_role_findings(self) -> None:
        role = self.deployment.handler_role
        Validations.of(role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSLambdaBasicExecutionRole]",
                reason="The CDK BucketDeployment function only writes its own CloudWatch logs "
                "through the AWS managed basic execution policy.",
            )
        )

        bucket_id = Stack.of(self).get_logical_id(self.bucket.node.default_child)
        asset_bucket = (
            "arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>"
        )
        reasons = {
            "Action::s3:GetBucket*": "CDK's read grant includes bucket metadata reads",
            "Action::s3:GetObject*": "CDK's read grant covers every variant of object reads",
            "Action::s3:List*": "CDK's grants list both buckets to sync the files",
            "Action::s3:Abort*": "CDK's write grant aborts the function's own multipart uploads",
            "Action::s3:DeleteObject*": "CDK's write grant includes deletes, which stay unused "
            "because pruning is off",
            f"Resource::{asset_bucket}/*": "the asset key is only known at deployment",
            f"Resource::<{bucket_id}.Arn>/*": "the function writes the artifact's files by key",
        }
        policy = role.node.try_find_child("DefaultPolicy")
        for finding, reason in reasons.items():
            Validations.of(policy if policy is not None else role).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[{finding}]",
                    reason=f"The CDK BucketDeployment function copies the job artifact into "
                    f"this stack's artifacts bucket, and {reason}.",
                )
            )

    def _singleton_suffix(self) -> str:
        # BucketDeployment names its stack-level function after a fixed UUID plus
        # the memory limit, so the function is shared by deployments with equal settings.
        return f"8693BB64968944B69AAFB0CC9EB8756C{DEPLOYMENT_MEMORY_MB}MiB"
