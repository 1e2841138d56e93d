"""The EMR cluster, built in an empty stack: release, applications, configurations and security."""

from __future__ import annotations

import pytest

from infra.cluster import APPLICATIONS
from infra.cluster import PYSPARK_PYTHON
from infra.cluster import ClusterSize
from infra.cluster import Configuration
from infra.cluster import EmrCluster
from infra.cluster import bootstrap_action
from infra.cluster import command_runner_step
from infra.iam import ClusterRoles
from infra.network import EMR_MANAGED_TAG_KEY
from infra.network import Network
from infra.storage import ARTIFACTS_PREFIX
from infra.storage import EMR_LOG_PREFIX
from infra.storage import Storage

pytestmark = pytest.mark.infra

SIZE = ClusterSize(
    primary_instance_type="m5.xlarge",
    core_instance_type="r5.2xlarge",
    core_instance_count=3,
    task_instance_type="m5.2xlarge",
    task_instance_count=0,
)


def build_cluster(build_in_empty_stack, *, extend=None, **options):
    """Build storage, network, roles and a cluster; ``extend(cluster)`` runs before synthesis."""
    parts = {}

    def build(stack):
        storage = Storage(stack, "Storage", retain=False, log_retention_days=30)
        network = Network(stack, "Network", flow_logs_bucket=storage.logs_bucket)
        roles = ClusterRoles(
            stack,
            "Roles",
            data_bucket=storage.data_bucket,
            artifacts_bucket=storage.artifacts_bucket,
            artifacts_prefix=ARTIFACTS_PREFIX,
            logs_bucket=storage.logs_bucket,
            log_prefix=EMR_LOG_PREFIX,
        )
        arguments = {
            "cluster_name": "als-recommender-test",
            "release_label": "emr-7.13.0",
            "size": SIZE,
            "roles": roles,
            "network": network,
            "log_uri": storage.emr_log_uri,
            "idle_timeout_seconds": 1800,
            **options,
        }
        cluster = EmrCluster(stack, "Emr", **arguments)
        if extend is not None:
            extend(cluster)
        parts.update(stack=stack, cluster=cluster, storage=storage, roles=roles)

    template = build_in_empty_stack(build)
    resources = template.to_json()["Resources"]
    stack = parts["stack"]
    ids = {
        "cluster": stack.get_logical_id(parts["cluster"].cfn_cluster),
        "security_configuration": stack.get_logical_id(parts["cluster"].security_configuration),
        "key": stack.get_logical_id(parts["cluster"].local_disk_key.node.default_child),
        "logs_bucket": stack.get_logical_id(parts["storage"].logs_bucket.node.default_child),
        "instance_role": stack.get_logical_id(parts["roles"].instance_role.node.default_child),
        "service_role": stack.get_logical_id(parts["roles"].service_role.node.default_child),
    }
    return resources, ids


@pytest.fixture(scope="module")
def default_cluster(build_in_empty_stack):
    return build_cluster(build_in_empty_stack)


@pytest.fixture(scope="module")
def full_cluster(build_in_empty_stack):
    def extend(cluster):
        cluster.add_configuration(
            Configuration("spark-defaults", {"spark.sql.shuffle.partitions": "64"})
        )
        cluster.add_bootstrap_action(bootstrap_action("Second", "s3://bucket/second.sh"))
        cluster.add_step(command_runner_step("Hello", ["echo", "hello"]))

    return build_cluster(
        build_in_empty_stack,
        extend=extend,
        size=ClusterSize(
            primary_instance_type="m5.xlarge",
            core_instance_type="m5.xlarge",
            core_instance_count=2,
            task_instance_type="c5.2xlarge",
            task_instance_count=4,
            task_spot=True,
        ),
        key_pair_name="course-admin",
        termination_protection=True,
        managed_scaling_limits=(2, 8),
        configurations=[Configuration("livy-conf", {"livy.server.session.timeout": "2h"})],
        bootstrap_actions=[bootstrap_action("First", "s3://bucket/first.sh", ["--flag"])],
    )


def cluster_properties(built):
    resources, ids = built
    return resources[ids["cluster"]]["Properties"]


def configuration(properties, classification):
    (found,) = [
        item for item in properties["Configurations"] if item["Classification"] == classification
    ]
    return found


def test_release_label(default_cluster):
    assert cluster_properties(default_cluster)["ReleaseLabel"] == "emr-7.13.0"


