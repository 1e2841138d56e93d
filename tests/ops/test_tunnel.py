"""The tunnel command against moto's CloudFormation and EMR, with fake aws and plugin programs."""

from __future__ import annotations

import json
import os
import shlex
import stat

import boto3
import pytest
from moto import mock_aws

from infra import naming
from ops import tunnel

REGION = "eu-west-1"
ENVIRONMENT = "dev"

INSTANCE_GROUPS = [
    {"InstanceRole": "MASTER", "InstanceType": "m5.xlarge", "InstanceCount": 1},
    {"InstanceRole": "CORE", "InstanceType": "m5.xlarge", "InstanceCount": 2},
]


def deploy_environment(cluster_id: str | None) -> None:
    """Create the environment's stack in moto, with a ClusterId output unless None."""
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    if cluster_id is not None:
        template["Outputs"] = {naming.OUTPUT_CLUSTER_ID: {"Value": cluster_id}}
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=naming.stack_name(ENVIRONMENT), TemplateBody=json.dumps(template)
    )


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


@pytest.fixture
def cluster(aws) -> dict[str, str]:
    """A waiting cluster in moto and the stack that outputs its id."""
    emr = boto3.client("emr", region_name=REGION)
    cluster_id = emr.run_job_flow(
        Name="course",
        ReleaseLabel="emr-7.13.0",
        Instances={"InstanceGroups": INSTANCE_GROUPS, "KeepJobFlowAliveWhenNoSteps": True},
        JobFlowRole="instance-profile",
        ServiceRole="service-role",
    )["JobFlowId"]
    deploy_environment(cluster_id)
    (primary,) = emr.list_instances(ClusterId=cluster_id, InstanceGroupTypes=["MASTER"])[
        "Instances"
    ]
    return {"cluster_id": cluster_id, "primary": primary["Ec2InstanceId"]}


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """Put fake `aws` and `session-manager-plugin` first on PATH; return the call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("aws", "session-manager-plugin"):
        program = bin_dir / name
        program.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "{name} $*" >>"{log}"\n')
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def printed_commands(output: str) -> list[list[str]]:
    return [shlex.split(line) for line in output.splitlines() if line.startswith("aws ")]


def forwarded_ports(command: list[str]) -> dict[str, list[str]]:
    return json.loads(command[command.index("--parameters") + 1])


def test_primary_instance_is_primary_node(cluster):
    emr = boto3.client("emr", region_name=REGION)
    assert tunnel.primary_instance_id(emr, cluster["cluster_id"]) == cluster["primary"]


def test_primary_instance_of_terminated_cluster(cluster):
    emr = boto3.client("emr", region_name=REGION)
    emr.terminate_job_flows(JobFlowIds=[cluster["cluster_id"]])
    with pytest.raises(tunnel.TunnelError, match="TERMINATED and has no primary node"):
        tunnel.primary_instance_id(emr, cluster["cluster_id"])


def test_session_command_forwards_one_port():
    forward = tunnel.Forward("JupyterHub", 9443, 19443, "https")
    command = tunnel.session_command("i-0123", forward, region=REGION, profile="course")
    assert command[:3] == ["aws", "ssm", "start-session"]
    assert command[command.index("--target") + 1] == "i-0123"
    assert command[command.index("--document-name") + 1] == "AWS-StartPortForwardingSession"
    assert forwarded_ports(command) == {"portNumber": ["9443"], "localPortNumber": ["19443"]}
    assert command[command.index("--profile") + 1] == "course"


def test_main_prints_jupyterhub_and_history_commands(cluster, capsys):
    status = tunnel.main(["--environment", ENVIRONMENT, "--region", REGION])
    output = capsys.readouterr().out
    commands = printed_commands(output)
    assert status == 0
    assert [forwarded_ports(command)["portNumber"] for command in commands] == [
        ["9443"],
        ["18080"],
    ]
    for command in commands:
        assert command[command.index("--target") + 1] == cluster["primary"]
        assert command[command.index("--region") + 1] == REGION
    assert "https://localhost:9443" in output
    assert "http://localhost:18080" in output


def test_main_uses_chosen_local_ports(cluster, capsys):
    arguments = ["--environment", ENVIRONMENT, "--region", REGION]
    status = tunnel.main([*arguments, "--jupyterhub-port", "8443", "--history-port", "28080"])
    commands = printed_commands(capsys.readouterr().out)
    assert status == 0
    assert [forwarded_ports(command)["localPortNumber"] for command in commands] == [
        ["8443"],
        ["28080"],
    ]


def test_main_run_starts_both_sessions(cluster, fake_tools):
    status = tunnel.main(["--environment", ENVIRONMENT, "--region", REGION, "--run"])
    calls = sorted(fake_tools.read_text().splitlines())
    assert status == 0
    assert len(calls) == 2
    assert all(call.startswith("aws ssm start-session") for call in calls)
    assert all(f"--target {cluster['primary']}" in call for call in calls)


def test_main_run_without_plugin(cluster, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    status = tunnel.main(["--environment", ENVIRONMENT, "--region", REGION, "--run"])
    assert status == 2
    assert "session-manager-plugin not found" in capsys.readouterr().err


def test_main_reports_missing_environment(aws, capsys):
    status = tunnel.main(["--environment", "staging", "--region", REGION])
    assert status == 2
    assert "no stack als-recommender-staging" in capsys.readouterr().err


def test_main_reports_missing_cluster_output(aws, capsys):
    deploy_environment(None)
    status = tunnel.main(["--environment", ENVIRONMENT, "--region", REGION])
    assert status == 2
    assert "has no output ClusterId" in capsys.readouterr().err


def test_main_without_credentials(monkeypatch, tmp_path, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-config"))
    # No instance metadata lookup: it would leave this machine.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    status = tunnel.main(["--environment", ENVIRONMENT, "--region", REGION])
    assert status == 2
    assert "no AWS credentials found" in capsys.readouterr().err
