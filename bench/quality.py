"""Model quality on three public protocols, beside the published numbers for the same data.

    python -m bench.quality [--movielens DIR] [--work DIR] [--protocols NAMES]

Protocols (the tune stage picks every setting from training data alone):

- ``ml100k_folds``: ml-100k's five shipped folds u1..u5; mean test RMSE.
- ``small_80_20``: the whole pipeline on ml-latest-small, 80/20 hash split, seed 42;
  test RMSE and wall time.
- ``ml100k_per_user``: ml-100k with 75% of each user's ratings for training; the
  top 10 from movies unseen in training, scored against the held-out 25%.
  Precision@10 differs by several thousandths from one draw of that split to
  another, so the protocol runs five draws (``--seed`` 42 to 46) and reports
  their mean beside each draw's figures.

Writes bench/results/quality.json and quality.md. Run directories go under
``--work`` (default /tmp/bench-data/quality), outside the repository.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "bench" / "results"
DEFAULT_MOVIELENS = REPOSITORY.parent / "shared" / "movielens"
PROTOCOLS = ("ml100k_folds", "small_80_20", "ml100k_per_user")
FOLDS = (1, 2, 3, 4, 5)
PER_USER_TEST_FRACTION = 0.25
PER_USER_K = 10
PER_USER_SEEDS = (42, 43, 44, 45, 46)
RANKING_METRICS = ("precision", "recall", "ndcg", "map")
# The order in which train reports a rating model's settings.
PARAMETER_ORDER = ("rank", "regParam", "maxIter", "samples", "burn_in")

# Published numbers, as listed for this project: Surprise's benchmark table
# (5-fold cross-validation) and the recommenders project's ml-100k benchmark.
ANCHORS: dict[str, list[dict[str, Any]]] = {
    "ml100k_folds": [
        {"method": "Surprise SVD++", "protocol": "5-fold CV", "rmse": 0.919},
        {"method": "Surprise SVD", "protocol": "5-fold CV", "rmse": 0.934},
        {"method": "Surprise BaselineOnly", "protocol": "5-fold CV", "rmse": 0.944},
    ],
    "ml100k_per_user": [
        {
            "method": "Spark ALS (rank 10, regParam 0.05, 15 iterations), recommenders benchmark",
            "rmse": 0.965,
            "precision_at_10": 0.048,
        },
        {"method": "BPR, recommenders benchmark", "precision_at_10": 0.388},
    ],
    "small_80_20": [],
}
TARGETS = {
    "ml100k_folds": {"rmse_at_most": 0.905},
    "small_80_20": {"rmse_at_most": 0.855, "wall_seconds_at_most": 90},
    "ml100k_per_user": {"precision_at_10_at_least": 0.42},
}

logger = logging.getLogger("bench.quality")


def run_stage(spark, argv: list[str]) -> dict[str, Any]:
    """Run one stage in this process exactly as ``python -m spark_jobs`` parses it."""
    from spark_jobs import cli

    args = cli.build_parser().parse_args(argv)
    return cli.run_stage(spark, args, cli.validate_args(args))


def copy_load(source: Path, target: Path) -> None:
    """Copy a committed load output to a new run directory, manifest included."""
    from spark_jobs import layout as paths

    target.mkdir(parents=True, exist_ok=True)
    for name in (paths.RATINGS, paths.MOVIES, paths.QUARANTINE):
        if (source / name).exists():
            shutil.copytree(source / name, target / name)
    shutil.copy(source / paths.LOAD_REPORT, target / paths.LOAD_REPORT)
    (target / paths.MANIFESTS).mkdir(exist_ok=True)
    shutil.copy(source / paths.MANIFESTS / "load.json", target / paths.MANIFESTS / "load.json")


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    return directory


def ml100k_folds(spark, movielens: Path, work: Path) -> dict[str, Any]:
    started = time.monotonic()
    loaded = fresh(work / "ml-100k-load")
    run_stage(spark, ["load", "--output", str(loaded), "--source", str(movielens / "ml-100k")])
    folds = []
    for fold in FOLDS:
        fold_started = time.monotonic()
        run = fresh(work / f"ml-100k-u{fold}")
        copy_load(loaded, run)
        base = movielens / "ml-100k" / f"u{fold}.base"
        test = movielens / "ml-100k" / f"u{fold}.test"
        run_stage(spark, ["split", "--output", str(run), "--train", str(base), "--test", str(test)])
        run_stage(spark, ["tune", "--output", str(run)])
        train = run_stage(spark, ["train", "--output", str(run)])
        tuning = json.loads((run / "tuning" / "results.json").read_text())
        folds.append(
            {
                "fold": f"u{fold}",
                "rmse": train["rmse"],
                "mae": train["mae"],
                "params": train["params"],
                "validation_rmse": {
                    entry["model"]: entry.get("validation_rmse")
                    for entry in tuning["rating_models"]
                },
                "seconds": round(time.monotonic() - fold_started, 1),
            }
        )
        logger.info("ml-100k u%d: test RMSE %.4f", fold, train["rmse"])
    return {
        "protocol": "ml-100k u1..u5 shipped folds; tune on a validation split of each u*.base",
        "rmse": statistics.mean(fold["rmse"] for fold in folds),
        "mae": statistics.mean(fold["mae"] for fold in folds),
        "folds": folds,
        "seconds": round(time.monotonic() - started, 1),
    }


def small_80_20(movielens: Path, work: Path) -> dict[str, Any]:
    """Run the pipeline as a user would, in a new process, so JVM start is in the wall time."""
    import subprocess

    run = fresh(work / "ml-latest-small")
    command = [
        sys.executable,
        "-m",
        "spark_jobs",
        "pipeline",
        "--source",
        str(movielens / "ml-latest-small"),
        "--output",
        str(run),
    ]
    started = time.monotonic()
    subprocess.run(command, check=True, cwd=REPOSITORY, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    metrics = json.loads((run / "metrics.json").read_text())
    ranking = metrics["ranking"]
    default = ranking["lists"][ranking["default_list"]]
    return {
        "protocol": "python -m spark_jobs pipeline on ml-latest-small: 80/20 hash split, seed 42",
        "rmse": metrics["rmse"],
        "mae": metrics["mae"],
        "params": metrics["params"],
        "n_test_scored": metrics["n_test_scored"],
        "n_test_cold_start_dropped": metrics["n_test_cold_start_dropped"],
        "default_list": ranking["default_list"],
        f"precision_at_{ranking['k']}": default[f"precision_at_{ranking['k']}"],
        f"ndcg_at_{ranking['k']}": default[f"ndcg_at_{ranking['k']}"],
        "seconds": round(seconds, 1),
    }


def ml100k_per_user(spark, movielens: Path, work: Path) -> dict[str, Any]:
    from spark_jobs import layout as paths

    started = time.monotonic()
    loaded = work / "ml-100k-load"
    if not (loaded / paths.MANIFESTS / "load.json").exists():
        run_stage(
            spark, ["load", "--output", str(fresh(loaded)), "--source", str(movielens / "ml-100k")]
        )
    draws = [per_user_draw(spark, loaded, work, seed) for seed in PER_USER_SEEDS]
    names = draws[0]["lists"].keys()
    lists = {
        name: {
            metric: statistics.mean(draw["lists"][name][metric] for draw in draws)
            for metric in RANKING_METRICS
        }
        for name in names
    }
    default_lists = {draw["default_list"] for draw in draws}
    precisions = [draw[f"precision_at_{PER_USER_K}"] for draw in draws]
    return {
        "protocol": (
            "ml-100k, 75% of each user's ratings (seeded hash order) for training; top 10 from "
            "movies unseen in training; every held-out rating is relevant; mean of the draws "
            f"with --seed {', '.join(str(seed) for seed in PER_USER_SEEDS)}"
        ),
        "rmse": statistics.mean(draw["rmse"] for draw in draws),
        "default_list": " or ".join(sorted(default_lists)),
        **{
            f"{metric}_at_{PER_USER_K}": statistics.mean(
                draw[f"{metric}_at_{PER_USER_K}"] for draw in draws
            )
            for metric in RANKING_METRICS
        },
        f"precision_at_{PER_USER_K}_range": [min(precisions), max(precisions)],
        "lists": lists,
        "draws": draws,
        "seconds": round(time.monotonic() - started, 1),
    }


def per_user_draw(spark, loaded: Path, work: Path, seed: int) -> dict[str, Any]:
    """Split, tune, train and evaluate one draw of the per-user split, made with ``--seed``."""
    from spark_jobs import layout as paths

    started = time.monotonic()
    run = fresh(work / f"ml-100k-per-user-seed-{seed}")
    copy_load(loaded, run)
    output = ["--output", str(run)]
    seeded = [*output, "--seed", str(seed)]
    split = ["--split-method", "per-user", "--test-fraction", str(PER_USER_TEST_FRACTION)]
    top_k = ["--top-k", str(PER_USER_K)]
    run_stage(spark, ["split", *seeded, *split])
    run_stage(spark, ["tune", *seeded, *top_k])
    run_stage(spark, ["train", *seeded, *top_k])
    run_stage(spark, ["evaluate", *output, *top_k])
    metrics = json.loads((run / paths.METRICS).read_text())
    ranking = metrics["ranking"]
    lists = {
        name: {metric: values[f"{metric}_at_{PER_USER_K}"] for metric in RANKING_METRICS}
        for name, values in ranking["lists"].items()
    }
    default = lists[ranking["default_list"]]
    logger.info("ml-100k per user, seed %d: P@%d %.4f", seed, PER_USER_K, default["precision"])
    return {
        "seed": seed,
        "rmse": metrics["rmse"],
        "default_list": ranking["default_list"],
        **{f"{metric}_at_{PER_USER_K}": value for metric, value in default.items()},
        "lists": lists,
        "seconds": round(time.monotonic() - started, 1),
    }


def _method_label(ours: dict[str, Any]) -> str:
    """Return which model a row's figures come from: the rating model, or the default list too."""
    if ours.get("precision_at_10") is None:
        return "rating model"
    return f"rating model; default list {ours['default_list']}"


