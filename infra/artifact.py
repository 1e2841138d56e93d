"""Build the versioned job artifact that spark-submit runs on a cluster.

An artifact is a directory with everything a cluster needs to run the stages and
nothing it has to fetch from a package index::

    main.py                                   driver script passed to spark-submit
    spark_jobs.zip                            the package, passed with --py-files
    requirements.txt                          pinned dependencies with sha256 hashes
    wheels/*.whl                              those dependencies, plus pip itself
    bootstrap/install_python_dependencies.sh  EMR bootstrap action installing the wheels
    artifact.json                             version, hash and per-file checksums

Its version is the package version plus a content hash over every file except
``artifact.json``, which records the hash. A changed job therefore lands under a
new prefix, and an old run can be replayed from the prefix it ran from. The package
inside the zip carries the hash in ``spark_jobs/_build.py``, which
``spark_jobs.code_version()`` reads and every stage manifest records.

Wheels are downloaded once into a cache by ``python -m infra.artifact fetch``
(``./dev setup`` runs it). Building never touches the network, so CDK synthesis
stays offline. Pure Python: nothing here imports aws-cdk-lib or pyspark.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spark_jobs.local_runner import ARTIFACT_ENTRY_POINT
from spark_jobs.local_runner import ARTIFACT_PACKAGE_ZIP

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPOSITORY / "spark_jobs"
ASSETS = REPOSITORY / "infra" / "assets"
CLUSTER_REQUIREMENTS = ASSETS / "cluster-requirements.txt"
ENTRY_POINT_SOURCE = ASSETS / "entry_point" / "main.py"
BOOTSTRAP_SOURCE = ASSETS / "bootstrap" / "install_python_dependencies.sh"
DEFAULT_WHEEL_CACHE = REPOSITORY / "build" / "wheels"
DEFAULT_BUILD_ROOT = REPOSITORY / "build" / "artifacts"

# Key prefix of all artifacts in the artifacts bucket; one version per sub-prefix.
S3_PREFIX = "artifacts/spark_jobs"

# Relative paths inside an artifact. The EMR steps, the state machine, the
# bootstrap action and the local runner all refer to these. The local runner
# defines the two that spark-submit reads, so that it needs nothing from infra.
ENTRY_POINT = ARTIFACT_ENTRY_POINT
PACKAGE_ZIP = ARTIFACT_PACKAGE_ZIP
REQUIREMENTS = "requirements.txt"
WHEELS = "wheels"
BOOTSTRAP_SCRIPT = "bootstrap/install_python_dependencies.sh"
MANIFEST = "artifact.json"
BUILD_MODULE = "spark_jobs/_build.py"

# pip is shipped as a wheel and run from that file on the nodes, so the bootstrap
# action works whether or not the node's python3.11 has pip installed.
PIP_REQUIREMENT = "pip==26.3"

# The Python that EMR 7 nodes run PySpark with.
CLUSTER_PYTHON_VERSION = "3.11"
CLUSTER_ABI = "cp311"

# Hex digits of the sha256 content hash kept in the version.
HASH_LENGTH = 16

# Fixed timestamp for zip entries, so the same sources give the same bytes.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Platform:
    """A CPU architecture of cluster nodes and the wheel tags pip may pick for it."""

    architecture: str
    wheel_platforms: tuple[str, ...]


# Amazon Linux 2023 (EMR 7) has glibc 2.34, so manylinux tags up to 2_28 install.
PLATFORMS: dict[str, Platform] = {
    "x86_64": Platform(
        "x86_64",
        ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    ),
    "aarch64": Platform(
        "aarch64",
        ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
    ),
}

# Graviton families carry a "g" among the letters after the generation digit
# (m6g, c7gn, r8gd, x2gd, im4gn, t4g), except the first Graviton family, a1.
# GPU families such as g4dn or g5 have their "g" before the digit and are x86_64.
GRAVITON_FAMILY = re.compile(r"^(?:a1|[a-z]+[0-9]+[a-z]*g[a-z]*)$")


class ArtifactError(RuntimeError):
    """The artifact cannot be built from what is on disk. The message names the command to run."""


@dataclass(frozen=True)
class Requirement:
    """One pinned distribution: ``name==version``."""

    name: str
    version: str

    @property
    def normalized_name(self) -> str:
        return normalize_name(self.name)

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class BuiltArtifact:
    """A built artifact directory and its version."""

    directory: Path
    package_version: str
    content_hash: str
    architectures: tuple[str, ...]

    @property
    def version(self) -> str:
        """The S3 prefix segment: ``<package version>-<content hash>``.

        ``spark_jobs.code_version()`` reports the same pair as a PEP 440 local
        version (``0.1.0+<hash>``). The prefix uses "-" because a "+" in an S3 key
        is easily read as an encoded space, as S3 event notifications encode spaces.
        """
        return f"{self.package_version}-{self.content_hash}"

    @property
    def code_version(self) -> str:
        """What ``spark_jobs.code_version()`` returns when imported from this artifact."""
        return f"{self.package_version}+{self.content_hash}"

    @property
    def s3_prefix(self) -> str:
        """Key prefix of this version in the artifacts bucket, without a trailing slash."""
        return f"{S3_PREFIX}/{self.version}"

    @property
    def entry_point(self) -> Path:
        return self.directory / ENTRY_POINT

    @property
    def package_zip(self) -> Path:
        return self.directory / PACKAGE_ZIP


def normalize_name(name: str) -> str:
    """Return a distribution name in the normalized form wheel file names use (PEP 503 and 427)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def parse_requirements(text: str) -> list[Requirement]:
    """Parse ``name==version`` lines, ignoring comments and blank lines.

    Raises ArtifactError for any other line, because a range would let two builds
    resolve different wheels for the same content hash.
    """
    requirements = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        if match is None:
            raise ArtifactError(
                f"invalid line {number} in {CLUSTER_REQUIREMENTS.name}: {raw!r}; "
                f"every cluster dependency must be pinned as name==version"
            )
        requirements.append(Requirement(match.group(1), match.group(2)))
    return requirements


