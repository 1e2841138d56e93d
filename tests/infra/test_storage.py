"""The buckets, built in an empty stack: access, encryption, logging, lifecycle and removal."""

from __future__ import annotations

import pytest

from infra.storage import ACCESS_LOG_PREFIX
from infra.storage import Storage

pytestmark = pytest.mark.infra

LOG_RETENTION_DAYS = 30


def build_storage(build_in_empty_stack, *, retain: bool):
    built = {}

    def build(stack):
        built["storage"] = Storage(
            stack, "Storage", retain=retain, log_retention_days=LOG_RETENTION_DAYS
        )

    template = build_in_empty_stack(build)
    stack = built["storage"].node.scope
    ids = {
        name: stack.get_logical_id(getattr(built["storage"], name).node.default_child)
        for name in ("data_bucket", "artifacts_bucket", "logs_bucket")
    }
    return template, ids


@pytest.fixture(scope="module")
def disposable(build_in_empty_stack):
    return build_storage(build_in_empty_stack, retain=False)


@pytest.fixture(scope="module")
def retained(build_in_empty_stack):
    return build_storage(build_in_empty_stack, retain=True)


def bucket(template, logical_id):
    return template.to_json()["Resources"][logical_id]


def test_three_buckets(disposable):
    template, _ids = disposable
    template.resource_count_is("AWS::S3::Bucket", 3)


@pytest.mark.parametrize("name", ["data_bucket", "artifacts_bucket", "logs_bucket"])
def test_public_access_blocked(disposable, name):
    template, ids = disposable
    configuration = bucket(template, ids[name])["Properties"]["PublicAccessBlockConfiguration"]
    assert configuration == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }


@pytest.mark.parametrize("name", ["data_bucket", "artifacts_bucket", "logs_bucket"])
def test_encrypted_at_rest(disposable, name):
    template, ids = disposable
    rules = bucket(template, ids[name])["Properties"]["BucketEncryption"][
        "ServerSideEncryptionConfiguration"
    ]
    assert rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


@pytest.mark.parametrize("name", ["data_bucket", "artifacts_bucket", "logs_bucket"])
def test_ssl_enforced(disposable, name):
    template, ids = disposable
    policies = [
        resource
        for resource in template.to_json()["Resources"].values()
        if resource["Type"] == "AWS::S3::BucketPolicy"
        and resource["Properties"]["Bucket"] == {"Ref": ids[name]}
    ]
    assert len(policies) == 1
    statements = policies[0]["Properties"]["PolicyDocument"]["Statement"]
    denials = [
        statement
        for statement in statements
        if statement["Effect"] == "Deny"
        and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert len(denials) == 1
    assert denials[0]["Principal"] == {"AWS": "*"}


def test_artifacts_versioned(disposable):
    template, ids = disposable
    properties = bucket(template, ids["artifacts_bucket"])["Properties"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}


def test_data_bucket_not_versioned(disposable):
    template, ids = disposable
    assert "VersioningConfiguration" not in bucket(template, ids["data_bucket"])["Properties"]


@pytest.mark.parametrize("name", ["data_bucket", "artifacts_bucket"])
def test_access_logged_to_logs_bucket(disposable, name):
    template, ids = disposable
    logging = bucket(template, ids[name])["Properties"]["LoggingConfiguration"]
    assert logging["DestinationBucketName"] == {"Ref": ids["logs_bucket"]}
    assert logging["LogFilePrefix"].startswith(ACCESS_LOG_PREFIX)


def test_logs_expire(disposable):
    template, ids = disposable
    rules = bucket(template, ids["logs_bucket"])["Properties"]["LifecycleConfiguration"]["Rules"]
    expirations = [rule.get("ExpirationInDays") for rule in rules if rule["Status"] == "Enabled"]
    assert LOG_RETENTION_DAYS in expirations


@pytest.mark.parametrize("name", ["data_bucket", "artifacts_bucket", "logs_bucket"])
def test_incomplete_uploads_aborted(disposable, name):
    template, ids = disposable
    rules = bucket(template, ids[name])["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any("AbortIncompleteMultipartUpload" in rule for rule in rules)


@pytest.mark.parametrize("name", ["data_bucket", "artifacts_bucket", "logs_bucket"])
def test_non_production_buckets_deleted(disposable, name):
    template, ids = disposable
    resource = bucket(template, ids[name])
    assert resource["DeletionPolicy"] == "Delete"
    assert resource["UpdateReplacePolicy"] == "Delete"


def test_non_production_buckets_emptied(disposable):
    template, ids = disposable
    emptied = {
        resource["Properties"]["BucketName"]["Ref"]
        for resource in template.to_json()["Resources"].values()
        if resource["Type"] == "Custom::S3AutoDeleteObjects"
    }
    assert emptied == set(ids.values())


@pytest.mark.parametrize("name", ["data_bucket", "artifacts_bucket", "logs_bucket"])
def test_production_buckets_retained(retained, name):
    template, ids = retained
    assert bucket(template, ids[name])["DeletionPolicy"] == "Retain"


def test_production_buckets_not_emptied(retained):
    template, _ids = retained
    template.resource_count_is("Custom::S3AutoDeleteObjects", 0)
