"""Fixtures shared by the whole suite: one Spark session and the real MovieLens files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
MOVIELENS = REPOSITORY.parent / "shared" / "movielens"

# Tests run Spark on loopback only.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def movielens_path(name: str) -> Path:
    """Return ../shared/movielens/NAME, failing the test with a clear message when it is missing."""
    path = MOVIELENS / name
    if not path.exists():
        pytest.fail(
            f"MovieLens data not found at {path}. These tests read the real data sets from "
            f"../shared/movielens beside the repository (ml-latest-small and ml-100k); "
            f"put them there and rerun.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for every test that needs one."""
    from spark_jobs.session import build_session

    session = build_session("spark_jobs tests", master="local[2]", shuffle_partitions=4)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ml_latest_small() -> Path:
    return movielens_path("ml-latest-small")


@pytest.fixture(scope="session")
def ml_100k() -> Path:
    return movielens_path("ml-100k")
