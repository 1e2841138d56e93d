#!/usr/bin/env python3
"""The CDK app: one stack per environment, configured from cdk.json context and ``-c`` overrides.

``npx cdk synth`` synthesizes the default environment offline;
``npx cdk deploy -c environment=ci-123`` deploys a second, independent one.
See docs/infrastructure.md for every configuration key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra import naming
from infra.config import ConfigError
from infra.config import EnvironmentConfig
from infra.config import load_config
from infra.stack import RecommenderStack


def create_app(
    context: Mapping[str, object] | None = None,
    *,
    outdir: str | None = None,
    nag: bool | None = None,
) -> tuple[cdk.App, RecommenderStack]:
    """Build the app and its stack; with cdk-nag on, synthesis fails on any unacknowledged finding.

    ``context`` replaces what the CDK command line passes (tests use it). ``nag``
    overrides the nagChecks setting. Raises ConfigError for an invalid
    configuration value.
    """
    # CDK's built-in CloudFormation validation took over half of the synthesis time
    # on a 2-core machine, and cfn-lint checks every template in the test suite.
    app = cdk.App(
        context=dict(context) if context is not None else None,
        outdir=outdir,
        builtin_cloud_formation_validation=False,
    )
    config = load_config(app.node.get_all_context())
    stack = RecommenderStack(
        app,
        naming.stack_name(config.environment),
        config=config,
        env=_stack_environment(config),
    )
    cdk.Tags.of(app).add(naming.PROJECT_TAG, naming.PROJECT)
    cdk.Tags.of(app).add(naming.ENVIRONMENT_TAG, config.environment)
    run_nag = config.nag_checks if nag is None else nag
    if run_nag:
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return app, stack


def _stack_environment(config: EnvironmentConfig) -> cdk.Environment | None:
    # Only a VPC lookup needs a concrete account and region; everything else stays
    # environment-agnostic so that synthesis needs no credentials.
    if config.vpc_id is None:
        return None
    return cdk.Environment(
        account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")
    )


def main() -> int:
    try:
        app, _stack = create_app()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