def cluster_requirements() -> list[Requirement]:
    """Return the pinned cluster dependencies from infra/assets/cluster-requirements.txt."""
    return parse_requirements(CLUSTER_REQUIREMENTS.read_text(encoding="utf-8"))


def pip_requirement() -> Requirement:
    (requirement,) = parse_requirements(PIP_REQUIREMENT)
    return requirement


def architecture_of(instance_type: str) -> str:
    """Return ``aarch64`` for Graviton instance types and ``x86_64`` for all others."""
    family = instance_type.split(".", 1)[0].lower()
    return "aarch64" if GRAVITON_FAMILY.match(family) else "x86_64"


def architectures_for(instance_types: Iterable[str]) -> tuple[str, ...]:
    """Return the sorted, distinct architectures that a set of instance types needs wheels for."""
    return tuple(sorted({architecture_of(instance_type) for instance_type in instance_types}))


def _wheel_matches(filename: str, requirement: Requirement) -> bool:
    # Wheel names start with "<normalized name>-<version>-" (PEP 427).
    parts = filename.split("-")
    return (
        filename.endswith(".whl")
        and len(parts) >= 5
        and normalize_name(parts[0]) == requirement.normalized_name
        and parts[1] == requirement.version
    )


def find_wheels(
    cache: Path, architecture: str, requirements: Sequence[Requirement]
) -> tuple[dict[Requirement, Path], list[Requirement]]:
    """Return the cached wheel of each requirement for an architecture, and the ones missing."""
    directory = cache / architecture
    names = sorted(os.listdir(directory)) if directory.is_dir() else []
    found: dict[Requirement, Path] = {}
    missing: list[Requirement] = []
    for requirement in requirements:
        matches = [name for name in names if _wheel_matches(name, requirement)]
        if matches:
            found[requirement] = directory / matches[0]
        else:
            missing.append(requirement)
    return found, missing


