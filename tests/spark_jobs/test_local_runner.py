"""The local runner: the step list through spark-submit, from the built job artifact.

The end-to-end test starts a real Spark standalone cluster on loopback (a master
and two workers from the pyspark distribution) and runs the whole pipeline on
ml-latest-small through it, one spark-submit per stage, as EMR steps would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from infra.artifact import build_artifact
from spark_jobs import layout
from spark_jobs import local_runner
from spark_jobs.layout import RunLayout
from spark_jobs.local_runner import StepFailedError
from spark_jobs.steps import STAGES
from spark_jobs.steps import RunRequest
from spark_jobs.steps import build_steps

pytestmark = pytest.mark.spark

WORKERS = 2
WORKER_MEMORY = "1g"
EXECUTOR_MEMORY = "700m"
START_TIMEOUT_SECONDS = 120

# One grid point, a 3-iteration study and a small ranking model, in place of the
# default nine-model grid, so the pipeline does little ALS work.
SMALL_PARAMETERS = {
    "rank_grid": (8,),
    "reg_grid": (0.1,),
    "study_max_iter": 3,
    "implicit_rank": 8,
    "implicit_max_iter": 3,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spark_class() -> str:
    return str(Path(local_runner.find_spark_submit()).with_name("spark-class"))


def wait_for_workers(ui_port: int, processes, logs: list[Path]) -> None:
    """Poll the master's JSON status until every worker is alive; fail with the logs if not."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                pytest.fail(f"{log.name} exited with status {process.returncode}:\n"
                            f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as reply:
                status = json.load(reply)
            if status.get("aliveworkers", 0) >= WORKERS:
                return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(
        "the standalone cluster did not start in time:\n"
        + "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs)
    )


def master_status(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as reply:
        return json.load(reply)


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """A Spark standalone master and two workers, all on 127.0.0.1, stopped afterwards."""
    directory = tmp_path_factory.mktemp("standalone")
    environment = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(directory)}
    master_port, master_ui = free_port(), free_port()
    commands = [
        (
            "master.log",
            [
                spark_class(), "org.apache.spark.deploy.master.Master",
                "--host", "127.0.0.1", "--port", str(master_port), "--webui-port", str(master_ui),
            ],
        )
    ]
    for number in range(WORKERS):
        commands.append(
            (
                f"worker-{number}.log",
                [
                    spark_class(), "org.apache.spark.deploy.worker.Worker",
                    "--host", "127.0.0.1",
                    "--webui-port", str(free_port()),
                    "--cores", "1",
                    "--memory", WORKER_MEMORY,
                    "--work-dir", str(directory / f"work-{number}"),
                    f"spark://127.0.0.1:{master_port}",
                ],
            )
        )
    processes, logs = [], []
    try:
        for name, command in commands:
            log = directory / name
            logs.append(log)
            with log.open("w") as output:
                processes.append(
                    subprocess.Popen(
                        command,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        env=environment,
                        cwd=directory,
                        start_new_session=True,
                    )
                )
            if name == "master.log":
                time.sleep(2)
        wait_for_workers(master_ui, processes, logs)
        yield {"url": f"spark://127.0.0.1:{master_port}", "ui_port": master_ui}
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture(scope="module")
def built_artifact(tmp_path_factory):
    return build_artifact(build_root=tmp_path_factory.mktemp("artifacts"))


def test_plan_runs_artifact_on_loopback(built_artifact):
    request = RunRequest(output="/tmp/run", source="ml-latest-small")
    planned = local_runner.plan(request, artifact=built_artifact.directory, master="local[2]")

    assert [step.name for step, _ in planned] == list(STAGES)
    for step, command in planned:
        assert command[command.index("--py-files") + 1] == str(built_artifact.package_zip)
        assert command[command.index("--py-files") + 2] == str(built_artifact.entry_point)
        assert "spark.driver.bindAddress=127.0.0.1" in command
        assert command[command.index("--master") + 1] == "local[2]"
        assert tuple(command[command.index("--py-files") + 3 :]) == step.args


def test_plan_rejects_unbuilt_directory(tmp_path):
    with pytest.raises(local_runner.PipelineError) as raised:
        local_runner.plan(RunRequest(output="/tmp/run"), artifact=tmp_path)

    assert "python -m infra.artifact build" in str(raised.value)


def test_help_matches_pipeline_options(capsys):
    with pytest.raises(SystemExit):
        local_runner.build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--rating-model {als,bayes}" in text
    assert "movies recommended per user (allowed [1, 1000]; default: 20)" in text
    assert "default: tune's choice, or 10 when tune has not run" in text


