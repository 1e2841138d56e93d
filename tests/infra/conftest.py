"""Fixtures for the CDK tests: the synthesized app, other environments, and an empty stack.

Synthesis through jsii takes seconds, so each distinct configuration is
synthesized once per session and shared. These syntheses leave cdk-nag out,
because tests/infra/test_nag.py runs it on syntheses of its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]

# Quiet jsii's banner about the Node.js version on every synthesis.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def cdk_json_context() -> dict[str, Any]:
    """Return the context in cdk.json: the configuration defaults and the feature flags."""
    with open(REPOSITORY / "cdk.json", encoding="utf-8") as handle:
        return dict(json.load(handle)["context"])


def feature_flags() -> dict[str, Any]:
    """Return only the feature flags of cdk.json, for stacks built outside app.py."""
    return {key: value for key, value in cdk_json_context().items() if key.startswith("@")}


@dataclass(frozen=True)
class SynthesizedApp:
    """One synthesized app: its stack, the stack's template, and the cloud assembly directory."""

    stack: Any
    template: Any
    template_json: dict[str, Any]
    assembly_dir: Path

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """Return the template's resources of one type, by logical id."""
        return {
            logical_id: resource
            for logical_id, resource in self.template_json["Resources"].items()
            if resource["Type"] == resource_type
        }


def synthesize(
    overrides: Mapping[str, object], outdir: Path, *, nag: bool = False
) -> SynthesizedApp:
    """Synthesize app.py's app with cdk.json context plus ``overrides`` into ``outdir``."""
    from aws_cdk.assertions import Template

    from app import create_app

    context = {**cdk_json_context(), **overrides}
    app, stack = create_app(context, outdir=str(outdir), nag=nag)
    assembly = app.synth()
    template_path = Path(assembly.directory) / stack.template_file
    template_json = json.loads(template_path.read_text(encoding="utf-8"))
    return SynthesizedApp(
        stack=stack,
        template=Template.from_json(template_json),
        template_json=template_json,
        assembly_dir=Path(assembly.directory),
    )


@pytest.fixture(scope="session")
def synthesize_environment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., SynthesizedApp]:
    """Return a function that synthesizes the app with context overrides, once per distinct set."""
    cache: dict[str, SynthesizedApp] = {}

    def build(**overrides: object) -> SynthesizedApp:
        key = json.dumps(overrides, sort_keys=True)
        if key not in cache:
            cache[key] = synthesize(overrides, tmp_path_factory.mktemp("cdk.out"))
        return cache[key]

    return build


@pytest.fixture(scope="session")
def default_app(synthesize_environment: Callable[..., SynthesizedApp]) -> SynthesizedApp:
    """The app as `npx cdk synth` builds it from cdk.json alone."""
    return synthesize_environment()


@pytest.fixture(scope="session")
def build_in_empty_stack() -> Callable[[Callable[[Any], object]], Any]:
    """Return a function that runs ``build(stack)`` in a fresh empty stack and returns its Template."""
    from aws_cdk import App
    from aws_cdk import Stack
    from aws_cdk.assertions import Template

    def build_template(build: Callable[[Any], object]) -> Any:
        app = App(context=feature_flags())
        stack = Stack(app, "Test")
        build(stack)
        return Template.from_stack(stack)

    return build_template
