"""Atomic stage outputs: manifests written last, a killed stage, reruns and lineage checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import spark_jobs.session
from spark_jobs import cli
from spark_jobs.commit import StageCommit
from spark_jobs.commit import check_lineage
from spark_jobs.commit import read_manifest
from spark_jobs.errors import LineageError
from spark_jobs.errors import UncommittedInputError
from spark_jobs.layout import RunLayout
from spark_jobs.schema import RATINGS_SCHEMA

pytestmark = pytest.mark.spark

REPOSITORY = Path(__file__).resolve().parents[2]
# Upper bound on waiting for the killed subprocess to start writing. It only stops a
# broken run from hanging the suite; the test asserts nothing about durations.
STAGING_WAIT_SECONDS = 900
POLL_SECONDS = 0.02


def ratings_frame(spark, rows):
    return spark.createDataFrame(rows, RATINGS_SCHEMA)


def commit_load(spark, root: Path, rows, dataset: str = "test:tiny") -> StageCommit:
    """Commit a load stage whose ratings are ``rows``; return the finished commit."""
    layout = RunLayout(str(root))
    with StageCommit(spark, layout, "load") as commit:
        ratings_frame(spark, rows).write.parquet(commit.staging_path("ratings"))
        commit.dataset = dataset
        commit.counts["ratings"] = len(rows)
    return commit


def commit_split(spark, root: Path) -> StageCommit:
    layout = RunLayout(str(root))
    load = read_manifest(spark, layout, "load")
    with StageCommit(spark, layout, "split", inputs={"load": load}) as commit:
        ratings_frame(spark, [(1, 1, 4.0, None)]).write.parquet(commit.staging_path("split/train"))
    return commit


# --- commit and rerun ----------------------------------------------------------------------


def test_commit_writes_outputs_and_manifest(spark, tmp_path):
    commit = commit_load(spark, tmp_path, [(1, 2, 3.0, 10)])
    manifest = read_manifest(spark, RunLayout(str(tmp_path)), "load")

    assert manifest == commit.manifest
    assert manifest.stage == "load"
    assert manifest.dataset == "test:tiny"
    assert manifest.load_id == manifest.manifest_id
    assert manifest.outputs == ["ratings"]
    assert manifest.counts == {"ratings": 1}
    assert spark.read.parquet(str(tmp_path / "ratings")).count() == 1
    assert not (tmp_path / "_staging").exists()


def test_commit_failure_leaves_stage_uncommitted(spark, tmp_path):
    commit_load(spark, tmp_path, [(1, 2, 3.0, 10)])
    layout = RunLayout(str(tmp_path))

    with pytest.raises(RuntimeError, match="disk on fire"):
        with StageCommit(spark, layout, "load") as commit:
            ratings_frame(spark, [(5, 5, 5.0, 5)]).write.parquet(commit.staging_path("ratings"))
            raise RuntimeError("disk on fire")

    with pytest.raises(UncommittedInputError) as raised:
        read_manifest(spark, layout, "load")
    assert f"python -m spark_jobs load --output {tmp_path}" in str(raised.value)
    assert "--source SOURCE" in str(raised.value)


def test_failure_log_names_written_staging(spark, tmp_path, caplog):
    layout = RunLayout(str(tmp_path / "run"))

    with caplog.at_level("ERROR", logger="spark_jobs.commit"):
        with pytest.raises(RuntimeError):
            with StageCommit(spark, layout, "load"):
                raise RuntimeError("source not found")
    assert "load: failed, nothing committed" in caplog.text
    assert "_staging" not in caplog.text

    caplog.clear()
    with caplog.at_level("ERROR", logger="spark_jobs.commit"):
        with pytest.raises(RuntimeError):
            with StageCommit(spark, layout, "load") as commit:
                ratings_frame(spark, [(5, 5, 5.0, 5)]).write.parquet(commit.staging_path("ratings"))
                raise RuntimeError("disk on fire")
    assert f"load: failed, outputs left uncommitted in {commit.staging_root}" in caplog.text


def test_rejected_rerun_logs_removed_outputs(spark, tmp_path, caplog):
    commit_load(spark, tmp_path, [(1, 2, 3.0, 10)])
    layout = RunLayout(str(tmp_path))

    with caplog.at_level("WARNING", logger="spark_jobs.commit"):
        with pytest.raises(RuntimeError, match="too many invalid rows"):
            with StageCommit(spark, layout, "load") as commit:
                quarantine = commit.staging_path("quarantine")
                ratings_frame(spark, [(5, 5, 9.0, 5)]).write.parquet(quarantine)
                commit.publish_rejected(("quarantine",))
                raise RuntimeError("too many invalid rows")

    assert "load: rejected its input, so the earlier load outputs were removed: ratings" in (
        caplog.text
    )
    assert not (tmp_path / "ratings").exists()
    assert (tmp_path / "quarantine").exists()


def test_commit_rerun_replaces_outputs(spark, tmp_path):
    first = commit_load(spark, tmp_path, [(1, 2, 3.0, 10), (2, 2, 3.0, 10)])
    second = commit_load(spark, tmp_path, [(7, 8, 1.0, 10)])
    ratings = spark.read.parquet(str(tmp_path / "ratings")).collect()

    assert [(row.userId, row.movieId) for row in ratings] == [(7, 8)]
    assert second.manifest.manifest_id != first.manifest.manifest_id
    assert not (tmp_path / "_staging").exists()


def test_commit_rejects_other_stage_outputs(spark, tmp_path):
    commit = StageCommit(spark, RunLayout(str(tmp_path)), "explore")
    with pytest.raises(ValueError, match="may not write 'ratings'"):
        commit.staging_path("ratings")


def test_commit_removes_stale_staging(spark, tmp_path):
    stale = tmp_path / "_staging" / "load-deadbeef" / "ratings"
    stale.mkdir(parents=True)
    (stale / "part-0.parquet").write_bytes(b"half written")

    commit_load(spark, tmp_path, [(1, 2, 3.0, 10)])

    assert not stale.exists()


def test_commit_keeps_another_stages_staging(spark, tmp_path):
    other_staging = tmp_path / "_staging" / "train-0123456789ab" / "model"
    other_staging.mkdir(parents=True)
    (other_staging / "metadata").write_bytes(b"being written")

    commit_load(spark, tmp_path, [(1, 2, 3.0, 10)])

    assert os.listdir(tmp_path / "_staging") == ["train-0123456789ab"]
    assert (other_staging / "metadata").read_bytes() == b"being written"


# --- lineage ---------------------------------------------------------------------------


def test_check_lineage_rejects_two_runs(spark, tmp_path):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    commit_load(spark, run_a, [(1, 2, 3.0, 10)], dataset="ml-100k:first")
    commit_load(spark, run_b, [(1, 2, 3.0, 10)], dataset="ml-latest-small:second")
    split_a = commit_split(spark, run_a).manifest
    load_b = read_manifest(spark, RunLayout(str(run_b)), "load")

    with pytest.raises(LineageError) as raised:
        check_lineage({"split": split_a, "load": load_b})

    message = str(raised.value)
    assert "ml-100k:first" in message
    assert "ml-latest-small:second" in message
    assert str(run_a) in message
    assert str(run_b) in message


def test_stage_rejects_split_and_ratings_from_different_runs(spark, tmp_path):
    """A stage given one run's split and another run's ratings rejects them and keeps its outputs."""
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    commit_load(spark, run_a, [(1, 2, 3.0, 10)])
    commit_load(spark, run_b, [(1, 2, 3.0, 10)])
    split_a = commit_split(spark, run_a).manifest
    load_b = read_manifest(spark, RunLayout(str(run_b)), "load")
    layout_a = RunLayout(str(run_a))

    with pytest.raises(LineageError) as raised:
        with StageCommit(spark, layout_a, "recommend", inputs={"split": split_a, "load": load_b}):
            pytest.fail("the stage body ran despite mixed inputs")

    message = str(raised.value)
    assert split_a.load_id in message
    assert load_b.load_id in message
    assert read_manifest(spark, layout_a, "split") == split_a


def test_stage_rejects_split_made_before_load_rerun(spark, tmp_path):
    commit_load(spark, tmp_path, [(1, 2, 3.0, 10)])
    split = commit_split(spark, tmp_path).manifest
    commit_load(spark, tmp_path, [(1, 2, 3.0, 10)])
    layout = RunLayout(str(tmp_path))
    load = read_manifest(spark, layout, "load")

    with pytest.raises(LineageError, match="different datasets or runs"):
        check_lineage({"split": split, "load": load})


def test_stage_rejects_tune_made_before_split_rerun(spark, tmp_path):
    commit_load(spark, tmp_path, [(1, 2, 3.0, 10)])
    layout = RunLayout(str(tmp_path))
    first_split = commit_split(spark, tmp_path).manifest
    with StageCommit(spark, layout, "tune", inputs={"split": first_split}) as tune_commit:
        pass
    second_split = commit_split(spark, tmp_path).manifest

    with pytest.raises(LineageError) as raised:
        check_lineage({"split": second_split, "tune": tune_commit.manifest})

    message = str(raised.value)
    assert "the tune output" in message
    assert first_split.manifest_id in message
    assert second_split.manifest_id in message
    assert f"python -m spark_jobs tune --output {tmp_path}" in message
    assert f"remove {layout.manifest('tune')} to train without tune's choices" in message
    assert check_lineage({"split": first_split, "tune": tune_commit.manifest})


def test_commit_uncommits_stages_made_from_earlier_outputs(spark, tmp_path, caplog):
    commit_load(spark, tmp_path, [(1, 2, 3.0, 10)])
    layout = RunLayout(str(tmp_path))
    load = read_manifest(spark, layout, "load")
    with StageCommit(spark, layout, "explore", inputs={"load": load}):
        pass
    split = commit_split(spark, tmp_path).manifest
    with StageCommit(spark, layout, "tune", inputs={"split": split}):
        pass

    with caplog.at_level("INFO", logger="spark_jobs.commit"):
        commit_split(spark, tmp_path)

    assert "split: uncommitted the stages made from its earlier output (tune)." in caplog.text
    assert not (tmp_path / "_manifests" / "tune.json").exists()
    assert (tmp_path / "_manifests" / "explore.json").exists()
    assert (tmp_path / "_manifests" / "split.json").exists()


# --- a real stage process, killed during its write ----------------------------------------------


def wait_for_staged_files(process: subprocess.Popen, staging: Path) -> None:
    """Return once a file exists under ``staging``; fail if the process exits first."""
    deadline = time.monotonic() + STAGING_WAIT_SECONDS
    while time.monotonic() < deadline:
        if staging.exists() and any(path.is_file() for path in staging.rglob("*")):
            return
        if process.poll() is not None:
            pytest.fail(f"the stage exited with {process.returncode} before it wrote anything")
        time.sleep(POLL_SECONDS)
    pytest.fail(f"no file appeared under {staging} within {STAGING_WAIT_SECONDS} s")


def report_counts(root: Path) -> dict:
    report = json.loads((root / "load_report.json").read_text())
    return {key: report[key] for key in ("rows_read", "rows_accepted", "rows_quarantined")}


def test_killed_load_rejected_then_rerun(spark, ml_latest_small, tmp_path, monkeypatch, capsys):
    killed_run, clean_run = tmp_path / "killed", tmp_path / "clean"
    command = [sys.executable, "-m", "spark_jobs", "load", "--source", str(ml_latest_small)]
    environment = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    log_path = tmp_path / "killed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "--output", str(killed_run), "--master", "local[1]"],
            cwd=REPOSITORY,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so the kill reaches the JVM too
        )
        try:
            wait_for_staged_files(process, killed_run / "_staging")
            os.killpg(process.pid, signal.SIGKILL)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    assert process.returncode == -signal.SIGKILL
    assert not (killed_run / "_manifests" / "load.json").exists()

    # The rest runs in this process through the real command line, on the shared session.
    monkeypatch.setattr(spark_jobs.session, "build_session", lambda *args, **kwargs: spark)
    capsys.readouterr()
    assert cli.main(["explore", "--output", str(killed_run)]) == 2
    message = capsys.readouterr().err
    assert "not committed" in message
    assert f"python -m spark_jobs load --output {killed_run}" in message

    assert cli.main(["load", "--source", str(ml_latest_small), "--output", str(killed_run)]) == 0
    assert cli.main(["load", "--source", str(ml_latest_small), "--output", str(clean_run)]) == 0

    for table in ("ratings", "movies"):
        rerun = spark.read.parquet(str(killed_run / table))
        clean = spark.read.parquet(str(clean_run / table))
        assert rerun.count() == clean.count()
        assert rerun.exceptAll(clean).count() == 0
        assert clean.exceptAll(rerun).count() == 0
    assert report_counts(killed_run) == report_counts(clean_run)
    rerun_manifest = read_manifest(spark, RunLayout(str(killed_run)), "load")
    clean_manifest = read_manifest(spark, RunLayout(str(clean_run)), "load")
    assert rerun_manifest.dataset == clean_manifest.dataset
    assert not (killed_run / "_staging").exists()


# --- timings -------------------------------------------------------------------------------


class FakeClock:
    """A time.monotonic stand-in that returns the given readings in order."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0)


