"""The one step list: a run request becomes the ordered stage argument vectors.

Everything that runs the pipeline consumes this list: ``python -m spark_jobs
pipeline`` (in one process), the local runner (one spark-submit per step), the
EMR step definitions and the Step Functions state machine. Pure Python: CDK
synthesis imports it, so it must never import pyspark or a stage module.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from spark_jobs.params import option_name

STAGES: tuple[str, ...] = (
    "load",
    "explore",
    "split",
    "tune",
    "train",
    "evaluate",
    "recommend",
)

# Parameter options accepted by each stage. The command line builds its
# parsers from this table, so a request can never pass a stage an option it
# does not know.
STAGE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "load": ("max_quarantine_fraction",),
    "explore": (),
    "split": ("seed", "test_fraction", "max_quarantine_fraction", "split_method"),
    "tune": (
        "seed",
        "validation_fraction",
        "study_max_iter",
        "rank_grid",
        "reg_grid",
        "top_k",
        "implicit_rank",
        "implicit_reg_param",
        "implicit_max_iter",
        "implicit_alpha",
        "bayes_rank",
        "bayes_samples",
    ),
    "train": (
        "seed",
        "rating_model",
        "rank",
        "reg_param",
        "max_iter",
        "bayes_rank",
        "bayes_samples",
        "top_k",
        "implicit_rank",
        "implicit_reg_param",
        "implicit_max_iter",
        "implicit_alpha",
    ),
    "evaluate": ("top_k",),
    "recommend": ("top_k", "ordering"),
}


# Parameters that shape the split stage's own split, so they conflict with an existing split.
OWN_SPLIT_PARAMETERS = ("test_fraction", "split_method")


def split_conflict(train: str | None, parameters: Mapping[str, object]) -> str | None:
    """Return why these parameters cannot go with an existing split, or None when they can."""
    conflicting = [name for name in OWN_SPLIT_PARAMETERS if name in parameters]
    if train is None or not conflicting:
        return None
    options = " and ".join(option_name(name) for name in conflicting)
    verb, pronoun = ("sets", "it") if len(conflicting) == 1 else ("set", "them")
    return (
        f"{options} {verb} how split makes its own split and cannot be combined with "
        f"--train and --test. Leave {pronoun} out to use the given files."
    )


def source_missing(source: str | None, train: str | None) -> str | None:
    """Return why an existing split needs a source, or None when it has one or is not given."""
    if train is None or source is not None:
        return None
    return (
        "--train and --test need --source, the MovieLens directory or dataset name the "
        "split files come from, because load reads the movies and the rating scale there. "
        "Without --source, load would read the built-in sample."
    )


@dataclass(frozen=True)
class RunRequest:
    """A run request: a source, a run directory and the parameters the user set.

    ``source`` is a MovieLens directory URI or a dataset name; None means the
    built-in sample. ``train`` and ``test`` name an existing split to use in place
    of the split stage's own. ``parameters`` maps Parameters field names to
    values; stages fall back to the defaults in ``spark_jobs.params`` for the rest.
    Any of the URIs may be a placeholder that a caller substitutes later (the
    state machine fills them from its execution input).
    """

    output: str
    source: str | None = None
    train: str | None = None
    test: str | None = None
    tune: bool = True
    parameters: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = {name for names in STAGE_PARAMETERS.values() for name in names}
        unknown = sorted(set(self.parameters) - known)
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; allowed: {sorted(known)}")
        if (self.train is None) != (self.test is None):
            raise ValueError("train and test must be given together, or neither")
        for problem in (
            split_conflict(self.train, self.parameters),
            source_missing(self.source, self.train),
        ):
            if problem is not None:
                raise ValueError(problem)


@dataclass(frozen=True)
class Step:
    """One stage invocation: its name and the arguments after the entry point."""

    name: str
    args: tuple[str, ...]


def _format_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_format_value(item) for item in value)
    return str(value)


def build_steps(request: RunRequest) -> list[Step]:
    """Return the ordered steps for a request; each step's args start with its stage name."""
    steps = []
    for stage in STAGES:
        if stage == "tune" and not request.tune:
            continue
        args = [stage, "--output", request.output]
        if stage == "load" and request.source is not None:
            args += ["--source", request.source]
        if stage == "split" and request.train is not None:
            args += ["--train", request.train, "--test", request.test]
        for parameter in STAGE_PARAMETERS[stage]:
            if parameter in request.parameters:
                args += [option_name(parameter), _format_value(request.parameters[parameter])]
        steps.append(Step(name=stage, args=tuple(args)))
    return steps


def submit_command(
    step: Step,
    *,
    entry_point: str,
    py_files: str,
    master: str | None = None,
    deploy_mode: str | None = None,
    spark_conf: Mapping[str, str] | None = None,
    spark_submit: str = "spark-submit",
) -> list[str]:
    """Return the spark-submit argument vector that runs one step.

    ``entry_point`` is the driver script and ``py_files`` the packaged
    ``spark_jobs`` (zip or wheel); both are URIs the cluster can read.
    """
    command = [spark_submit]
    if master is not None:
        command += ["--master", master]
    if deploy_mode is not None:
        command += ["--deploy-mode", deploy_mode]
    for key, value in sorted((spark_conf or {}).items()):
        command += ["--conf", f"{key}={value}"]
    command += ["--py-files", py_files, entry_point]
    command += list(step.args)
    return command


def submit_commands(steps: Sequence[Step], **submit_options: object) -> list[list[str]]:
    """Return ``submit_command`` for each step, with the same options."""
    return [submit_command(step, **submit_options) for step in steps]  # type: ignore[arg-type]
