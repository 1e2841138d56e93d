"""The quality benchmark: the mean of the per-user draws, and the Markdown tables."""

from __future__ import annotations

from pathlib import Path

from bench import quality


def fake_draw(seed: int, precision: float, default_list: str = "implicit") -> dict:
    lists = {
        "implicit": {"precision": precision, "recall": 0.2, "ndcg": 0.5, "map": 0.3},
        "rating": {"precision": 0.1, "recall": 0.04, "ndcg": 0.1, "map": 0.05},
    }
    return {
        "seed": seed,
        "rmse": 0.9,
        "default_list": default_list,
        **{f"{metric}_at_10": value for metric, value in lists[default_list].items()},
        "lists": lists,
        "seconds": 1.0,
    }


def run_protocol(monkeypatch, tmp_path: Path, precisions: dict[int, float]) -> dict:
    monkeypatch.setattr(quality, "run_stage", lambda *args: {})
    monkeypatch.setattr(
        quality,
        "per_user_draw",
        lambda spark, loaded, work, seed: fake_draw(seed, precisions[seed]),
    )
    return quality.ml100k_per_user(None, tmp_path, tmp_path)


def test_per_user_runs_every_seed(monkeypatch, tmp_path: Path):
    precisions = {seed: 0.4 + seed / 1000 for seed in quality.PER_USER_SEEDS}
    result = run_protocol(monkeypatch, tmp_path, precisions)
    assert [draw["seed"] for draw in result["draws"]] == list(quality.PER_USER_SEEDS)


def test_per_user_reports_mean_and_range(monkeypatch, tmp_path: Path):
    values = [0.41, 0.43, 0.42, 0.40, 0.44]
    precisions = dict(zip(quality.PER_USER_SEEDS, values, strict=True))
    result = run_protocol(monkeypatch, tmp_path, precisions)
    assert abs(result["precision_at_10"] - 0.42) < 1e-12
    assert abs(result["lists"]["implicit"]["precision"] - 0.42) < 1e-12
    assert abs(result["lists"]["rating"]["precision"] - 0.1) < 1e-12
    assert result["precision_at_10_range"] == [0.40, 0.44]
    assert result["default_list"] == "implicit"


def test_markdown_prints_four_digits_and_draws(monkeypatch, tmp_path: Path):
    values = [0.4196, 0.4196, 0.4196, 0.4196, 0.4196]
    precisions = dict(zip(quality.PER_USER_SEEDS, values, strict=True))
    protocol = run_protocol(monkeypatch, tmp_path, precisions)
    page = quality.markdown(
        {"machine": "test", "measured_at": "now", "protocols": {"ml100k_per_user": protocol}}
    )
    summary = [line for line in page.splitlines() if line.startswith("| ml100k_per_user | this")]
    assert len(summary) == 1
    assert "| 0.4196 |" in summary[0]
    for seed in quality.PER_USER_SEEDS:
        assert f"| --seed {seed} | implicit | 0.4196 |" in page


def test_markdown_fold_settings_in_train_order():
    fold = {
        "fold": "u1",
        "rmse": 0.9,
        "params": {"burn_in": 20, "model": "bayes", "rank": 16, "samples": 100},
        "validation_rmse": {"als": 0.92, "bayes": 0.90},
    }
    protocol = {"rmse": 0.9, "folds": [fold], "seconds": 1.0, "measured_at": "2026-01-02 03:04 UTC"}
    page = quality.markdown(
        {"machine": "test", "measured_at": "now", "protocols": {"ml100k_folds": protocol}}
    )
    assert "| u1 | 0.9000 | bayes | rank 16, samples 100, burn_in 20 |" in page
    assert "| 1.0 | 2026-01-02 03:04 UTC |" in page
