"""The cluster's network: a VPC with private subnets, endpoints and EMR-managed security groups.

The new VPC has no NAT gateway and no internet route from its private subnets.
Cluster nodes reach S3 through a gateway endpoint (free) and the EMR service
through an interface endpoint in each of the two zones. That endpoint costs an
estimated 2 x 730 h x 0.01 USD = 14.60 USD a month plus 0.01 USD per GB, from
us-east-1 list prices. A NAT gateway would cost about 32.85 USD a month plus
0.045 USD per GB, and would open a route to the internet that nothing here
needs, because the job artifact and its pinned wheels come from the artifacts
bucket.
"""

from __future__ import annotations

from aws_cdk import Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3 as s3
from constructs import Construct

# AmazonEMRServicePolicy_v2 lets EMR act only on network resources with this tag.
EMR_MANAGED_TAG_KEY = "for-use-with-amazon-emr-managed-policies"
EMR_MANAGED_TAG_VALUE = "true"

VPC_CIDR = "10.40.0.0/16"
FLOW_LOG_PREFIX = "vpc-flow-logs/"

# Ports on the primary node that an allow-listed network may reach.
JUPYTERHUB_PORT = 9443
SPARK_HISTORY_PORT = 18080
UI_PORTS = {JUPYTERHUB_PORT: "JupyterHub", SPARK_HISTORY_PORT: "Spark history server"}

# EMR's service-access group must accept 9443 from the primary group, and the
# primary group must be allowed to send there, for clusters in private subnets.
SERVICE_ACCESS_PORT = 9443
# EMR's service reaches the nodes on 8443 through the service-access group.
EMR_AGENT_PORT = 8443


class Network(Construct):
    """The VPC, the subnet the cluster runs in, and the three EMR-managed security groups.

    With ``vpc_id`` the VPC is imported by lookup, which needs an account and
    region on the stack, and only the security groups are added to it. That VPC
    must already route its private subnets to S3 and to the EMR endpoint, and
    those subnets need the ``for-use-with-amazon-emr-managed-policies=true`` tag.
    Without ``vpc_id`` a new VPC across two zones is created, with its flow logs
    in ``flow_logs_bucket``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        flow_logs_bucket: s3.IBucket,
        vpc_id: str | None = None,
        ui_allowed_cidr: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.created_vpc = vpc_id is None
        if vpc_id is None:
            self.vpc: ec2.IVpc = self._create_vpc(flow_logs_bucket)
            self.cluster_subnet: ec2.ISubnet = self.vpc.isolated_subnets[0]
        else:
            self.vpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=vpc_id)
            subnets = (
                self.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnets
                or self.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnets
            )
            self.cluster_subnet = subnets[0]

        self.primary_security_group = self._security_group(
            "PrimarySecurityGroup", "EMR-managed security group of the primary node", True
        )
        self.core_security_group = self._security_group(
            "CoreSecurityGroup", "EMR-managed security group of core and task nodes", True
        )
        self.service_access_security_group = self._security_group(
            "ServiceAccessSecurityGroup",
            "EMR-managed service access group for clusters in private subnets",
            False,
        )
        self._connect_cluster_groups()
        self.endpoint_security_group: ec2.SecurityGroup | None = None
        if self.created_vpc:
            self.endpoint_security_group = ec2.SecurityGroup(
                self,
                "EndpointSecurityGroup",
                vpc=self.vpc,
                description="Interface endpoints, reachable over HTTPS from cluster nodes only",
                allow_all_outbound=False,
            )
            for group in (self.primary_security_group, self.core_security_group):
                self.endpoint_security_group.add_ingress_rule(
                    group, ec2.Port.tcp(443), "HTTPS from cluster nodes"
                )
            self.add_interface_endpoint("EmrEndpoint", ec2.InterfaceVpcEndpointAwsService.EMR)
        if ui_allowed_cidr is not None:
            for port, name in UI_PORTS.items():
                self.primary_security_group.add_ingress_rule(
                    ec2.Peer.ipv4(ui_allowed_cidr),
                    ec2.Port.tcp(port),
                    f"{name} from the allowed network",
                )

    def _create_vpc(self, flow_logs_bucket: s3.IBucket) -> ec2.Vpc:
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="Cluster", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=20
                )
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
            flow_logs={
                "ToS3": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_s3(flow_logs_bucket, FLOW_LOG_PREFIX),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        for subnet in vpc.isolated_subnets:
            Tags.of(subnet).add(EMR_MANAGED_TAG_KEY, EMR_MANAGED_TAG_VALUE)
        return vpc

    def add_interface_endpoint(
        self, construct_id: str, service: ec2.IInterfaceVpcEndpointService
    ) -> ec2.InterfaceVpcEndpoint | None:
        """Add a private-DNS interface endpoint to the created VPC. Return None for an imported VPC.

        Each endpoint costs an estimated 14.60 USD a month in two zones (see the module doc).
        Only the cluster's primary and core security groups may reach it, on 443. An
        imported VPC gets none, because a second private-DNS endpoint for a service
        that VPC already has fails to deploy.
        """
        if self.endpoint_security_group is None:
            return None
        return ec2.InterfaceVpcEndpoint(
            self,
            construct_id,
            vpc=self.vpc,
            service=service,
            private_dns_enabled=True,
            open=False,
            security_groups=[self.endpoint_security_group],
            subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
        )

    def _security_group(
        self, construct_id: str, description: str, allow_all_outbound: bool
    ) -> ec2.SecurityGroup:
        group = ec2.SecurityGroup(
            self,
            construct_id,
            vpc=self.vpc,
            description=description,
            allow_all_outbound=allow_all_outbound,
        )
        Tags.of(group).add(EMR_MANAGED_TAG_KEY, EMR_MANAGED_TAG_VALUE)
        return group

    def _connect_cluster_groups(self) -> None:
        # EMR adds these rules itself on first launch when they are missing. Declaring
        # them here lets CloudFormation own and delete them.
        primary = self.primary_security_group
        core = self.core_security_group
        service = self.service_access_security_group
        for group in (primary, core):
            for peer in (primary, core):
                group.add_ingress_rule(peer, ec2.Port.all_tcp(), "Cluster nodes, TCP")
                group.add_ingress_rule(peer, ec2.Port.all_udp(), "Cluster nodes, UDP")
                group.add_ingress_rule(peer, ec2.Port.all_icmp(), "Cluster nodes, ICMP")
            group.add_ingress_rule(service, ec2.Port.tcp(EMR_AGENT_PORT), "EMR service access")
        service.add_ingress_rule(
            primary, ec2.Port.tcp(SERVICE_ACCESS_PORT), "EMR service access from the primary node"
        )
        service.add_egress_rule(
            primary, ec2.Port.tcp(EMR_AGENT_PORT), "EMR service to the primary node"
        )
        service.add_egress_rule(
            core, ec2.Port.tcp(EMR_AGENT_PORT), "EMR service to core and task nodes"
        )