def test_applications(default_cluster):
    names = [item["Name"] for item in cluster_properties(default_cluster)["Applications"]]
    assert names == list(APPLICATIONS)
    assert set(names) == {"Hadoop", "Spark", "JupyterHub", "Livy"}


def test_pyspark_python_exported(default_cluster):
    spark_env = configuration(cluster_properties(default_cluster), "spark-env")
    (export,) = spark_env["Configurations"]
    assert export["Classification"] == "export"
    assert export["ConfigurationProperties"]["PYSPARK_PYTHON"] == "/usr/bin/python3.11"
    assert PYSPARK_PYTHON == "/usr/bin/python3.11"


def test_spark_defaults_use_python_311(default_cluster):
    defaults = configuration(cluster_properties(default_cluster), "spark-defaults")
    assert defaults["ConfigurationProperties"]["spark.pyspark.python"] == PYSPARK_PYTHON


def test_logs_go_to_log_bucket(default_cluster):
    _resources, ids = default_cluster
    log_uri = cluster_properties(default_cluster)["LogUri"]
    assert log_uri == {
        "Fn::Join": ["", ["s3://", {"Ref": ids["logs_bucket"]}, f"/{EMR_LOG_PREFIX}"]]
    }


def test_idle_timeout(default_cluster):
    policy = cluster_properties(default_cluster)["AutoTerminationPolicy"]
    assert policy == {"IdleTimeout": 1800}


def test_instance_groups(default_cluster):
    instances = cluster_properties(default_cluster)["Instances"]
    assert instances["MasterInstanceGroup"]["InstanceCount"] == 1
    assert instances["MasterInstanceGroup"]["InstanceType"] == "m5.xlarge"
    assert instances["CoreInstanceGroup"]["InstanceCount"] == 3
    assert instances["CoreInstanceGroup"]["InstanceType"] == "r5.2xlarge"
    assert "TaskInstanceGroups" not in instances


def test_termination_protection_off_by_default(default_cluster):
    assert cluster_properties(default_cluster)["Instances"]["TerminationProtected"] is False


def test_no_managed_scaling_by_default(default_cluster):
    assert "ManagedScalingPolicy" not in cluster_properties(default_cluster)


def test_no_key_pair_by_default(default_cluster):
    assert "Ec2KeyName" not in cluster_properties(default_cluster)["Instances"]


def test_emr_managed_security_groups_set(default_cluster):
    instances = cluster_properties(default_cluster)["Instances"]
    for key in (
        "EmrManagedMasterSecurityGroup",
        "EmrManagedSlaveSecurityGroup",
        "ServiceAccessSecurityGroup",
    ):
        assert "Fn::GetAtt" in instances[key], key


def test_cluster_tagged_for_emr_managed_policy(default_cluster):
    tags = {tag["Key"]: tag["Value"] for tag in cluster_properties(default_cluster)["Tags"]}
    assert tags[EMR_MANAGED_TAG_KEY] == "true"


def test_roles_from_stack(default_cluster):
    _resources, ids = default_cluster
    properties = cluster_properties(default_cluster)
    assert properties["ServiceRole"] == {"Ref": ids["service_role"]}
    assert "Ref" in properties["JobFlowRole"]


def test_cluster_waits_for_role_policies(default_cluster):
    resources, ids = default_cluster
    depends_on = resources[ids["cluster"]]["DependsOn"]
    policies = [
        logical_id
        for logical_id, item in resources.items()
        if item["Type"] == "AWS::IAM::Policy"
        and {"Ref": ids["instance_role"]} in item["Properties"]["Roles"]
    ]
    assert policies
    assert set(policies) <= set(depends_on)


def security_configuration(built):
    resources, ids = built
    return resources[ids["security_configuration"]]["Properties"]["SecurityConfiguration"]


def test_cluster_uses_security_configuration(default_cluster):
    _resources, ids = default_cluster
    assert cluster_properties(default_cluster)["SecurityConfiguration"] == {
        "Ref": ids["security_configuration"]
    }


def test_s3_encryption_at_rest(default_cluster):
    encryption = security_configuration(default_cluster)["EncryptionConfiguration"]
    assert encryption["EnableAtRestEncryption"] is True
    s3 = encryption["AtRestEncryptionConfiguration"]["S3EncryptionConfiguration"]
    assert s3 == {"EncryptionMode": "SSE-S3"}


