"""The JupyterHub construct, built in an empty stack, and its wiring into the app's cluster."""

from __future__ import annotations

import json
from typing import Any

import nbformat
import pytest

from infra import jupyter
from infra.jupyter import DEFAULT_USER
from infra.jupyter import EMR_PYSPARK_KERNEL
from infra.jupyter import PERSISTENCE_PREFIX
from infra.jupyter import USER_TAG
from infra.jupyter import USERS_SCRIPT
from infra.jupyter import content_hash
from infra.jupyter import render_notebook
from infra.jupyter import validate_user_names

USERS = ("alice", "bob")
ARTIFACT_ZIP = "s3://artifacts-bucket/artifacts/spark_jobs/0.1.0+abc/spark_jobs.zip"


@pytest.fixture(scope="module")
def built(build_in_empty_stack) -> dict[str, Any]:
    """The construct in an empty stack with its own buckets, network and role."""
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_s3 as s3

    from infra.network import Network

    parts: dict[str, Any] = {}

    def build(stack):
        data = s3.Bucket(stack, "Data")
        artifacts = s3.Bucket(stack, "Artifacts")
        logs = s3.Bucket(stack, "Logs")
        network = Network(stack, "Network", flow_logs_bucket=logs)
        role = iam.Role(stack, "InstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"))
        parts["stack"] = stack
        parts["jupyter"] = jupyter.JupyterHub(
            stack,
            "JupyterHub",
            user_names=USERS,
            network=network,
            instance_role=role,
            persistence_bucket=data,
            artifacts_bucket=artifacts,
            artifacts_prefix="artifacts/",
            runs_uri=data.s3_url_for_object("runs"),
            artifact_uri=ARTIFACT_ZIP,
        )

    parts["template"] = build_in_empty_stack(build)
    parts["json"] = parts["template"].to_json()
    return parts


def resources_of(template_json: dict, resource_type: str) -> dict[str, dict]:
    return {
        logical_id: resource
        for logical_id, resource in template_json["Resources"].items()
        if resource["Type"] == resource_type
    }


def logical_id_of(template_json: dict, resource_type: str, prefix: str) -> str:
    (logical_id,) = [
        key for key in resources_of(template_json, resource_type) if key.startswith(prefix)
    ]
    return logical_id


def policy_statements(template_json: dict) -> list[tuple[list, dict]]:
    """Return (roles, statement) for every statement of every AWS::IAM::Policy."""
    statements = []
    for policy in resources_of(template_json, "AWS::IAM::Policy").values():
        roles = policy["Properties"].get("Roles", [])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            statements.append((roles, statement))
    return statements


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def service_name_suffix(service_name: Any) -> str:
    """Return the last segment of an endpoint's ServiceName, for example ``.ssm``."""
    if isinstance(service_name, dict):
        return service_name["Fn::Join"][1][-1]
    return "." + service_name.rsplit(".", 1)[1]


def secrets_of(template_json: dict) -> dict[str, dict]:
    return resources_of(template_json, "AWS::SecretsManager::Secret")


def secret_for(template_json: dict, user: str) -> tuple[str, dict]:
    for logical_id, secret in secrets_of(template_json).items():
        tags = {tag["Key"]: tag["Value"] for tag in secret["Properties"].get("Tags", [])}
        if tags.get(USER_TAG) == user:
            return logical_id, secret
    raise AssertionError(f"no secret tagged {USER_TAG}={user}")


# User names.


def test_user_names_accept_linux_names():
    assert validate_user_names(["alice", "data_team-1"]) == ("alice", "data_team-1")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([], "the list is empty"),
        (["Alice"], "invalid JupyterHub user name 'Alice'"),
        (["a" * 33], "invalid JupyterHub user name"),
        ([DEFAULT_USER], "EMR's built-in admin"),
        (["alice", "alice"], "'alice' is listed twice"),
    ],
)
def test_user_names_reject_invalid_lists(names, message):
    with pytest.raises(ValueError, match=message):
        validate_user_names(names)


