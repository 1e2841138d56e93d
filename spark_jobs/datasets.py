"""Published MovieLens data sets by name: download, verify, extract and upload.

``--source ml-25m`` downloads the GroupLens zip on the driver, checks its checksum,
extracts the files the load stage reads and uploads them into the run directory
through Hadoop's FileSystem, so executors on any cluster read them from there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import SparkSession

from spark_jobs import fs
from spark_jobs.errors import InputDataError

logger = logging.getLogger(__name__)

BASE_URL = "https://files.grouplens.org/datasets/movielens"
DOWNLOAD_TIMEOUT_SECONDS = 60
CHUNK_BYTES = 1 << 20

# Files kept from a zip: what the load stage reads, the files that tell ml-1m from
# ml-10m, and the README that carries the data set's licence.
KEPT_FILES = frozenset(
    {
        "ratings.csv",
        "movies.csv",
        "ratings.dat",
        "movies.dat",
        "users.dat",
        "u.data",
        "u.item",
        "README",
        "README.txt",
        "README.html",
    }
)
# Written last into an uploaded copy; its content is the zip's checksum.
COMPLETE_MARKER = "_DOWNLOAD_COMPLETE"


@dataclass(frozen=True)
class Dataset:
    """A GroupLens zip, ``<name>.zip``, and the checksum its content must have.

    A dataset with neither ``sha256`` nor ``md5`` is checked against the
    ``<name>.zip.md5`` file that GroupLens publishes beside the zip.
    """

    name: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None

    @property
    def file_name(self) -> str:
        return f"{self.name}.zip"


# SHA-256 and sizes from tensorflow/datasets, tensorflow_datasets/url_checksums/movielens.txt.
# The ml-10m MD5 is from eli-osherovich/papers_with_code, datasets/movielens/dl_config.py.
# NOTE: ml-32m and ml-latest have no pinned checksum: they are checked against the
# .md5 file on the same server, which catches corruption but not a replaced zip.
# ml-latest changes whenever GroupLens refreshes it, so it cannot be pinned.
DATASETS: dict[str, Dataset] = {
    dataset.name: dataset
    for dataset in (
        Dataset(
            "ml-latest-small",
            sha256="696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            size=978202,
        ),
        Dataset(
            "ml-100k",
            sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            size=4924029,
        ),
        Dataset(
            "ml-1m",
            sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            size=5917549,
        ),
        Dataset("ml-10m", md5="ce571fd55effeba0271552578f2648bd"),
        Dataset(
            "ml-20m",
            sha256="96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
            size=198702078,
        ),
        Dataset(
            "ml-25m",
            sha256="8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
            size=261978986,
        ),
        Dataset("ml-32m"),
        Dataset("ml-latest"),
    )
}


def is_dataset_name(source: str, registry: Mapping[str, Dataset] | None = None) -> bool:
    return source in (DATASETS if registry is None else registry)


def _download(url: str, target: str, timeout: float) -> tuple[str, str, int]:
    """Download ``url`` to the local file ``target``; return its SHA-256, MD5 and size."""
    sha256 = hashlib.sha256()
    md5 = hashlib.md5()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
            while chunk := response.read(CHUNK_BYTES):
                sha256.update(chunk)
                md5.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as error:
        raise InputDataError(
            f"failed to download {url}: {error}. Check the network, or download and extract "
            f"the zip yourself and pass the extracted directory as --source."
        ) from error
    return sha256.hexdigest(), md5.hexdigest(), size


def _published_md5(url: str, timeout: float) -> str:
    """Return the MD5 in GroupLens's ``<zip>.md5`` file ("MD5 (name.zip) = <hex>")."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read(4096).decode("ascii", errors="replace")
    except (urllib.error.URLError, OSError) as error:
        raise InputDataError(
            f"failed to download the checksum {url}: {error}. Without it the zip cannot be "
            f"verified; download and extract it yourself and pass the directory as --source."
        ) from error
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if match is None:
        raise InputDataError(f"no MD5 checksum found in {url}: {text[:200]!r}")
    return match.group(0).lower()


def _verify(
    dataset: Dataset, url: str, digests: tuple[str, str, int], timeout: float
) -> str:
    """Return the checksum the download matched, as "sha256:<hex>" or "md5:<hex>"."""
    sha256, md5, size = digests
    if dataset.size is not None and size != dataset.size:
        raise InputDataError(
            f"size mismatch for {url}: expected {dataset.size} bytes, got {size}. "
            f"The download is incomplete or the file changed; retry, or pass a verified "
            f"extracted copy as --source."
        )
    if dataset.sha256 is not None:
        expected, actual, algorithm = dataset.sha256, sha256, "sha256"
    else:
        expected = dataset.md5 or _published_md5(url + ".md5", timeout)
        actual, algorithm = md5, "md5"
    if actual != expected:
        raise InputDataError(
            f"checksum mismatch for {url}: expected {algorithm} {expected}, got {actual}. "
            f"The download is corrupt or the file changed; retry, or pass a verified "
            f"extracted copy as --source."
        )
    return f"{algorithm}:{actual}"


def _extract_and_upload(spark: SparkSession, archive: str, workdir: str, destination: str) -> int:
    """Upload the KEPT_FILES members of the zip to ``destination``; return how many."""
    uploaded = 0
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.infolist():
            name = os.path.basename(member.filename)
            if member.is_dir() or name not in KEPT_FILES:
                continue
            local = bundle.extract(member, workdir)
            fs.copy_from_local(spark, local, f"{destination}/{name}")
            os.remove(local)
            uploaded += 1
    return uploaded


def fetch(
    spark: SparkSession,
    name: str,
    destination: str,
    *,
    registry: Mapping[str, Dataset] | None = None,
    base_url: str | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_SECONDS,
) -> str:
    """Make the data set ``name`` available under the URI ``destination``; return its checksum.

    Reuses a complete earlier upload in ``destination``. Otherwise downloads
    ``<base_url>/<name>.zip`` (default: the GroupLens server) to a local temporary
    directory, verifies it, and uploads the files the load stage needs. ``registry``
    defaults to DATASETS. Raises InputDataError when the download fails, the
    checksum differs, or the zip contains no usable file.
    """
    dataset = (DATASETS if registry is None else registry)[name]
    marker = f"{destination}/{COMPLETE_MARKER}"
    if fs.exists(spark, marker):
        checksum = fs.read_text(spark, marker).strip()
        logger.info("using %s downloaded earlier to %s (%s)", name, destination, checksum)
        return checksum
    url = f"{(base_url or BASE_URL).rstrip('/')}/{dataset.file_name}"
    with tempfile.TemporaryDirectory(prefix="spark_jobs_download_") as workdir:
        archive = os.path.join(workdir, dataset.file_name)
        logger.info("downloading %s from %s", name, url)
        digests = _download(url, archive, timeout)
        checksum = _verify(dataset, url, digests, timeout)
        fs.delete(spark, destination)
        try:
            uploaded = _extract_and_upload(spark, archive, workdir, destination)
        except zipfile.BadZipFile as error:
            raise InputDataError(f"{url} is not a valid zip file: {error}") from error
    if uploaded == 0:
        raise InputDataError(
            f"{url} contains none of the MovieLens files {sorted(KEPT_FILES)}; "
            f"check that {name} is a MovieLens rating data set."
        )
    fs.write_text(spark, marker, checksum + "\n")
    logger.info("uploaded %d files of %s to %s (%s)", uploaded, name, destination, checksum)
    return checksum
