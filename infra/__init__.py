"""The CDK app's constructs. Only ``infra.naming`` is importable without aws-cdk-lib."""