# Secrets.


def test_one_generated_secret_per_user(built):
    secrets = secrets_of(built["json"])
    assert len(secrets) == len(USERS)
    for user in USERS:
        _, secret = secret_for(built["json"], user)
        generator = secret["Properties"]["GenerateSecretString"]
        assert generator["PasswordLength"] >= 20
        assert ":" in generator["ExcludeCharacters"]


def test_secrets_hold_no_password_in_template(built):
    for secret in secrets_of(built["json"]).values():
        assert "SecretString" not in secret["Properties"]


def test_only_instance_role_is_granted_secret_reads(built):
    role_id = logical_id_of(built["json"], "AWS::IAM::Role", "InstanceRole")
    readers = [
        roles
        for roles, statement in policy_statements(built["json"])
        if "secretsmanager:GetSecretValue" in as_list(statement["Action"])
    ]
    assert readers
    for roles in readers:
        assert roles == [{"Ref": role_id}]


def test_instance_role_reads_exactly_the_user_secrets(built):
    secret_ids = set(secrets_of(built["json"]))
    granted = set()
    for _, statement in policy_statements(built["json"]):
        if "secretsmanager:GetSecretValue" in as_list(statement["Action"]):
            granted |= {resource["Ref"] for resource in as_list(statement["Resource"])}
    assert granted == secret_ids


def test_secret_policy_denies_everyone_else(built):
    role_id = logical_id_of(built["json"], "AWS::IAM::Role", "InstanceRole")
    policies = resources_of(built["json"], "AWS::SecretsManager::ResourcePolicy")
    assert len(policies) == len(USERS)
    for user in USERS:
        secret_id, _ = secret_for(built["json"], user)
        (policy,) = [
            policy
            for policy in policies.values()
            if policy["Properties"]["SecretId"] == {"Ref": secret_id}
        ]
        (deny,) = [
            statement
            for statement in policy["Properties"]["ResourcePolicy"]["Statement"]
            if statement["Effect"] == "Deny"
        ]
        assert deny["Principal"] == {"AWS": "*"}
        assert deny["Action"] == "secretsmanager:GetSecretValue"
        conditions = deny["Condition"]
        assert conditions["ArnNotEquals"]["aws:PrincipalArn"] == {
            "Fn::GetAtt": [role_id, "Arn"]
        }
        assert conditions["StringNotEquals"][f"aws:PrincipalTag/{USER_TAG}"] == user


# User steps.


def test_first_step_locks_default_user_or_terminates(built):
    lock = built["jupyter"].steps[0]
    args = built["stack"].resolve(lock.hadoop_jar_step.args)
    assert args[1] == "lock-default"
    assert lock.action_on_failure == "TERMINATE_CLUSTER"


def test_second_step_creates_every_user_from_its_secret(built):
    create = built["jupyter"].steps[1]
    args = built["stack"].resolve(create.hadoop_jar_step.args)
    assert args[1] == "create-users"
    for user in USERS:
        secret_id, _ = secret_for(built["json"], user)
        assert {"Fn::Join": ["", [f"{user}=", {"Ref": secret_id}]]} in args


def test_steps_run_published_script_version(built):
    steps = built["jupyter"].steps
    expected_key = f"artifacts/jupyterhub/{content_hash(USERS_SCRIPT)}/{USERS_SCRIPT.name}"
    for step in steps:
        script_uri = json.dumps(built["stack"].resolve(step.hadoop_jar_step.args[0]))
        assert expected_key in script_uri
        assert "script-runner.jar" in json.dumps(built["stack"].resolve(step.hadoop_jar_step.jar))


def test_script_deployment_keeps_older_versions(built):
    deployments = resources_of(built["json"], "Custom::CDKBucketDeployment")
    (script,) = [
        deployment
        for deployment in deployments.values()
        if "jupyterhub/" in str(deployment["Properties"].get("DestinationBucketKeyPrefix"))
    ]
    assert script["Properties"]["Prune"] is False


# Persistence and the course notebook.


