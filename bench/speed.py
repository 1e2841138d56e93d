"""Speed and scale benchmarks: figures to bench/results/<suite>.json and a Markdown table.

    python -m bench.speed small                 # pipeline vs course-style baseline, ml-latest-small
    python -m bench.speed small --repeat 3      # the same, comparing the median of three runs
    python -m bench.speed scale                 # pipeline without tuning on synthetic 25M data
    python -m bench.speed scale --ratings 2500000

``small`` runs ``python -m spark_jobs pipeline`` and ``python -m bench.baseline``
on the same data as child processes, so both include JVM start, and compares
wall time and test RMSE. ``scale`` generates synthetic ratings when missing,
runs the pipeline without tuning, times one ALS iteration, and runs the
single-node references (implicit's ALS, a NumPy top-20) on the same ratings.

Every command's output goes to a log under the work directory. These are
scripts, not tests: the targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import synthetic
from bench.measure import run_measured
from spark_jobs import params
from spark_jobs.steps import STAGES

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "bench" / "results"
ML_LATEST_SMALL = REPOSITORY.parent / "shared" / "movielens" / "ml-latest-small"
DEFAULT_WORK = Path("/tmp/bench-data")

# Targets, reported beside the measured figures.
SMALL_SPEEDUP_TARGET = 3.0
SMALL_WALL_TARGET_SECONDS = 90.0
SMALL_RMSE_TARGET = 0.87
SCALE_MEMORY_TARGET_MIB = 24 * 1024
ALS_RATIO_TARGET = 1.5
TOP_K_RATIO_TARGET = 3.0


def machine() -> dict[str, Any]:
    """Return what the figures depend on: cores, memory, load and the code version measured."""
    import psutil

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPOSITORY
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "commit": commit,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def stage_seconds(run_directory: Path) -> dict[str, float]:
    """Return each committed stage's total_seconds from the run directory's manifests."""
    seconds = {}
    for stage in STAGES:
        manifest = run_directory / "_manifests" / f"{stage}.json"
        if manifest.exists():
            seconds[stage] = json.loads(manifest.read_text())["timings"]["total_seconds"]
    return seconds


def code_environment(code: Path | None) -> dict[str, str] | None:
    """Return the environment that makes child processes import spark_jobs from ``code``.

    Python workers that Spark starts inherit PYTHONPATH, so they import the same
    snapshot as the driver even while the working tree changes.
    """
    if code is None:
        return None
    return {**os.environ, "PYTHONPATH": str(code)}


def run_pipeline(
    source: Path, output: Path, logs: Path, *extra: str, code: Path | None = None
) -> dict[str, Any]:
    """Run ``python -m spark_jobs pipeline`` as a child process and return its figures."""
    command = [sys.executable, "-m", "spark_jobs", "pipeline", "--source", str(source)]
    command += ["--output", str(output), *extra]
    measured = run_measured(
        command, logs / f"pipeline-{output.name}.log", cwd=code, env=code_environment(code)
    )
    metrics_path = output / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    stages = stage_seconds(output)
    return {
        "command": " ".join(command[1:]),
        **measured.to_dict(),
        "stage_seconds": stages,
        "outside_stages_seconds": round(measured.seconds - sum(stages.values()), 2),
        "test_rmse": metrics.get("rmse"),
        "metrics": metrics,
    }


def run_baseline(
    source: Path, output: Path, logs: Path, code: Path | None = None
) -> dict[str, Any]:
    """Run the course-style baseline as a child process and return its figures."""
    command = [sys.executable, "-m", "bench.baseline", "--source", str(source)]
    command += ["--output", str(output)]
    result_path = logs / "baseline.json"
    measured = run_measured(
        command,
        logs / "baseline.log",
        stdout=result_path,
        cwd=code,
        env=code_environment(code),
    )
    result = json.loads(result_path.read_text()) if measured.returncode == 0 else {}
    return {
        "command": " ".join(command[1:]),
        **measured.to_dict(),
        "phase_seconds": result.get("seconds", {}),
        "test_rmse": result.get("test_rmse"),
        "params": {key: result.get(key) for key in ("rank", "reg_param", "max_iter")},
    }


def small_suite(work: Path, code: Path | None = None, repeat: int = 1) -> dict[str, Any]:
    """Compare the pipeline with the baseline on ml-latest-small.

    With ``repeat`` above 1 the two alternate that many times. The speed-up is
    the ratio of the median wall times, and ``pipeline`` and ``baseline`` are
    each side's median run.
    """
    if repeat < 1:
        raise ValueError(f"--repeat must be at least 1, got {repeat}")
    logs = work / "logs"
    pipelines, baselines = [], []
    for round_number in range(1, repeat + 1):
        pipeline_run = work / "run-small"
        # A failed run must not report the previous run's manifests and metrics.
        shutil.rmtree(pipeline_run, ignore_errors=True)
        pipelines.append(run_pipeline(ML_LATEST_SMALL, pipeline_run, logs, code=code))
        baselines.append(run_baseline(ML_LATEST_SMALL, work / "baseline-small", logs, code=code))
        for name, run in (("pipeline", pipelines[-1]), ("baseline", baselines[-1])):
            if run["returncode"] != 0:
                raise RuntimeError(
                    f"the {name} failed in round {round_number} with return code "
                    f"{run['returncode']}; see its log in {logs}"
                )
    ours = _median_run(pipelines)
    baseline = _median_run(baselines)
    speedup = baseline["wall_seconds"] / ours["wall_seconds"]
    return {
        "suite": "small",
        "dataset": "ml-latest-small",
        "machine": machine(),
        "pipeline": ours,
        "baseline": baseline,
        "runs": {
            "pipeline_wall_seconds": [run["wall_seconds"] for run in pipelines],
            "baseline_wall_seconds": [run["wall_seconds"] for run in baselines],
        },
        "speedup": round(speedup, 2),
        "targets": {
            "speedup_at_least": SMALL_SPEEDUP_TARGET,
            "speedup_met": speedup >= SMALL_SPEEDUP_TARGET,
            "rmse_not_worse_met": _not_worse(ours["test_rmse"], baseline["test_rmse"]),
            "pipeline_wall_seconds_under": SMALL_WALL_TARGET_SECONDS,
            "pipeline_wall_met": ours["wall_seconds"] < SMALL_WALL_TARGET_SECONDS,
            "pipeline_rmse_at_most": SMALL_RMSE_TARGET,
            "pipeline_rmse_met": ours["test_rmse"] is not None
            and ours["test_rmse"] <= SMALL_RMSE_TARGET,
        },
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the run with the median wall time (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda run: run["wall_seconds"])
    return ordered[(len(ordered) - 1) // 2]


def _not_worse(ours: float | None, theirs: float | None) -> bool:
    return ours is not None and theirs is not None and ours <= theirs


def ensure_synthetic(ratings: int, work: Path) -> tuple[Path, dict[str, Any]]:
    """Return the synthetic data directory for ``ratings`` ratings, generating it when missing."""
    directory = work / f"synthetic-{ratings}"
    if ratings == synthetic.ML25M_RATINGS:
        config = synthetic.SyntheticConfig()
    else:
        config = synthetic.scaled_config(ratings)
    summary_path = directory / "synthetic.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary["config"] == dataclasses.asdict(config):
            return directory, summary
    logger.info("generating %d synthetic ratings in %s", ratings, directory)
    return directory, synthetic.generate(config, directory)


def scale_suite(
    work: Path, ratings: int, reference_iterations: int, code: Path | None = None
) -> dict[str, Any]:
    """Run the pipeline without tuning on synthetic data and the single-node references."""
    from bench import reference

    logs = work / "logs"
    source, generated = ensure_synthetic(ratings, work)
    run_directory = work / f"run-{source.name}"
    ours = run_pipeline(source, run_directory, logs, "--no-tune", code=code)

    als_log = logs / f"als-timing-{source.name}.json"
    als_measured = run_measured(
        [sys.executable, "-m", "bench.als_timing", "--ratings", str(run_directory / "split/train")],
        logs / f"als-timing-{source.name}.log",
        stdout=als_log,
        cwd=code,
        env=code_environment(code),
    )
    als = json.loads(als_log.read_text()) if als_measured.returncode == 0 else {}

    users, movies, values = reference.read_ratings_csv(source / "ratings.csv")
    matrix = reference.ratings_matrix(users, movies, values)
    del users, movies, values
    implicit = reference.implicit_seconds_per_iteration(
        matrix, params.DEFAULT_RANK, reference_iterations, os.cpu_count() or 1
    )
    top_k = reference.numpy_top_k(matrix, params.DEFAULT_RANK, params.DEFAULT_TOP_K)

    als_ratio = _ratio(als.get("seconds_per_iteration"), implicit["seconds_per_iteration"])
    als_cpu_ratio = _ratio(
        als.get("cpu_seconds_per_iteration"), implicit["cpu_seconds_per_iteration"]
    )
    recommend_seconds = ours["stage_seconds"].get("recommend")
    top_k_ratio = _ratio(recommend_seconds, top_k["seconds"])
    return {
        "suite": "scale",
        "dataset": source.name,
        "generated": {key: generated[key] for key in ("users", "movies_rated", "ratings")},
        "machine": machine(),
        "pipeline": ours,
        "als_timing": {**als, **als_measured.to_dict()},
        "implicit": implicit,
        "numpy_top_k": top_k,
        "als_seconds_per_iteration_ratio": als_ratio,
        "als_cpu_seconds_per_iteration_ratio": als_cpu_ratio,
        "recommend_to_numpy_top_k_ratio": top_k_ratio,
        "targets": {
            "peak_rss_mib_within": SCALE_MEMORY_TARGET_MIB,
            "memory_met": ours["returncode"] == 0
            and ours["peak_rss_mib"] <= SCALE_MEMORY_TARGET_MIB,
            "als_ratio_within": ALS_RATIO_TARGET,
            "als_ratio_met": als_ratio is not None and als_ratio <= ALS_RATIO_TARGET,
            "top_k_ratio_within": TOP_K_RATIO_TARGET,
            "top_k_ratio_met": top_k_ratio is not None and top_k_ratio <= TOP_K_RATIO_TARGET,
        },
    }


def _ratio(ours: float | None, reference_value: float | None) -> float | None:
    if ours is None or not reference_value:
        return None
    return round(ours / reference_value, 2)


def markdown(result: dict[str, Any]) -> str:
    """Return the short Markdown table of one suite's result."""
    lines = [
        f"# Benchmark `{result['suite']}` on {result['dataset']}",
        "",
        f"Machine: {result['machine']['cores']} cores, {result['machine']['memory_gib']} GiB, "
        f"load average {result['machine']['load_average_1m']} at the end, "
        f"commit {result['machine']['commit']}, {result['machine']['measured_at']}.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    ours = result["pipeline"]
    lines.append(f"| pipeline wall time, JVM start included | {ours['wall_seconds']:.1f} s |")
    lines.append(f"| pipeline CPU time (all processes) | {ours['cpu_seconds']:.0f} s |")
    lines.append(f"| pipeline peak memory (process tree) | {ours['peak_rss_mib']} MiB |")
    for stage, seconds in ours["stage_seconds"].items():
        lines.append(f"| stage {stage} | {seconds:.1f} s |")
    lines.append(f"| pipeline test RMSE | {_format(ours['test_rmse'], '.4f')} |")
    if result["suite"] == "small":
        baseline = result["baseline"]
        lines.append(f"| baseline wall time | {baseline['wall_seconds']:.1f} s |")
        lines.append(f"| baseline CPU time | {baseline['cpu_seconds']:.0f} s |")
        for phase, seconds in baseline["phase_seconds"].items():
            lines.append(f"| baseline {phase} | {seconds:.1f} s |")
        lines.append(f"| baseline test RMSE | {_format(baseline['test_rmse'], '.4f')} |")
        runs = result.get("runs", {})
        if len(runs.get("pipeline_wall_seconds", [])) > 1:
            for side in ("pipeline", "baseline"):
                walls = ", ".join(f"{wall:.1f}" for wall in runs[f"{side}_wall_seconds"])
                lines.append(f"| {side} wall time of each run | {walls} s |")
        lines.append(f"| speed-up (baseline wall / pipeline wall) | {result['speedup']:.2f}x |")
    else:
        als = result["als_timing"]
        lines.append(
            f"| Spark ALS s/iteration | {_format(als.get('seconds_per_iteration'), '.2f')} |"
        )
        lines.append(
            f"| implicit ALS s/iteration | {result['implicit']['seconds_per_iteration']:.2f} |"
        )
        lines.append(
            f"| ALS ratio (ours / implicit) | {result['als_seconds_per_iteration_ratio']} |"
        )
        lines.append(f"| NumPy top-20, all users | {result['numpy_top_k']['seconds']:.1f} s |")
        lines.append(
            f"| top-20 ratio (recommend stage / NumPy) | {result['recommend_to_numpy_top_k_ratio']} |"
        )
    lines.append("")
    lines.append(
        "Targets: " + ", ".join(f"{key} {value}" for key, value in result["targets"].items())
    )
    return "\n".join(lines) + "\n"


def _format(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("suite", choices=("small", "scale"))
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="data, runs and logs")
    parser.add_argument(
        "--ratings",
        type=int,
        default=synthetic.ML25M_RATINGS,
        help="synthetic ratings for the scale suite (default: ml-25m's 25,000,095)",
    )
    parser.add_argument(
        "--reference-iterations", type=int, default=5, help="implicit ALS iterations to time"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="small suite: run the pipeline and the baseline this many times each and compare "
        "the medians",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write results")
    parser.add_argument(
        "--code",
        type=Path,
        help="run the pipeline from this snapshot of the repository (git archive of a commit) "
        "instead of the working tree",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    if args.suite == "small":
        result = small_suite(args.work, args.code, args.repeat)
        name = "small"
    else:
        result = scale_suite(args.work, args.ratings, args.reference_iterations, args.code)
        name = f"scale-{args.ratings}"
    result["code_snapshot"] = str(args.code) if args.code else None
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.results / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
