"""The environment's settings: one frozen, validated object built from CDK context.

``app.py`` passes ``app.node.get_all_context()`` (``cdk.json`` context merged with
``-c key=value`` overrides) to :func:`load_config`; every construct below it takes
plain typed values from the result. Values from ``-c`` arrive as strings, values
from ``cdk.json`` as JSON types, so each parser accepts both.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra.naming import ENVIRONMENT_NAME_PATTERN

# Auto-termination limits that EMR accepts for IdleTimeout, in seconds.
MIN_IDLE_TIMEOUT_SECONDS = 60
MAX_IDLE_TIMEOUT_SECONDS = 604_800

# JupyterHub ships with the emr-6.x and emr-7.x lines but not with the emr-spark-8
# line. The jobs run on /usr/bin/python3.11, which only the emr-7.x line installs,
# so emr-6.x is rejected too.
RELEASE_LABEL_PATTERN = re.compile(r"^emr-(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)$")
SUPPORTED_RELEASE_MAJOR = 7

# EC2 instance type names: a family with a generation digit, then a size.
INSTANCE_TYPE_PATTERN = re.compile(
    r"^[a-z][a-z0-9-]*[0-9][a-z0-9-]*"
    r"\.(?:medium|large|[0-9]*xlarge|metal(?:-[0-9]+xl)?)$"
)

# Linux user names that JupyterHub's PAM authenticator and useradd accept.
USER_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
KEY_PAIR_NAME_PATTERN = re.compile(r"^[\x20-\x7e]{1,255}$")
VPC_ID_PATTERN = re.compile(r"^vpc-[0-9a-f]{8}(?:[0-9a-f]{9})?$")

MAX_MANAGED_SCALING_UNITS = 2000


class ConfigError(ValueError):
    """Invalid configuration value; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"invalid configuration {key}={value!r}: {allowed}")
        self.key = key
        self.value = value


@dataclass(frozen=True)
class EnvironmentConfig:
    """Settings of one deployed environment. Field docs name the context key in brackets."""

    # [environment] Prefixes the stack name and tags every resource.
    environment: str = "dev"
    # [releaseLabel] EMR release of the emr-7.x line, which ships JupyterHub and Python 3.11.
    release_label: str = "emr-7.13.0"
    # [primaryInstanceType] The single primary node.
    primary_instance_type: str = "m5.xlarge"
    # [coreInstanceType, coreInstanceCount] Core nodes run HDFS and executors. At least one.
    core_instance_type: str = "m5.xlarge"
    core_instance_count: int = 2
    # [taskInstanceType, taskInstanceCount] Optional executor-only nodes. 0 adds no group.
    task_instance_type: str = "m5.xlarge"
    task_instance_count: int = 0
    # [taskSpot] Buy task nodes on the Spot market (capped at the On-Demand price).
    task_spot: bool = True
    # [idleTimeoutSeconds] Auto-termination after this long without work.
    idle_timeout_seconds: int = 3600
    # [keyPairName] Optional EC2 key pair for SSH. Without it, access goes through SSM.
    key_pair_name: str | None = None
    # [vpcId] Optional existing VPC to import by lookup (needs credentials at synth time).
    vpc_id: str | None = None
    # [uiAllowedCidr] Optional network allowed to reach JupyterHub and the Spark UI.
    ui_allowed_cidr: str | None = None
    # [production] Production keeps its buckets on stack deletion. Others delete everything.
    production: bool = False
    # [terminationProtection] Termination protection on the EMR cluster and on the stack.
    termination_protection: bool = False
    # [managedScalingMinUnits, managedScalingMaxUnits] Optional EMR managed scaling bounds.
    managed_scaling_min_units: int | None = None
    managed_scaling_max_units: int | None = None
    # [jupyterUsers] JupyterHub users created at deploy time.
    jupyter_users: tuple[str, ...] = ("student",)
    # [logRetentionDays] Days before objects in the logs bucket expire.
    log_retention_days: int = 90
    # [nagChecks] Run cdk-nag's AwsSolutions pack during synthesis. A finding stops it.
    nag_checks: bool = True

    @property
    def release_major(self) -> int:
        """Major version of the EMR release label (7 for emr-7.13.0)."""
        match = RELEASE_LABEL_PATTERN.match(self.release_label)
        assert match is not None, "validated in load_config"
        return int(match.group("major"))

    @property
    def managed_scaling(self) -> bool:
        """Whether EMR managed scaling is configured."""
        return self.managed_scaling_max_units is not None

    @property
    def retain_data(self) -> bool:
        """Whether buckets survive stack deletion (production only)."""
        return self.production


def _parse_str(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, value, "expected a string")
    return value.strip()


