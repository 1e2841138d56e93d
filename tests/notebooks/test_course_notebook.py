"""The course notebook: valid nbformat 4, and a top-to-bottom run on ml-latest-small.

The run goes through papermill in a separate Python kernel, as a user's run would,
with the package imported from a zip through ``addPyFile``: the path the notebook
takes on EMR. It starts its own Spark in that kernel process, not in this one.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nbformat
import papermill
import pytest

from spark_jobs import layout as run_layout
from spark_jobs.steps import STAGES
from tests.conftest import REPOSITORY

NOTEBOOK = REPOSITORY / "notebooks" / "als_course.ipynb"

# Small tuning grids and a small ranking model keep the run short. The notebook
# passes them to the stages as explicit parameters, as the pipeline's options would.
QUICK_PARAMETERS = {
    "rank_grid": [10],
    "reg_grid": [0.1],
    "study_max_iter": 3,
    "options": {"implicit_rank": 8, "implicit_max_iter": 3, "bayes_rank": 4, "bayes_samples": 20},
}
# Sized for a small machine: few shuffle partitions for 100,000 ratings, no web UI.
LOCAL_CONF = {"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"}
KERNEL_START_TIMEOUT_SECONDS = 120

RUN_DIRECTORY_PATHS = (
    run_layout.RATINGS,
    run_layout.MOVIES,
    run_layout.QUARANTINE,
    run_layout.LOAD_REPORT,
    run_layout.EXPLORE,
    run_layout.SPLIT_TRAIN,
    run_layout.SPLIT_TEST,
    run_layout.TUNING_RESULTS,
    run_layout.TUNING_PLOT,
    run_layout.MODEL,
    run_layout.METRICS,
    run_layout.RECOMMENDATIONS,
    run_layout.RECOMMENDATIONS_CSV,
)


def build_package_zip(target: Path) -> Path:
    """Zip the spark_jobs sources the way spark-submit --py-files and addPyFile expect them."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for source in sorted((REPOSITORY / "spark_jobs").rglob("*.py")):
            archive.write(source, source.relative_to(REPOSITORY).as_posix())
    return target


def text_outputs(notebook: nbformat.NotebookNode) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append(output["text"])
            elif "text/plain" in output.get("data", {}):
                texts.append(output["data"]["text/plain"])
    return "".join(texts)


def png_outputs(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory, ml_latest_small):
    """Run the notebook once; return (executed notebook, run directory, package zip)."""
    work = tmp_path_factory.mktemp("course_notebook")
    run_directory = work / "run"
    package = build_package_zip(work / "spark_jobs.zip")
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(work / "executed.ipynb"),
        parameters={
            "source": str(ml_latest_small),
            "output": str(run_directory),
            "artifact": str(package),
            "master": "local[2]",
            "local_conf": LOCAL_CONF,
            **QUICK_PARAMETERS,
        },
        kernel_name="python3",
        # A directory without spark_jobs in it, so only the zip can provide the package.
        cwd=str(work),
        progress_bar=False,
        start_timeout=KERNEL_START_TIMEOUT_SECONDS,
    )
    notebook = nbformat.read(work / "executed.ipynb", as_version=4)
    return notebook, run_directory, package


def test_notebook_is_valid_nbformat_4():
    notebook = nbformat.read(NOTEBOOK, as_version=nbformat.NO_CONVERT)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4


def test_notebook_has_one_parameters_cell():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    names = ("source", "output", "artifact", "rank_grid", "reg_grid", "study_max_iter", "options")
    for name in names:
        assert f"\n{name} = " in "\n" + tagged[0].source, name


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs for cell in code_cells)
    assert all(cell.execution_count is None for cell in code_cells)


def test_notebook_runs_every_stage_of_the_step_list():
    source = "".join(cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells)
    for stage in STAGES:
        assert f'run_step("{stage}")' in source, stage


def test_notebook_run_writes_run_directory_contract(executed):
    _, run_directory, _ = executed
    for relative in RUN_DIRECTORY_PATHS:
        assert (run_directory / relative).exists(), relative


def test_notebook_run_writes_no_checksum_files(executed):
    _, run_directory, _ = executed
    assert [path.name for path in run_directory.rglob("*.crc")] == []


def test_notebook_run_commits_every_stage(executed):
    _, run_directory, _ = executed
    layout = run_layout.RunLayout(str(run_directory))
    for stage in STAGES:
        assert Path(layout.manifest(stage)).is_file(), stage


def test_notebook_run_metrics_have_contract_keys(executed):
    _, run_directory, _ = executed
    metrics = json.loads((run_directory / run_layout.METRICS).read_text())
    for key in ("rmse", "mae", "n_train", "n_test", "n_test_scored", "params", "dataset"):
        assert key in metrics, key
    chosen = json.loads((run_directory / run_layout.TUNING_RESULTS).read_text())["chosen"]
    assert metrics["params"]["model"] == chosen["model"]
    assert metrics["n_test_scored"] <= metrics["n_test"]
    if chosen["model"] == "als":
        # The tuned grid has one point, so train must have used it.
        assert metrics["params"]["rank"] == QUICK_PARAMETERS["rank_grid"][0]
    else:
        assert metrics["params"]["rank"] == QUICK_PARAMETERS["options"]["bayes_rank"]


def test_notebook_run_rmse_is_plausible(executed):
    _, run_directory, _ = executed
    metrics = json.loads((run_directory / run_layout.METRICS).read_text())
    # A tiny tuning grid; the band is wider than the pipeline test's 0.80..0.90.
    assert 0.70 <= metrics["rmse"] <= 1.00


def imported_from(notebook: nbformat.NotebookNode) -> str:
    """Return the path of spark_jobs/__init__.py that the notebook's set-up cell printed."""
    (line,) = [line for line in text_outputs(notebook).splitlines() if " imported from " in line]
    return line.split(" imported from ", 1)[1]


def test_notebook_run_imports_package_from_artifact(executed):
    notebook, _, package = executed
    # addPyFile copies the zip into Spark's userFiles directory and imports from there.
    location = imported_from(notebook)
    assert location.endswith(f"/{package.name}/spark_jobs/__init__.py")
    assert not location.startswith(str(REPOSITORY))


def test_notebook_run_shows_plots(executed):
    notebook, _, _ = executed
    # Two exploration plots and the RMSE-against-iterations plot.
    assert png_outputs(notebook) == 3


def test_notebook_run_lists_top_20_for_a_user(executed):
    notebook, _, _ = executed
    assert "top 20 for user " in text_outputs(notebook)
