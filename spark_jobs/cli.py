"""Command line: ``python -m spark_jobs STAGE [options]`` and ``python -m spark_jobs pipeline``.

This is the only place that reads arguments and creates the Spark session.
spark-submit runs the same entry point unchanged on EMR and on a local cluster.
Options are checked before Spark starts, so a bad value costs no JVM start.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from spark_jobs.errors import InputDataError
from spark_jobs.errors import ParameterError
from spark_jobs.errors import PipelineError
from spark_jobs.layout import RunLayout
from spark_jobs.layout import without_localhost
from spark_jobs.params import NAMED_CHOICES
from spark_jobs.params import RANGES
from spark_jobs.params import Parameters
from spark_jobs.steps import STAGE_PARAMETERS
from spark_jobs.steps import STAGES
from spark_jobs.steps import RunRequest
from spark_jobs.steps import build_steps
from spark_jobs.steps import option_name
from spark_jobs.steps import source_missing
from spark_jobs.steps import split_conflict

logger = logging.getLogger(__name__)


def _number_list(convert: Callable[[str], Any], kind: str, example: str) -> Callable[[str], tuple]:
    """Return an argparse type that reads comma-separated ``kind`` with ``convert``."""

    def parse(text: str) -> tuple:
        # An empty entry, as in "8,,16", is rejected like any other unreadable one.
        try:
            return tuple(convert(item) for item in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid list {text!r}; expected {kind} separated by commas, for example {example}"
            ) from None

    return parse


_int_list = _number_list(int, "integers", "8,16,32")
_float_list = _number_list(float, "numbers", "0.05,0.1")


# Type and help text of each Parameters field, as a command-line option.
PARAMETER_OPTIONS: dict[str, tuple[Callable[[str], Any], str]] = {
    "seed": (
        int,
        "random seed for the hash or per-user split, tune's validation carves and model "
        "initialisation; split with --train/--test does not use it",
    ),
    "test_fraction": (float, "share of ratings held out for testing"),
    "split_method": (
        str,
        "how split holds out test ratings: hash (each rating by a hash of userId, movieId "
        "and seed) or per-user (that share of each user's ratings)",
    ),
    "validation_fraction": (float, "share of training ratings held out by tune"),
    "rank": (int, "latent factors of the ALS rating model"),
    "reg_param": (float, "regParam of the ALS rating model"),
    "max_iter": (int, "iterations of the ALS rating model"),
    "top_k": (int, "movies recommended per user"),
    "study_max_iter": (int, "iterations per grid point in tune, scored after each one"),
    "rank_grid": (_int_list, "comma-separated ranks searched by tune"),
    "reg_grid": (_float_list, "comma-separated regParam values searched by tune"),
    "max_quarantine_fraction": (
        float,
        "stop load, or split with --train/--test, when more than this share of a "
        "file's rows is rejected",
    ),
    "implicit_rank": (int, "latent factors of the implicit-feedback ranking model"),
    "implicit_reg_param": (float, "regParam of the implicit-feedback ranking model"),
    "implicit_max_iter": (int, "iterations of the implicit-feedback ranking model"),
    "implicit_alpha": (float, "confidence weight per rating point of the ranking model"),
    "rating_model": (
        str,
        "rating model train fits: als (biases plus ALS on the residuals) or bayes "
        "(Bayesian factorisation by Gibbs sampling)",
    ),
    "bayes_rank": (int, "latent factors of the Bayesian rating model"),
    "bayes_samples": (
        int,
        "Gibbs samples of the Bayesian rating model; the first fifth are burn-in",
    ),
    "ordering": (
        str,
        "top-k list to write: default (the list tune measured best), rating (every unrated "
        "movie by predicted rating), implicit (the ranking model's order) or reranked (the "
        "ranking model's top k by predicted rating)",
    ),
}


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="run directory URI (path or s3://)")
    parser.add_argument(
        "--master",
        help="Spark master when run without spark-submit (default local[*]); "
        "ignored under spark-submit",
    )


# Options whose default gives way to tune's choice when the run directory has one.
TUNED_OPTIONS = ("rank", "reg_param", "max_iter", "rating_model")
# Options that train takes from the settings tune scored the Bayesian model with.
SAMPLER_OPTIONS = ("bayes_rank", "bayes_samples")


def _default_text(name: str, command: str) -> str:
    value = getattr(Parameters(), name)
    if isinstance(value, tuple):
        value = ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value)
    elif isinstance(value, float):
        value = f"{value:g}"
    if command in ("train", "pipeline") and name in TUNED_OPTIONS:
        return f"default: tune's choice, or {value} when tune has not run"
    if command == "train" and name in SAMPLER_OPTIONS:
        return f"default: the value tune used, or {value} when tune has not run"
    return f"default: {value}"


def _option_notes(name: str, command: str) -> str:
    """Return the allowed range, when the option has one, and the default, for the help."""
    notes = [_default_text(name, command)]
    allowed = RANGES.get(name)
    if allowed is not None:
        is_list = isinstance(getattr(Parameters(), name), tuple)
        notes.insert(0, f"{'each ' if is_list else ''}allowed {allowed.text()}")
    return "; ".join(notes)


def add_parameter_options(
    parser: argparse.ArgumentParser, names: Sequence[str], command: str
) -> None:
    """Add an option for each named parameter, with its range and its default for ``command``."""
    for name in names:
        value_type, help_text = PARAMETER_OPTIONS[name]
        # The usage line shows the allowed names, but argparse does not check them:
        # validate() does, so a wrong name gets the same message as any invalid value.
        choices = NAMED_CHOICES.get(name)
        parser.add_argument(
            option_name(name),
            dest=name,
            type=value_type,
            metavar="{" + ",".join(choices) + "}" if choices else None,
            help=f"{help_text} ({_option_notes(name, command)})",
        )


def input_uris(args: argparse.Namespace) -> list[str]:
    """Return what the command reads first: its source and split files, or the loaded ratings."""
    if args.command in ("load", "pipeline"):
        if args.source is None:
            from spark_jobs.stages.load import builtin_sample_path

            uris = [builtin_sample_path()]
        else:
            uris = [args.source]
        return uris + [
            uri for uri in (getattr(args, "train", None), getattr(args, "test", None)) if uri
        ]
    return [RunLayout(args.output).ratings]


DESCRIPTION = (
    "Train an ALS recommender on MovieLens ratings, one stage at a time or all stages with "
    "'pipeline'. Every stage reads its inputs from and writes its outputs to the run "
    "directory given by --output. Options are checked before Spark starts."
)
EXAMPLE = "example: python -m spark_jobs pipeline --output runs/demo"
STAGE_HELP = {
    "load": "read MovieLens ratings and movies, check every row and quarantine the rows that fail",
    "explore": "write summary statistics and two plots of the loaded ratings",
    "split": "hold out test ratings by hash or per user, or read given train and test files",
    "tune": "choose the rating model, its settings and the default top-k list on validation "
    "carves of the training split",
    "train": "fit the rating and ranking models on the whole training split",
    "evaluate": "add precision, recall, NDCG and MAP at k of each top-k list to metrics.json",
    "recommend": "write each user's top k movies, never one the user has rated",
}


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spark_jobs", description=DESCRIPTION, epilog=EXAMPLE
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    for stage in STAGES:
        stage_parser = subcommands.add_parser(
            stage, help=STAGE_HELP[stage], description=_sentence(STAGE_HELP[stage])
        )
        _add_common_options(stage_parser)
        add_parameter_options(stage_parser, STAGE_PARAMETERS[stage], stage)
        if stage == "load":
            stage_parser.add_argument(
                "--source",
                help="MovieLens directory URI or dataset name; default: the sample pyspark ships",
            )
        if stage == "split":
            _add_split_files(stage_parser)
        if stage == "recommend":
            stage_parser.add_argument("--user", type=int, help="print this user's list")

    pipeline = subcommands.add_parser(
        "pipeline",
        help="run every stage in order",
        description="Run every stage in order, in one Spark session.",
    )
    _add_common_options(pipeline)
    pipeline.add_argument(
        "--source",
        help="MovieLens directory URI or dataset name; default: the sample pyspark ships",
    )
    _add_split_files(pipeline)
    pipeline.add_argument("--no-tune", action="store_true", help="skip the tune stage")
    all_parameters = [name for name in PARAMETER_OPTIONS]
    add_parameter_options(pipeline, all_parameters, "pipeline")
    parser.set_defaults(stage_parsers=subcommands.choices)
    return parser


def parse_command_line(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse ``argv``, reporting an unknown option with the usage of the stage it was given to.

    argparse reports unknown options from the top-level parser, whose usage
    line lists only the stage names.
    """
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.stage_parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    del args.stage_parsers
    return args


