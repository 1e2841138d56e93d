"""cfn-lint over every synthesized template: zero errors (warnings are reported, not failed)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytestmark = pytest.mark.infra

logger = logging.getLogger(__name__)

PRODUCTION_OPTIONS = {
    "environment": "prod",
    "production": True,
    "taskInstanceCount": 2,
    "managedScalingMinUnits": 2,
    "managedScalingMaxUnits": 6,
    "uiAllowedCidr": "10.20.0.0/16",
}


def lint_errors(assembly_dir: Path) -> list[str]:
    """Lint every template in a cloud assembly; return the error-level matches as text."""
    from cfnlint.api import ManualArgs
    from cfnlint.api import lint_file

    templates = sorted(assembly_dir.rglob("*.template.json"))
    assert templates, f"no templates in {assembly_dir}"
    errors = []
    for template in templates:
        for match in lint_file(template, ManualArgs(regions=["us-east-1"])):
            rule_id = match.rule.id
            text = f"{template.name}: {rule_id} {match.message}"
            if rule_id.startswith("E"):
                errors.append(text)
            else:
                logger.info("cfn-lint %s", text)
    return errors


def test_default_templates_have_no_errors(default_app):
    assert lint_errors(default_app.assembly_dir) == []


def test_production_templates_have_no_errors(synthesize_environment):
    assert lint_errors(synthesize_environment(**PRODUCTION_OPTIONS).assembly_dir) == []
