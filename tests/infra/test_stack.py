"""The composed stack: outputs, names and tags of the default environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from infra import naming
from tests.infra.conftest import REPOSITORY
from tests.infra.conftest import cdk_json_context

pytestmark = pytest.mark.infra


def test_stack_name_prefixed_by_environment(default_app):
    assert default_app.stack.stack_name == "als-recommender-dev"


def test_environment_name_changes_stack_name(synthesize_environment):
    synthesized = synthesize_environment(environment="ci-42")
    assert synthesized.stack.stack_name == naming.stack_name("ci-42")


@pytest.mark.parametrize(
    "key",
    [
        naming.OUTPUT_DATA_BUCKET,
        naming.OUTPUT_ARTIFACTS_BUCKET,
        naming.OUTPUT_LOGS_BUCKET,
        naming.OUTPUT_CLUSTER_ID,
        naming.OUTPUT_PRIMARY_DNS,
    ],
)
def test_output_present(default_app, key):
    assert key in default_app.template_json["Outputs"]


def test_cluster_id_output_references_cluster(default_app):
    (cluster_id,) = default_app.resources("AWS::EMR::Cluster")
    assert default_app.template_json["Outputs"][naming.OUTPUT_CLUSTER_ID]["Value"] == {
        "Ref": cluster_id
    }


def test_primary_dns_output_reads_cluster_attribute(default_app):
    (cluster_id,) = default_app.resources("AWS::EMR::Cluster")
    value = default_app.template_json["Outputs"][naming.OUTPUT_PRIMARY_DNS]["Value"]
    assert value == {"Fn::GetAtt": [cluster_id, "MasterPublicDNS"]}


def test_bucket_outputs_reference_distinct_buckets(default_app):
    outputs = default_app.template_json["Outputs"]
    buckets = set(default_app.resources("AWS::S3::Bucket"))
    referenced = {
        outputs[key]["Value"]["Ref"]
        for key in (
            naming.OUTPUT_DATA_BUCKET,
            naming.OUTPUT_ARTIFACTS_BUCKET,
            naming.OUTPUT_LOGS_BUCKET,
        )
    }
    assert referenced == buckets


TAGGABLE_TYPES = [
    "AWS::S3::Bucket",
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::VPCEndpoint",
    "AWS::IAM::Role",
    "AWS::KMS::Key",
    "AWS::EMR::Cluster",
]


@pytest.mark.parametrize("resource_type", TAGGABLE_TYPES)
def test_cost_allocation_tags_on_every_resource(default_app, resource_type):
    resources = default_app.resources(resource_type)
    assert resources, f"no {resource_type} in the template"
    for logical_id, resource in resources.items():
        # CDK's custom resource providers are raw CfnResources that Tags.of cannot
        # reach; they get the tags from the stack tags at deployment instead.
        if "CustomResourceProvider" in logical_id:
            continue
        tags = {tag["Key"]: tag["Value"] for tag in resource["Properties"].get("Tags", [])}
        assert tags.get(naming.PROJECT_TAG) == naming.PROJECT, logical_id
        assert tags.get(naming.ENVIRONMENT_TAG) == "dev", logical_id


def test_stack_tags_cover_resources_without_template_tags(default_app):
    # CloudFormation copies stack tags to every resource it creates that supports tags.
    stack_tags = default_app.stack.tags.tag_values()
    assert stack_tags.get(naming.PROJECT_TAG) == naming.PROJECT
    assert stack_tags.get(naming.ENVIRONMENT_TAG) == "dev"


def test_stack_termination_protection_off_by_default(default_app):
    assert default_app.stack.termination_protection is False


def test_stack_termination_protection_when_configured(synthesize_environment):
    synthesized = synthesize_environment(terminationProtection=True)
    assert synthesized.stack.termination_protection is True


def test_app_synthesizes_without_credentials(tmp_path):
    # The CDK command line runs app.py with the context in CDK_CONTEXT_JSON and the
    # output directory in CDK_OUTDIR; this runs it the same way with no AWS access.
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    environment.update(
        CDK_CONTEXT_JSON=json.dumps(cdk_json_context()),
        CDK_OUTDIR=str(tmp_path),
        AWS_CONFIG_FILE=str(tmp_path / "missing-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "missing-credentials"),
    )
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "als-recommender-dev.template.json").is_file()
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert "missing" not in manifest, "synthesis needed a context lookup"
