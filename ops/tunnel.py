"""Forward JupyterHub and the Spark history server from the primary node through SSM.

    python -m ops tunnel --environment dev          # print the two commands
    python -m ops tunnel --environment dev --run    # run them until Ctrl-C

The cluster runs in private subnets with no inbound rule from the internet.
Session Manager port forwarding reaches the primary node through the SSM agent,
which talks to the SSM interface endpoints in the VPC, so no port is opened. The
commands need the AWS CLI and the Session Manager plugin on this machine, and
credentials allowed to call ssm:StartSession on the primary node's instance.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError
from botocore.exceptions import NoRegionError

from ops.environment import OpsError
from ops.environment import find_environment
from ops.environment import open_session
from ops.environment import translate_aws_error

logger = logging.getLogger(__name__)

JUPYTERHUB_PORT = 9443
SPARK_HISTORY_PORT = 18080
PORT_FORWARDING_DOCUMENT = "AWS-StartPortForwardingSession"
# Clusters in these states have a running primary node.
READY_STATES = ("RUNNING", "WAITING")
STARTING_STATES = ("STARTING", "BOOTSTRAPPING")


class TunnelError(OpsError):
    """A cluster or node that cannot be reached, with what to do about it."""


@dataclass(frozen=True)
class Forward:
    """One forwarded port: a service on the primary node and where it appears locally."""

    name: str
    remote_port: int
    local_port: int
    scheme: str

    @property
    def local_url(self) -> str:
        return f"{self.scheme}://localhost:{self.local_port}"


def primary_instance_id(emr, cluster_id: str) -> str:
    """Return the EC2 instance id of the cluster's running primary node, or raise TunnelError."""
    state = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
    if state in STARTING_STATES:
        raise TunnelError(f"cluster {cluster_id} is {state}; rerun when it is WAITING or RUNNING")
    if state not in READY_STATES:
        raise TunnelError(
            f"cluster {cluster_id} is {state} and has no primary node; redeploy the stack to "
            f"start a new cluster"
        )
    instances = emr.list_instances(
        ClusterId=cluster_id, InstanceGroupTypes=["MASTER"], InstanceStates=["RUNNING"]
    )["Instances"]
    if not instances:
        raise TunnelError(f"cluster {cluster_id} has no running primary node")
    return instances[0]["Ec2InstanceId"]


def session_command(
    instance_id: str, forward: Forward, *, region: str, profile: str | None = None
) -> list[str]:
    """Return the ``aws ssm start-session`` argument vector that forwards one port."""
    parameters = {
        "portNumber": [str(forward.remote_port)],
        "localPortNumber": [str(forward.local_port)],
    }
    command = [
        "aws",
        "ssm",
        "start-session",
        "--region",
        region,
        "--target",
        instance_id,
        "--document-name",
        PORT_FORWARDING_DOCUMENT,
        "--parameters",
        json.dumps(parameters, separators=(",", ":")),
    ]
    if profile:
        command += ["--profile", profile]
    return command


def missing_tools() -> list[str]:
    """Return the programs ``--run`` needs that are not on PATH."""
    return [tool for tool in ("aws", "session-manager-plugin") if shutil.which(tool) is None]


def run_sessions(commands: Sequence[Sequence[str]]) -> int:
    """Run the session commands side by side until one ends or Ctrl-C; return the first failure."""
    processes = [subprocess.Popen(list(command)) for command in commands]
    try:
        statuses = [process.wait() for process in processes]
    except KeyboardInterrupt:
        statuses = [0]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait()
    return next((status for status in statuses if status != 0), 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ops tunnel",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--environment", required=True, help="environment name, as deployed")
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    parser.add_argument("--profile", help="AWS named profile (default: the default chain)")
    parser.add_argument(
        "--jupyterhub-port",
        type=int,
        default=JUPYTERHUB_PORT,
        help=f"local port for JupyterHub (default {JUPYTERHUB_PORT})",
    )
    parser.add_argument(
        "--history-port",
        type=int,
        default=SPARK_HISTORY_PORT,
        help=f"local port for the Spark history server (default {SPARK_HISTORY_PORT})",
    )
    parser.add_argument(
        "--run", action="store_true", help="run the sessions instead of printing the commands"
    )
    return parser


def forwards_for(args: argparse.Namespace) -> list[Forward]:
    return [
        # JupyterHub on EMR serves HTTPS with a self-signed certificate.
        Forward("JupyterHub", JUPYTERHUB_PORT, args.jupyterhub_port, "https"),
        Forward("Spark history server", SPARK_HISTORY_PORT, args.history_port, "http"),
    ]


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    action = f"finding the primary node of environment {args.environment}"
    try:
        session = open_session(region=args.region, profile=args.profile)
        environment = find_environment(args.environment, session)
        cluster_id = environment.cluster_id
        instance_id = primary_instance_id(session.client("emr"), cluster_id)
        region = session.region_name
        if region is None:
            raise NoRegionError()
    except OpsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as error:
        message = translate_aws_error(error, action) or f"{action} failed: {error}"
        print(f"error: {message}", file=sys.stderr)
        return 2

    forwards = forwards_for(args)
    commands = [
        session_command(instance_id, forward, region=region, profile=args.profile)
        for forward in forwards
    ]
    if not args.run:
        print(f"# Primary node {instance_id} of cluster {cluster_id}.")
        print("# Run each command in its own terminal and keep it open while you work.")
        for forward, command in zip(forwards, commands, strict=True):
            print(f"\n# {forward.name}, then open {forward.local_url}")
            print(shlex.join(command))
        return 0

    missing = missing_tools()
    if missing:
        print(
            f"error: {' and '.join(missing)} not found on PATH; install the AWS CLI v2 and the "
            f"Session Manager plugin, or run without --run to print the commands",
            file=sys.stderr,
        )
        return 2
    for forward in forwards:
        logger.info("forwarding %s to %s", forward.name, forward.local_url)
    return run_sessions(commands)
