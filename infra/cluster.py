"""The EMR cluster: Hadoop, Spark, JupyterHub and Livy with encryption at rest and IMDSv2.

Other constructs plug into the cluster through keyword options or the ``add_*``
methods: software configurations (merged by classification, because EMR rejects
a classification listed twice), bootstrap actions and steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from aws_cdk import Acknowledgment
from aws_cdk import Duration
from aws_cdk import RemovalPolicy
from aws_cdk import Tags
from aws_cdk import Validations
from aws_cdk import aws_emr as emr
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.iam import ClusterRoles
from infra.network import EMR_MANAGED_TAG_KEY
from infra.network import EMR_MANAGED_TAG_VALUE
from infra.network import Network

APPLICATIONS = ("Hadoop", "Spark", "JupyterHub", "Livy")

# The interpreter the emr-7.x line installs beside the system Python 3.9. The
# jobs and the course notebook run on it (numpy comes from a bootstrap action).
PYSPARK_PYTHON = "/usr/bin/python3.11"

# Actions EMR needs on the local-disk key: the nodes encrypt and decrypt their
# volumes, and the service role creates grants so EC2 can attach encrypted EBS.
NODE_KEY_ACTIONS = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:DescribeKey",
)
SERVICE_KEY_ACTIONS = NODE_KEY_ACTIONS + ("kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant")


@dataclass(frozen=True)
class Configuration:
    """One EMR configuration classification, with properties and nested classifications."""

    classification: str
    properties: Mapping[str, str] = field(default_factory=dict)
    nested: tuple[Configuration, ...] = ()


@dataclass(frozen=True)
class ClusterSize:
    """Instance types and counts of the primary, core and optional task instance groups."""

    primary_instance_type: str
    core_instance_type: str
    core_instance_count: int
    task_instance_type: str
    task_instance_count: int = 0
    task_spot: bool = True


def default_configurations() -> list[Configuration]:
    """Return the Spark configuration every cluster gets: PySpark on Python 3.11."""
    python = {"PYSPARK_PYTHON": PYSPARK_PYTHON, "PYSPARK_DRIVER_PYTHON": PYSPARK_PYTHON}
    return [
        Configuration("spark-env", nested=(Configuration("export", python),)),
        # spark-defaults applies in every deploy mode and to Livy sessions, which
        # start through spark-submit and so read the same file.
        Configuration(
            "spark-defaults",
            {
                "spark.pyspark.python": PYSPARK_PYTHON,
                "spark.pyspark.driver.python": PYSPARK_PYTHON,
            },
        ),
    ]


def bootstrap_action(
    name: str, script_uri: str, args: Sequence[str] = ()
) -> emr.CfnCluster.BootstrapActionConfigProperty:
    """Return a bootstrap action that runs the script at ``script_uri`` (s3://) on every node."""
    return emr.CfnCluster.BootstrapActionConfigProperty(
        name=name,
        script_bootstrap_action=emr.CfnCluster.ScriptBootstrapActionConfigProperty(
            path=script_uri, args=list(args) or None
        ),
    )


def command_runner_step(
    name: str, args: Sequence[str], *, action_on_failure: str = "CONTINUE"
) -> emr.CfnCluster.StepConfigProperty:
    """Return a cluster step that runs ``args`` through EMR's command-runner.jar on the primary node."""
    return emr.CfnCluster.StepConfigProperty(
        name=name,
        action_on_failure=action_on_failure,
        hadoop_jar_step=emr.CfnCluster.HadoopJarStepConfigProperty(
            jar="command-runner.jar", args=list(args)
        ),
    )


class EmrCluster(Construct):
    """One long-running EMR cluster in the network's private subnet.

    Exposes ``cfn_cluster``, ``security_configuration``, ``local_disk_key``,
    ``roles`` and ``network`` for the constructs that extend it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        release_label: str,
        size: ClusterSize,
        roles: ClusterRoles,
        network: Network,
        log_uri: str,
        idle_timeout_seconds: int,
        key_pair_name: str | None = None,
        termination_protection: bool = False,
        managed_scaling_limits: tuple[int, int] | None = None,
        configurations: Sequence[Configuration] = (),
        bootstrap_actions: Sequence[emr.CfnCluster.BootstrapActionConfigProperty] = (),
        steps: Sequence[emr.CfnCluster.StepConfigProperty] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.roles = roles
        self.network = network
        self._configurations: dict[str, Configuration] = {}
        self._bootstrap_actions: list[emr.CfnCluster.BootstrapActionConfigProperty] = []
        self._steps: list[emr.CfnCluster.StepConfigProperty] = []

        self.local_disk_key = kms.Key(
            self,
            "LocalDiskKey",
            description=f"Encrypts the local and EBS disks of EMR cluster {cluster_name}",
            enable_key_rotation=True,
            # The key protects only the cluster's own disks, which die with the
            # cluster, so no environment needs it after the stack is gone.
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        self.local_disk_key.grant(roles.instance_role, *NODE_KEY_ACTIONS)
        self.local_disk_key.grant(roles.service_role, *SERVICE_KEY_ACTIONS)

        self.security_configuration = emr.CfnSecurityConfiguration(
            self,
            "SecurityConfiguration",
            security_configuration=self._security_configuration_document(),
        )

        self.cfn_cluster = emr.CfnCluster(
            self,
            "Cluster",
            name=cluster_name,
            release_label=release_label,
            applications=[emr.CfnCluster.ApplicationProperty(name=name) for name in APPLICATIONS],
            service_role=roles.service_role.role_name,
            job_flow_role=roles.instance_profile.ref,
            security_configuration=self.security_configuration.ref,
            log_uri=log_uri,
            visible_to_all_users=True,
            instances=self._instances(size, key_pair_name, termination_protection),
            auto_termination_policy=emr.CfnCluster.AutoTerminationPolicyProperty(
                idle_timeout=idle_timeout_seconds
            ),
            managed_scaling_policy=_managed_scaling(managed_scaling_limits),
        )
        Tags.of(self.cfn_cluster).add(EMR_MANAGED_TAG_KEY, EMR_MANAGED_TAG_VALUE)
        # EMR needs the roles' policies and the routes to S3 and to its endpoint
        # while it provisions, and without these dependencies it could start first.
        self.cfn_cluster.node.add_dependency(roles)
        self.cfn_cluster.node.add_dependency(network)
        self.cfn_cluster.node.add_dependency(self.local_disk_key)

        for configuration in [*default_configurations(), *configurations]:
            self.add_configuration(configuration)
        for action in bootstrap_actions:
            self.add_bootstrap_action(action)
        for step in steps:
            self.add_step(step)
        self._acknowledge_findings(key_pair_name)

    @property
    def cluster_id(self) -> str:
        """The cluster id (j-...)."""
        return self.cfn_cluster.ref

    @property
    def primary_dns_name(self) -> str:
        """DNS name of the primary node (the private one, since the subnet is private)."""
        return self.cfn_cluster.attr_master_public_dns

    def add_configuration(self, configuration: Configuration) -> None:
        """Merge ``configuration`` into the cluster's configurations.

        Raises ValueError when a property is already set to a different value,
        because EMR would keep only one of them.
        """
        existing = self._configurations.get(configuration.classification)
        merged = configuration if existing is None else _merge(existing, configuration)
        self._configurations[configuration.classification] = merged
        self.cfn_cluster.configurations = [_render(item) for item in self._configurations.values()]

    def add_bootstrap_action(self, action: emr.CfnCluster.BootstrapActionConfigProperty) -> None:
        """Append a bootstrap action; EMR runs them in order on every node before applications start."""
        self._bootstrap_actions.append(action)
        self.cfn_cluster.bootstrap_actions = list(self._bootstrap_actions)

    def add_step(self, step: emr.CfnCluster.StepConfigProperty) -> None:
        """Append a step that runs once when the cluster starts; changing steps replaces the cluster."""
        self._steps.append(step)
        self.cfn_cluster.steps = list(self._steps)

    def _security_configuration_document(self) -> dict[str, object]:
        return {
            "EncryptionConfiguration": {
                "EnableAtRestEncryption": True,
                "EnableInTransitEncryption": False,
                "AtRestEncryptionConfiguration": {
                    "S3EncryptionConfiguration": {"EncryptionMode": "SSE-S3"},
                    "LocalDiskEncryptionConfiguration": {
                        "EncryptionKeyProviderType": "AwsKms",
                        "AwsKmsKey": self.local_disk_key.key_arn,
                        "EnableEbsEncryption": True,
                    },
                },
            },
            "InstanceMetadataServiceConfiguration": {
                "MinimumInstanceMetadataServiceVersion": 2,
                "HttpPutResponseHopLimit": 1,
            },
        }

    def _instances(
        self, size: ClusterSize, key_pair_name: str | None, termination_protection: bool
    ) -> emr.CfnCluster.JobFlowInstancesConfigProperty:
        task_groups = None
        if size.task_instance_count > 0:
            task_groups = [
                emr.CfnCluster.InstanceGroupConfigProperty(
                    name="Task",
                    instance_type=size.task_instance_type,
                    instance_count=size.task_instance_count,
                    # Without a bid price EMR caps the Spot price at the On-Demand price.
                    market="SPOT" if size.task_spot else "ON_DEMAND",
                )
            ]
        return emr.CfnCluster.JobFlowInstancesConfigProperty(
            master_instance_group=emr.CfnCluster.InstanceGroupConfigProperty(
                name="Primary",
                instance_type=size.primary_instance_type,
                instance_count=1,
                market="ON_DEMAND",
            ),
            core_instance_group=emr.CfnCluster.InstanceGroupConfigProperty(
                name="Core",
                instance_type=size.core_instance_type,
                instance_count=size.core_instance_count,
                market="ON_DEMAND",
            ),
            task_instance_groups=task_groups,
            ec2_subnet_id=self.network.cluster_subnet.subnet_id,
            emr_managed_master_security_group=self.network.primary_security_group.security_group_id,
            emr_managed_slave_security_group=self.network.core_security_group.security_group_id,
            service_access_security_group=(
                self.network.service_access_security_group.security_group_id
            ),
            ec2_key_name=key_pair_name,
            keep_job_flow_alive_when_no_steps=True,
            termination_protected=termination_protection,
        )

    def _acknowledge_findings(self, key_pair_name: str | None) -> None:
        validations = Validations.of(self.cfn_cluster)
        validations.acknowledge(
            Acknowledgment(
                id="AwsSolutions-EMR4",
                reason="Local disk encryption is enabled (AwsKms, EBS included) under "
                "EncryptionConfiguration, where EMR reads it; cdk-nag 3.0.2 looks for "
                "EnableAtRestEncryption at the document's top level and misses it.",
            )
        )
        # TODO: in-transit encryption needs a PEM certificate bundle in S3. A custom
        # resource that issues one, or a private CA, would let this finding go.
        validations.acknowledge(
            Acknowledgment(
                id="AwsSolutions-EMR5",
                reason="In-transit encryption needs a TLS certificate bundle that the stack "
                "does not issue. Node traffic stays inside private subnets without internet routes.",
            )
        )
        if key_pair_name is None:
            validations.acknowledge(
                Acknowledgment(
                    id="AwsSolutions-EMR6",
                    reason="No SSH key pair is configured, because nodes are reached through SSM "
                    "Session Manager and JupyterHub users sign in with generated passwords.",
                )
            )


def _managed_scaling(
    limits: tuple[int, int] | None,
) -> emr.CfnCluster.ManagedScalingPolicyProperty | None:
    if limits is None:
        return None
    minimum, maximum = limits
    return emr.CfnCluster.ManagedScalingPolicyProperty(
        compute_limits=emr.CfnCluster.ComputeLimitsProperty(
            unit_type="Instances",
            minimum_capacity_units=minimum,
            maximum_capacity_units=maximum,
        )
    )


def _merge(existing: Configuration, extra: Configuration) -> Configuration:
    properties = dict(existing.properties)
    for key, value in extra.properties.items():
        if key in properties and properties[key] != value:
            raise ValueError(
                f"configuration {existing.classification}: {key} is already {properties[key]!r}, "
                f"cannot also set {value!r}"
            )
        properties[key] = value
    nested = {item.classification: item for item in existing.nested}
    for item in extra.nested:
        nested[item.classification] = (
            item if item.classification not in nested else _merge(nested[item.classification], item)
        )
    return Configuration(existing.classification, properties, tuple(nested.values()))


def _render(configuration: Configuration) -> emr.CfnCluster.ConfigurationProperty:
    return emr.CfnCluster.ConfigurationProperty(
        classification=configuration.classification,
        configuration_properties=dict(configuration.properties) or None,
        configurations=[_render(item) for item in configuration.nested] or None,
    )
