"""The environment configuration: parsing of context values, defaults and every rejected value."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from infra.config import ConfigError
from infra.config import EnvironmentConfig
from infra.config import default_context
from infra.config import load_config
from tests.infra.conftest import REPOSITORY
from tests.infra.conftest import cdk_json_context


def rejected(context: dict) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(context)
    return caught.value


def test_empty_context_gives_defaults():
    assert load_config({}) == EnvironmentConfig()


def test_cdk_json_lists_every_default():
    context = cdk_json_context()
    listed = {key: context[key] for key in default_context() if key in context}
    assert listed == default_context()


def test_cdk_json_context_loads():
    assert load_config(cdk_json_context()) == EnvironmentConfig()


def test_default_release_label():
    assert EnvironmentConfig().release_label == "emr-7.13.0"


def test_config_is_frozen():
    config = EnvironmentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.environment = "other"  # type: ignore[misc]


def test_command_line_strings_are_parsed():
    config = load_config(
        {
            "idleTimeoutSeconds": "7200",
            "coreInstanceCount": "3",
            "taskSpot": "false",
            "production": "TRUE",
            "jupyterUsers": "alice, bob",
            "keyPairName": "",
        }
    )
    assert config.idle_timeout_seconds == 7200
    assert config.core_instance_count == 3
    assert config.task_spot is False
    assert config.production is True
    assert config.jupyter_users == ("alice", "bob")
    assert config.key_pair_name is None


def test_jupyter_users_from_json_list_string():
    assert load_config({"jupyterUsers": '["ana", "ben"]'}).jupyter_users == ("ana", "ben")


def test_feature_flags_are_not_configuration_keys():
    config = load_config({"@aws-cdk/core:explicitStackTags": True, "aws:cdk:version": "x"})
    assert config == EnvironmentConfig()


def test_cli_settings_are_not_configuration_keys():
    config = load_config({"cli-telemetry": False, "acknowledged-issue-numbers": [1]})
    assert config == EnvironmentConfig()


def test_cdk_json_turns_off_cli_network_calls():
    settings = json.loads((REPOSITORY / "cdk.json").read_text(encoding="utf-8"))
    assert settings["notices"] is False
    assert settings["context"]["cli-telemetry"] is False


def test_unknown_key_rejected():
    error = rejected({"idleTimeout": 600})
    assert error.key == "idleTimeout"
    assert "unknown key" in str(error)
    assert "idleTimeoutSeconds" in str(error)


@pytest.mark.parametrize("seconds", [59, 604_801, 0])
def test_idle_timeout_outside_limits_rejected(seconds):
    message = str(rejected({"idleTimeoutSeconds": seconds}))
    assert f"idleTimeoutSeconds={seconds!r}" in message
    assert "60 to 604800" in message


@pytest.mark.parametrize("seconds", [60, 604_800])
def test_idle_timeout_limits_accepted(seconds):
    assert load_config({"idleTimeoutSeconds": seconds}).idle_timeout_seconds == seconds


def test_idle_timeout_not_a_number_rejected():
    message = str(rejected({"idleTimeoutSeconds": "an hour"}))
    assert "idleTimeoutSeconds='an hour'" in message
    assert "integer" in message


def test_release_without_jupyterhub_rejected():
    message = str(rejected({"releaseLabel": "emr-spark-8.0.0"}))
    assert "releaseLabel='emr-spark-8.0.0'" in message
    assert "JupyterHub" in message


def test_release_without_python_311_rejected():
    message = str(rejected({"releaseLabel": "emr-6.15.0"}))
    assert "releaseLabel='emr-6.15.0'" in message
    assert "emr-7.x" in message


def test_other_emr_7_release_accepted():
    assert load_config({"releaseLabel": "emr-7.2.0"}).release_major == 7


def test_zero_core_nodes_rejected():
    message = str(rejected({"coreInstanceCount": 0}))
    assert "coreInstanceCount=0" in message
    assert "from 1 to" in message


def test_negative_task_nodes_rejected():
    assert rejected({"taskInstanceCount": -1}).key == "taskInstanceCount"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("primaryInstanceType", "m5xlarge"),
        ("coreInstanceType", "M5.XLARGE"),
        ("taskInstanceType", "m5.huge"),
        ("coreInstanceType", "xlarge.m5"),
    ],
)
def test_malformed_instance_type_rejected(key, value):
    message = str(rejected({key: value}))
    assert f"{key}={value!r}" in message
    assert "instance type" in message


@pytest.mark.parametrize("value", ["r6g.2xlarge", "m7i-flex.large", "c5.metal", "m5d.24xlarge"])
def test_instance_types_accepted(value):
    assert load_config({"coreInstanceType": value}).core_instance_type == value


def test_count_given_as_boolean_rejected():
    assert rejected({"coreInstanceCount": True}).key == "coreInstanceCount"


def test_boolean_word_rejected():
    message = str(rejected({"taskSpot": "yes"}))
    assert "taskSpot='yes'" in message
    assert "true or false" in message


def test_invalid_environment_name_rejected():
    message = str(rejected({"environment": "Dev_1"}))
    assert "environment='Dev_1'" in message


def test_open_ui_cidr_rejected():
    message = str(rejected({"uiAllowedCidr": "0.0.0.0/0"}))
    assert "uiAllowedCidr='0.0.0.0/0'" in message
    assert "internet" in message


def test_ui_cidr_with_host_bits_rejected():
    assert rejected({"uiAllowedCidr": "10.0.0.1/16"}).key == "uiAllowedCidr"


def test_ui_cidr_accepted():
    assert load_config({"uiAllowedCidr": "203.0.113.0/24"}).ui_allowed_cidr == "203.0.113.0/24"


def test_malformed_vpc_id_rejected():
    assert rejected({"vpcId": "vpc-xyz"}).key == "vpcId"


def test_managed_scaling_needs_both_limits():
    error = rejected({"managedScalingMinUnits": 2})
    assert error.key == "managedScalingMaxUnits"


def test_managed_scaling_maximum_below_minimum_rejected():
    error = rejected({"managedScalingMinUnits": 4, "managedScalingMaxUnits": 3})
    assert error.key == "managedScalingMaxUnits"


def test_managed_scaling_limits_accepted():
    config = load_config({"managedScalingMinUnits": 2, "managedScalingMaxUnits": 10})
    assert config.managed_scaling is True


def test_invalid_user_name_rejected():
    message = str(rejected({"jupyterUsers": ["alice", "Bob Smith"]}))
    assert "jupyterUsers='Bob Smith'" in message


def test_reserved_user_name_rejected():
    assert "reserved" in str(rejected({"jupyterUsers": ["jovyan"]}))


def test_duplicate_user_names_rejected():
    assert "repeated" in str(rejected({"jupyterUsers": "ana,ana"}))


def test_empty_user_list_rejected():
    assert rejected({"jupyterUsers": []}).key == "jupyterUsers"


def test_production_retains_data():
    assert load_config({"production": True}).retain_data is True


def test_non_production_destroys_data():
    assert load_config({}).retain_data is False


def test_app_exits_with_message_on_invalid_value(tmp_path):
    # The CDK command line hands -c values to app.py through CDK_CONTEXT_JSON.
    environment = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({"idleTimeoutSeconds": "30"}),
        "CDK_OUTDIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    assert "idleTimeoutSeconds=30" in result.stderr
    assert "60 to 604800" in result.stderr
