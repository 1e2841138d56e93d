"""The speed benchmark's repeated runs: the median run and the ratio of medians."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import speed


def fake_run(wall: float, returncode: int = 0) -> dict:
    return {"wall_seconds": wall, "cpu_seconds": wall, "test_rmse": 0.8, "returncode": returncode}


def test_median_run_of_odd_count():
    runs = [fake_run(wall) for wall in (70.0, 60.0, 90.0)]
    assert speed._median_run(runs)["wall_seconds"] == 70.0


def test_median_run_even_count_takes_lower():
    runs = [fake_run(wall) for wall in (80.0, 60.0, 90.0, 70.0)]
    assert speed._median_run(runs)["wall_seconds"] == 70.0


def test_small_suite_compares_medians(monkeypatch, tmp_path: Path):
    pipeline_walls = iter([70.0, 60.0, 65.0])
    baseline_walls = iter([200.0, 150.0, 180.0])
    monkeypatch.setattr(speed, "run_pipeline", lambda *args, **kwargs: fake_run(next(pipeline_walls)))
    monkeypatch.setattr(speed, "run_baseline", lambda *args, **kwargs: fake_run(next(baseline_walls)))
    monkeypatch.setattr(speed, "machine", dict)
    result = speed.small_suite(tmp_path, repeat=3)
    assert result["runs"]["pipeline_wall_seconds"] == [70.0, 60.0, 65.0]
    assert result["runs"]["baseline_wall_seconds"] == [200.0, 150.0, 180.0]
    assert result["pipeline"]["wall_seconds"] == 65.0
    assert result["baseline"]["wall_seconds"] == 180.0
    assert result["speedup"] == round(180.0 / 65.0, 2)


def test_small_suite_rejects_failed_run(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(speed, "run_pipeline", lambda *args, **kwargs: fake_run(5.0, returncode=1))
    monkeypatch.setattr(speed, "run_baseline", lambda *args, **kwargs: fake_run(180.0))
    with pytest.raises(RuntimeError, match="pipeline failed in round 1 with return code 1"):
        speed.small_suite(tmp_path, repeat=3)


def test_small_suite_rejects_zero_repeats(tmp_path: Path):
    with pytest.raises(ValueError, match="at least 1"):
        speed.small_suite(tmp_path, repeat=0)