def test_summary_parsed_after_log_lines():
    stdout = 'INFO counts {"rows": 3}\n{\n  "rows": 3,\n  "nested": {\n    "a": 1\n  }\n}\n'

    assert local_runner._parse_summary(stdout) == {"rows": 3, "nested": {"a": 1}}


def test_summary_parsed_before_exit_log_line():
    stdout = (
        '{\n  "rows": 3\n}\n'
        "2026-12-05 05:48:37,856 INFO py4j.clientserver: Closing down clientserver connection\n"
    )

    assert local_runner._parse_summary(stdout) == {"rows": 3}


def test_summary_without_json_is_raw_text():
    assert local_runner._parse_summary("INFO done\n") == "INFO done"
    assert local_runner._parse_summary("") is None


def test_failed_step_stops_the_run(built_artifact, tmp_path):
    request = RunRequest(output=str(tmp_path / "run"), source=str(tmp_path / "no-such-dataset"))

    with pytest.raises(StepFailedError) as raised:
        local_runner.run(request, artifact=built_artifact.directory, master="local[1]")

    assert raised.value.step == "load"
    assert raised.value.returncode == 2
    assert "no-such-dataset" in str(raised.value)
    assert not (tmp_path / "run" / layout.EXPLORE).exists()


def test_standalone_cluster_runs_pipeline(standalone_cluster, built_artifact, ml_latest_small,
                                          tmp_path):
    output = tmp_path / "run"
    request = RunRequest(
        output=str(output), source=str(ml_latest_small), parameters=SMALL_PARAMETERS
    )
    planned = local_runner.plan(
        request,
        artifact=built_artifact.directory,
        master=standalone_cluster["url"],
        spark_conf={"spark.executor.memory": EXECUTOR_MEMORY},
    )

    results = local_runner.run(
        request,
        artifact=built_artifact.directory,
        master=standalone_cluster["url"],
        spark_conf={"spark.executor.memory": EXECUTOR_MEMORY},
    )
    run = RunLayout(str(output))

    # Every step ran, in order, exactly the command the plan (and the parity test) shows.
    assert [result.name for result in results] == [step.name for step in build_steps(request)]
    assert [list(result.command) for result in results] == [command for _, command in planned]
    # Each step's summary is the JSON its command line printed, not raw log text.
    for result in results:
        assert isinstance(result.summary, dict), result.name
    # Each spark-submit was an application of the standalone master.
    completed = master_status(standalone_cluster["ui_port"])["completedapps"]
    assert len(completed) >= len(results)

    for path in (
        run.ratings,
        run.movies,
        run.load_report,
        run.explore,
        run.split_train,
        run.split_test,
        run.tuning_results,
        run.tuning_plot,
        run.model,
        run.metrics,
        run.recommendations,
        run.recommendations_csv,
    ):
        assert Path(path).exists(), path

    # The stages ran the artifact's code: its zip alone carries the content hash.
    for stage in STAGES:
        manifest = json.loads(Path(run.manifest(stage)).read_text(encoding="utf-8"))
        assert manifest["code_version"] == built_artifact.code_version, stage

    metrics = json.loads(Path(run.metrics).read_text(encoding="utf-8"))
    for key in ("rmse", "mae", "n_train", "n_test", "n_test_scored", "params", "dataset"):
        assert key in metrics, key
    # One rank, one regParam and at most 3 iterations: a looser bound than the
    # 0.80..0.90 the default tuning reaches, but a broken model lands far outside.
    assert 0.75 < metrics["rmse"] < 1.0
    assert metrics["n_test_scored"] > 0.9 * metrics["n_test"]

    recommendations = recommendations_by_user(Path(run.recommendations_csv))
    assert len(recommendations) == 610, "every ml-latest-small user gets recommendations"
    for user, rows in recommendations.items():
        movies = [row["movieId"] for row in rows]
        assert len(movies) == 20, user
        assert len(set(movies)) == 20, user


def recommendations_by_user(csv_path: Path) -> dict[str, list[dict[str, str]]]:
    import csv

    files = sorted(csv_path.glob("*.csv")) if csv_path.is_dir() else [csv_path]
    by_user: dict[str, list[dict[str, str]]] = {}
    for file in files:
        with file.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                by_user.setdefault(row["userId"], []).append(row)
    return by_user


def test_main_rejects_missing_source_before_spark(capsys, tmp_path):
    arguments = ["--artifact", str(tmp_path), "--output", str(tmp_path / "run")]

    code = local_runner.main([*arguments, "--source", "ml-latst-small"])
    message = capsys.readouterr().err

    assert code == 2
    assert "input not found: --source 'ml-latst-small' does not exist" in message
    assert not (tmp_path / "run").exists()