def test_persistence_configuration_points_at_bucket(built):
    (configuration,) = built["jupyter"].configurations
    data_id = logical_id_of(built["json"], "AWS::S3::Bucket", "Data")
    assert configuration.classification == "jupyter-s3-conf"
    assert configuration.properties["s3.persistence.enabled"] == "true"
    bucket = built["stack"].resolve(configuration.properties["s3.persistence.bucket"])
    assert bucket == {"Ref": data_id}


def test_instance_role_writes_persistence_prefix(built):
    data_id = logical_id_of(built["json"], "AWS::S3::Bucket", "Data")
    expected = {"Fn::Join": ["", [{"Fn::GetAtt": [data_id, "Arn"]}, f"/{PERSISTENCE_PREFIX}/*"]]}
    writes = [
        statement
        for _, statement in policy_statements(built["json"])
        if "s3:PutObject" in as_list(statement["Action"])
        and statement.get("Sid") == "JupyterNotebooks"
    ]
    assert [statement["Resource"] for statement in writes] == [expected]


def test_instance_role_lists_only_persistence_prefix(built):
    (listing,) = [
        statement
        for _, statement in policy_statements(built["json"])
        if statement.get("Sid") == "JupyterNotebookFolders"
    ]
    prefixes = listing["Condition"]["StringLike"]["s3:prefix"]
    assert prefixes == [PERSISTENCE_PREFIX, f"{PERSISTENCE_PREFIX}/*"]


def test_notebook_deployment_never_prunes_user_work(built):
    deployments = resources_of(built["json"], "Custom::CDKBucketDeployment")
    (notebooks,) = [
        deployment
        for deployment in deployments.values()
        if deployment["Properties"].get("DestinationBucketKeyPrefix") == f"{PERSISTENCE_PREFIX}/"
    ]
    assert notebooks["Properties"]["Prune"] is False
    assert notebooks["Properties"]["SourceObjectKeys"]
    assert len(notebooks["Properties"]["SourceObjectKeys"]) == len(USERS)


def test_notebook_key_carries_content_hash(built):
    key_name = built["jupyter"].notebook_key_name
    assert key_name == f"als_course-{content_hash(jupyter.COURSE_NOTEBOOK)}.ipynb"


def test_notebook_deployment_fills_bucket_names_at_deploy_time(built):
    deployments = resources_of(built["json"], "Custom::CDKBucketDeployment")
    (notebooks,) = [
        deployment
        for deployment in deployments.values()
        if deployment["Properties"].get("DestinationBucketKeyPrefix") == f"{PERSISTENCE_PREFIX}/"
    ]
    data_id = logical_id_of(built["json"], "AWS::S3::Bucket", "Data")
    markers = json.dumps(notebooks["Properties"]["SourceMarkers"])
    assert data_id in markers
    assert all(
        config == {"jsonEscape": True}
        for config in notebooks["Properties"]["SourceMarkersConfig"]
    )


def test_rendered_notebook_injects_parameters_after_parameters_cell():
    notebook = nbformat.read(jupyter.COURSE_NOTEBOOK, as_version=4)
    rendered = render_notebook(notebook, {"output": "s3://data/runs/x", "artifact": ARTIFACT_ZIP})
    tags = [cell["metadata"].get("tags", []) for cell in rendered["cells"]]
    position = tags.index(["parameters"])
    assert tags[position + 1] == ["injected-parameters"]
    injected = "".join(rendered["cells"][position + 1]["source"])
    assert "output = 's3://data/runs/x'" in injected
    assert f"artifact = {ARTIFACT_ZIP!r}" in injected


def test_rendered_notebook_is_valid_nbformat():
    notebook = nbformat.read(jupyter.COURSE_NOTEBOOK, as_version=4)
    rendered = render_notebook(notebook, {"output": "x"}, kernelspec=EMR_PYSPARK_KERNEL)
    nbformat.validate(nbformat.from_dict(rendered))


