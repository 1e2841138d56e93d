"""The password command against moto's Secrets Manager, with secrets the tests create."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infra import naming
from ops import password

REGION = "eu-west-1"
ENVIRONMENT = "dev"


def tags(environment: str, user: str | None) -> list[dict[str, str]]:
    values = [
        {"Key": naming.PROJECT_TAG, "Value": naming.PROJECT},
        {"Key": naming.ENVIRONMENT_TAG, "Value": environment},
    ]
    if user is not None:
        values.append({"Key": password.USER_TAG, "Value": user})
    return values


@pytest.fixture
def secretsmanager(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=REGION)
        client.create_secret(Name="a1", SecretString="alice-dev", Tags=tags(ENVIRONMENT, "alice"))
        client.create_secret(Name="b1", SecretString="bob-dev", Tags=tags(ENVIRONMENT, "bob"))
        client.create_secret(Name="a2", SecretString="alice-prod", Tags=tags("prod", "alice"))
        # A secret of the environment that is not a JupyterHub password.
        client.create_secret(
            Name="other", SecretString="not-a-password", Tags=tags(ENVIRONMENT, None)
        )
        yield client


def deny_get_secret_value(client) -> None:
    """Make GetSecretValue fail as AWS does when the secret's policy denies the caller."""

    def deny(**_):
        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "explicit deny"}},
            "GetSecretValue",
        )

    client.meta.events.register("before-call.secretsmanager.GetSecretValue", deny)


def test_environment_secrets_maps_users_to_arns(secretsmanager):
    secrets = password.environment_secrets(secretsmanager, ENVIRONMENT)
    assert sorted(secrets) == ["alice", "bob"]
    assert all(arn.startswith("arn:aws:secretsmanager:") for arn in secrets.values())


def test_read_password_picks_environment(secretsmanager):
    assert password.read_password(secretsmanager, ENVIRONMENT, "alice") == "alice-dev"
    assert password.read_password(secretsmanager, "prod", "alice") == "alice-prod"


def test_read_password_unknown_user_lists_users(secretsmanager):
    with pytest.raises(password.PasswordError, match="its users are: alice, bob"):
        password.read_password(secretsmanager, ENVIRONMENT, "carol")


def test_read_password_unknown_environment(secretsmanager):
    with pytest.raises(password.PasswordError, match="no JupyterHub passwords found"):
        password.read_password(secretsmanager, "staging", "alice")


def test_read_password_denied_names_required_tag(secretsmanager):
    deny_get_secret_value(secretsmanager)
    with pytest.raises(password.PasswordError, match="tagged jupyterhub-user=alice"):
        password.read_password(secretsmanager, ENVIRONMENT, "alice")


def test_main_prints_only_password(secretsmanager, capsys):
    status = password.main(["--environment", ENVIRONMENT, "--user", "bob", "--region", REGION])
    captured = capsys.readouterr()
    assert status == 0
    assert captured.out == "bob-dev\n"


def test_main_reports_unknown_user(secretsmanager, capsys):
    status = password.main(["--environment", ENVIRONMENT, "--user", "carol", "--region", REGION])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert "user 'carol' not found" in captured.err


def test_main_rejects_invalid_environment(capsys):
    status = password.main(["--environment", "Bad Name", "--user", "alice"])
    assert status == 2
    assert "invalid environment name" in capsys.readouterr().err


def test_main_without_credentials(monkeypatch, tmp_path, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-config"))
    # No instance metadata lookup: it would leave this machine.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    status = password.main(["--environment", ENVIRONMENT, "--user", "alice", "--region", REGION])
    assert status == 2
    assert "no AWS credentials found" in capsys.readouterr().err
