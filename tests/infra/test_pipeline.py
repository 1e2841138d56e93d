"""The pipeline state machine: its flow, the transient cluster's lifecycle, IAM, and parity.

The definition is read from the synthesized template, with CloudFormation
references rendered as ``${LogicalId}`` placeholders, so the assertions see
what Step Functions would run.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from infra import naming
from infra.artifact import BOOTSTRAP_SCRIPT
from spark_jobs import local_runner
from spark_jobs.steps import RunRequest
from spark_jobs.steps import build_steps
from tests.infra.test_jobs import render

pytestmark = pytest.mark.infra

# Options whose values are URIs; the parity check compares everything else verbatim.
URI_OPTIONS = ("--output", "--source", "--train", "--test")
SMALL_PARAMETERS = {"rank_grid": (8,), "reg_grid": (0.1,), "study_max_iter": 3, "seed": 7}


def definition_of(template_json: dict[str, Any]) -> dict[str, Any]:
    (machine,) = [
        resource
        for resource in template_json["Resources"].values()
        if resource["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    return json.loads(render(machine["Properties"]["DefinitionString"]))


@pytest.fixture(scope="module")
def definition(default_app) -> dict[str, Any]:
    return definition_of(default_app.template_json)


def step_states(definition: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Return the addStep states in execution order, following Next from the first one."""
    states = definition["States"]
    name = states["UseEnvironmentCluster"]["Next"]
    ordered = []
    while states[name]["Type"] == "Task" and states[name]["Resource"].endswith("addStep.sync"):
        ordered.append((name, states[name]))
        name = states[name]["Next"]
    return ordered


def stage_vector(command: list[str]) -> tuple[str, str, list[str]]:
    """Split a spark-submit command into its package and entry file names and its stage args.

    URI option values in the stage args become ``<uri>``.
    """
    position = command.index("--py-files")
    package, entry_point = command[position + 1], command[position + 2]
    args = list(command[position + 3 :])
    for index, value in enumerate(args[:-1]):
        if value in URI_OPTIONS:
            args[index + 1] = "<uri>"
    return os.path.basename(package), os.path.basename(entry_point), args


def local_vectors(request: RunRequest, artifact_dir) -> list[tuple[str, Any]]:
    planned = local_runner.plan(request, artifact=artifact_dir, master="spark://127.0.0.1:7077")
    return [(step.name, stage_vector(command)) for step, command in planned]


def state_machine_vectors(definition) -> list[tuple[str, Any]]:
    return [
        (name, stage_vector(state["Arguments"]["Step"]["HadoopJarStep"]["Args"]))
        for name, state in step_states(definition)
    ]


def build_pipeline(stack, parameters) -> None:
    """Build the state machine alone, with stand-ins for what the stack passes it."""
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_s3 as s3

    from infra.emr_steps import ArtifactLocation
    from infra.pipeline import PipelineStateMachine
    from infra.pipeline import TransientClusterSettings

    service_role = iam.Role(
        stack, "ServiceRole", assumed_by=iam.ServicePrincipal("elasticmapreduce.amazonaws.com")
    )
    instance_role = iam.Role(
        stack, "InstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com")
    )
    profile = iam.CfnInstanceProfile(stack, "Profile", roles=[instance_role.role_name])
    settings = TransientClusterSettings(
        release_label="emr-7.13.0",
        primary_instance_type="m5.xlarge",
        core_instance_type="m5.xlarge",
        core_instance_count=2,
        subnet_id="subnet-0123456789abcdef0",
        primary_security_group_id="sg-01",
        core_security_group_id="sg-02",
        service_access_security_group_id="sg-03",
        service_role=service_role,
        instance_role=instance_role,
        instance_profile_name=profile.ref,
        security_configuration_name="security-configuration",
        log_uri="s3://logs/emr-logs/",
        idle_timeout_seconds=900,
    )
    PipelineStateMachine(
        stack,
        "Pipeline",
        environment="test",
        artifact=ArtifactLocation("s3://artifacts/artifacts/spark_jobs/0.1.0-0123456789abcdef"),
        data_bucket=s3.Bucket(stack, "Data"),
        cluster_id="j-0123456789ABC",
        transient_cluster=settings,
        parameters=parameters,
    )


def test_parity_with_local_runner(default_app, definition):
    request = RunRequest(output="/tmp/run", source="/data/ml-latest-small")
    artifact_dir = default_app.stack.job_artifact.artifact.directory

    assert state_machine_vectors(definition) == local_vectors(request, artifact_dir)