def test_rendered_notebook_opens_in_pyspark_kernel():
    notebook = nbformat.read(jupyter.COURSE_NOTEBOOK, as_version=4)
    rendered = render_notebook(notebook, {"output": "x"}, kernelspec=EMR_PYSPARK_KERNEL)
    assert rendered["metadata"]["kernelspec"]["name"] == "pysparkkernel"


def test_rendered_notebook_leaves_source_unchanged():
    notebook = nbformat.read(jupyter.COURSE_NOTEBOOK, as_version=4)
    cell_count = len(notebook.cells)
    render_notebook(notebook, {"output": "x"})
    assert len(notebook.cells) == cell_count


def test_render_requires_parameters_cell():
    notebook = {"cells": [{"cell_type": "code", "metadata": {}, "source": "x = 1"}]}
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        render_notebook(notebook, {"output": "x"})


# Access through SSM.


@pytest.mark.parametrize("service", ["ssm", "ssmmessages", "ec2messages", "secretsmanager"])
def test_interface_endpoint_with_private_dns(built, service):
    endpoints = [
        endpoint["Properties"]
        for endpoint in resources_of(built["json"], "AWS::EC2::VPCEndpoint").values()
        if service_name_suffix(endpoint["Properties"]["ServiceName"]) == f".{service}"
    ]
    assert len(endpoints) == 1
    assert endpoints[0]["VpcEndpointType"] == "Interface"
    assert endpoints[0]["PrivateDnsEnabled"] is True


def test_instance_role_has_ssm_managed_policy(built):
    role_id = logical_id_of(built["json"], "AWS::IAM::Role", "InstanceRole")
    role = built["json"]["Resources"][role_id]
    policies = json.dumps(role["Properties"]["ManagedPolicyArns"])
    assert "policy/AmazonSSMManagedInstanceCore" in policies


def test_construct_opens_no_ingress_from_anywhere(built):
    for group in resources_of(built["json"], "AWS::EC2::SecurityGroup").values():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            assert rule.get("CidrIp") != "0.0.0.0/0"
            assert rule.get("CidrIpv6") != "::/0"
    for rule in resources_of(built["json"], "AWS::EC2::SecurityGroupIngress").values():
        assert rule["Properties"].get("CidrIp") != "0.0.0.0/0"
        assert rule["Properties"].get("CidrIpv6") != "::/0"


# Wiring into the app's cluster.


def cluster_of(app) -> tuple[str, dict]:
    (item,) = app.resources("AWS::EMR::Cluster").items()
    return item


def test_app_cluster_has_persistence_configuration(default_app):
    _, cluster = cluster_of(default_app)
    (data_id,) = [key for key in default_app.resources("AWS::S3::Bucket") if "Data" in key]
    (persistence,) = [
        configuration
        for configuration in cluster["Properties"]["Configurations"]
        if configuration["Classification"] == "jupyter-s3-conf"
    ]
    properties = persistence["ConfigurationProperties"]
    assert properties["s3.persistence.enabled"] == "true"
    assert properties["s3.persistence.bucket"] == {"Ref": data_id}


def test_app_cluster_locks_default_user_before_creating_users(default_app):
    _, cluster = cluster_of(default_app)
    steps = cluster["Properties"]["Steps"]
    arguments = [step["HadoopJarStep"]["Args"][1] for step in steps]
    assert arguments.index("lock-default") < arguments.index("create-users")
    (lock,) = [step for step in steps if step["HadoopJarStep"]["Args"][1] == "lock-default"]
    assert lock["ActionOnFailure"] == "TERMINATE_CLUSTER"


def test_app_cluster_waits_for_script_and_endpoints(default_app):
    _, cluster = cluster_of(default_app)
    depends_on = cluster.get("DependsOn", [])
    endpoints = default_app.resources("AWS::EC2::VPCEndpoint")
    secrets_endpoint = [key for key in endpoints if "SecretsManager" in key]
    script_deployment = [
        key
        for key in default_app.resources("Custom::CDKBucketDeployment")
        if "UsersScript" in key
    ]
    assert secrets_endpoint
    assert script_deployment
    assert set(secrets_endpoint + script_deployment) <= set(depends_on)


