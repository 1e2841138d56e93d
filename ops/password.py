"""Print a JupyterHub user's generated password from Secrets Manager.

    python -m ops password --environment dev --user student

The stack keeps one secret per user, tagged ``project``, ``environment`` and
``jupyterhub-user``. The secret's own policy lets only the cluster's instance
role and IAM principals tagged ``jupyterhub-user=<that user>`` read it, so the
caller's role or user must carry that tag; an administrator adds it with
``aws iam tag-role`` or ``aws iam tag-user``. The password goes to standard
output and nothing else does, so it can be piped to a password manager.
"""

from __future__ import annotations

import argparse
import logging
import sys

from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError

from infra import naming
from ops.environment import OpsError
from ops.environment import open_session
from ops.environment import translate_aws_error

logger = logging.getLogger(__name__)

# Must match infra.jupyter.USER_TAG, which this module does not import because
# that would load the CDK libraries.
USER_TAG = "jupyterhub-user"


class PasswordError(OpsError):
    """A password that cannot be found or read, with what to do about it."""


def _tags(secret: dict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in secret.get("Tags", [])}


def environment_secrets(secretsmanager, environment: str) -> dict[str, str]:
    """Return {user name: secret ARN} for the JupyterHub passwords of one environment."""
    paginator = secretsmanager.get_paginator("list_secrets")
    filters = [{"Key": "tag-key", "Values": [USER_TAG]}]
    secrets: dict[str, str] = {}
    for page in paginator.paginate(Filters=filters):
        for secret in page["SecretList"]:
            tags = _tags(secret)
            belongs = (
                tags.get(naming.PROJECT_TAG) == naming.PROJECT
                and tags.get(naming.ENVIRONMENT_TAG) == environment
            )
            if belongs and USER_TAG in tags:
                secrets[tags[USER_TAG]] = secret["ARN"]
    return secrets


def read_password(secretsmanager, environment: str, user: str) -> str:
    """Return the password of ``user`` in ``environment``.

    Raises PasswordError when the environment has no such user (naming the users
    it has) or when the secret's policy denies the caller.
    """
    secrets = environment_secrets(secretsmanager, environment)
    if user not in secrets:
        if not secrets:
            raise PasswordError(
                f"no JupyterHub passwords found for environment {environment!r}; check the "
                f"environment name and region, and that the stack is deployed"
            )
        raise PasswordError(
            f"user {user!r} not found in environment {environment!r}; "
            f"its users are: {', '.join(sorted(secrets))}"
        )
    try:
        response = secretsmanager.get_secret_value(SecretId=secrets[user])
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("AccessDeniedException", "AccessDenied"):
            raise PasswordError(
                f"access denied reading the password of {user!r}: the secret may be read only "
                f"by the cluster and by IAM principals tagged {USER_TAG}={user}. Ask an "
                f"administrator to tag your IAM role or user with that tag."
            ) from error
        raise
    return response["SecretString"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops password", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--environment", required=True, help="environment name, as deployed")
    parser.add_argument("--user", required=True, help="JupyterHub user name")
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    parser.add_argument("--profile", help="AWS named profile (default: the default chain)")
    return parser


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if not naming.ENVIRONMENT_NAME_PATTERN.match(args.environment):
        print(f"error: invalid environment name {args.environment!r}", file=sys.stderr)
        return 2
    action = f"reading the JupyterHub password of {args.user}"
    try:
        session = open_session(region=args.region, profile=args.profile)
        password = read_password(session.client("secretsmanager"), args.environment, args.user)
    except OpsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as error:
        message = translate_aws_error(error, action) or f"{action} failed: {error}"
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(password)
    return 0
