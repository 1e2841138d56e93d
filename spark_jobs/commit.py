"""Atomic stage outputs, manifests and lineage checks.

A stage writes every output under ``_staging/<stage>-<attempt>/`` in the run
directory. Only when all of them are complete does it move them to their final
paths and write ``_manifests/<stage>.json``, last. The first thing a stage does is
delete its own manifest, so a stage that dies at any point leaves its outputs
uncommitted, and the next stage rejects them instead of reading half a result.

Each manifest records a fresh id, the ids of the manifests it read, the dataset
and the load it descends from, the parameters, the code version, counts and
timings. A stage that reads several inputs checks they descend from the same
load, so a model from one run is never scored against another run's ratings.
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from pyspark.sql import SparkSession

from spark_jobs import code_version
from spark_jobs import fs
from spark_jobs.errors import LineageError
from spark_jobs.errors import UncommittedInputError
from spark_jobs.layout import DEPENDENT_STAGES
from spark_jobs.layout import STAGE_OUTPUTS
from spark_jobs.layout import STAGING
from spark_jobs.layout import RunLayout

logger = logging.getLogger(__name__)

# When the current stage started (time.monotonic), set by stage_timer. Most stages
# fit models before they open their StageCommit, so the commit block alone would
# undercount their time.
_stage_started: ContextVar[float | None] = ContextVar("stage_started", default=None)

# The clock behind stage timings; tests replace it.
_clock = time.monotonic


@contextmanager
def stage_timer() -> Iterator[None]:
    """Count a StageCommit's total_seconds from the start of this block, not of the commit."""
    token = _stage_started.set(_clock())
    try:
        yield
    finally:
        _stage_started.reset(token)


@dataclass(frozen=True)
class Manifest:
    """The committed record of one stage's outputs in one run directory."""

    stage: str
    manifest_id: str
    root: str
    dataset: str
    load_id: str
    inputs: dict[str, str]
    parameters: dict[str, Any]
    code_version: str
    counts: dict[str, Any]
    timings: dict[str, float]
    outputs: list[str]
    committed_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_manifest(spark: SparkSession, layout: RunLayout, stage: str) -> Manifest:
    """Return the committed manifest of ``stage`` in ``layout``.

    Raises UncommittedInputError naming the run directory and the command that
    rebuilds the missing output.
    """
    uri = layout.manifest(stage)
    if not fs.exists(spark, uri):
        rerun = f"python -m spark_jobs {stage} --output {layout.root}"
        if stage == "load":
            # Without --source, load reads the built-in sample, not the user's data set.
            rerun += " --source SOURCE (leave out --source only for the built-in sample)"
        raise UncommittedInputError(
            f"the {stage} output in {layout.root} is not committed (no manifest at {uri}); "
            f"it is missing or was left incomplete by a failed run. Rerun it: {rerun}"
        )
    values = fs.read_json(spark, uri)
    return Manifest(**values)


def check_lineage(manifests: Mapping[str, Manifest]) -> tuple[str, str]:
    """Return the shared (dataset, load_id) of the inputs, or raise LineageError.

    The inputs must come from one load, and an input made from another input
    must have been made from the committed one: a train made before split was
    rerun, for example, was fitted on other training ratings.
    """
    items = sorted(manifests.items())
    if not items:
        raise ValueError("check_lineage needs at least one manifest")
    first_name, first = items[0]
    for name, manifest in items[1:]:
        if manifest.dataset != first.dataset or manifest.load_id != first.load_id:
            raise LineageError(
                f"inputs come from different datasets or runs: {first_name} is from dataset "
                f"{first.dataset} (load {first.load_id} in {first.root}) but {name} is from dataset "
                f"{manifest.dataset} (load {manifest.load_id} in {manifest.root}). "
                f"Point both inputs at outputs of the same run."
            )
    for name, manifest in sorted(manifests.items()):
        for upstream, upstream_id in sorted(manifest.inputs.items()):
            current = manifests.get(upstream)
            if current is not None and current.manifest_id != upstream_id:
                rerun = f"python -m spark_jobs {name} --output {manifest.root}"
                if name == "tune":
                    # train reads tune only when its manifest exists.
                    rerun += (
                        f", or remove {RunLayout(manifest.root).manifest(name)} to train "
                        f"without tune's choices"
                    )
                raise LineageError(
                    f"the {name} output in {manifest.root} was made from an earlier {upstream} "
                    f"output (manifest {upstream_id}), not the committed one "
                    f"({current.manifest_id}), so {upstream} was rerun after {name}. Rerun "
                    f"{name}: {rerun}"
                )
    return first.dataset, first.load_id


