"""Tests for the job artifact: versioning, contents, offline wheels and the bootstrap action."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra import artifact as builder
from infra.artifact import ArtifactError
from infra.artifact import architecture_of
from infra.artifact import architectures_for
from infra.artifact import build_artifact
from infra.artifact import parse_requirements

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture()
def package_copy(tmp_path: Path) -> Path:
    """A copy of the spark_jobs sources that a test may edit."""
    target = tmp_path / "sources" / "spark_jobs"
    shutil.copytree(
        REPOSITORY / "spark_jobs", target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_sources_give_same_version_and_bytes(package_copy: Path, tmp_path: Path) -> None:
    first = build_artifact(build_root=tmp_path / "first", package_dir=package_copy)
    second = build_artifact(build_root=tmp_path / "second", package_dir=package_copy)

    assert first.version == second.version
    assert _sha256(first.package_zip) == _sha256(second.package_zip)
    assert first.version.startswith(builder.package_version() + "-")


def test_changed_source_gives_new_version(package_copy: Path, tmp_path: Path) -> None:
    before = build_artifact(build_root=tmp_path / "builds", package_dir=package_copy)
    stage = package_copy / "steps.py"
    stage.write_text(stage.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    after = build_artifact(build_root=tmp_path / "builds", package_dir=package_copy)

    assert after.version != before.version
    assert after.directory != before.directory
    assert before.directory.is_dir(), "an older version must stay where it was built"


def test_artifact_contains_what_spark_submit_and_bootstrap_need(tmp_path: Path) -> None:
    built = build_artifact(build_root=tmp_path)
    names = sorted(
        path.relative_to(built.directory).as_posix()
        for path in built.directory.rglob("*")
        if path.is_file()
    )

    for required in (
        builder.ENTRY_POINT,
        builder.PACKAGE_ZIP,
        builder.REQUIREMENTS,
        builder.BOOTSTRAP_SCRIPT,
        builder.MANIFEST,
    ):
        assert required in names
    assert os.access(built.directory / builder.BOOTSTRAP_SCRIPT, os.X_OK)
    assert built.directory.name == built.version


def test_manifest_checksums_match_files(tmp_path: Path) -> None:
    built = build_artifact(build_root=tmp_path)
    manifest = json.loads((built.directory / builder.MANIFEST).read_text(encoding="utf-8"))

    assert manifest["version"] == built.version
    assert manifest["code_version"] == built.code_version
    assert manifest["architectures"] == ["x86_64"]
    for name, digest in manifest["files"].items():
        assert _sha256(built.directory / name) == digest, name


def test_package_zip_reports_content_hash(tmp_path: Path) -> None:
    built = build_artifact(build_root=tmp_path)
    # -S skips site-packages, where the editable install would import the source
    # tree; PYTHONPATH then leaves the zip as the only spark_jobs on the path.
    result = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import spark_jobs; print(spark_jobs.code_version()); print(spark_jobs.__file__)",
        ],
        env={"PYTHONPATH": str(built.package_zip), "PATH": os.environ.get("PATH", "")},
        # Away from the repository, whose spark_jobs directory the working
        # directory entry of sys.path would otherwise import first.
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    code_version, module_file = result.stdout.split()

    assert code_version == built.code_version
    assert module_file.startswith(str(built.package_zip))


def test_package_zip_holds_every_module(tmp_path: Path) -> None:
    built = build_artifact(build_root=tmp_path)
    with zipfile.ZipFile(built.package_zip) as archive:
        names = set(archive.namelist())
    sources = {
        path.relative_to(REPOSITORY).as_posix()
        for path in (REPOSITORY / "spark_jobs").rglob("*.py")
        if "__pycache__" not in path.parts
    }

    assert sources - names == set()
    assert builder.BUILD_MODULE in names
    assert not any(name.endswith(".pyc") for name in names)


def test_requirements_pin_every_wheel_by_hash(tmp_path: Path) -> None:
    built = build_artifact(["x86_64", "aarch64"], build_root=tmp_path)
    lines = [
        line
        for line in (built.directory / builder.REQUIREMENTS).read_text().splitlines()
        if line and not line.startswith("#")
    ]
    wheel_hashes = {_sha256(path) for path in (built.directory / builder.WHEELS).glob("*.whl")}
    pins = {line.split()[0] for line in lines}

    assert pins == {str(item) for item in builder.cluster_requirements()}
    for line in lines:
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        assert hashes, line
        assert set(hashes) <= wheel_hashes, line
    # Compiled wheels differ per architecture, so numpy lists one hash for each.
    numpy_line = next(line for line in lines if line.startswith("numpy=="))
    assert len(re.findall("--hash=", numpy_line)) == 2


def test_cluster_pins_match_local_pins() -> None:
    local = dict(
        re.findall(
            r"^([A-Za-z0-9_.-]+)==(\S+)$",
            (REPOSITORY / "requirements.txt").read_text(encoding="utf-8"),
            re.MULTILINE,
        )
    )
    cluster = {item.normalized_name: item.version for item in builder.cluster_requirements()}

    assert cluster["numpy"] == local["numpy"]
    assert cluster["matplotlib"] == local["matplotlib"]


def test_missing_wheel_names_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as raised:
        build_artifact(cache=tmp_path / "empty-cache", build_root=tmp_path / "builds")

    assert "./dev setup" in str(raised.value)
    assert "numpy==" in str(raised.value)
    assert not (tmp_path / "builds").exists()


def test_unpinned_requirement_rejected() -> None:
    with pytest.raises(ArtifactError) as raised:
        parse_requirements("numpy>=1.26\n")

    assert "numpy>=1.26" in str(raised.value)


@pytest.mark.parametrize(
    ("instance_type", "architecture"),
    [
        ("m5.xlarge", "x86_64"),
        ("m7i-flex.large", "x86_64"),
        ("g4dn.xlarge", "x86_64"),
        ("c5n.2xlarge", "x86_64"),
        ("m6g.xlarge", "aarch64"),
        ("c7gn.large", "aarch64"),
        ("r8gd.4xlarge", "aarch64"),
        ("g5g.xlarge", "aarch64"),
        ("t4g.medium", "aarch64"),
        ("a1.large", "aarch64"),
    ],
)
def test_architecture_of_instance_type(instance_type: str, architecture: str) -> None:
    assert architecture_of(instance_type) == architecture


def test_mixed_instance_types_need_both_architectures() -> None:
    assert architectures_for(["m5.xlarge", "m6g.xlarge", "m5.xlarge"]) == ("aarch64", "x86_64")


def test_bootstrap_installs_offline_without_pip(tmp_path: Path) -> None:
    """The bootstrap action installs the pinned wheels into a Python that has no pip."""
    built = build_artifact(build_root=tmp_path / "builds")
    environment = tmp_path / "node-python"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True
    )
    python = environment / "bin" / "python"

    result = subprocess.run(
        [str(built.directory / builder.BOOTSTRAP_SCRIPT), str(built.directory)],
        env={
            **os.environ,
            "CLUSTER_PYTHON": str(python),
            "INSTALL_SUDO": "",
            # pip settings of the node must not reach the install: this one would fail it.
            "PIP_CONSTRAINT": str(tmp_path / "missing-constraints.txt"),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report_versions = "import matplotlib, numpy; print(numpy.__version__, matplotlib.__version__)"
    versions = subprocess.run(
        [str(python), "-c", report_versions],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pins = {item.normalized_name: item.version for item in builder.cluster_requirements()}
    assert versions == [pins["numpy"], pins["matplotlib"]]


def test_bootstrap_rejects_missing_python(tmp_path: Path) -> None:
    built = build_artifact(build_root=tmp_path / "builds")
    result = subprocess.run(
        [str(built.directory / builder.BOOTSTRAP_SCRIPT), str(built.directory)],
        env={**os.environ, "CLUSTER_PYTHON": str(tmp_path / "no-such-python"), "INSTALL_SUDO": ""},
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert "no-such-python not found" in result.stderr



def test_build_command_prints_only_the_directory():
    finished = subprocess.run(
        [sys.executable, "-m", "infra.artifact", "build"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    )
    printed = finished.stdout.splitlines()
    assert len(printed) == 1
    assert (Path(printed[0]) / "main.py").is_file()
    assert (Path(printed[0]) / "spark_jobs.zip").is_file()
