"""EMR sizing table derived from the measured benchmark figures.

    python -m bench.sizing bench/results/small.json bench/results/scale-25000095.json

Turns the CPU seconds the pipeline needed on one machine into an estimated
cluster wall time and cost per run for three data sizes, and prints a
Markdown table. Every price and overhead below is an assumption stated here;
the output is an estimate, not a quote.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.synthetic import ML25M_MOVIES
from bench.synthetic import ML25M_RATINGS
from bench.synthetic import ML25M_USERS

# Assumed list prices in us-east-1 (USD per instance-hour): the EC2 On-Demand
# price and the EMR fee added on top. Spot prices float, so SPOT_SHARE is an
# assumed typical Spot price as a share of On-Demand. The EMR fee is the same
# on Spot as on On-Demand.
PRICES = {
    "m5.xlarge": (0.192, 0.048),
    "m5.2xlarge": (0.384, 0.096),
    "r5.2xlarge": (0.504, 0.126),
    "r5.4xlarge": (1.008, 0.252),
}
VCPUS = {"m5.xlarge": 4, "m5.2xlarge": 8, "r5.2xlarge": 8, "r5.4xlarge": 16}
SPOT_SHARE = 0.35

# Assumed fixed costs of one run on a fresh cluster: provisioning and bootstrap,
# and one spark-submit (JVM and YARN application start) per stage.
CLUSTER_START_SECONDS = 600
STEP_OVERHEAD_SECONDS = 30
STAGES_WITHOUT_TUNE = 6
# Share of the cluster's vCPUs that does useful work: YARN and the primary node's
# daemons take their share, and stages have serial parts.
PARALLEL_EFFICIENCY = 0.6


@dataclass(frozen=True)
class Row:
    """One line of the sizing table: a data set, its work, and the cluster chosen for it."""

    dataset: str
    cpu_seconds: float
    work_note: str
    core_type: str
    core_count: int
    primary_type: str = "m5.xlarge"


def estimate(row: Row) -> dict[str, float]:
    """Return the estimated run minutes and the On-Demand and Spot cost in USD of one run.

    The primary node runs On-Demand in both cases; only core nodes go on Spot.
    """
    vcpus = VCPUS[row.core_type] * row.core_count
    compute = row.cpu_seconds / (vcpus * PARALLEL_EFFICIENCY)
    seconds = CLUSTER_START_SECONDS + STAGES_WITHOUT_TUNE * STEP_OVERHEAD_SECONDS + compute
    hours = seconds / 3600
    primary_ec2, primary_fee = PRICES[row.primary_type]
    core_ec2, core_fee = PRICES[row.core_type]
    on_demand = hours * (primary_ec2 + primary_fee + row.core_count * (core_ec2 + core_fee))
    spot = hours * (primary_ec2 + primary_fee + row.core_count * (core_ec2 * SPOT_SHARE + core_fee))
    return {"minutes": seconds / 60, "on_demand_usd": on_demand, "spot_usd": spot}


def scaled_cpu_seconds(scale: dict, ratings_factor: float, pairs_factor: float) -> float:
    """Return the scale run's CPU seconds grown to a larger data set.

    The recommend stage scores every user against every movie, so its share of
    the work grows with users x movies (``pairs_factor``). Every other stage
    grows with the ratings (``ratings_factor``).
    """
    stages = scale["pipeline"]["stage_seconds"]
    recommend_share = stages.get("recommend", 0.0) / max(sum(stages.values()), 1e-9)
    cpu = scale["pipeline"]["cpu_seconds"]
    return cpu * (recommend_share * pairs_factor + (1 - recommend_share) * ratings_factor)


def rows_from_results(small: dict, scale: dict) -> list[Row]:
    """Return the table rows from the small and scale benchmark results.

    ml-25m is the scale run itself when that ran at 25M ratings, and is
    extrapolated from it otherwise. The 10x catalogue (ten times the users,
    movies and ratings of ml-25m) is always extrapolated: ratings x10 and
    user-movie pairs x100.
    """
    generated = scale["generated"]
    ratings_factor = ML25M_RATINGS / generated["ratings"]
    pairs_factor = ML25M_USERS * ML25M_MOVIES / (generated["users"] * generated["movies_rated"])
    ml25m_cpu = scaled_cpu_seconds(scale, ratings_factor, pairs_factor)
    large_cpu = scaled_cpu_seconds(scale, ratings_factor * 10, pairs_factor * 100)
    if ratings_factor == 1:
        ml25m_note = "measured on synthetic 25M"
    else:
        ml25m_note = f"extrapolated from synthetic {generated['ratings']:,}"
    return [
        Row(
            "ml-latest-small (0.1M ratings)",
            small["pipeline"]["cpu_seconds"],
            "measured, with tuning",
            "m5.xlarge",
            1,
        ),
        Row("ml-25m (25M ratings)", ml25m_cpu, ml25m_note, "r5.2xlarge", 4),
        Row(
            "10x catalogue (250M ratings)",
            large_cpu,
            "extrapolated",
            "r5.4xlarge",
            max(4, math.ceil(large_cpu / (VCPUS["r5.4xlarge"] * PARALLEL_EFFICIENCY * 3600))),
        ),
    ]


def markdown(rows: list[Row]) -> str:
    """Return the sizing table as Markdown."""
    lines = [
        "| data | CPU-s on 1 machine | primary | core nodes | est. run | On-Demand | Spot |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        figures = estimate(row)
        lines.append(
            f"| {row.dataset} | {row.cpu_seconds:,.0f} ({row.work_note}) | {row.primary_type} "
            f"| {row.core_count} x {row.core_type} | {figures['minutes']:.0f} min "
            f"| ${figures['on_demand_usd']:.2f} | ${figures['spot_usd']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sizing", description=__doc__)
    parser.add_argument("small", type=Path, help="results JSON of the small suite")
    parser.add_argument("scale", type=Path, help="results JSON of the scale suite")
    args = parser.parse_args(argv)
    small = json.loads(args.small.read_text())
    scale = json.loads(args.scale.read_text())
    print(markdown(rows_from_results(small, scale)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
