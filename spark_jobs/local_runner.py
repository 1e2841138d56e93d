"""Run the step list through spark-submit, one process per stage, against local[*] or spark://.

This is the EMR pipeline on one machine: the same argument vectors from
``spark_jobs.steps``, submitted from a built job artifact (its entry script and
package zip) rather than from the source tree. Each step is a separate
spark-submit, so a stage only reads what the previous ones committed to the run
directory, exactly as EMR steps do::

    python -m infra.artifact build
    python -m spark_jobs.local_runner --artifact build/artifacts/VERSION \\
        --master spark://127.0.0.1:7077 --output runs/standalone --source DIR

Pure Python: it starts Spark only through spark-submit and never imports pyspark.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_jobs.errors import PipelineError
from spark_jobs.steps import RunRequest
from spark_jobs.steps import Step
from spark_jobs.steps import build_steps
from spark_jobs.steps import submit_command

logger = logging.getLogger(__name__)

# Files of a built job artifact that spark-submit needs. infra.artifact writes
# an artifact with these names, and the EMR steps refer to them under its S3 prefix.
ARTIFACT_ENTRY_POINT = "main.py"
ARTIFACT_PACKAGE_ZIP = "spark_jobs.zip"

# Spark settings for a run on this machine: everything listens on loopback only,
# and the shuffle is sized for one machine instead of Spark's default 200 partitions.
LOCAL_SPARK_CONF: dict[str, str] = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
}

# Lines of a failed step's output (each stream) repeated in the error message.
TAIL_LINES = 25


class StepFailedError(PipelineError):
    """A spark-submit step exited with a non-zero status; later steps were not run."""

    def __init__(self, step: str, returncode: int, output_tail: str) -> None:
        super().__init__(
            f"step {step} failed with exit status {returncode}; later steps were not run. "
            f"Last lines of its output:\n{output_tail}"
        )
        self.step = step
        self.returncode = returncode


@dataclass(frozen=True)
class StepResult:
    """One executed step: its command, duration in seconds and the JSON summary it printed."""

    name: str
    command: tuple[str, ...]
    seconds: float
    summary: Any


def find_spark_submit() -> str:
    """Return the spark-submit of SPARK_HOME, or else of the installed pyspark package.

    Raises PipelineError when neither exists.
    """
    candidates = []
    if os.environ.get("SPARK_HOME"):
        candidates.append(Path(os.environ["SPARK_HOME"]) / "bin" / "spark-submit")
    spec = importlib.util.find_spec("pyspark")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "bin" / "spark-submit")
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise PipelineError(
        "spark-submit not found: set SPARK_HOME to a Spark 3.5 installation or install pyspark "
        "(pip install -r requirements.txt)"
    )


def artifact_files(artifact: Path) -> tuple[str, str]:
    """Return the entry script and package zip of a built artifact directory.

    Raises PipelineError naming the missing file and the build command.
    """
    entry_point = artifact / ARTIFACT_ENTRY_POINT
    package_zip = artifact / ARTIFACT_PACKAGE_ZIP
    for path in (entry_point, package_zip):
        if not path.is_file():
            raise PipelineError(
                f"{path} not found: {artifact} is not a built job artifact. "
                f"Build one with: python -m infra.artifact build"
            )
    return str(entry_point.resolve()), str(package_zip.resolve())


def plan(
    request: RunRequest,
    *,
    artifact: Path,
    master: str = "local[*]",
    spark_conf: Mapping[str, str] | None = None,
    spark_submit: str | None = None,
) -> list[tuple[Step, list[str]]]:
    """Return each step of ``request`` with the spark-submit command that runs it, in order.

    ``spark_conf`` adds to (and overrides) ``LOCAL_SPARK_CONF``.
    """
    entry_point, package_zip = artifact_files(artifact)
    conf = {**LOCAL_SPARK_CONF, **(spark_conf or {})}
    executable = spark_submit or find_spark_submit()
    return [
        (
            step,
            submit_command(
                step,
                entry_point=entry_point,
                py_files=package_zip,
                master=master,
                spark_conf=conf,
                spark_submit=executable,
            ),
        )
        for step in build_steps(request)
    ]


def _environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Executors must run a Python with numpy: the one running this runner has it.
    environment.setdefault("PYSPARK_PYTHON", sys.executable)
    environment.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    return environment


def _run_command(
    name: str, command: Sequence[str], *, echo_logs: bool, working_dir: str
) -> tuple[int, str, str]:
    """Run one spark-submit; return its exit status, its stdout, and the tail of both streams.

    spark-submit merges the Python driver's stderr into its stdout, so the
    stage's log lines and error message arrive on stdout and the JVM's log on
    stderr. Each stream is read on its own thread, so neither pipe can fill up
    and block Spark.
    """
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
        cwd=working_dir,
    )
    stdout_lines: list[str] = []
    stderr_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def drain(stream, keep) -> None:
        for line in stream:
            keep(line)
            if echo_logs:
                sys.stderr.write(f"[{name}] {line}")

    readers = [
        threading.Thread(target=drain, args=(process.stdout, stdout_lines.append)),
        threading.Thread(target=drain, args=(process.stderr, stderr_tail.append)),
    ]
    for reader in readers:
        reader.start()
    returncode = process.wait()
    for reader in readers:
        reader.join()
    output_tail = "".join(stderr_tail) + "".join(stdout_lines[-TAIL_LINES:])
    return returncode, "".join(stdout_lines), output_tail


def run(
    request: RunRequest,
    *,
    artifact: Path,
    master: str = "local[*]",
    spark_conf: Mapping[str, str] | None = None,
    spark_submit: str | None = None,
    echo_logs: bool = False,
) -> list[StepResult]:
    """Run every step of ``request`` in order and return what each printed.

    Stops at the first step that exits with a non-zero status and raises
    StepFailedError with the last lines of its output. ``echo_logs`` copies each
    step's log lines to this process's stderr as they arrive.
    """
    results = []
    planned = plan(
        request, artifact=artifact, master=master, spark_conf=spark_conf, spark_submit=spark_submit
    )
    # Python workers put their working directory first on sys.path. An empty one
    # keeps a spark_jobs directory there (the source tree) from shadowing the zip.
    with tempfile.TemporaryDirectory(prefix="spark_jobs_runner_") as working_dir:
        for step, command in planned:
            result = _run_step(
                step, command, master=master, echo_logs=echo_logs, working_dir=working_dir
            )
            results.append(result)
    return results


def _run_step(
    step: Step, command: list[str], *, master: str, echo_logs: bool, working_dir: str
) -> StepResult:
    started = time.monotonic()
    logger.info("step %s: spark-submit on %s", step.name, master)
    returncode, stdout, output_tail = _run_command(
        step.name, command, echo_logs=echo_logs, working_dir=working_dir
    )
    seconds = round(time.monotonic() - started, 1)
    if returncode != 0:
        logger.error(
            "step %s: failed with exit status %d after %.1f s", step.name, returncode, seconds
        )
        raise StepFailedError(step.name, returncode, output_tail)
    logger.info("step %s: finished in %.1f s", step.name, seconds)
    return StepResult(step.name, tuple(command), seconds, _parse_summary(stdout))


def _parse_summary(stdout: str) -> Any:
    """Return the JSON summary that the command line prints last, or the raw text without one.

    Log lines can follow the summary: py4j logs the close of its connection when
    the driver's Python exits, and spark-submit merges that log into stdout.
    """
    # json.dumps(indent=2) starts the document with a line holding only "{",
    # which no log line before it does.
    lines = stdout.rstrip().splitlines()
    starts = [index for index, line in enumerate(lines) if line == "{"]
    decoder = json.JSONDecoder()
    for start in reversed(starts):
        try:
            summary, _ = decoder.raw_decode("\n".join(lines[start:]))
        except json.JSONDecodeError:
            continue
        return summary
    return stdout.strip() or None


def build_parser() -> argparse.ArgumentParser:
    from spark_jobs.cli import PARAMETER_OPTIONS
    from spark_jobs.cli import add_parameter_options

    parser = argparse.ArgumentParser(
        prog="python -m spark_jobs.local_runner",
        description="Run the pipeline's steps with spark-submit from a built job artifact.",
    )
    parser.add_argument("--artifact", type=Path, required=True, help="built artifact directory")
    parser.add_argument(
        "--master", default="local[*]", help="Spark master: local[*] or spark://HOST:PORT"
    )
    parser.add_argument("--output", required=True, help="run directory URI (path or s3://)")
    parser.add_argument("--source", help="MovieLens directory URI or dataset name")
    parser.add_argument("--train", help="existing training ratings file, used with --test")
    parser.add_argument("--test", help="existing test ratings file, used with --train")
    parser.add_argument("--no-tune", action="store_true", help="leave out the tune stage")
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Spark configuration passed to every spark-submit; repeat for several",
    )
    parser.add_argument("--quiet", action="store_true", help="do not echo the steps' Spark logs")
    # The same options, ranges and defaults as python -m spark_jobs pipeline.
    add_parameter_options(parser, list(PARAMETER_OPTIONS), "pipeline")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from spark_jobs.cli import PARAMETER_OPTIONS
    from spark_jobs.cli import check_inputs_exist
    from spark_jobs.params import Parameters
    from spark_jobs.session import check_master

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    parameters = {
        name: getattr(args, name) for name in PARAMETER_OPTIONS if getattr(args, name) is not None
    }
    try:
        conf = dict(_split_conf(item) for item in args.conf)
        Parameters().with_values(**parameters).validate()
        check_master(args.master)
        check_inputs_exist({"--source": args.source, "--train": args.train, "--test": args.test})
        request = RunRequest(
            output=_absolute(args.output, always=True),
            source=_absolute(args.source),
            train=_absolute(args.train),
            test=_absolute(args.test),
            tune=not args.no_tune,
            parameters=parameters,
        )
        results = run(
            request,
            artifact=args.artifact,
            master=args.master,
            spark_conf=conf,
            echo_logs=not args.quiet,
        )
    except (PipelineError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = {
        "output": args.output,
        "steps": [
            {"name": result.name, "seconds": result.seconds, "summary": result.summary}
            for result in results
        ],
    }
    print(json.dumps(report, indent=2, sort_keys=True, default=str))
    return 0


def _absolute(uri: str | None, *, always: bool = False) -> str | None:
    """Return a local path as an absolute path, because the steps run in another directory.

    URIs with a scheme pass unchanged, and so do names that are not existing paths
    (dataset names), unless ``always`` is set.
    """
    if uri is None or "://" in uri or uri.startswith("file:"):
        return uri
    if always or os.path.exists(uri):
        return os.path.abspath(uri)
    return uri


def _split_conf(item: str) -> tuple[str, str]:
    key, separator, value = item.partition("=")
    if not separator or not key:
        raise ValueError(f"invalid --conf {item!r}; expected KEY=VALUE")
    return key, value


if __name__ == "__main__":
    sys.exit(main())