def fetch_wheels(
    architectures: Sequence[str] = tuple(PLATFORMS),
    *,
    cache: Path = DEFAULT_WHEEL_CACHE,
) -> list[Path]:
    """Download the pinned wheels for each architecture into ``cache/<architecture>``.

    Runs ``pip download`` only for architectures with a wheel missing, so a
    complete cache needs no network. Returns the directories filled. Raises
    ArtifactError with pip's output when a download fails.
    """
    requirements = [*cluster_requirements(), pip_requirement()]
    directories = []
    for architecture in architectures:
        platform = PLATFORMS[architecture]
        directory = cache / architecture
        directories.append(directory)
        _, missing = find_wheels(cache, architecture, requirements)
        if not missing:
            continue
        directory.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version", CLUSTER_PYTHON_VERSION,
            "--implementation", "cp",
            "--abi", CLUSTER_ABI,
            "--dest", str(directory),
        ]
        for tag in platform.wheel_platforms:
            command += ["--platform", tag]
        command += [str(requirement) for requirement in missing]
        logger.info("downloading %d wheels for %s into %s", len(missing), architecture, directory)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ArtifactError(
                f"pip download failed for {architecture} (exit status {result.returncode}):\n"
                f"{result.stderr.strip()}"
            )
    return directories


def _package_files(package_dir: Path) -> list[tuple[str, Path]]:
    """Return (archive name, path) of every file of the spark_jobs package, sorted."""
    files = []
    for path in sorted(package_dir.rglob("*")):
        relative = path.relative_to(package_dir.parent).as_posix()
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        if relative == BUILD_MODULE:
            # A _build.py left in the source tree by hand would shadow the real one.
            continue
        files.append((relative, path))
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _requirements_text(wheels: dict[Requirement, list[Path]]) -> str:
    """Return requirements.txt content pinning each dependency to the hashes of its wheels."""
    lines = [
        "# Installed by the bootstrap action with pip --no-index --require-hashes.",
    ]
    for requirement in sorted(wheels, key=lambda item: item.normalized_name):
        hashes = sorted({_sha256(path) for path in wheels[requirement]})
        options = " ".join(f"--hash=sha256:{digest}" for digest in hashes)
        lines.append(f"{requirement} {options}")
    return "\n".join(lines) + "\n"


def _plan_files(
    architectures: Sequence[str], cache: Path
) -> tuple[dict[str, Path], str]:
    """Return the artifact's files (relative path -> source) and its requirements.txt text."""
    dependencies = cluster_requirements()
    everything = [*dependencies, pip_requirement()]
    wheels_by_requirement: dict[Requirement, list[Path]] = {item: [] for item in dependencies}
    files: dict[str, Path] = {}
    for architecture in architectures:
        if architecture not in PLATFORMS:
            raise ArtifactError(
                f"unknown architecture {architecture!r}; allowed: {sorted(PLATFORMS)}"
            )
        found, missing = find_wheels(cache, architecture, everything)
        if missing:
            names = ", ".join(str(item) for item in missing)
            raise ArtifactError(
                f"wheels missing from {cache / architecture}: {names}. Download them once with "
                f"'./dev setup' (or: .venv/bin/python -m infra.artifact fetch)"
            )
        for requirement, path in found.items():
            files[f"{WHEELS}/{path.name}"] = path
            if requirement in wheels_by_requirement:
                wheels_by_requirement[requirement].append(path)
    files[ENTRY_POINT] = ENTRY_POINT_SOURCE
    files[BOOTSTRAP_SCRIPT] = BOOTSTRAP_SOURCE
    return files, _requirements_text(wheels_by_requirement)


def _content_hash(files: dict[str, Path], requirements_text: str, package_dir: Path) -> str:
    """Hash every artifact file by relative path and content. The zip counts as its sources."""
    listing = hashlib.sha256()
    entries = {name: _sha256(path) for name, path in files.items()}
    for archive_name, path in _package_files(package_dir):
        entries[f"{PACKAGE_ZIP}/{archive_name}"] = _sha256(path)
    entries[REQUIREMENTS] = hashlib.sha256(requirements_text.encode("utf-8")).hexdigest()
    for name in sorted(entries):
        listing.update(f"{name}\0{entries[name]}\n".encode())
    return listing.hexdigest()[:HASH_LENGTH]