def test_parity_with_parameters(build_in_empty_stack, default_app):
    template = build_in_empty_stack(lambda stack: build_pipeline(stack, SMALL_PARAMETERS))
    request = RunRequest(output="/tmp/run", source="/data/ml", parameters=SMALL_PARAMETERS)
    artifact_dir = default_app.stack.job_artifact.artifact.directory
    vectors = state_machine_vectors(definition_of(template.to_json()))

    assert vectors == local_vectors(request, artifact_dir)
    tune_args = dict(vectors)["tune"][2]
    assert tune_args[tune_args.index("--rank-grid") + 1] == "8"


def test_steps_run_in_step_list_order(definition):
    names = [name for name, _ in step_states(definition)]

    assert names == [step.name for step in build_steps(RunRequest(output="x", source="y"))]


def test_steps_wait_and_fill_uris_from_input(definition):
    for name, state in step_states(definition):
        step = state["Arguments"]["Step"]
        args = step["HadoopJarStep"]["Args"]
        assert state["Resource"].endswith(":states:::elasticmapreduce:addStep.sync"), name
        assert state["Arguments"]["ClusterId"] == "{% $clusterId %}", name
        assert step["Name"] == "{% $runId & ' " + name + "' %}", name
        assert args[args.index("--output") + 1] == "{% $output %}", name
        assert step["ActionOnFailure"] == "CONTINUE", name


def test_steps_use_published_artifact(default_app, definition):
    bucket = default_app.template_json["Outputs"][naming.OUTPUT_ARTIFACTS_BUCKET]["Value"]["Ref"]
    prefix = f"s3://${{{bucket}}}/artifacts/spark_jobs/{default_app.stack.job_artifact.version}"
    for name, state in step_states(definition):
        args = state["Arguments"]["Step"]["HadoopJarStep"]["Args"]
        position = args.index("--py-files")
        assert args[position + 1] == f"{prefix}/spark_jobs.zip", name
        assert args[position + 2] == f"{prefix}/main.py", name


def test_execution_input_builds_run_uris(default_app, definition):
    data_bucket = default_app.template_json["Outputs"][naming.OUTPUT_DATA_BUCKET]["Value"]["Ref"]
    assign = definition["States"]["Prepare"]["Assign"]

    assert assign["output"] == (
        f"{{% 's3://${{{data_bucket}}}/runs/' & $states.input.runId %}}"
    )
    assert f"'s3://${{{data_bucket}}}/datasets/' & $states.input.dataset" in assign["dataset"]
    assert assign["transient"] == "{% $states.input.transient = true %}"


def test_invalid_input_fails_before_any_step(definition):
    check = definition["States"]["CheckInput"]

    assert definition["StartAt"] == "CheckInput"
    assert check["Choices"][0]["Next"] == "Prepare"
    assert definition["States"][check["Default"]]["Type"] == "Fail"


def test_every_step_failure_goes_to_cleanup(definition):
    for name, state in step_states(definition):
        (catch,) = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"], name
        assert catch["Next"] == "AfterFailure", name
        assert catch["Assign"]["failedState"] == name, name


def test_failure_path_terminates_transient_cluster(definition):
    states = definition["States"]
    after_failure = states["AfterFailure"]
    (choice,) = after_failure["Choices"]
    terminate = states[choice["Next"]]
    failed = states[terminate["Next"]]

    assert choice["Condition"] == "{% $transient %}"
    assert terminate["Resource"].endswith(":states:::elasticmapreduce:terminateCluster.sync")
    assert terminate["Arguments"] == {"ClusterId": "{% $clusterId %}"}
    assert failed["Type"] == "Fail"
    assert after_failure["Default"] == terminate["Next"]


def test_failed_termination_still_fails_execution(definition):
    states = definition["States"]
    terminate = states["TerminateAfterFailure"]
    (catch,) = terminate["Catch"]
    (retry,) = terminate["Retry"]

    assert states[catch["Next"]]["Type"] == "Fail"
    assert retry["MaxAttempts"] == 3


def test_success_path_terminates_transient_cluster(definition):
    states = definition["States"]
    last_step, _ = step_states(definition)[-1]
    after_success = states[states[last_step]["Next"]]
    (choice,) = after_success["Choices"]
    terminate = states[choice["Next"]]

    assert choice["Condition"] == "{% $transient %}"
    assert terminate["Resource"].endswith(":states:::elasticmapreduce:terminateCluster.sync")
    assert states[terminate["Next"]]["Type"] == "Succeed"
    assert states[after_success["Default"]]["Type"] == "Succeed"
    assert states[terminate["Catch"][0]["Next"]]["Type"] == "Fail"


