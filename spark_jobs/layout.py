"""The run directory: where every stage reads and writes, written down once.

A run directory is a URI (a local path, ``file://``, ``hdfs://`` or ``s3://``).
Stages, the pipeline, the infrastructure, the benchmarks and the tests all take
their paths from here. This module is pure Python so that CDK synthesis can
import it without Spark.
"""

from __future__ import annotations

from dataclasses import dataclass

# Relative paths inside a run directory. These names are a public contract:
# the state machine, the notebook, the CI workflow and the tests read them.
RATINGS = "ratings"
MOVIES = "movies"
QUARANTINE = "quarantine"
LOAD_REPORT = "load_report.json"
EXPLORE = "explore"
SPLIT_TRAIN = "split/train"
SPLIT_TEST = "split/test"
TUNING = "tuning"
TUNING_RESULTS = "tuning/results.json"
TUNING_PLOT = "tuning/rmse_vs_iterations.png"
MODEL = "model"
METRICS = "metrics.json"
EVALUATION = "evaluation"
RECOMMENDATIONS = "recommendations"
RECOMMENDATIONS_CSV = "recommendations.csv"

# Bookkeeping that is not part of the user-facing contract.
MANIFESTS = "_manifests"
STAGING = "_staging"
# Copies of downloaded data sets (load --source NAME), so executors read them from here.
SOURCES = "_sources"

# The outputs each stage replaces when it commits. A path belongs to exactly one
# stage, except metrics.json, which train writes and evaluate extends.
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "load": (RATINGS, MOVIES, QUARANTINE, LOAD_REPORT),
    "explore": (EXPLORE,),
    "split": ("split",),
    "tune": (TUNING,),
    "train": (MODEL, METRICS),
    "evaluate": (EVALUATION, METRICS),
    "recommend": (RECOMMENDATIONS, RECOMMENDATIONS_CSV),
}

# The stages made from each stage's outputs, directly or through another stage. A stage
# that commits uncommits these, because they were made from its earlier outputs.
DEPENDENT_STAGES: dict[str, tuple[str, ...]] = {
    "load": ("explore", "split", "tune", "train", "evaluate", "recommend"),
    "split": ("tune", "train", "evaluate", "recommend"),
    "tune": ("train", "evaluate", "recommend"),
    "train": ("evaluate", "recommend"),
}


def without_localhost(uri: str) -> str:
    """Return ``uri`` with ``file://localhost/PATH`` written as ``file:///PATH``.

    Hadoop's local file system rejects a host name in the URI.
    """
    prefix = "file://localhost/"
    return "file:///" + uri[len(prefix) :] if uri.startswith(prefix) else uri


def join_uri(base: str, *parts: str) -> str:
    """Join URI path segments with single slashes, keeping the scheme intact."""
    joined = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            joined = f"{joined}/{part}"
    return joined


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory."""

    root: str

    def path(self, relative: str) -> str:
        return join_uri(self.root, relative)

    @property
    def ratings(self) -> str:
        return self.path(RATINGS)

    @property
    def movies(self) -> str:
        return self.path(MOVIES)

    @property
    def quarantine(self) -> str:
        return self.path(QUARANTINE)

    @property
    def load_report(self) -> str:
        return self.path(LOAD_REPORT)

    @property
    def explore(self) -> str:
        return self.path(EXPLORE)

    @property
    def split_train(self) -> str:
        return self.path(SPLIT_TRAIN)

    @property
    def split_test(self) -> str:
        return self.path(SPLIT_TEST)

    @property
    def tuning(self) -> str:
        return self.path(TUNING)

    @property
    def tuning_results(self) -> str:
        return self.path(TUNING_RESULTS)

    @property
    def tuning_plot(self) -> str:
        return self.path(TUNING_PLOT)

    @property
    def model(self) -> str:
        return self.path(MODEL)

    @property
    def metrics(self) -> str:
        return self.path(METRICS)

    @property
    def evaluation(self) -> str:
        return self.path(EVALUATION)

    @property
    def recommendations(self) -> str:
        return self.path(RECOMMENDATIONS)

    @property
    def recommendations_csv(self) -> str:
        return self.path(RECOMMENDATIONS_CSV)

    def manifest(self, stage: str) -> str:
        return self.path(f"{MANIFESTS}/{stage}.json")

    def staging(self, stage: str, attempt: str) -> str:
        return self.path(f"{STAGING}/{stage}-{attempt}")

    def source_copy(self, dataset: str) -> str:
        return self.path(f"{SOURCES}/{dataset}")
