"""Check a run's metrics.json against sanity bounds; CI calls this after a pipeline run.

    python scripts/check_metrics.py metrics.json [--max-rmse 0.95]

Exit status 0 when every check passes, 1 when one fails (each failure is printed),
2 when the file is missing or is not JSON.

The default RMSE bound sits between two values for ml-latest-small. One local Spark
run of the whole pipeline reached 0.88. The standard deviation of the data set's
100,836 ratings is 1.04, which is the RMSE of always predicting the mean rating. A
model above the bound has learned next to nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DEFAULT_MAX_RMSE = 0.95


def check(metrics: dict, *, max_rmse: float) -> list[str]:
    """Return one message per failed check of ``metrics``; an empty list means all passed."""
    failures = []
    rmse = metrics.get("rmse")
    if not isinstance(rmse, (int, float)) or not math.isfinite(rmse):
        failures.append(f"rmse is missing or not a finite number: {rmse!r}")
    elif rmse > max_rmse:
        failures.append(f"rmse {rmse:.4f} is above the bound {max_rmse}")
    scored = metrics.get("n_test_scored")
    if not isinstance(scored, int) or scored <= 0:
        failures.append(f"n_test_scored is missing or not positive: {scored!r}")

    ranking = metrics.get("ranking")
    if not isinstance(ranking, dict):
        failures.append("ranking is missing: the evaluate stage did not run")
        return failures
    default = ranking.get("default_list")
    k = ranking.get("k")
    values = ranking.get("lists", {}).get(default, {})
    precision = values.get(f"precision_at_{k}")
    if not isinstance(precision, (int, float)) or not precision > 0:
        failures.append(f"precision_at_{k} of the default list {default!r} is not positive")
    return failures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="check_metrics.py", description=__doc__.split("\n")[0])
    parser.add_argument("metrics", type=Path, help="path of a run's metrics.json")
    parser.add_argument(
        "--max-rmse",
        type=float,
        default=DEFAULT_MAX_RMSE,
        help=f"highest accepted test RMSE, in rating units (default {DEFAULT_MAX_RMSE})",
    )
    args = parser.parse_args(argv)
    try:
        metrics = json.loads(args.metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"error: cannot read {args.metrics}: {error}", file=sys.stderr)
        return 2
    failures = check(metrics, max_rmse=args.max_rmse)
    for failure in failures:
        print(f"failed: {failure}")
    if not failures:
        print(f"metrics ok: rmse {metrics['rmse']:.4f} <= {args.max_rmse}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
