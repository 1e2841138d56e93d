"""The environment's S3 buckets: data and run outputs, job artifacts, and logs."""

from __future__ import annotations

from aws_cdk import Acknowledgment
from aws_cdk import Duration
from aws_cdk import RemovalPolicy
from aws_cdk import Validations
from aws_cdk import aws_s3 as s3
from constructs import Construct

# Key prefixes inside the buckets. The instance role is scoped to these.
EMR_LOG_PREFIX = "emr-logs/"
ACCESS_LOG_PREFIX = "s3-access-logs/"
ARTIFACTS_PREFIX = "artifacts/"

INCOMPLETE_UPLOAD_DAYS = 7


class Storage(Construct):
    """Three private, encrypted, SSL-only buckets.

    ``data_bucket`` contains MovieLens inputs, run directories and notebooks.
    ``artifacts_bucket`` (versioned) contains the published job artifacts under
    ``artifacts/``. ``logs_bucket`` receives EMR logs under ``emr-logs/`` and the
    server access logs of the other two under ``s3-access-logs/``. With
    ``retain=False`` stack deletion empties and deletes all three.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        retain: bool,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        removal_policy = RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY
        abort_uploads = s3.LifecycleRule(
            id="AbortIncompleteUploads",
            abort_incomplete_multipart_upload_after=Duration.days(INCOMPLETE_UPLOAD_DAYS),
        )

        self.logs_bucket = s3.Bucket(
            self,
            "Logs",
            **_common_bucket_options(removal_policy, retain),
            # S3 server access logging only delivers to buckets encrypted with SSE-S3.
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[
                abort_uploads,
                s3.LifecycleRule(id="ExpireLogs", expiration=Duration.days(log_retention_days)),
            ],
        )
        Validations.of(self.logs_bucket).acknowledge(
            Acknowledgment(
                id="AwsSolutions-S1",
                reason="This bucket is the server access log target of the other buckets, and "
                "logging its own access would log every log delivery again.",
            )
        )

        self.data_bucket = s3.Bucket(
            self,
            "Data",
            **_common_bucket_options(removal_policy, retain),
            encryption=s3.BucketEncryption.S3_MANAGED,
            server_access_logs_bucket=self.logs_bucket,
            server_access_logs_prefix=f"{ACCESS_LOG_PREFIX}data/",
            lifecycle_rules=[abort_uploads],
        )

        # Versioning keeps every published artifact recoverable even if a prefix is
        # overwritten, so an old run can be replayed with the code it ran.
        self.artifacts_bucket = s3.Bucket(
            self,
            "Artifacts",
            **_common_bucket_options(removal_policy, retain),
            encryption=s3.BucketEncryption.S3_MANAGED,
            versioned=True,
            server_access_logs_bucket=self.logs_bucket,
            server_access_logs_prefix=f"{ACCESS_LOG_PREFIX}artifacts/",
            lifecycle_rules=[abort_uploads],
        )

    @property
    def emr_log_uri(self) -> str:
        """The s3:// URI the cluster writes its logs under."""
        return self.logs_bucket.s3_url_for_object(EMR_LOG_PREFIX)


def _common_bucket_options(removal_policy: RemovalPolicy, retain: bool) -> dict[str, object]:
    return {
        "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
        "enforce_ssl": True,
        "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        "removal_policy": removal_policy,
        # Deletes every object (and version) before the bucket, so `cdk destroy`
        # of a non-production environment leaves nothing behind.
        "auto_delete_objects": not retain,
    }