def test_timings_count_from_stage_timer(spark, tmp_path, monkeypatch):
    from spark_jobs import commit as commit_module

    # Readings: the timer starts at 100, the commit opens at 105 and closes at 107.
    monkeypatch.setattr(commit_module, "_clock", FakeClock(100.0, 105.0, 107.0))
    with commit_module.stage_timer():
        finished = commit_load(spark, tmp_path, [(1, 2, 3.0, 10)])

    assert finished.manifest.timings["total_seconds"] == 7.0
    assert finished.manifest.timings["commit_seconds"] == 2.0


def test_timings_without_stage_timer(spark, tmp_path, monkeypatch):
    from spark_jobs import commit as commit_module

    monkeypatch.setattr(commit_module, "_clock", FakeClock(105.0, 107.0))
    finished = commit_load(spark, tmp_path, [(1, 2, 3.0, 10)])

    assert finished.manifest.timings["total_seconds"] == 2.0
    assert finished.manifest.timings["commit_seconds"] == 2.0


def test_local_writes_skip_checksum_files(spark, tmp_path):
    commit_load(spark, tmp_path / "run", [(1, 2, 4.0, 0)])
    written = [path.name for path in (tmp_path / "run").rglob("*") if path.is_file()]
    assert any(name.endswith(".parquet") for name in written)
    assert "load.json" in written
    assert [name for name in written if name.endswith(".crc")] == []