@dataclass
class StageCommit:
    """Context manager that stages a stage's outputs and commits them on success.

    Use ``staging_path(relative)`` for every output, where ``relative`` is one of
    the stage's paths in ``layout.STAGE_OUTPUTS`` or a path below one. Set
    ``dataset`` (load only) and add to ``counts`` before the block ends.
    """

    spark: SparkSession
    layout: RunLayout
    stage: str
    inputs: Mapping[str, Manifest] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    manifest: Manifest | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGE_OUTPUTS:
            raise ValueError(f"unknown stage {self.stage!r}; allowed: {sorted(STAGE_OUTPUTS)}")
        self.attempt = uuid.uuid4().hex[:12]
        self.staging_root = self.layout.staging(self.stage, self.attempt)
        self._written: set[str] = set()
        self._discarded = False

    def staging_path(self, relative: str) -> str:
        """Return where to write ``relative`` during this attempt."""
        top = self._owned_output(relative)
        self._written.add(top)
        return f"{self.staging_root}/{relative.strip('/')}"

    def _owned_output(self, relative: str) -> str:
        relative = relative.strip("/")
        for output in STAGE_OUTPUTS[self.stage]:
            if relative == output or relative.startswith(output + "/"):
                return output
        raise ValueError(
            f"stage {self.stage} may not write {relative!r}; "
            f"its outputs are {list(STAGE_OUTPUTS[self.stage])}"
        )

    def __enter__(self) -> StageCommit:
        self._commit_started = _clock()
        self._started = _stage_started.get() or self._commit_started
        # Reject mixed inputs before any work, and before uncommitting the outputs
        # of an earlier good run.
        if self.inputs:
            check_lineage(self.inputs)
        # Uncommit first: from here on, a crash leaves no manifest behind.
        fs.delete(self.spark, self.layout.manifest(self.stage))
        self._remove_stale_staging()
        logger.info("%s: started in %s", self.stage, self.layout.root)
        return self

    def _remove_stale_staging(self) -> None:
        staging_dir = self.layout.path(STAGING)
        for name in fs.list_names(self.spark, staging_dir):
            if name.startswith(self.stage + "-"):
                fs.delete(self.spark, f"{staging_dir}/{name}")

    def publish_rejected(self, relatives: Iterable[str]) -> None:
        """Move the staged ``relatives`` into place for a stage that rejects its input.

        The stage's other outputs are deleted and no manifest is written, so the
        stage stays uncommitted while its user can read what was rejected.
        """
        relatives = tuple(relatives)
        removed = [
            output
            for output in STAGE_OUTPUTS[self.stage]
            if fs.delete(self.spark, self.layout.path(output)) and output not in relatives
        ]
        if removed:
            logger.warning(
                "%s: rejected its input, so the earlier %s outputs were removed: %s",
                self.stage,
                self.stage,
                ", ".join(removed),
            )
        for relative in relatives:
            fs.rename(self.spark, self.staging_path(relative), self.layout.path(relative))
        self._remove_staging()
        self._discarded = True

    def _uncommit_dependents(self) -> None:
        """Remove the manifests of the stages made from this stage's earlier outputs.

        Their outputs stay on disk, but a stage that reads them stops and names the
        stage to rerun, and train no longer reads a tune made from another split.
        """
        removed = [
            stage
            for stage in DEPENDENT_STAGES.get(self.stage, ())
            if fs.delete(self.spark, self.layout.manifest(stage))
        ]
        if removed:
            logger.info(
                "%s: uncommitted the stages made from its earlier output (%s). Rerun them.",
                self.stage,
                ", ".join(removed),
            )

    def _remove_staging(self) -> None:
        fs.delete(self.spark, self.staging_root)
        # Another stage may be staging in the same run at this moment. Its folder
        # keeps _staging in place.
        fs.delete_if_empty(self.spark, self.layout.path(STAGING))

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool:
        if exc_type is not None:
            if self._discarded or not fs.exists(self.spark, self.staging_root):
                logger.error("%s: failed, nothing committed", self.stage)
            else:
                logger.error(
                    "%s: failed, outputs left uncommitted in %s", self.stage, self.staging_root
                )
            return False
        self._promote()
        self._write_manifest()
        self._uncommit_dependents()
        self._remove_staging()
        logger.info(
            "%s: committed in %.1f s, counts %s",
            self.stage,
            self.timings["total_seconds"],
            self.counts,
        )
        return False

    def _promote(self) -> None:
        for output in sorted(self._written):
            staged = f"{self.staging_root}/{output}"
            final = self.layout.path(output)
            fs.delete(self.spark, final)
            fs.rename(self.spark, staged, final)

    def _write_manifest(self) -> None:
        now = _clock()
        self.timings["total_seconds"] = round(now - self._started, 3)
        self.timings["commit_seconds"] = round(now - self._commit_started, 3)
        if self.stage == "load":
            if self.dataset is None:
                raise ValueError("the load stage must set dataset before it commits")
            dataset, load_id = self.dataset, ""
        else:
            dataset, load_id = check_lineage(self.inputs)
        manifest_id = uuid.uuid4().hex
        self.manifest = Manifest(
            stage=self.stage,
            manifest_id=manifest_id,
            root=self.layout.root,
            dataset=dataset,
            load_id=load_id or manifest_id,
            inputs={name: manifest.manifest_id for name, manifest in sorted(self.inputs.items())},
            parameters=dict(self.parameters),
            code_version=code_version(),
            counts=dict(self.counts),
            timings=dict(self.timings),
            outputs=sorted(self._written),
            committed_at=datetime.datetime.now(datetime.UTC).isoformat(),
        )
        fs.write_json(self.spark, self.layout.manifest(self.stage), self.manifest.to_dict())