def test_app_secrets_carry_environment_tags(default_app):
    from infra import naming

    secrets = default_app.resources("AWS::SecretsManager::Secret")
    assert secrets
    for secret in secrets.values():
        tags = {tag["Key"]: tag["Value"] for tag in secret["Properties"]["Tags"]}
        assert tags[naming.PROJECT_TAG] == naming.PROJECT
        assert naming.ENVIRONMENT_TAG in tags
        assert USER_TAG in tags


def test_app_has_no_ingress_from_anywhere(default_app):
    groups = default_app.resources("AWS::EC2::SecurityGroup").values()
    inline = [rule for group in groups for rule in group["Properties"].get("SecurityGroupIngress", [])]
    separate = [
        rule["Properties"] for rule in default_app.resources("AWS::EC2::SecurityGroupIngress").values()
    ]
    for rule in inline + separate:
        assert rule.get("CidrIp") != "0.0.0.0/0"
        assert rule.get("CidrIpv6") != "::/0"


def deployed_notebooks(app) -> dict[str, dict]:
    """Return {user: notebook} for the course notebooks staged as assets of the app."""
    notebooks = {}
    for path in app.assembly_dir.glob("asset.*/*/als_course-*.ipynb"):
        notebooks[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
    return notebooks


def injected_parameters(notebook: dict) -> dict[str, str]:
    (cell,) = [
        cell
        for cell in notebook["cells"]
        if "injected-parameters" in cell["metadata"].get("tags", [])
    ]
    lines = "".join(cell["source"]).splitlines()
    return dict(line.split(" = ", 1) for line in lines if " = " in line)


def test_app_deploys_notebook_for_every_user(default_app):
    users = default_app.stack.config.jupyter_users
    assert users
    assert sorted(deployed_notebooks(default_app)) == sorted(users)


def test_app_notebook_imports_versioned_artifact(default_app):
    for notebook in deployed_notebooks(default_app).values():
        artifact = injected_parameters(notebook)["artifact"]
        assert "/artifacts/spark_jobs/" in artifact
        assert artifact.endswith("/spark_jobs.zip'")
        assert notebook["metadata"]["kernelspec"]["name"] == "pysparkkernel"


def test_app_notebook_writes_runs_in_data_bucket(default_app):
    (deployment,) = [
        resource
        for key, resource in default_app.resources("Custom::CDKBucketDeployment").items()
        if "CourseNotebook" in key
    ]
    markers = deployment["Properties"]["SourceMarkers"][0]
    (data_id,) = [key for key in default_app.resources("AWS::S3::Bucket") if "Data" in key]
    (data_marker,) = [marker for marker, value in markers.items() if value == {"Ref": data_id}]
    for user, notebook in deployed_notebooks(default_app).items():
        output = injected_parameters(notebook)["output"]
        assert output == f"'s3://{data_marker}/runs/notebook-{user}'"


LIVY_PORT = 8998


def test_app_cluster_runs_jupyterhub_with_livy(default_app):
    _, cluster = cluster_of(default_app)
    applications = {application["Name"] for application in cluster["Properties"]["Applications"]}
    assert {"JupyterHub", "Livy", "Spark"} <= applications


def test_app_primary_group_admits_livy_from_primary(default_app):
    # JupyterHub's PySpark kernel calls Livy on the primary node, where both run.
    # The primary group's rule from itself on every TCP port admits that port.
    _, cluster = cluster_of(default_app)
    primary = cluster["Properties"]["Instances"]["EmrManagedMasterSecurityGroup"]
    rules = [
        rule["Properties"]
        for rule in default_app.resources("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == primary
        and rule["Properties"].get("SourceSecurityGroupId") == primary
        and rule["Properties"]["IpProtocol"] == "tcp"
    ]
    assert any(rule["FromPort"] <= LIVY_PORT <= rule["ToPort"] for rule in rules)