def _add_split_files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", help="existing training ratings file, used with --test")
    parser.add_argument("--test", help="existing test ratings file, used with --train")


def explicit_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """Return the Parameters fields set on the command line."""
    return {
        name: getattr(args, name)
        for name in PARAMETER_OPTIONS
        if getattr(args, name, None) is not None
    }


def _local_path(uri: str) -> str | None:
    """Return the local path that a plain path or ``file:`` URI names, or None for a remote URI."""
    uri = without_localhost(uri)
    if uri.startswith("file:"):
        return uri[len("file:") :]
    if "://" in uri:
        return None
    return uri


def _normalise(uri: str) -> str:
    """Return ``uri`` as a comparable prefix: a local path resolved through symlinks, else the URI."""
    path = _local_path(uri)
    if path is None:
        return uri.rstrip("/") + "/"
    return os.path.realpath(path).rstrip("/") + "/"


def check_output_location(output: str, inputs: dict[str, str | None]) -> None:
    """Raise ParameterError when the run directory is or is under a file, or overlaps an input.

    An input overlaps when the run directory is inside it, is it, or contains it.
    """
    out = _normalise(output)
    # _normalise leaves a remote URI as it is, and no local file has that name.
    if os.path.isfile(out.rstrip("/")):
        raise ParameterError(
            f"invalid value for --output: {output!r} is a file; give a directory, new or existing"
        )
    parent = os.path.dirname(out.rstrip("/"))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and os.path.isfile(parent):
        raise ParameterError(
            f"invalid value for --output: {output!r} is under {parent}, which is a file; "
            f"give a directory, new or existing"
        )
    for option, value in inputs.items():
        if value is None:
            continue
        is_dataset_name = "/" not in value and not os.path.exists(value)
        if is_dataset_name:
            continue
        inside = _normalise(value)
        if out.startswith(inside):
            raise ParameterError(
                f"invalid value for --output: {output!r} is inside the input {option} {value!r}; "
                f"choose a run directory outside the input data"
            )
        if inside.startswith(out):
            raise ParameterError(
                f"invalid value for --output: {output!r} contains the input {option} {value!r}, "
                f"and the stages replace whole directories in the run directory. Choose a run "
                f"directory that does not contain the input data"
            )


