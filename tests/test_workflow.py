"""The example CI workflow: valid YAML, OIDC credentials, and commands that exist here."""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from infra import naming
from ops.__main__ import COMMANDS as OPS_COMMANDS

REPOSITORY = Path(__file__).resolve().parents[1]
WORKFLOW = REPOSITORY / ".github" / "workflows" / "environment.yml"

# Tools the GitHub-hosted Ubuntu runner provides; anything else must be in the repository.
RUNNER_TOOLS = {"aws", "curl", "unzip", "echo", "python"}

# Values that stand in for ${{ ... }} expressions and environment variables.
SAMPLE_VALUES = {
    "github.run_id": "12345678901",
    "github.run_attempt": "1",
}
SAMPLE_VARIABLES = {
    "ENVIRONMENT_NAME": "ci-12345678901-1",
    "RUN_ID": "ci-12345678901",
    "DATA_BUCKET": "data-bucket",
    "GITHUB_ENV": "/tmp/github-env",
}


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def triggers(workflow: dict) -> dict:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    return workflow.get("on", workflow.get(True))


def steps(workflow: dict) -> list[tuple[str, dict]]:
    return [(job_name, step) for job_name, job in workflow["jobs"].items() for step in job["steps"]]


def substitute(text: str) -> str:
    """Replace ${{ expressions }} and $VARIABLES with sample values."""

    def expression(match: re.Match) -> str:
        return SAMPLE_VALUES.get(match.group(1).strip(), "value")

    text = re.sub(r"\$\{\{(.*?)\}\}", expression, text)
    for name, value in SAMPLE_VARIABLES.items():
        text = text.replace(f'"${name}"', value).replace(f"${name}", value)
    return text


def commands(script: str) -> list[list[str]]:
    """Split a run: script into commands (lines, continuations and && joined)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # A command substitution runs its inner command; check that instead.
        inner = re.fullmatch(r"\w+=\$\((.*)\)", line)
        if inner:
            line = inner.group(1)
        for part in line.split("&&"):
            words = shlex.split(substitute(part.split(">>")[0]))
            if words:
                found.append(words)
    return found


def run_commands(workflow: dict) -> list[list[str]]:
    return [
        words for _job, step in steps(workflow) if "run" in step for words in commands(step["run"])
    ]


def test_workflow_is_a_mapping_of_jobs(workflow):
    assert isinstance(workflow, dict)
    assert set(workflow["jobs"]) == {"pipeline", "sweep"}
    for job in workflow["jobs"].values():
        assert job["runs-on"] == "ubuntu-latest"
        assert job["steps"]


def test_workflow_triggers(workflow):
    assert {"push", "pull_request", "workflow_dispatch", "schedule"} <= set(triggers(workflow))


def test_workflow_requests_oidc_token(workflow):
    assert workflow["permissions"]["id-token"] == "write"
    assert workflow["permissions"]["contents"] == "read"


def test_workflow_stores_no_access_keys():
    text = WORKFLOW.read_text(encoding="utf-8")
    for forbidden in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "aws-access-key-id",
        "secrets.",
    ):
        assert forbidden not in text, forbidden


def test_every_job_assumes_role_before_aws(workflow):
    for job_name, job in workflow["jobs"].items():
        uses = [step.get("uses", "") for step in job["steps"]]
        credential_steps = [
            index for index, name in enumerate(uses) if name.startswith("aws-actions/configure")
        ]
        assert len(credential_steps) == 1, job_name
        step = job["steps"][credential_steps[0]]
        assert "role-to-assume" in step["with"], job_name
        first_aws = min(
            index
            for index, step in enumerate(job["steps"])
            if "run" in step
            and ("aws " in step["run"] or "ops " in step["run"] or "cdk " in step["run"])
        )
        assert credential_steps[0] < first_aws, job_name


def test_environment_name_is_valid(workflow):
    template = workflow["jobs"]["pipeline"]["env"]["ENVIRONMENT_NAME"]
    longest = substitute(template.replace("${{ github.run_id }}", "9" * 18))
    assert naming.ENVIRONMENT_NAME_PATTERN.match(substitute(template))
    assert naming.ENVIRONMENT_NAME_PATTERN.match(longest)


def test_run_steps_call_known_programs(workflow):
    for words in run_commands(workflow):
        program = words[0]
        if program in RUNNER_TOOLS:
            continue
        if program == "npx":
            assert words[1] == "cdk", words
            package = json.loads((REPOSITORY / "package.json").read_text(encoding="utf-8"))
            assert "aws-cdk" in package["devDependencies"]
            assert words[2] in {"deploy", "destroy"}, words
            continue
        if program == "./dev":
            dev = (REPOSITORY / "dev").read_text(encoding="utf-8")
            assert f"    {words[1]})" in dev, words
            continue
        if program in (".venv/bin/python", ".venv/bin/pip"):
            continue
        raise AssertionError(f"unknown program in workflow: {words}")


def test_python_scripts_exist(workflow):
    scripts = [
        words[1]
        for words in run_commands(workflow)
        if words[0] == ".venv/bin/python" and words[1] != "-m"
    ]
    assert scripts
    for script in scripts:
        assert (REPOSITORY / script).is_file(), script


def test_ops_commands_accept_their_options(workflow):
    calls = [
        words[3:]
        for words in run_commands(workflow)
        if words[:3] == [".venv/bin/python", "-m", "ops"]
    ]
    assert {argv[0] for argv in calls} == {"run", "teardown"}
    for argv in calls:
        module = importlib.import_module(OPS_COMMANDS[argv[0]][0])
        module.build_parser().parse_args(argv[1:])


def test_cleanup_steps_run_always(workflow):
    pipeline = workflow["jobs"]["pipeline"]["steps"]
    names = [step.get("name", "") for step in pipeline]
    destroy = names.index("Destroy the environment")
    teardown = names.index("Delete anything the environment left behind")
    assert teardown == len(pipeline) - 1
    assert destroy < teardown
    assert pipeline[destroy]["if"] == "always()"
    assert pipeline[teardown]["if"] == "always()"
    assert "--apply" in pipeline[teardown]["run"]


def test_pipeline_runs_on_ml_latest_small(workflow):
    runs = [
        words
        for words in run_commands(workflow)
        if words[:4] == [".venv/bin/python", "-m", "ops", "run"]
    ]
    assert len(runs) == 1
    argv = runs[0]
    assert argv[argv.index("--dataset") + 1] == "ml-latest-small"
    assert "--transient" in argv


def test_sweep_limits_itself_to_ci_environments(workflow):
    sweep = [
        words
        for words in run_commands(workflow)
        if words[:4] == [".venv/bin/python", "-m", "ops", "teardown"] and "--older-than" in words
    ]
    assert len(sweep) == 1
    assert sweep[0][sweep[0].index("--prefix") + 1] == "ci-"
