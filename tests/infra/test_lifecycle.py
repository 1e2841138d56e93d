"""Template assertions for the deletion order and the security-group cleanup resource."""

from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_emr as emr
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

from infra.lifecycle import CLEANUP_RESOURCE_TYPE
from infra.lifecycle import Lifecycle

pytestmark = pytest.mark.infra

RETAINING_POLICIES = {"Retain", "Snapshot", "RetainExceptOnCreate"}


def build_stack(*, destroy_everything: bool) -> tuple[cdk.Stack, dict[str, object]]:
    """Build two security groups, two buckets and a cluster, then add Lifecycle over them."""
    app = cdk.App()
    stack = cdk.Stack(app, "LifecycleTest")
    vpc = ec2.Vpc(
        stack,
        "Vpc",
        max_azs=1,
        nat_gateways=0,
        subnet_configuration=[
            ec2.SubnetConfiguration(name="Cluster", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        ],
    )
    primary = ec2.SecurityGroup(stack, "Primary", vpc=vpc)
    core = ec2.SecurityGroup(stack, "Core", vpc=vpc)
    primary.add_ingress_rule(core, ec2.Port.all_tcp(), "core to primary")
    logs_bucket = s3.Bucket(
        stack, "Logs", removal_policy=cdk.RemovalPolicy.DESTROY, auto_delete_objects=True
    )
    data_bucket = s3.Bucket(stack, "Data", removal_policy=cdk.RemovalPolicy.RETAIN)
    cluster = emr.CfnCluster(
        stack,
        "Cluster",
        name="test",
        release_label="emr-7.13.0",
        job_flow_role="instance-profile",
        service_role="service-role",
        log_uri=logs_bucket.s3_url_for_object("emr-logs/"),
        instances=emr.CfnCluster.JobFlowInstancesConfigProperty(
            emr_managed_master_security_group=primary.security_group_id,
            emr_managed_slave_security_group=core.security_group_id,
            ec2_subnet_id=vpc.isolated_subnets[0].subnet_id,
        ),
    )
    Lifecycle(
        stack,
        "Lifecycle",
        cluster=cluster,
        security_groups=[primary, core],
        buckets=[logs_bucket, data_bucket],
        destroy_everything=destroy_everything,
    )
    ids = {
        "cluster": stack.get_logical_id(cluster),
        "primary": stack.get_logical_id(primary.node.default_child),
        "core": stack.get_logical_id(core.node.default_child),
        "logs_bucket": stack.get_logical_id(logs_bucket.node.default_child),
        "logs_emptier": stack.get_logical_id(
            logs_bucket.node.find_child("AutoDeleteObjectsCustomResource").node.default_child
        ),
        "data_bucket": stack.get_logical_id(data_bucket.node.default_child),
    }
    return stack, ids


def references(value: object) -> set[str]:
    """Return the logical ids that Ref and Fn::GetAtt inside ``value`` point to."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            else:
                found |= references(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= references(inner)
    return found


def dependencies(resources: dict[str, dict]) -> dict[str, set[str]]:
    """Map each logical id to the resources it depends on directly (DependsOn, Ref, GetAtt)."""
    graph: dict[str, set[str]] = {}
    for logical_id, resource in resources.items():
        depends_on = resource.get("DependsOn", [])
        if isinstance(depends_on, str):
            depends_on = [depends_on]
        found = set(depends_on) | references(resource.get("Properties", {}))
        graph[logical_id] = {target for target in found if target in resources}
    return graph


def deleted_before(graph: dict[str, set[str]], first: str, then: str) -> bool:
    """Whether CloudFormation must finish deleting ``first`` before it starts on ``then``.

    That is true exactly when ``first`` depends on ``then``, directly or transitively.
    """
    pending = [first]
    seen: set[str] = set()
    while pending:
        current = pending.pop()
        for target in graph.get(current, ()):
            if target == then:
                return True
            if target not in seen:
                seen.add(target)
                pending.append(target)
    return False


@pytest.fixture(scope="module")
def ci_stack():
    stack, ids = build_stack(destroy_everything=True)
    template = Template.from_stack(stack)
    resources = template.to_json()["Resources"]
    cleanup_ids = list(template.find_resources(CLEANUP_RESOURCE_TYPE))
    assert len(cleanup_ids) == 1
    ids["cleanup"] = cleanup_ids[0]
    return template, resources, dependencies(resources), ids


def test_cleanup_resource_lists_every_cluster_group(ci_stack):
    template, _resources, _graph, ids = ci_stack
    template.has_resource_properties(
        CLEANUP_RESOURCE_TYPE,
        {
            "SecurityGroupIds": [
                {"Fn::GetAtt": [ids["primary"], "GroupId"]},
                {"Fn::GetAtt": [ids["core"], "GroupId"]},
            ]
        },
    )


def test_cleanup_resource_fails_within_ten_minutes(ci_stack):
    _template, resources, _graph, ids = ci_stack
    assert int(resources[ids["cleanup"]]["Properties"]["ServiceTimeout"]) == 600


def test_cluster_deleted_before_rules_are_revoked(ci_stack):
    _template, _resources, graph, ids = ci_stack
    assert deleted_before(graph, ids["cluster"], ids["cleanup"])


def test_rules_revoked_before_groups_deleted(ci_stack):
    _template, _resources, graph, ids = ci_stack
    assert deleted_before(graph, ids["cleanup"], ids["primary"])
    assert deleted_before(graph, ids["cleanup"], ids["core"])


def test_stack_rule_resources_deleted_before_cleanup(ci_stack):
    _template, resources, graph, ids = ci_stack
    rule_ids = [
        logical_id
        for logical_id, resource in resources.items()
        if resource["Type"] in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress")
    ]
    assert rule_ids, "the test stack declares one ingress rule between the groups"
    for rule_id in rule_ids:
        assert deleted_before(graph, rule_id, ids["cleanup"]), rule_id


def test_cluster_deleted_before_log_bucket_emptied(ci_stack):
    _template, _resources, graph, ids = ci_stack
    assert deleted_before(graph, ids["cluster"], ids["logs_emptier"])
    assert deleted_before(graph, ids["logs_emptier"], ids["logs_bucket"])


def test_cluster_deleted_before_bucket_without_emptier(ci_stack):
    _template, _resources, graph, ids = ci_stack
    assert deleted_before(graph, ids["cluster"], ids["data_bucket"])


def test_cleanup_function_runs_outside_the_vpc(ci_stack):
    template, _resources, _graph, _ids = ci_stack
    functions = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "security_group_cleanup.handler"}}
    )
    assert len(functions) == 1
    properties = next(iter(functions.values()))["Properties"]
    assert "VpcConfig" not in properties


def test_cleanup_function_logs_to_stack_log_group(ci_stack):
    template, resources, _graph, _ids = ci_stack
    functions = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "security_group_cleanup.handler"}}
    )
    logging_config = next(iter(functions.values()))["Properties"]["LoggingConfig"]
    (log_group_id,) = references(logging_config)
    assert resources[log_group_id]["Type"] == "AWS::Logs::LogGroup"
    assert resources[log_group_id]["DeletionPolicy"] == "Delete"


def test_cleanup_role_revokes_only_listed_groups(ci_stack):
    template, _resources, _graph, ids = ci_stack
    statements = [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "ec2:RevokeSecurityGroupIngress" in statement["Action"]
    ]
    assert len(statements) == 1
    revoke = statements[0]
    assert revoke["Action"] == ["ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress"]
    assert "*" not in revoke["Resource"]
    assert len(revoke["Resource"]) == 2
    groups = {name for name in references(revoke["Resource"]) if not name.startswith("AWS::")}
    assert groups == {ids["primary"], ids["core"]}


def test_ci_synthesis_retains_nothing(ci_stack):
    _template, resources, _graph, _ids = ci_stack
    retained = {
        logical_id: resource.get("DeletionPolicy")
        for logical_id, resource in resources.items()
        if resource.get("DeletionPolicy") in RETAINING_POLICIES
        or resource.get("UpdateReplacePolicy") in RETAINING_POLICIES
    }
    assert retained == {}


def test_production_synthesis_keeps_retained_bucket():
    stack, ids = build_stack(destroy_everything=False)
    resources = Template.from_stack(stack).to_json()["Resources"]
    assert resources[ids["data_bucket"]]["DeletionPolicy"] == "Retain"
    assert resources[ids["logs_bucket"]]["DeletionPolicy"] == "Delete"


def test_lifecycle_rejects_empty_group_list():
    app = cdk.App()
    stack = cdk.Stack(app, "Empty")
    cluster = cdk.CfnResource(stack, "Cluster", type="AWS::EMR::Cluster")
    with pytest.raises(ValueError, match="at least one security group"):
        Lifecycle(
            stack,
            "Lifecycle",
            cluster=cluster,
            security_groups=[],
            buckets=[],
            destroy_everything=True,
        )


# The whole app, as `cdk synth -c environment=...` builds it --------------------


def only_resource(resources: dict[str, dict], resource_type: str) -> str:
    matches = [key for key, resource in resources.items() if resource["Type"] == resource_type]
    assert len(matches) == 1, f"expected one {resource_type}, found {matches}"
    return matches[0]


def bucket_emptiers(resources: dict[str, dict]) -> dict[str, str]:
    """Map each bucket's logical id to the custom resource that empties it on deletion."""
    emptiers = {}
    for logical_id, resource in resources.items():
        if resource["Type"] == "Custom::S3AutoDeleteObjects":
            (bucket_id,) = references(resource["Properties"]["BucketName"])
            emptiers[bucket_id] = logical_id
    return emptiers


@pytest.fixture(scope="module")
def ci_app(synthesize_environment):
    return synthesize_environment(environment="ci-1", production=False)


@pytest.fixture(scope="module")
def production_app(synthesize_environment):
    return synthesize_environment(environment="prod", production=True)


def test_ci_app_retains_nothing(ci_app):
    resources = ci_app.template_json["Resources"]
    retained = sorted(
        logical_id
        for logical_id, resource in resources.items()
        if resource.get("DeletionPolicy") in RETAINING_POLICIES
        or resource.get("UpdateReplacePolicy") in RETAINING_POLICIES
    )
    assert retained == []


def test_ci_app_empties_every_bucket(ci_app):
    resources = ci_app.template_json["Resources"]
    buckets = {key for key, value in resources.items() if value["Type"] == "AWS::S3::Bucket"}
    assert len(buckets) == 3
    assert set(bucket_emptiers(resources)) == buckets


def test_ci_app_deletes_cluster_before_emptying_buckets(ci_app):
    resources = ci_app.template_json["Resources"]
    graph = dependencies(resources)
    cluster = only_resource(resources, "AWS::EMR::Cluster")
    for bucket, emptier in bucket_emptiers(resources).items():
        assert deleted_before(graph, cluster, emptier), bucket
        assert deleted_before(graph, emptier, bucket), bucket


def test_ci_app_revokes_rules_of_cluster_groups(ci_app):
    resources = ci_app.template_json["Resources"]
    cleanup = only_resource(resources, CLEANUP_RESOURCE_TYPE)
    cluster = resources[only_resource(resources, "AWS::EMR::Cluster")]
    instances = cluster["Properties"]["Instances"]
    cluster_groups = references(
        [
            instances["EmrManagedMasterSecurityGroup"],
            instances["EmrManagedSlaveSecurityGroup"],
            instances["ServiceAccessSecurityGroup"],
        ]
    )
    listed = references(resources[cleanup]["Properties"]["SecurityGroupIds"])
    assert listed == cluster_groups
    assert len(listed) == 3


def test_ci_app_orders_group_deletion(ci_app):
    resources = ci_app.template_json["Resources"]
    graph = dependencies(resources)
    cleanup = only_resource(resources, CLEANUP_RESOURCE_TYPE)
    cluster = only_resource(resources, "AWS::EMR::Cluster")
    assert deleted_before(graph, cluster, cleanup)
    for group in references(resources[cleanup]["Properties"]["SecurityGroupIds"]):
        assert deleted_before(graph, cleanup, group), group
    rules = [
        key
        for key, value in resources.items()
        if value["Type"] in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress")
    ]
    assert rules
    for rule in rules:
        assert deleted_before(graph, rule, cleanup), rule


def test_ci_app_cluster_terminates_itself(ci_app):
    resources = ci_app.template_json["Resources"]
    cluster = resources[only_resource(resources, "AWS::EMR::Cluster")]["Properties"]
    assert cluster["AutoTerminationPolicy"]["IdleTimeout"] == 3600
    assert cluster["Instances"].get("TerminationProtected", False) is False


def test_ci_app_stack_not_termination_protected(ci_app):
    assert ci_app.stack.termination_protection is False


def test_production_app_retains_buckets(production_app):
    resources = production_app.template_json["Resources"]
    buckets = {key: value for key, value in resources.items() if value["Type"] == "AWS::S3::Bucket"}
    assert len(buckets) == 3
    for logical_id, bucket in buckets.items():
        assert bucket["DeletionPolicy"] == "Retain", logical_id
        assert bucket["UpdateReplacePolicy"] == "Retain", logical_id
    assert bucket_emptiers(resources) == {}


def test_production_app_still_orders_cluster_first(production_app):
    resources = production_app.template_json["Resources"]
    graph = dependencies(resources)
    cluster = only_resource(resources, "AWS::EMR::Cluster")
    cleanup = only_resource(resources, CLEANUP_RESOURCE_TYPE)
    assert deleted_before(graph, cluster, cleanup)
    for bucket in (key for key, value in resources.items() if value["Type"] == "AWS::S3::Bucket"):
        assert deleted_before(graph, cluster, bucket), bucket