def local_paths_resolve_locally() -> bool:
    """Return whether a path without a scheme names a file on this machine.

    Under spark-submit, or with a Hadoop configuration such as EMR's, such a path
    names a file in the cluster's default file system (HDFS on EMR), which only
    Spark can check.
    """
    from spark_jobs.session import launched_by_spark_submit

    return not launched_by_spark_submit() and not os.environ.get("HADOOP_CONF_DIR")


def check_inputs_exist(inputs: dict[str, str | None]) -> None:
    """Raise InputDataError when a local input path does not exist, before Spark starts.

    Remote URIs and dataset names are left to the stage that reads them, and so
    are all paths when local_paths_resolve_locally is false.
    """
    from spark_jobs.datasets import DATASETS

    if not local_paths_resolve_locally():
        return
    for option, value in inputs.items():
        if value is None or (option == "--source" and value in DATASETS):
            continue
        path = _local_path(value)
        if path is None or os.path.exists(path):
            continue
        hint = (
            f"Give a MovieLens directory, an s3:// prefix, or one of the dataset names "
            f"{', '.join(sorted(DATASETS))}."
            if option == "--source"
            else "Give an existing ratings file or directory."
        )
        raise InputDataError(
            f"input not found: {option} {value!r} does not exist "
            f"(looked for {os.path.abspath(path)}). {hint}"
        )


