"""The network, built in an empty stack: VPC, endpoints, flow logs and the EMR security groups."""

from __future__ import annotations

import pytest

from infra.network import EMR_MANAGED_TAG_KEY
from infra.network import JUPYTERHUB_PORT
from infra.network import SERVICE_ACCESS_PORT
from infra.network import SPARK_HISTORY_PORT
from infra.network import Network

pytestmark = pytest.mark.infra

UI_CIDR = "10.20.0.0/16"


def build_network(build_in_empty_stack, **options):
    parts = {}

    def build(stack):
        from aws_cdk import aws_s3 as s3

        bucket = s3.Bucket(stack, "FlowLogs")
        parts["network"] = Network(stack, "Network", flow_logs_bucket=bucket, **options)
        parts["stack"] = stack

    template = build_in_empty_stack(build)
    network = parts["network"]
    stack = parts["stack"]
    groups = {
        name: stack.get_logical_id(getattr(network, name).node.default_child)
        for name in (
            "primary_security_group",
            "core_security_group",
            "service_access_security_group",
        )
    }
    return template.to_json()["Resources"], groups


@pytest.fixture(scope="module")
def default_network(build_in_empty_stack):
    return build_network(build_in_empty_stack)


@pytest.fixture(scope="module")
def network_with_ui(build_in_empty_stack):
    return build_network(build_in_empty_stack, ui_allowed_cidr=UI_CIDR)


def of_type(resources, resource_type):
    return [item for item in resources.values() if item["Type"] == resource_type]


