"""The pipeline as a Step Functions state machine over the one step list.

An execution takes ``{"runId": "...", "dataset": "...", "transient": false}``:

- ``runId`` names the run directory ``s3://<data bucket>/runs/<runId>``;
- ``dataset`` is an s3:// URI of a MovieLens directory, or a name read from
  ``s3://<data bucket>/datasets/<name>``, because the cluster has no internet
  route to download one;
- ``transient`` (default false) runs the steps on a new cluster that the
  execution creates and terminates, on success and on failure alike. Only an
  execution stopped from outside (StopExecution) skips that cleanup, and then
  the cluster terminates itself after its idle timeout. Without ``transient``
  the steps run on the environment's long-running cluster.

Each stage is an EMR step submitted with ``addStep.sync``: the execution waits
for it and stops at the first failure. The step arguments come from
``spark_jobs.steps`` through ``infra.emr_steps``, exactly as the local runner and
the add-steps export build them, with the run's URIs filled in by JSONata.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment
from aws_cdk import Aws
from aws_cdk import Duration
from aws_cdk import RemovalPolicy
from aws_cdk import Stack
from aws_cdk import Validations
from aws_cdk import aws_emr as emr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra import naming
from infra.cluster import Configuration
from infra.cluster import EmrCluster
from infra.cluster import default_configurations
from infra.config import EnvironmentConfig
from infra.emr_steps import COMMAND_RUNNER_JAR
from infra.emr_steps import SINGLE_ACTION_ON_FAILURE
from infra.emr_steps import ArtifactLocation
from infra.emr_steps import spark_submit_args
from infra.emr_steps import step_name
from spark_jobs.steps import RunRequest
from spark_jobs.steps import build_steps

# The applications a transient cluster needs to run the steps: no notebooks.
TRANSIENT_APPLICATIONS = ("Hadoop", "Spark")

# Tag that AmazonEMRServicePolicy_v2 requires on every cluster it manages.
EMR_MANAGED_TAG = ("for-use-with-amazon-emr-managed-policies", "true")

# Step Functions' own EventBridge rules for the .sync EMR integrations.
SYNC_EVENT_RULES = (
    "StepFunctionsGetEventForEMRRunJobFlowRule",
    "StepFunctionsGetEventForEMRAddJobFlowStepsRule",
    "StepFunctionsGetEventForEMRTerminateJobFlowsRule",
)

# Execution-wide limit: generous for the default tuning grid on ml-32m, and
# short enough that a stuck execution does not hold a transient cluster for days.
EXECUTION_TIMEOUT = Duration.hours(24)

# JSONata variables assigned by the Prepare state and read by later states.
RUN_ID = "$runId"
OUTPUT = "$output"
DATASET = "$dataset"
TRANSIENT = "$transient"
CLUSTER_ID = "$clusterId"


def jsonata(expression: str) -> str:
    """Wrap a JSONata expression the way Step Functions recognises it in a string field."""
    return "{% " + expression + " %}"


@dataclass(frozen=True)
class TransientClusterSettings:
    """Settings of the clusters that executions create, mirroring the environment's cluster.

    ``instance_profile_name`` is the name of the instance profile, which is the
    ``Ref`` of an ``AWS::IAM::InstanceProfile``. ``instance_role`` is the role in
    that profile, and the state machine is allowed to pass it.
    """

    release_label: str
    primary_instance_type: str
    core_instance_type: str
    core_instance_count: int
    subnet_id: str
    primary_security_group_id: str
    core_security_group_id: str
    service_access_security_group_id: str
    service_role: iam.IRole
    instance_role: iam.IRole
    instance_profile_name: str
    security_configuration_name: str
    log_uri: str
    idle_timeout_seconds: int
    configurations: Sequence[Configuration] = ()
    bootstrap_actions: Sequence[emr.CfnCluster.BootstrapActionConfigProperty] = ()


def transient_cluster_settings(
    config: EnvironmentConfig,
    cluster: EmrCluster,
    *,
    log_uri: str,
    bootstrap_actions: Sequence[emr.CfnCluster.BootstrapActionConfigProperty],
) -> TransientClusterSettings:
    """Return settings for transient clusters like the environment's cluster, without task nodes.

    They share its network, roles, security configuration, log location and the
    Spark configuration for Python 3.11, and run only ``bootstrap_actions``.
    """
    return TransientClusterSettings(
        release_label=config.release_label,
        primary_instance_type=config.primary_instance_type,
        core_instance_type=config.core_instance_type,
        core_instance_count=config.core_instance_count,
        subnet_id=cluster.network.cluster_subnet.subnet_id,
        primary_security_group_id=cluster.network.primary_security_group.security_group_id,
        core_security_group_id=cluster.network.core_security_group.security_group_id,
        service_access_security_group_id=(
            cluster.network.service_access_security_group.security_group_id
        ),
        service_role=cluster.roles.service_role,
        instance_role=cluster.roles.instance_role,
        instance_profile_name=cluster.roles.instance_profile.ref,
        security_configuration_name=cluster.security_configuration.ref,
        log_uri=log_uri,
        idle_timeout_seconds=config.idle_timeout_seconds,
        configurations=tuple(default_configurations()),
        bootstrap_actions=tuple(bootstrap_actions),
    )


class PipelineStateMachine(Construct):
    """The state machine that runs the step list on the environment's cluster or a transient one.

    ``state_machine`` is the Step Functions resource. ``parameters`` (Parameters
    field names to values) are fixed into the step arguments at synthesis.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        artifact: ArtifactLocation,
        data_bucket: s3.IBucket,
        cluster_id: str,
        transient_cluster: TransientClusterSettings,
        parameters: Mapping[str, object] | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        self.environment = environment
        self.artifact = artifact
        self.transient_cluster = transient_cluster
        # NOTE: executions always split the dataset themselves. An existing split
        # (--train and --test) would need its own branch of steps, because the
        # argument vectors are fixed at synthesis.
        self.request = RunRequest(
            output=jsonata(OUTPUT),
            source=jsonata(DATASET),
            parameters=dict(parameters or {}),
        )
        bucket = data_bucket.bucket_name

        invalid_input = sfn.Fail.jsonata(
            self,
            "InvalidInput",
            error="InvalidInput",
            cause='The execution input needs string fields runId and dataset and an optional '
            'boolean transient, for example {"runId": "first", "dataset": "ml-latest-small"}.',
        )
        check_input = sfn.Choice.jsonata(self, "CheckInput").when(
            sfn.Condition.jsonata(
                jsonata(
                    "$type($states.input.runId) = 'string' and $length($states.input.runId) > 0"
                    " and $type($states.input.dataset) = 'string'"
                    " and $length($states.input.dataset) > 0"
                    " and ($not($exists($states.input.transient))"
                    " or $type($states.input.transient) = 'boolean')"
                )
            ),
            sfn.Pass.jsonata(
                self,
                "Prepare",
                assign={
                    "runId": jsonata("$states.input.runId"),
                    "output": jsonata(
                        f"'s3://{bucket}/{naming.RUNS_PREFIX}' & $states.input.runId"
                    ),
                    "dataset": jsonata(
                        "$contains($states.input.dataset, '://') ? $states.input.dataset : "
                        f"'s3://{bucket}/{naming.DATASETS_PREFIX}' & $states.input.dataset"
                    ),
                    "transient": jsonata("$states.input.transient = true"),
                    "error": "",
                    "cause": "",
                    "failedState": "",
                },
            ).next(self._choose_cluster(cluster_id)),
        ).otherwise(invalid_input)

        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=removal_policy
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(check_input),
            query_language=sfn.QueryLanguage.JSONATA,
            timeout=EXECUTION_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            comment=f"ALS recommender pipeline of environment {environment}",
        )
        self._grant_emr_access()

    @property
    def state_machine_arn(self) -> str:
        return self.state_machine.state_machine_arn

    def _choose_cluster(self, cluster_id: str) -> sfn.Choice:
        first_step, last_step = self._chain_steps()
        use_course_cluster = sfn.Pass.jsonata(
            self, "UseEnvironmentCluster", assign={"clusterId": cluster_id}
        )
        use_course_cluster.next(first_step)
        create_cluster = self._task(
            "CreateTransientCluster",
            "createCluster.sync",
            self._create_cluster_arguments(),
            assign={"clusterId": jsonata("$states.result.ClusterId")},
        )
        create_cluster.add_catch(
            self._fail("TransientClusterNotCreated"),
            assign=self._error_assignment("CreateTransientCluster"),
        )
        create_cluster.next(first_step)

        after_success = sfn.Choice.jsonata(self, "AfterSuccess")
        terminate_after_success = self._terminate("TerminateAfterSuccess")
        terminate_after_success.add_catch(
            self._fail("TransientClusterNotTerminated"),
            assign=self._error_assignment("TerminateAfterSuccess"),
        )
        succeeded = sfn.Succeed.jsonata(
            self,
            "Succeeded",
            outputs={
                "runId": jsonata(RUN_ID),
                "output": jsonata(OUTPUT),
                "clusterId": jsonata(CLUSTER_ID),
            },
        )
        terminate_after_success.next(succeeded)
        after_success.when(sfn.Condition.jsonata(jsonata(TRANSIENT)), terminate_after_success)
        after_success.otherwise(succeeded)
        last_step.next(after_success)

        return (
            sfn.Choice.jsonata(self, "ChooseCluster")
            .when(sfn.Condition.jsonata(jsonata(TRANSIENT)), create_cluster)
            .otherwise(use_course_cluster)
        )

    def _chain_steps(self) -> tuple[sfn.CustomState, sfn.CustomState]:
        """Create one task per step, chained in order, each caught into the failure path."""
        pipeline_failed = self._fail("PipelineFailed")
        terminate_after_failure = self._terminate("TerminateAfterFailure")
        # The original error is what the operator needs, so a failed
        # termination still ends in PipelineFailed, with that error kept.
        terminate_after_failure.add_catch(pipeline_failed)
        terminate_after_failure.next(pipeline_failed)
        after_failure = (
            sfn.Choice.jsonata(self, "AfterFailure")
            .when(sfn.Condition.jsonata(jsonata(TRANSIENT)), terminate_after_failure)
            .otherwise(pipeline_failed)
        )

        tasks = []
        for step in build_steps(self.request):
            task = self._task(
                step.name,
                "addStep.sync",
                {
                    "ClusterId": jsonata(CLUSTER_ID),
                    "Step": {
                        "Name": jsonata(f"{RUN_ID} & '{step_name('', step.name)}'"),
                        "ActionOnFailure": SINGLE_ACTION_ON_FAILURE,
                        "HadoopJarStep": {
                            "Jar": COMMAND_RUNNER_JAR,
                            "Args": spark_submit_args(step, self.artifact),
                        },
                    },
                },
            )
            task.add_catch(after_failure, assign=self._error_assignment(step.name))
            if tasks:
                tasks[-1].next(task)
            tasks.append(task)
        return tasks[0], tasks[-1]

    def _task(
        self,
        state_id: str,
        integration: str,
        arguments: Mapping[str, Any],
        *,
        assign: Mapping[str, str] | None = None,
    ) -> sfn.CustomState:
        state_json: dict[str, Any] = {
            "Type": "Task",
            "Resource": f"arn:{Aws.PARTITION}:states:::elasticmapreduce:{integration}",
            "Arguments": dict(arguments),
        }
        if assign:
            state_json["Assign"] = dict(assign)
        return sfn.CustomState(self, state_id, state_json=state_json)

    def _terminate(self, state_id: str) -> sfn.CustomState:
        task = self._task(state_id, "terminateCluster.sync", {"ClusterId": jsonata(CLUSTER_ID)})
        task.add_retry(
            errors=["States.ALL"], max_attempts=3, interval=Duration.seconds(30), backoff_rate=2
        )
        return task

    def _fail(self, state_id: str) -> sfn.Fail:
        return sfn.Fail.jsonata(
            self,
            state_id,
            error=jsonata(f"$error ? $error : '{state_id}'"),
            cause=jsonata(f"'{state_id} in state ' & $failedState & ': ' & $cause"),
        )

    @staticmethod
    def _error_assignment(state: str) -> dict[str, str]:
        return {
            "error": jsonata("$states.errorOutput.Error"),
            "cause": jsonata("$states.errorOutput.Cause"),
            "failedState": state,
        }

    def _create_cluster_arguments(self) -> dict[str, Any]:
        settings = self.transient_cluster
        name = naming.transient_cluster_name(self.environment, "")
        tags = {
            naming.PROJECT_TAG: naming.PROJECT,
            naming.ENVIRONMENT_TAG: self.environment,
            EMR_MANAGED_TAG[0]: EMR_MANAGED_TAG[1],
        }
        arguments: dict[str, Any] = {
            "Name": jsonata(f"'{name}' & {RUN_ID}"),
            "ReleaseLabel": settings.release_label,
            "Applications": [{"Name": application} for application in TRANSIENT_APPLICATIONS],
            "ServiceRole": settings.service_role.role_name,
            "JobFlowRole": settings.instance_profile_name,
            "SecurityConfiguration": settings.security_configuration_name,
            "LogUri": settings.log_uri,
            "VisibleToAllUsers": True,
            "Instances": {
                "InstanceGroups": [
                    _instance_group("Primary", "MASTER", settings.primary_instance_type, 1),
                    _instance_group(
                        "Core", "CORE", settings.core_instance_type, settings.core_instance_count
                    ),
                ],
                "Ec2SubnetId": settings.subnet_id,
                "EmrManagedMasterSecurityGroup": settings.primary_security_group_id,
                "EmrManagedSlaveSecurityGroup": settings.core_security_group_id,
                "ServiceAccessSecurityGroup": settings.service_access_security_group_id,
                # The steps are added after the cluster is up, so it must not
                # terminate for having none. The state machine terminates it.
                "KeepJobFlowAliveWhenNoSteps": True,
                "TerminationProtected": False,
            },
            # A backstop for executions stopped from outside (StopExecution skips
            # every Catch): the cluster then terminates itself once idle.
            "AutoTerminationPolicy": {"IdleTimeout": settings.idle_timeout_seconds},
            "Tags": [{"Key": key, "Value": value} for key, value in tags.items()]
            + [{"Key": "run-id", "Value": jsonata(RUN_ID)}],
        }
        if settings.configurations:
            arguments["Configurations"] = [
                _render_configuration(item) for item in settings.configurations
            ]
        if settings.bootstrap_actions:
            arguments["BootstrapActions"] = [
                _render_bootstrap_action(action) for action in settings.bootstrap_actions
            ]
        return arguments

    def _grant_emr_access(self) -> None:
        stack = Stack.of(self)
        cluster_arns = stack.format_arn(
            service="elasticmapreduce", resource="cluster", resource_name="*"
        )
        role = self.state_machine.role
        # Tag conditions keep the state machine to this environment's clusters:
        # its long-running one (tagged by the app) and the ones it creates.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="EnvironmentClusters",
                actions=[
                    "elasticmapreduce:AddJobFlowSteps",
                    "elasticmapreduce:DescribeStep",
                    "elasticmapreduce:CancelSteps",
                    "elasticmapreduce:DescribeCluster",
                    "elasticmapreduce:TerminateJobFlows",
                ],
                resources=[cluster_arns],
                conditions={
                    "StringEquals": {
                        f"elasticmapreduce:ResourceTag/{naming.ENVIRONMENT_TAG}": self.environment,
                        f"elasticmapreduce:ResourceTag/{naming.PROJECT_TAG}": naming.PROJECT,
                    }
                },
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="CreateTaggedClusters",
                actions=["elasticmapreduce:RunJobFlow", "elasticmapreduce:AddTags"],
                resources=["*"],
                conditions={
                    "StringEquals": {
                        f"elasticmapreduce:RequestTag/{naming.ENVIRONMENT_TAG}": self.environment,
                    }
                },
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="PassClusterRoles",
                actions=["iam:PassRole"],
                resources=[
                    self.transient_cluster.service_role.role_arn,
                    self.transient_cluster.instance_role.role_arn,
                ],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="SyncEventRules",
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(service="events", resource="rule", resource_name=rule)
                    for rule in SYNC_EVENT_RULES
                ],
            )
        )
        self._acknowledge_findings()

    def _acknowledge_findings(self) -> None:
        policy = self.state_machine.role.node.try_find_child("DefaultPolicy")
        target = policy if policy is not None else self.state_machine.role
        Validations.of(target).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:elasticmapreduce:"
                "<AWS::Region>:<AWS::AccountId>:cluster/*]",
                reason="Cluster ids are only known at run time, for transient clusters after "
                "they are created. A tag condition limits the statement to this "
                "environment's clusters.",
            )
        )
        Validations.of(target).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="elasticmapreduce:RunJobFlow and the X-Ray and CloudWatch Logs delivery "
                "actions of Step Functions support no resource-level permissions. RunJobFlow "
                "is limited to requests that tag the cluster with this environment.",
            )
        )


def _render_configuration(configuration: Configuration) -> dict[str, Any]:
    """Return a configuration in the shape of the EMR API (RunJobFlow's Configurations)."""
    rendered: dict[str, Any] = {"Classification": configuration.classification}
    if configuration.properties:
        rendered["Properties"] = dict(configuration.properties)
    if configuration.nested:
        rendered["Configurations"] = [_render_configuration(item) for item in configuration.nested]
    return rendered


def _render_bootstrap_action(
    action: emr.CfnCluster.BootstrapActionConfigProperty,
) -> dict[str, Any]:
    script = action.script_bootstrap_action
    return {
        "Name": action.name,
        "ScriptBootstrapAction": {"Path": script.path, "Args": list(script.args or [])},
    }


def _instance_group(name: str, role: str, instance_type: str, count: int) -> dict[str, Any]:
    return {
        "Name": name,
        "InstanceRole": role,
        "InstanceType": instance_type,
        "InstanceCount": count,
        "Market": "ON_DEMAND",
    }