def validate_args(args: argparse.Namespace) -> Parameters:
    """Return the validated Parameters, or raise ParameterError naming the option.

    Also raises InputDataError when a local input does not exist.
    """
    explicit = explicit_parameters(args)
    params = Parameters().with_values(**explicit).validate()
    inputs = {
        "--source": getattr(args, "source", None),
        "--train": getattr(args, "train", None),
        "--test": getattr(args, "test", None),
    }
    check_output_location(args.output, inputs)
    if (getattr(args, "train", None) is None) != (getattr(args, "test", None) is None):
        raise ParameterError("--train and --test must be given together")
    conflict = split_conflict(getattr(args, "train", None), explicit)
    if conflict is not None:
        raise ParameterError(conflict)
    if args.command == "pipeline":
        missing = source_missing(args.source, args.train)
        if missing is not None:
            raise ParameterError(missing)
    check_inputs_exist(inputs)
    return params


def run_stage(spark: Any, args: argparse.Namespace, params: Parameters) -> dict[str, Any]:
    """Run the stage named by ``args.command`` and return its summary."""
    from spark_jobs.commit import stage_timer
    from spark_jobs.context import StageContext

    module = importlib.import_module(f"spark_jobs.stages.{args.command}")
    context = StageContext(
        spark=spark,
        layout=RunLayout(args.output),
        params=params,
        explicit=frozenset(explicit_parameters(args)),
        source=getattr(args, "source", None),
        train=getattr(args, "train", None),
        test=getattr(args, "test", None),
        user=getattr(args, "user", None),
    )
    with stage_timer():
        return module.run(context)


def run_pipeline(spark: Any, args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """Run the step list in this process, each step parsed exactly as spark-submit would pass it."""
    request = RunRequest(
        output=args.output,
        source=args.source,
        train=args.train,
        test=args.test,
        tune=not args.no_tune,
        parameters=explicit_parameters(args),
    )
    summaries = {}
    for step in build_steps(request):
        step_args = parser.parse_args(list(step.args))
        summaries[step.name] = run_stage(spark, step_args, validate_args(step_args))
    return summaries


def pipeline_report(output: str, summaries: dict[str, Any]) -> str:
    """Return a few lines for a person: where the outputs are, test RMSE and one user's top 5."""
    lines = [f"Run directory: {output}"]
    train = summaries.get("train", {})
    if "rmse" in train:
        lines.append(
            f"Test RMSE {train['rmse']:.4f}, MAE {train['mae']:.4f} over "
            f"{train['n_test_scored']} ratings ({train['n_test_cold_start_dropped']} cold-start "
            f"ratings dropped)"
        )
    evaluate = summaries.get("evaluate", {})
    default_list = evaluate.get("default_list")
    if default_list in evaluate:
        lines.append(
            f"Top-{evaluate['k']} list '{default_list}': precision "
            f"{evaluate[default_list]['precision']:.3f}, NDCG {evaluate[default_list]['ndcg']:.3f}"
        )
    recommend = summaries.get("recommend", {})
    if recommend.get("top"):
        lines.append(f"Top {len(recommend['top'])} for user {recommend['user']}:")
        for item in recommend["top"]:
            lines.append(
                f"  {item['rank']:>2}. {item['title']} (movie {item['movieId']}), "
                f"predicted {item['predicted_rating']:.2f}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    parser = build_parser()
    args = parse_command_line(parser, argv)
    try:
        params = validate_args(args)
        from spark_jobs.session import build_session
        from spark_jobs.session import check_master
        from spark_jobs.session import launched_by_spark_submit
        from spark_jobs.session import local_input_bytes

        if not launched_by_spark_submit():
            check_master(args.master)
        spark = build_session(
            f"spark_jobs {args.command}",
            master=args.master,
            input_bytes=local_input_bytes(input_uris(args)),
        )
        if args.command == "pipeline":
            summary = run_pipeline(spark, args, parser)
        else:
            summary = run_stage(spark, args, params)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Unsorted, so a pipeline's stage summaries print in the order the stages ran.
    print(json.dumps(summary, indent=2, default=str))
    if args.command == "pipeline":
        print(pipeline_report(args.output, summary))
    return 0