def ingress_rules(resources, group_id):
    """Return the ingress rules of one group, inline and standalone alike."""
    rules = list(resources[group_id]["Properties"].get("SecurityGroupIngress", []))
    for item in of_type(resources, "AWS::EC2::SecurityGroupIngress"):
        if item["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}:
            rules.append(item["Properties"])
    return rules


def test_two_private_subnets(default_network):
    resources, _groups = default_network
    subnets = of_type(resources, "AWS::EC2::Subnet")
    assert len(subnets) == 2
    assert all(subnet["Properties"]["MapPublicIpOnLaunch"] is False for subnet in subnets)


def test_subnets_in_distinct_zones(default_network):
    resources, _groups = default_network
    zones = [
        str(subnet["Properties"]["AvailabilityZone"])
        for subnet in of_type(resources, "AWS::EC2::Subnet")
    ]
    assert len(set(zones)) == 2


def test_no_internet_or_nat_gateway(default_network):
    resources, _groups = default_network
    assert of_type(resources, "AWS::EC2::InternetGateway") == []
    assert of_type(resources, "AWS::EC2::NatGateway") == []


def test_no_route_to_internet(default_network):
    resources, _groups = default_network
    destinations = [
        item["Properties"].get("DestinationCidrBlock")
        for item in of_type(resources, "AWS::EC2::Route")
    ]
    assert "0.0.0.0/0" not in destinations


def endpoint_services(resources, endpoint_type):
    return [
        str(item["Properties"]["ServiceName"])
        for item in of_type(resources, "AWS::EC2::VPCEndpoint")
        if item["Properties"].get("VpcEndpointType", "Gateway") == endpoint_type
    ]


def test_s3_gateway_endpoint(default_network):
    resources, _groups = default_network
    services = endpoint_services(resources, "Gateway")
    assert len(services) == 1
    assert ".s3" in services[0]


def test_emr_interface_endpoint(default_network):
    resources, _groups = default_network
    services = endpoint_services(resources, "Interface")
    assert any("elasticmapreduce" in service for service in services)


def test_interface_endpoint_reachable_from_cluster_groups_only(default_network):
    resources, groups = default_network
    (endpoint,) = [
        item
        for item in of_type(resources, "AWS::EC2::VPCEndpoint")
        if item["Properties"].get("VpcEndpointType") == "Interface"
    ]
    (group_ref,) = endpoint["Properties"]["SecurityGroupIds"]
    group_id = group_ref["Fn::GetAtt"][0]
    sources = {
        str(rule.get("SourceSecurityGroupId")) for rule in ingress_rules(resources, group_id)
    }
    expected = {
        str({"Fn::GetAtt": [groups["primary_security_group"], "GroupId"]}),
        str({"Fn::GetAtt": [groups["core_security_group"], "GroupId"]}),
    }
    assert sources == expected


def test_flow_logs_to_bucket(default_network):
    resources, _groups = default_network
    (flow_log,) = of_type(resources, "AWS::EC2::FlowLog")
    assert flow_log["Properties"]["LogDestinationType"] == "s3"
    assert flow_log["Properties"]["TrafficType"] == "ALL"


@pytest.mark.parametrize(
    "name", ["primary_security_group", "core_security_group", "service_access_security_group"]
)
def test_security_groups_tagged_for_emr_policy(default_network, name):
    resources, groups = default_network
    tags = {tag["Key"]: tag["Value"] for tag in resources[groups[name]]["Properties"]["Tags"]}
    assert tags[EMR_MANAGED_TAG_KEY] == "true"


def test_subnets_tagged_for_emr_policy(default_network):
    resources, _groups = default_network
    for subnet in of_type(resources, "AWS::EC2::Subnet"):
        tags = {tag["Key"]: tag["Value"] for tag in subnet["Properties"]["Tags"]}
        assert tags[EMR_MANAGED_TAG_KEY] == "true"


def test_service_access_accepts_primary_on_9443(default_network):
    resources, groups = default_network
    rules = ingress_rules(resources, groups["service_access_security_group"])
    assert len(rules) == 1
    assert rules[0]["FromPort"] == SERVICE_ACCESS_PORT
    assert rules[0]["SourceSecurityGroupId"] == {
        "Fn::GetAtt": [groups["primary_security_group"], "GroupId"]
    }


def test_service_access_egress_only_to_cluster_on_8443(default_network):
    resources, groups = default_network
    group_id = groups["service_access_security_group"]
    rules = list(resources[group_id]["Properties"].get("SecurityGroupEgress", []))
    rules += [
        item["Properties"]
        for item in of_type(resources, "AWS::EC2::SecurityGroupEgress")
        if item["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}
    ]
    targets = {str(rule.get("DestinationSecurityGroupId")) for rule in rules}
    assert targets == {
        str({"Fn::GetAtt": [groups["primary_security_group"], "GroupId"]}),
        str({"Fn::GetAtt": [groups["core_security_group"], "GroupId"]}),
    }
    assert {rule["FromPort"] for rule in rules} == {8443}


def test_no_cidr_ingress_by_default(default_network):
    resources, groups = default_network
    for group_id in groups.values():
        assert [rule for rule in ingress_rules(resources, group_id) if "CidrIp" in rule] == []


def test_ui_cidr_reaches_jupyterhub_and_history_only(network_with_ui):
    resources, groups = network_with_ui
    cidr_rules = [
        rule
        for rule in ingress_rules(resources, groups["primary_security_group"])
        if "CidrIp" in rule
    ]
    assert {rule["CidrIp"] for rule in cidr_rules} == {UI_CIDR}
    assert sorted(rule["FromPort"] for rule in cidr_rules) == [JUPYTERHUB_PORT, SPARK_HISTORY_PORT]
    assert all(rule["FromPort"] == rule["ToPort"] for rule in cidr_rules)


def test_ui_cidr_not_on_core_nodes(network_with_ui):
    resources, groups = network_with_ui
    rules = ingress_rules(resources, groups["core_security_group"])
    assert [rule for rule in rules if "CidrIp" in rule] == []


@pytest.mark.parametrize("environment", [{}, {"uiAllowedCidr": "10.20.0.0/16"}])
def test_whole_app_has_no_open_ingress(synthesize_environment, environment):
    resources = synthesize_environment(**environment).template_json["Resources"]
    open_rules = []
    for logical_id, item in resources.items():
        if item["Type"] == "AWS::EC2::SecurityGroup":
            rules = item["Properties"].get("SecurityGroupIngress", [])
        elif item["Type"] == "AWS::EC2::SecurityGroupIngress":
            rules = [item["Properties"]]
        else:
            continue
        open_rules += [
            logical_id
            for rule in rules
            if rule.get("CidrIp") == "0.0.0.0/0" or rule.get("CidrIpv6") == "::/0"
        ]
    assert open_rules == []


def test_imported_vpc_adds_no_network_resources():
    from aws_cdk import App
    from aws_cdk import Environment
    from aws_cdk import Stack
    from aws_cdk import aws_s3 as s3
    from aws_cdk.assertions import Template

    app = App()
    stack = Stack(app, "Imported", env=Environment(account="123456789012", region="eu-west-1"))
    network = Network(
        stack,
        "Network",
        flow_logs_bucket=s3.Bucket(stack, "FlowLogs"),
        vpc_id="vpc-0123456789abcdef0",
    )
    resources = Template.from_stack(stack).to_json()["Resources"]
    assert of_type(resources, "AWS::EC2::VPC") == []
    assert of_type(resources, "AWS::EC2::VPCEndpoint") == []
    assert len(of_type(resources, "AWS::EC2::SecurityGroup")) == 3
    assert network.created_vpc is False
