"""The JupyterHub user script, run by bash against fake sudo, docker, aws and curl.

The fakes keep the container's users in a JSON file and log every command line
they receive, so the tests check what the script did to the accounts and that
no password ever appeared in a command line.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from infra.jupyter import USERS_SCRIPT

DOCUMENTED_DEFAULT_PASSWORD = "jupyter"
HUB_TOKEN = "hub-admin-token"
SECRETS = {
    "arn:aws:secretsmanager:eu-west-1:111122223333:secret:alice": "Alice-password-1",
    "arn:aws:secretsmanager:eu-west-1:111122223333:secret:bob": "Bob-password-2",
}

FAKE_DOCKER = r'''
import json, os, sys
state_path = os.environ["FAKE_STATE"]
state = json.load(open(state_path))
args = sys.argv[1:]
assert args[0] == "exec", args
args = args[1:]
if args[0] == "-i":
    args = args[1:]
assert args[0] == "jupyterhub", args
command, rest = args[1], args[2:]
users = state["users"]
if not state["running"]:
    sys.exit(1)
if command == "true":
    pass
elif command == "id":
    sys.exit(0 if rest[-1] in users else 1)
elif command == "chpasswd":
    for line in sys.stdin.read().splitlines():
        name, password = line.split(":", 1)
        users[name]["password"] = password
        users[name]["hash"] = "$6$" + password[::-1]
elif command == "usermod":
    if not state.get("usermod_ignores_lock"):
        users[rest[-1]]["hash"] = "!" + users[rest[-1]]["hash"]
elif command == "chage":
    users[rest[-1]]["expired"] = rest[:2] == ["--expiredate", "0"]
elif command == "getent":
    user = users[rest[-1]]
    print(f"{rest[-1]}:{user['hash']}:19000:0:99999:7:::")
elif command == "useradd":
    users[rest[-1]] = {"hash": "!", "password": None, "options": rest[:-1]}
elif command == "jupyterhub":
    print("[I 2026-01-01 JupyterHub app] loading config")
    print(state["token"])
else:
    sys.exit(f"fake docker: unknown command {command}")
json.dump(state, open(state_path, "w"))
'''

FAKE_AWS = r'''
import json, os, sys
args = sys.argv[1:]
assert args[:2] == ["secretsmanager", "get-secret-value"], args
options = dict(zip(args[2::2], args[3::2]))
secrets = json.load(open(os.environ["FAKE_STATE"]))["secrets"]
if options["--secret-id"] not in secrets:
    sys.exit(255)
print(secrets[options["--secret-id"]])
'''

FAKE_CURL = r'''
import json, os, sys
state_path = os.environ["FAKE_STATE"]
state = json.load(open(state_path))
config = sys.stdin.read()
state["hub_requests"].append({"config": config, "url": sys.argv[-1]})
json.dump(state, open(state_path, "w"))
sys.stdout.write(str(state["hub_status"]))
'''

LOGGING_WRAPPER = """#!/usr/bin/env bash
printf '%s\\n' "$(basename "$0") $*" >>"$FAKE_LOG"
exec {python} {implementation} "$@"
"""


def _write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_node(tmp_path):
    """A PATH with fake sudo, docker, aws and curl, and the container state they share."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, implementation in (("docker", FAKE_DOCKER), ("aws", FAKE_AWS), ("curl", FAKE_CURL)):
        source = tmp_path / f"fake_{name}.py"
        source.write_text(implementation)
        _write_executable(
            bin_dir / name,
            LOGGING_WRAPPER.format(python=sys.executable, implementation=source),
        )
    _write_executable(
        bin_dir / "sudo",
        '#!/usr/bin/env bash\nprintf \'%s\\n\' "sudo $*" >>"$FAKE_LOG"\nexec "$@"\n',
    )
    state = {
        "running": True,
        "users": {
            "jovyan": {"hash": "$6$" + DOCUMENTED_DEFAULT_PASSWORD[::-1], "password": "jupyter"}
        },
        "secrets": SECRETS,
        "token": HUB_TOKEN,
        "hub_status": 201,
        "hub_requests": [],
    }
    state_path = tmp_path / "state.json"
    state_path.write_text(json.dumps(state))
    log_path = tmp_path / "commands.log"
    log_path.touch()
    return {"bin": bin_dir, "state": state_path, "log": log_path}


