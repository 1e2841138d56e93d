"""The published job artifact: its deployment, its asset and the cluster's bootstrap action."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import naming
from infra.artifact import BOOTSTRAP_SCRIPT
from infra.artifact import ENTRY_POINT
from infra.artifact import MANIFEST
from infra.artifact import PACKAGE_ZIP
from infra.jobs import BOOTSTRAP_ACTION_NAME

pytestmark = pytest.mark.infra


def render(value: Any) -> Any:
    """Render CloudFormation intrinsics as text: ``{"Ref": "X"}`` becomes ``${X}``."""
    if isinstance(value, dict) and len(value) == 1:
        (key, argument), = value.items()
        if key == "Ref":
            return "${" + argument + "}"
        if key == "Fn::GetAtt":
            return "${" + ".".join(argument) + "}"
        if key == "Fn::Join":
            separator, parts = argument
            return separator.join(str(render(part)) for part in parts)
    if isinstance(value, dict):
        return {key: render(item) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item) for item in value]
    return value


def artifacts_bucket_id(app) -> str:
    return app.template_json["Outputs"][naming.OUTPUT_ARTIFACTS_BUCKET]["Value"]["Ref"]


def job_deployment(app) -> tuple[str, dict[str, Any]]:
    """Return the logical id and properties of the deployment that publishes the job artifact."""
    prefix = app.stack.job_artifact.artifact.s3_prefix + "/"
    matches = [
        (logical_id, resource["Properties"])
        for logical_id, resource in app.resources("Custom::CDKBucketDeployment").items()
        if resource["Properties"].get("DestinationBucketKeyPrefix") == prefix
    ]
    assert len(matches) == 1, f"expected one deployment to {prefix}, found {len(matches)}"
    return matches[0]


def test_deployment_targets_version_prefix(default_app):
    _, properties = job_deployment(default_app)
    version = default_app.stack.job_artifact.version

    assert properties["DestinationBucketKeyPrefix"] == f"artifacts/spark_jobs/{version}/"
    assert properties["DestinationBucketName"] == {"Ref": artifacts_bucket_id(default_app)}


def test_deployment_keeps_older_versions(default_app):
    _, properties = job_deployment(default_app)

    assert properties["Prune"] is False
    assert properties["RetainOnDelete"] is True


def test_deployment_asset_is_built_artifact(default_app):
    _, properties = job_deployment(default_app)
    (object_key,) = properties["SourceObjectKeys"]
    asset_hash = object_key.removesuffix(".zip")
    manifests = list(default_app.assembly_dir.glob("*.assets.json"))
    files = {
        key: entry
        for manifest in manifests
        for key, entry in json.loads(manifest.read_text(encoding="utf-8"))["files"].items()
    }
    source = files[asset_hash]["source"]
    staged = default_app.assembly_dir / source["path"]
    manifest = json.loads((staged / MANIFEST).read_text(encoding="utf-8"))

    assert source["packaging"] == "zip"
    assert manifest["version"] == default_app.stack.job_artifact.version
    assert (staged / ENTRY_POINT).is_file()
    assert (staged / PACKAGE_ZIP).is_file()
    assert (staged / BOOTSTRAP_SCRIPT).is_file()


def test_cluster_runs_bootstrap_action(default_app):
    ((_, cluster),) = default_app.resources("AWS::EMR::Cluster").items()
    actions = render(cluster["Properties"]["BootstrapActions"])
    bucket = "${" + artifacts_bucket_id(default_app) + "}"
    prefix = f"s3://{bucket}/artifacts/spark_jobs/{default_app.stack.job_artifact.version}"
    ours = [action for action in actions if action["Name"] == BOOTSTRAP_ACTION_NAME]

    assert len(ours) == 1
    assert ours[0]["ScriptBootstrapAction"]["Path"] == f"{prefix}/{BOOTSTRAP_SCRIPT}"
    assert ours[0]["ScriptBootstrapAction"]["Args"] == [prefix]


def test_cluster_waits_for_artifact(default_app):
    logical_id, _ = job_deployment(default_app)
    ((_, cluster),) = default_app.resources("AWS::EMR::Cluster").items()

    assert logical_id in cluster.get("DependsOn", [])


def test_artifact_prefix_output(default_app):
    value = render(default_app.template_json["Outputs"][naming.OUTPUT_ARTIFACT_PREFIX]["Value"])
    bucket = "${" + artifacts_bucket_id(default_app) + "}"
    version = default_app.stack.job_artifact.version

    assert value == f"s3://{bucket}/artifacts/spark_jobs/{version}"


def test_instance_role_reads_artifact_prefix(default_app):
    # The bootstrap action and spark-submit read the artifact as the instance role.
    policies = render(list(default_app.resources("AWS::IAM::Policy").values()))
    bucket = "${" + artifacts_bucket_id(default_app) + ".Arn}"
    readable = [
        statement
        for policy in policies
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "s3:GetObject" in statement["Action"]
        and statement["Resource"] == f"{bucket}/artifacts/*"
    ]

    assert readable, "no statement lets the cluster read artifacts/* in the artifacts bucket"