def markdown(results: dict[str, Any]) -> str:
    """Return the results as a Markdown page: our numbers beside the anchors and targets."""
    lines = [
        "# Model quality",
        "",
        f"Measured by `python -m bench.quality` on {results['machine']}, "
        f"{results['measured_at']}; a protocol left out of that run keeps its own earlier "
        "time, in the last column. Every setting was chosen by the tune stage on "
        "validation data carved from the training split.",
        "",
    ]
    if results.get("note"):
        lines += [results["note"], ""]
    lines += [
        "| protocol | method | RMSE | P@10 | R@10 | NDCG@10 | MAP@10 | seconds | measured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(value: Any, digits: int = 3) -> str:
        # Four digits for the ranking figures: at three, 0.4196 would print as 0.420.
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value)

    for name in PROTOCOLS:
        ours = results["protocols"].get(name)
        if ours is None:
            continue
        lines.append(
            f"| {name} | this pipeline ({_method_label(ours)}) "
            f"| {cell(ours.get('rmse'))} | {cell(ours.get('precision_at_10'), 4)} "
            f"| {cell(ours.get('recall_at_10'), 4)} | {cell(ours.get('ndcg_at_10'), 4)} "
            f"| {cell(ours.get('map_at_10'), 4)} | {cell(ours.get('seconds'), 1)} "
            f"| {cell(ours.get('measured_at'))} |"
        )
        for anchor in ANCHORS[name]:
            lines.append(
                f"| {name} | {anchor['method']} (published) | {cell(anchor.get('rmse'))} "
                f"| {cell(anchor.get('precision_at_10'))} | | | | | |"
            )
    lines += ["", "Targets: " + json.dumps(TARGETS), ""]
    if "ml100k_folds" in results["protocols"]:
        lines += [
            "| fold | test RMSE | rating model | parameters | validation RMSE, ALS "
            "| validation RMSE, Bayesian |",
            "|---|---|---|---|---|---|",
        ]
        for fold in results["protocols"]["ml100k_folds"]["folds"]:
            params = dict(fold["params"])
            model = params.pop("model", "als")
            # quality.json stores keys sorted, so a carried-over fold would list burn_in first.
            order = [key for key in PARAMETER_ORDER if key in params]
            keys = order + sorted(set(params) - set(order))
            settings = ", ".join(f"{key} {params[key]}" for key in keys)
            validation = fold.get("validation_rmse", {})
            lines.append(
                f"| {fold['fold']} | {fold['rmse']:.4f} | {model} | {settings} "
                f"| {cell(validation.get('als'))} | {cell(validation.get('bayes'))} |"
            )
        lines.append("")
    if "ml100k_per_user" in results["protocols"]:
        per_user = results["protocols"]["ml100k_per_user"]
        lines += [
            "| list (ml-100k per user, mean of the draws) | P@10 | R@10 | NDCG@10 | MAP@10 |",
            "|---|---|---|---|---|",
        ]
        for name, values in per_user["lists"].items():
            lines.append(
                f"| {name} | {values['precision']:.4f} | {values['recall']:.4f} "
                f"| {values['ndcg']:.4f} | {values['map']:.4f} |"
            )
        lines += [
            "",
            "| draw (ml-100k per user) | default list | P@10 | R@10 | NDCG@10 | MAP@10 "
            "| test RMSE |",
            "|---|---|---|---|---|---|---|",
        ]
        for draw in per_user.get("draws", []):
            lines.append(
                f"| --seed {draw['seed']} | {draw['default_list']} "
                f"| {draw['precision_at_10']:.4f} | {draw['recall_at_10']:.4f} "
                f"| {draw['ndcg_at_10']:.4f} | {draw['map_at_10']:.4f} | {draw['rmse']:.4f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality",
        # The module doc, without its reStructuredText markup and in its own line breaks.
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--movielens",
        default=str(DEFAULT_MOVIELENS),
        help="folder containing ml-100k and ml-latest-small (default: %(default)s)",
    )
    parser.add_argument(
        "--work",
        default="/tmp/bench-data/quality",
        help="folder for run directories and copies of the loaded data (default: %(default)s)",
    )
    parser.add_argument(
        "--protocols",
        default=",".join(PROTOCOLS),
        help="comma-separated subset of " + ", ".join(PROTOCOLS),
    )
    parser.add_argument(
        "--results",
        default=str(RESULTS),
        help="folder for quality.json and quality.md (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    chosen = [name for name in args.protocols.split(",") if name]
    unknown = sorted(set(chosen) - set(PROTOCOLS))
    if unknown:
        parser.error(f"unknown protocols {unknown}; allowed: {', '.join(PROTOCOLS)}")
    movielens, work = Path(args.movielens), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    results_path = results_dir / "quality.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    protocols = dict(previous.get("protocols", {}))

    def save() -> None:
        # Written after every protocol, so a long run that is stopped keeps what it measured.
        results = {
            "measured_at": utc_now(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "protocols": protocols,
            "anchors": ANCHORS,
            "targets": TARGETS,
        }
        results_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        (results_dir / "quality.md").write_text(markdown(results))

    if "small_80_20" in chosen:
        # First, alone, so its wall time includes a cold JVM start and no other Spark work.
        protocols["small_80_20"] = {**small_80_20(movielens, work), "measured_at": utc_now()}
        save()
    spark_protocols = [name for name in chosen if name != "small_80_20"]
    if spark_protocols:
        from spark_jobs.session import build_session

        spark = build_session("bench.quality")
        if "ml100k_per_user" in spark_protocols:
            protocols["ml100k_per_user"] = {
                **ml100k_per_user(spark, movielens, work),
                "measured_at": utc_now(),
            }
            save()
        if "ml100k_folds" in spark_protocols:
            protocols["ml100k_folds"] = {
                **ml100k_folds(spark, movielens, work),
                "measured_at": utc_now(),
            }
            save()
        spark.stop()
    summary = {
        name: {
            key: value[key]
            for key in ("rmse", f"precision_at_{PER_USER_K}", "measured_at")
            if key in value
        }
        for name, value in protocols.items()
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
