"""The environment's stack: composes storage, network, IAM and the cluster, and exports names."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput
from aws_cdk import RemovalPolicy
from aws_cdk import Stack
from constructs import Construct

from infra import naming
from infra.artifact import architectures_for
from infra.artifact import build_artifact
from infra.cluster import ClusterSize
from infra.cluster import EmrCluster
from infra.config import EnvironmentConfig
from infra.iam import ClusterRoles
from infra.jobs import JobArtifact
from infra.jupyter import JupyterHub
from infra.lifecycle import Lifecycle
from infra.network import Network
from infra.pipeline import PipelineStateMachine
from infra.pipeline import transient_cluster_settings
from infra.storage import ARTIFACTS_PREFIX
from infra.storage import EMR_LOG_PREFIX
from infra.storage import Storage


class RecommenderStack(Stack):
    """Everything one environment deploys. Constructs are attributes for extension."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, **kwargs: Any
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"ALS recommender on Amazon EMR, environment {config.environment}",
            termination_protection=config.termination_protection,
            # Stack tags reach the resources that Tags.of cannot, such as CDK's custom
            # resource provider roles. The explicitStackTags feature flag stops the
            # app's tags from reaching the stack, so they are passed here.
            tags={naming.PROJECT_TAG: naming.PROJECT, naming.ENVIRONMENT_TAG: config.environment},
            **kwargs,
        )
        self.config = config

        self.storage = Storage(
            self, "Storage", retain=config.retain_data, log_retention_days=config.log_retention_days
        )
        self.network = Network(
            self,
            "Network",
            flow_logs_bucket=self.storage.logs_bucket,
            vpc_id=config.vpc_id,
            ui_allowed_cidr=config.ui_allowed_cidr,
        )
        self.roles = ClusterRoles(
            self,
            "Roles",
            data_bucket=self.storage.data_bucket,
            artifacts_bucket=self.storage.artifacts_bucket,
            artifacts_prefix=ARTIFACTS_PREFIX,
            logs_bucket=self.storage.logs_bucket,
            log_prefix=EMR_LOG_PREFIX,
        )
        self.cluster = EmrCluster(
            self,
            "Emr",
            cluster_name=naming.stack_name(config.environment),
            release_label=config.release_label,
            size=ClusterSize(
                primary_instance_type=config.primary_instance_type,
                core_instance_type=config.core_instance_type,
                core_instance_count=config.core_instance_count,
                task_instance_type=config.task_instance_type,
                task_instance_count=config.task_instance_count,
                task_spot=config.task_spot,
            ),
            roles=self.roles,
            network=self.network,
            log_uri=self.storage.emr_log_uri,
            idle_timeout_seconds=config.idle_timeout_seconds,
            key_pair_name=config.key_pair_name,
            termination_protection=config.termination_protection,
            managed_scaling_limits=_scaling_limits(config),
        )
        self.lifecycle = Lifecycle(
            self,
            "Lifecycle",
            cluster=self.cluster.cfn_cluster,
            security_groups=[
                self.network.primary_security_group,
                self.network.core_security_group,
                self.network.service_access_security_group,
            ],
            buckets=[
                self.storage.logs_bucket,
                self.storage.data_bucket,
                self.storage.artifacts_bucket,
            ],
            destroy_everything=not config.production,
        )
        self.job_artifact = self._job_artifact(config)
        self.jupyter = self._jupyter(config)
        self.pipeline = self._pipeline(config)

        self._outputs()

    def _jupyter(self, config: EnvironmentConfig) -> JupyterHub:
        jupyter = JupyterHub(
            self,
            "JupyterHub",
            user_names=config.jupyter_users,
            network=self.network,
            instance_role=self.roles.instance_role,
            persistence_bucket=self.storage.data_bucket,
            artifacts_bucket=self.storage.artifacts_bucket,
            artifacts_prefix=ARTIFACTS_PREFIX,
            runs_uri=self.storage.data_bucket.s3_url_for_object("runs"),
            # The deployed notebook imports the same package version the steps run.
            artifact_uri=self.job_artifact.location.package_zip,
            removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
        )
        for configuration in jupyter.configurations:
            self.cluster.add_configuration(configuration)
        for step in jupyter.steps:
            self.cluster.add_step(step)
        for dependency in jupyter.dependencies:
            self.cluster.cfn_cluster.node.add_dependency(dependency)
        return jupyter

    def _job_artifact(self, config: EnvironmentConfig) -> JobArtifact:
        instance_types = [config.primary_instance_type, config.core_instance_type]
        if config.task_instance_count > 0:
            instance_types.append(config.task_instance_type)
        job_artifact = JobArtifact(
            self,
            "JobArtifact",
            bucket=self.storage.artifacts_bucket,
            artifact=build_artifact(architectures_for(instance_types)),
        )
        self.cluster.add_bootstrap_action(job_artifact.bootstrap_action())
        # The bootstrap action reads the artifact, so it must be published first.
        self.cluster.cfn_cluster.node.add_dependency(job_artifact.deployment)
        return job_artifact

    def _pipeline(self, config: EnvironmentConfig) -> PipelineStateMachine:
        pipeline = PipelineStateMachine(
            self,
            "Pipeline",
            environment=config.environment,
            artifact=self.job_artifact.location,
            data_bucket=self.storage.data_bucket,
            cluster_id=self.cluster.cluster_id,
            transient_cluster=transient_cluster_settings(
                config,
                self.cluster,
                log_uri=self.storage.emr_log_uri,
                bootstrap_actions=[self.job_artifact.bootstrap_action()],
            ),
            removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
        )
        # A transient cluster runs the same bootstrap action as the environment's.
        pipeline.node.add_dependency(self.job_artifact.deployment)
        return pipeline

    def _outputs(self) -> None:
        outputs = {
            naming.OUTPUT_DATA_BUCKET: self.storage.data_bucket.bucket_name,
            naming.OUTPUT_ARTIFACTS_BUCKET: self.storage.artifacts_bucket.bucket_name,
            naming.OUTPUT_LOGS_BUCKET: self.storage.logs_bucket.bucket_name,
            naming.OUTPUT_CLUSTER_ID: self.cluster.cluster_id,
            naming.OUTPUT_PRIMARY_DNS: self.cluster.primary_dns_name,
            naming.OUTPUT_STATE_MACHINE_ARN: self.pipeline.state_machine_arn,
            naming.OUTPUT_ARTIFACT_PREFIX: self.job_artifact.location.uri,
        }
        for key, value in outputs.items():
            CfnOutput(self, key, value=value).override_logical_id(key)


def _scaling_limits(config: EnvironmentConfig) -> tuple[int, int] | None:
    if config.managed_scaling_min_units is None or config.managed_scaling_max_units is None:
        return None
    return (config.managed_scaling_min_units, config.managed_scaling_max_units)