def _write_package_zip(target: Path, content_hash: str, package_dir: Path) -> None:
    build_module = (
        '"""Written by infra.artifact when the package is built into a job artifact."""\n\n'
        f'CONTENT_HASH = "{content_hash}"\n'
    )
    entries = [(name, path.read_bytes()) for name, path in _package_files(package_dir)]
    entries.append((BUILD_MODULE, build_module.encode("utf-8")))
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)


def package_version(package_dir: Path = PACKAGE_DIR) -> str:
    """Return ``spark_jobs.__version__`` without importing the package."""
    init_file = package_dir / "__init__.py"
    text = init_file.read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise ArtifactError(f'no __version__ = "..." line in {init_file}')
    return match.group(1)


def build_artifact(
    architectures: Sequence[str] = ("x86_64",),
    *,
    cache: Path = DEFAULT_WHEEL_CACHE,
    build_root: Path = DEFAULT_BUILD_ROOT,
    package_dir: Path = PACKAGE_DIR,
) -> BuiltArtifact:
    """Build (or reuse) the artifact for the current sources under ``build_root/<version>``.

    Offline: raises ArtifactError naming the fetch command when a wheel is not in
    ``cache``. A directory already built for the same content is reused, which
    keeps repeated synthesis cheap. The build is written to a temporary
    directory and renamed into place, so a reader never sees half an artifact.
    ``package_dir`` is the spark_jobs package directory to pack.
    """
    architectures = tuple(sorted(set(architectures)))
    if not architectures:
        raise ArtifactError("no architecture given; pass at least one of " + ", ".join(PLATFORMS))
    files, requirements_text = _plan_files(architectures, cache)
    artifact = BuiltArtifact(
        directory=Path(),
        package_version=package_version(package_dir),
        content_hash=_content_hash(files, requirements_text, package_dir),
        architectures=architectures,
    )
    target = build_root / artifact.version
    artifact = BuiltArtifact(target, artifact.package_version, artifact.content_hash, architectures)
    if (target / MANIFEST).is_file():
        return artifact

    build_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{artifact.version}-", dir=build_root))
    try:
        for name, source in sorted(files.items()):
            destination = staging / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(source, destination)
        (staging / BOOTSTRAP_SCRIPT).chmod(0o755)
        (staging / REQUIREMENTS).write_text(requirements_text, encoding="utf-8")
        _write_package_zip(staging / PACKAGE_ZIP, artifact.content_hash, package_dir)
        _write_manifest(staging, artifact)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:
            # Another process built the same version first; its copy is identical.
            if not (target / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built job artifact %s in %s", artifact.version, target)
    return artifact


def _link_or_copy(source: Path, destination: Path) -> None:
    # Wheels are large and never modified in the cache, so a hard link saves
    # copying them into every build. Sources under the repository are copied,
    # because editing one must not change an artifact already built.
    if source.is_relative_to(REPOSITORY / "build"):
        try:
            os.link(source, destination)
            return
        except OSError:
            pass
    shutil.copyfile(source, destination)


def _write_manifest(directory: Path, artifact: BuiltArtifact) -> None:
    checksums = {
        path.relative_to(directory).as_posix(): _sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
    manifest = {
        "version": artifact.version,
        "code_version": artifact.code_version,
        "package_version": artifact.package_version,
        "content_hash": artifact.content_hash,
        "architectures": list(artifact.architectures),
        "python": CLUSTER_PYTHON_VERSION,
        "files": checksums,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (directory / MANIFEST).write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.artifact",
        description="Download the cluster wheels, or build the versioned job artifact.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="download missing wheels into the cache")
    build = commands.add_parser("build", help="build the artifact and print its directory")
    for command in (fetch, build):
        command.add_argument(
            "--architecture",
            action="append",
            choices=sorted(PLATFORMS),
            help="node CPU architecture; repeat for several (fetch: all, build: x86_64)",
        )
        command.add_argument(
            "--cache", type=Path, default=DEFAULT_WHEEL_CACHE, help="wheel cache directory"
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "fetch":
            for directory in fetch_wheels(args.architecture or tuple(PLATFORMS), cache=args.cache):
                print(directory)
        else:
            artifact = build_artifact(args.architecture or ("x86_64",), cache=args.cache)
            # The directory alone on stdout, so that --artifact "$(... build)" works.
            print(artifact.directory)
    except ArtifactError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
