"""cdk-nag's AwsSolutions pack over the whole app: no unacknowledged finding, no blanket acknowledgment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.infra.conftest import cdk_json_context

pytestmark = pytest.mark.infra

ACKNOWLEDGED_RULES_KEY = "aws:cdk:acknowledged-rules"

# A production environment with every optional feature on, so the rules also see
# retained buckets, task nodes, managed scaling, the UI CIDR and a key pair.
FULL_OPTIONS = {
    "environment": "prod",
    "production": True,
    "terminationProtection": True,
    "taskInstanceCount": 2,
    "managedScalingMinUnits": 2,
    "managedScalingMaxUnits": 6,
    "uiAllowedCidr": "10.20.0.0/16",
    "keyPairName": "course-admin",
}


def synthesize_with_nag(overrides, outdir: Path, extend=None):
    """Synthesize with the AwsSolutions plugin; return the app, the stack and the violations.

    ``extend(stack)`` runs before synthesis, to add resources.
    """
    from app import create_app

    app, stack = create_app({**cdk_json_context(), **overrides}, outdir=str(outdir), nag=True)
    if extend is not None:
        extend(stack)
    failure = None
    try:
        app.synth()
    except Exception as error:  # noqa: BLE001 - jsii raises a generic error on a failed validation
        failure = error
    report_path = outdir / "validation-report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {}
    violations = [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for plugin in report.get("pluginReports", [])
        for violation in plugin.get("violations", [])
        for construct in violation.get("violatingConstructs", [])
    ]
    if failure is not None and not violations:
        raise failure
    return app, stack, violations


@pytest.fixture(scope="module")
def default_nag(tmp_path_factory):
    return synthesize_with_nag({}, tmp_path_factory.mktemp("nag-default"))


@pytest.fixture(scope="module")
def full_options_nag(tmp_path_factory):
    return synthesize_with_nag(FULL_OPTIONS, tmp_path_factory.mktemp("nag-full"))


def acknowledgments(root):
    """Yield (construct, rule id, reason) for every AwsSolutions acknowledgment in the tree.

    CDK records each one as metadata ``{"Annotation::<rule id>": reason}``; CDK's
    own CloudFormation-Validate acknowledgments are left out.
    """
    for construct in root.node.find_all():
        for entry in construct.node.metadata:
            if entry.type != ACKNOWLEDGED_RULES_KEY:
                continue
            for rule, reason in dict(entry.data).items():
                rule_id = rule.split("::", 1)[-1]
                if rule_id.startswith("AwsSolutions-"):
                    yield construct, rule_id, reason


def test_default_environment_has_no_findings(default_nag):
    _app, _stack, violations = default_nag
    assert violations == []


def test_full_options_environment_has_no_findings(full_options_nag):
    _app, _stack, violations = full_options_nag
    assert violations == []


def test_unacknowledged_finding_fails(tmp_path):
    from aws_cdk import aws_s3 as s3

    def add_unsafe_bucket(stack):
        s3.Bucket(stack, "UnloggedBucket", enforce_ssl=True)

    _app, _stack, violations = synthesize_with_nag({}, tmp_path, add_unsafe_bucket)
    assert violations == ["AwsSolutions-S1 at als-recommender-dev/UnloggedBucket/Resource"]


def test_acknowledgments_recorded(default_nag):
    app, _stack, _violations = default_nag
    assert list(acknowledgments(app)), "expected acknowledgments in construct metadata"


def test_no_acknowledgment_on_app_or_stack(default_nag):
    from aws_cdk import App
    from aws_cdk import Stack

    app, _stack, _violations = default_nag
    blanket = [
        f"{rule} on {construct.node.path or 'the app'}"
        for construct, rule, _reason in acknowledgments(app)
        if isinstance(construct, (App, Stack))
    ]
    assert blanket == []


def test_every_acknowledgment_gives_a_reason(default_nag):
    app, _stack, _violations = default_nag
    short = [
        f"{rule} on {construct.node.path}"
        for construct, rule, reason in acknowledgments(app)
        if not reason or len(reason.split()) < 8
    ]
    assert short == []


def test_wildcard_acknowledgments_name_the_finding(default_nag):
    # AwsSolutions-IAM5 without a [Finding] suffix would cover every wildcard of a role.
    app, _stack, _violations = default_nag
    bare = [
        construct.node.path
        for construct, rule, _reason in acknowledgments(app)
        if rule in ("AwsSolutions-IAM5", "AwsSolutions-IAM4")
    ]
    assert bare == []