def _parse_optional_str(key: str, value: object) -> str | None:
    if value is None:
        return None
    text = _parse_str(key, value)
    return text or None


def _parse_int(key: str, value: object) -> int:
    # bool is an int subclass in Python; "true" is never a count.
    if isinstance(value, bool):
        raise ConfigError(key, value, "expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value.strip())
    raise ConfigError(key, value, "expected an integer")


def _parse_optional_int(key: str, value: object) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _parse_int(key, value)


def _parse_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(key, value, "expected true or false")


def _parse_str_list(key: str, value: object) -> tuple[str, ...]:
    """Accept a JSON list, a JSON list in a string, or a comma-separated string."""
    items: object = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as error:
                raise ConfigError(
                    key, value, f"expected a JSON list of strings ({error})"
                ) from None
        else:
            items = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ConfigError(key, value, "expected a list of strings or a comma-separated string")
    return tuple(items)


# Context key -> (dataclass field, parser). No other code maps keys to fields.
_KEYS: dict[str, tuple[str, Callable[[str, object], Any]]] = {
    "environment": ("environment", _parse_str),
    "releaseLabel": ("release_label", _parse_str),
    "primaryInstanceType": ("primary_instance_type", _parse_str),
    "coreInstanceType": ("core_instance_type", _parse_str),
    "coreInstanceCount": ("core_instance_count", _parse_int),
    "taskInstanceType": ("task_instance_type", _parse_str),
    "taskInstanceCount": ("task_instance_count", _parse_int),
    "taskSpot": ("task_spot", _parse_bool),
    "idleTimeoutSeconds": ("idle_timeout_seconds", _parse_int),
    "keyPairName": ("key_pair_name", _parse_optional_str),
    "vpcId": ("vpc_id", _parse_optional_str),
    "uiAllowedCidr": ("ui_allowed_cidr", _parse_optional_str),
    "production": ("production", _parse_bool),
    "terminationProtection": ("termination_protection", _parse_bool),
    "managedScalingMinUnits": ("managed_scaling_min_units", _parse_optional_int),
    "managedScalingMaxUnits": ("managed_scaling_max_units", _parse_optional_int),
    "jupyterUsers": ("jupyter_users", _parse_str_list),
    "logRetentionDays": ("log_retention_days", _parse_int),
    "nagChecks": ("nag_checks", _parse_bool),
}

CONTEXT_KEYS: tuple[str, ...] = tuple(_KEYS)


def context_key(field_name: str) -> str:
    """Return the context key of an EnvironmentConfig field (``idle_timeout_seconds`` -> ...)."""
    for key, (name, _parser) in _KEYS.items():
        if name == field_name:
            return key
    raise KeyError(field_name)


def default_context() -> dict[str, object]:
    """Return every context key with its default, as JSON values (what cdk.json lists)."""
    defaults = EnvironmentConfig()
    result: dict[str, object] = {}
    for key, (name, _parser) in _KEYS.items():
        value = getattr(defaults, name)
        result[key] = list(value) if isinstance(value, tuple) else value
    return result


_CLI_KEYS = ("acknowledged-issue-numbers", "cli-telemetry")


def _is_foreign_key(key: str) -> bool:
    # The context also contains feature flags ("@aws-cdk/..."), CLI settings
    # ("aws:cdk:..." and the "cli-telemetry" that `cdk cli-telemetry` writes),
    # lookup caches ("availability-zones:account=...") and the notices that
    # `cdk acknowledge` records.
    return key.startswith("@") or ":" in key or key in _CLI_KEYS


def load_config(context: Mapping[str, object]) -> EnvironmentConfig:
    """Build and validate the configuration from CDK context.

    Keys missing from ``context`` take the EnvironmentConfig defaults. Raises
    ConfigError for an unknown key or an invalid value, naming the key, the value
    and what is allowed.
    """
    unknown = sorted(key for key in context if key not in _KEYS and not _is_foreign_key(key))
    if unknown:
        allowed = ", ".join(CONTEXT_KEYS)
        raise ConfigError(unknown[0], context[unknown[0]], f"unknown key; allowed keys: {allowed}")

    values: dict[str, Any] = {}
    for key, (name, parser) in _KEYS.items():
        if key in context:
            values[name] = parser(key, context[key])
    config = EnvironmentConfig(**values)
    validate(config)
    return config


def validate(config: EnvironmentConfig) -> None:
    """Raise ConfigError for the first invalid field of ``config``."""
    if not ENVIRONMENT_NAME_PATTERN.match(config.environment):
        raise ConfigError(
            "environment",
            config.environment,
            "expected 1 to 24 characters of lowercase letters, digits and hyphens, "
            "starting with a letter",
        )
    _validate_release_label(config.release_label)
    for key in ("primaryInstanceType", "coreInstanceType", "taskInstanceType"):
        value = getattr(config, _KEYS[key][0])
        if not INSTANCE_TYPE_PATTERN.match(value):
            raise ConfigError(key, value, "expected an EC2 instance type such as m5.xlarge")
    _validate_range("coreInstanceCount", config.core_instance_count, 1, 256)
    _validate_range("taskInstanceCount", config.task_instance_count, 0, 256)
    _validate_range(
        "idleTimeoutSeconds",
        config.idle_timeout_seconds,
        MIN_IDLE_TIMEOUT_SECONDS,
        MAX_IDLE_TIMEOUT_SECONDS,
    )
    _validate_range("logRetentionDays", config.log_retention_days, 1, 3650)
    if config.key_pair_name is not None and not KEY_PAIR_NAME_PATTERN.match(config.key_pair_name):
        raise ConfigError("keyPairName", config.key_pair_name, "expected 1 to 255 ASCII characters")
    if config.vpc_id is not None and not VPC_ID_PATTERN.match(config.vpc_id):
        raise ConfigError("vpcId", config.vpc_id, "expected a VPC id such as vpc-0123456789abcdef0")
    if config.ui_allowed_cidr is not None:
        _validate_cidr(config.ui_allowed_cidr)
    _validate_managed_scaling(config)
    _validate_users(config.jupyter_users)


def _validate_range(key: str, value: int, minimum: int, maximum: int) -> None:
    if not minimum <= value <= maximum:
        raise ConfigError(key, value, f"expected an integer from {minimum} to {maximum}")


def _validate_release_label(label: str) -> None:
    match = RELEASE_LABEL_PATTERN.match(label)
    if match is None:
        raise ConfigError(
            "releaseLabel",
            label,
            "expected an EMR release label of the emr-7.x line such as emr-7.13.0; "
            "other lines (for example emr-spark-8) ship no JupyterHub",
        )
    if int(match.group("major")) != SUPPORTED_RELEASE_MAJOR:
        raise ConfigError(
            "releaseLabel",
            label,
            "expected the emr-7.x line: it ships JupyterHub and the /usr/bin/python3.11 "
            "that Spark is configured to run",
        )


def _validate_cidr(cidr: str) -> None:
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as error:
        raise ConfigError("uiAllowedCidr", cidr, f"expected an IPv4 CIDR block ({error})") from None
    if network.version != 4:
        raise ConfigError("uiAllowedCidr", cidr, "expected an IPv4 CIDR block")
    if network.prefixlen < 8:
        raise ConfigError(
            "uiAllowedCidr",
            cidr,
            "expected a prefix length of at least /8; the UI must not be open to the internet",
        )


def _validate_managed_scaling(config: EnvironmentConfig) -> None:
    minimum = config.managed_scaling_min_units
    maximum = config.managed_scaling_max_units
    if (minimum is None) != (maximum is None):
        key = "managedScalingMaxUnits" if maximum is None else "managedScalingMinUnits"
        raise ConfigError(
            key, None, "managedScalingMinUnits and managedScalingMaxUnits go together"
        )
    if minimum is None or maximum is None:
        return
    # The limits count core and task instances only; EMR never scales the primary node.
    _validate_range("managedScalingMinUnits", minimum, 1, MAX_MANAGED_SCALING_UNITS)
    _validate_range("managedScalingMaxUnits", maximum, minimum, MAX_MANAGED_SCALING_UNITS)


def _validate_users(users: tuple[str, ...]) -> None:
    if not users:
        raise ConfigError("jupyterUsers", list(users), "expected at least one user name")
    for user in users:
        if not USER_NAME_PATTERN.match(user):
            raise ConfigError(
                "jupyterUsers",
                user,
                "expected Linux user names: lowercase letters, digits, '_' and '-', "
                "starting with a letter or '_', at most 32 characters",
            )
    duplicates = sorted({user for user in users if users.count(user) > 1})
    if duplicates:
        raise ConfigError(
            "jupyterUsers", list(users), f"expected unique names; repeated: {duplicates}"
        )
    # EMR's own JupyterHub administrator and the system accounts must stay untouched.
    reserved = {"jovyan", "hadoop", "root", "livy", "spark", "hdfs", "yarn"}
    clash = sorted(set(users) & reserved)
    if clash:
        raise ConfigError("jupyterUsers", clash[0], f"is reserved; avoid {sorted(reserved)}")


__all__ = [
    "CONTEXT_KEYS",
    "ConfigError",
    "EnvironmentConfig",
    "context_key",
    "default_context",
    "load_config",
    "validate",
]