def run_script(fake_node, *args: str, **state_changes) -> subprocess.CompletedProcess:
    state = json.loads(fake_node["state"].read_text())
    state.update(state_changes)
    fake_node["state"].write_text(json.dumps(state))
    env = {
        "PATH": f"{fake_node['bin']}:{os.environ['PATH']}",
        "FAKE_STATE": str(fake_node["state"]),
        "FAKE_LOG": str(fake_node["log"]),
        "CONTAINER_WAIT_SECONDS": "0",
        "CONTAINER_POLL_SECONDS": "0",
    }
    return subprocess.run(
        ["bash", str(USERS_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )


def container_users(fake_node) -> dict:
    return json.loads(fake_node["state"].read_text())["users"]


def user_arguments() -> list[str]:
    names = ("alice", "bob")
    return [f"{name}={arn}" for name, arn in zip(names, SECRETS, strict=True)]


def test_lock_default_replaces_documented_password(fake_node):
    result = run_script(fake_node, "lock-default")
    assert result.returncode == 0, result.stderr
    jovyan = container_users(fake_node)["jovyan"]
    assert jovyan["password"] != DOCUMENTED_DEFAULT_PASSWORD
    assert len(jovyan["password"]) >= 32


def test_lock_default_locks_and_expires_account(fake_node):
    result = run_script(fake_node, "lock-default")
    assert result.returncode == 0, result.stderr
    jovyan = container_users(fake_node)["jovyan"]
    assert jovyan["hash"].startswith("!")
    assert jovyan["expired"] is True


def test_lock_default_fails_when_account_stays_unlocked(fake_node):
    result = run_script(fake_node, "lock-default", usermod_ignores_lock=True)
    assert result.returncode != 0
    assert "still unlocked" in result.stderr


def test_lock_default_fails_when_container_never_starts(fake_node):
    result = run_script(fake_node, "lock-default", running=False)
    assert result.returncode != 0
    assert "container jupyterhub not running" in result.stderr


def test_lock_default_succeeds_without_default_user(fake_node):
    result = run_script(fake_node, "lock-default", users={})
    assert result.returncode == 0, result.stderr
    assert "does not exist" in result.stderr


def test_create_users_sets_passwords_from_secrets(fake_node):
    result = run_script(fake_node, "create-users", "eu-west-1", *user_arguments())
    assert result.returncode == 0, result.stderr
    users = container_users(fake_node)
    assert users["alice"]["password"] == "Alice-password-1"
    assert users["bob"]["password"] == "Bob-password-2"


def test_create_users_gives_each_user_a_home_and_shell(fake_node):
    result = run_script(fake_node, "create-users", "eu-west-1", *user_arguments())
    assert result.returncode == 0, result.stderr
    options = container_users(fake_node)["alice"]["options"]
    assert "--create-home" in options
    assert options[options.index("--shell") + 1] == "/bin/bash"


def test_create_users_registers_users_with_hub(fake_node):
    result = run_script(fake_node, "create-users", "eu-west-1", *user_arguments())
    assert result.returncode == 0, result.stderr
    requests = json.loads(fake_node["state"].read_text())["hub_requests"]
    assert [request["url"].rsplit("/", 1)[1] for request in requests] == ["alice", "bob"]
    assert all(f"token {HUB_TOKEN}" in request["config"] for request in requests)


def test_create_users_keeps_secrets_out_of_command_lines(fake_node):
    result = run_script(fake_node, "create-users", "eu-west-1", *user_arguments())
    assert result.returncode == 0, result.stderr
    command_lines = fake_node["log"].read_text()
    for password in SECRETS.values():
        assert password not in command_lines
    assert HUB_TOKEN not in command_lines


def test_create_users_keeps_secrets_out_of_step_log(fake_node):
    result = run_script(fake_node, "create-users", "eu-west-1", *user_arguments())
    assert result.returncode == 0, result.stderr
    for password in SECRETS.values():
        assert password not in result.stdout + result.stderr


def test_create_users_resets_existing_user_password(fake_node):
    run_script(fake_node, "create-users", "eu-west-1", *user_arguments())
    users = container_users(fake_node)
    users["alice"]["password"] = "changed-by-hand"
    result = run_script(
        fake_node, "create-users", "eu-west-1", *user_arguments(), users=users, hub_status=409
    )
    assert result.returncode == 0, result.stderr
    assert container_users(fake_node)["alice"]["password"] == "Alice-password-1"


def test_create_users_rejects_default_user_name(fake_node):
    arn = next(iter(SECRETS))
    result = run_script(fake_node, "create-users", "eu-west-1", f"jovyan={arn}")
    assert result.returncode != 0
    assert container_users(fake_node)["jovyan"]["password"] == DOCUMENTED_DEFAULT_PASSWORD


def test_create_users_rejects_invalid_user_name(fake_node):
    arn = next(iter(SECRETS))
    result = run_script(fake_node, "create-users", "eu-west-1", f"Bad;Name={arn}")
    assert result.returncode != 0
    assert "invalid user name" in result.stderr


def test_create_users_fails_on_unreadable_secret(fake_node):
    result = run_script(fake_node, "create-users", "eu-west-1", "carol=arn:missing")
    assert result.returncode != 0
    assert "could not read the password of carol" in result.stderr
    assert "carol" not in container_users(fake_node)


def test_create_users_fails_when_hub_rejects_user(fake_node):
    result = run_script(fake_node, "create-users", "eu-west-1", *user_arguments(), hub_status=403)
    assert result.returncode != 0
    assert "HTTP status 403" in result.stderr