def test_transient_cluster_definition(default_app, definition):
    create = definition["States"]["CreateTransientCluster"]
    arguments = create["Arguments"]
    tags = {tag["Key"]: tag["Value"] for tag in arguments["Tags"]}
    (profile,) = default_app.resources("AWS::IAM::InstanceProfile")
    (action,) = arguments["BootstrapActions"]

    assert create["Resource"].endswith(":states:::elasticmapreduce:createCluster.sync")
    assert create["Assign"] == {"clusterId": "{% $states.result.ClusterId %}"}
    assert create["Next"] == step_states(definition)[0][0]
    assert arguments["Name"] == "{% 'als-recommender-dev-run-' & $runId %}"
    assert arguments["ReleaseLabel"] == "emr-7.13.0"
    assert arguments["JobFlowRole"] == "${" + profile + "}"
    assert [item["Name"] for item in arguments["Applications"]] == ["Hadoop", "Spark"]
    assert arguments["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert arguments["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert tags[naming.ENVIRONMENT_TAG] == "dev"
    assert tags["for-use-with-amazon-emr-managed-policies"] == "true"
    assert action["ScriptBootstrapAction"]["Path"].endswith(BOOTSTRAP_SCRIPT)
    assert states_fail(definition, create["Catch"][0]["Next"])


def states_fail(definition, name) -> bool:
    return definition["States"][name]["Type"] == "Fail"


def test_course_cluster_path_uses_environment_cluster(default_app, definition):
    (cluster,) = default_app.resources("AWS::EMR::Cluster")
    choose = definition["States"]["ChooseCluster"]

    assert definition["States"]["UseEnvironmentCluster"]["Assign"] == {
        "clusterId": "${" + cluster + "}"
    }
    assert choose["Default"] == "UseEnvironmentCluster"


def state_machine_statements(default_app) -> list[dict[str, Any]]:
    (machine,) = default_app.resources("AWS::StepFunctions::StateMachine").values()
    role = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in default_app.resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def actions_of(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return actions if isinstance(actions, list) else [actions]


def test_cluster_actions_limited_to_environment_tag(default_app):
    statements = state_machine_statements(default_app)
    (terminate,) = [s for s in statements if "elasticmapreduce:TerminateJobFlows" in actions_of(s)]
    (run,) = [s for s in statements if "elasticmapreduce:RunJobFlow" in actions_of(s)]

    assert "elasticmapreduce:AddJobFlowSteps" in actions_of(terminate)
    assert terminate["Condition"]["StringEquals"][
        f"elasticmapreduce:ResourceTag/{naming.ENVIRONMENT_TAG}"
    ] == "dev"
    assert run["Condition"]["StringEquals"][
        f"elasticmapreduce:RequestTag/{naming.ENVIRONMENT_TAG}"
    ] == "dev"


def test_state_machine_passes_only_cluster_roles(default_app):
    statements = state_machine_statements(default_app)
    (pass_role,) = [s for s in statements if "iam:PassRole" in actions_of(s)]
    roles = {
        logical_id
        for logical_id, role in default_app.resources("AWS::IAM::Role").items()
        if "elasticmapreduce" in json.dumps(role["Properties"]["AssumeRolePolicyDocument"])
        or "ec2.amazonaws.com" in json.dumps(role["Properties"]["AssumeRolePolicyDocument"])
    }

    assert {item["Fn::GetAtt"][0] for item in pass_role["Resource"]} <= roles
    assert len(pass_role["Resource"]) == 2


def test_state_machine_logs_and_traces(default_app):
    (machine,) = default_app.resources("AWS::StepFunctions::StateMachine").values()
    properties = machine["Properties"]

    assert properties["LoggingConfiguration"]["Level"] == "ALL"
    assert properties["LoggingConfiguration"]["IncludeExecutionData"] is True
    assert properties["TracingConfiguration"] == {"Enabled": True}


def test_state_machine_output(default_app):
    (logical_id,) = default_app.resources("AWS::StepFunctions::StateMachine")
    output = default_app.template_json["Outputs"][naming.OUTPUT_STATE_MACHINE_ARN]

    assert output["Value"] == {"Ref": logical_id}