def test_local_disk_encryption_with_stack_key(default_cluster):
    _resources, ids = default_cluster
    encryption = security_configuration(default_cluster)["EncryptionConfiguration"]
    local = encryption["AtRestEncryptionConfiguration"]["LocalDiskEncryptionConfiguration"]
    assert local["EncryptionKeyProviderType"] == "AwsKms"
    assert local["AwsKmsKey"] == {"Fn::GetAtt": [ids["key"], "Arn"]}
    assert local["EnableEbsEncryption"] is True


def test_imdsv2_required(default_cluster):
    metadata = security_configuration(default_cluster)["InstanceMetadataServiceConfiguration"]
    assert metadata["MinimumInstanceMetadataServiceVersion"] == 2


def test_local_disk_key_rotates(default_cluster):
    resources, ids = default_cluster
    assert resources[ids["key"]]["Properties"]["EnableKeyRotation"] is True


def test_instance_role_may_use_local_disk_key(default_cluster):
    resources, ids = default_cluster
    statements = [
        statement
        for item in resources.values()
        if item["Type"] == "AWS::IAM::Policy"
        and {"Ref": ids["instance_role"]} in item["Properties"]["Roles"]
        for statement in item["Properties"]["PolicyDocument"]["Statement"]
    ]
    key_statements = [
        statement
        for statement in statements
        if statement["Resource"] == {"Fn::GetAtt": [ids["key"], "Arn"]}
    ]
    assert len(key_statements) == 1
    assert "kms:GenerateDataKey" in key_statements[0]["Action"]
    assert "kms:CreateGrant" not in key_statements[0]["Action"]


def test_task_group_on_spot(full_cluster):
    (task,) = cluster_properties(full_cluster)["Instances"]["TaskInstanceGroups"]
    assert task["Market"] == "SPOT"
    assert task["InstanceCount"] == 4
    assert task["InstanceType"] == "c5.2xlarge"


def test_termination_protection_when_configured(full_cluster):
    assert cluster_properties(full_cluster)["Instances"]["TerminationProtected"] is True


def test_key_pair_when_configured(full_cluster):
    assert cluster_properties(full_cluster)["Instances"]["Ec2KeyName"] == "course-admin"


def test_managed_scaling_limits(full_cluster):
    limits = cluster_properties(full_cluster)["ManagedScalingPolicy"]["ComputeLimits"]
    assert limits["MinimumCapacityUnits"] == 2
    assert limits["MaximumCapacityUnits"] == 8
    assert limits["UnitType"] == "Instances"


def test_extra_configuration_merged_by_classification(full_cluster):
    properties = cluster_properties(full_cluster)
    classifications = [item["Classification"] for item in properties["Configurations"]]
    assert classifications.count("spark-defaults") == 1
    defaults = configuration(properties, "spark-defaults")["ConfigurationProperties"]
    assert defaults["spark.sql.shuffle.partitions"] == "64"
    assert defaults["spark.pyspark.python"] == PYSPARK_PYTHON


def test_keyword_configuration_added(full_cluster):
    livy = configuration(cluster_properties(full_cluster), "livy-conf")
    assert livy["ConfigurationProperties"] == {"livy.server.session.timeout": "2h"}


def test_bootstrap_actions_in_order(full_cluster):
    actions = cluster_properties(full_cluster)["BootstrapActions"]
    assert [action["Name"] for action in actions] == ["First", "Second"]
    assert actions[0]["ScriptBootstrapAction"] == {
        "Path": "s3://bucket/first.sh",
        "Args": ["--flag"],
    }


def test_step_runs_command_runner(full_cluster):
    (step,) = cluster_properties(full_cluster)["Steps"]
    assert step["Name"] == "Hello"
    assert step["HadoopJarStep"] == {"Jar": "command-runner.jar", "Args": ["echo", "hello"]}
    assert step["ActionOnFailure"] == "CONTINUE"


def test_conflicting_configuration_rejected(build_in_empty_stack):
    def extend(cluster):
        cluster.add_configuration(
            Configuration("spark-defaults", {"spark.pyspark.python": "/usr/bin/python3"})
        )

    with pytest.raises(ValueError, match="spark.pyspark.python"):
        build_cluster(build_in_empty_stack, extend=extend)
