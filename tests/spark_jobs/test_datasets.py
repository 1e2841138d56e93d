"""Dataset downloads against a loopback HTTP server serving a zip the test builds."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from spark_jobs import datasets
from spark_jobs.context import StageContext
from spark_jobs.errors import InputDataError
from spark_jobs.layout import RunLayout
from spark_jobs.params import Parameters
from spark_jobs.stages import load

pytestmark = pytest.mark.spark

NAME = "ml-test"
RATINGS = b"userId,movieId,rating,timestamp\n1,10,4.0,1\n2,10,3.5,2\n"
MOVIES = b'movieId,title,genres\n10,"Heat, The (1995)",Drama\n'


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it format
        pass


@pytest.fixture
def server_root(tmp_path):
    """Serve a directory on 127.0.0.1 and yield (directory, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def build_zip(root: Path) -> bytes:
    """Write ml-test.zip into ``root`` the way GroupLens lays out its zips; return its bytes."""
    archive = root / f"{NAME}.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(f"{NAME}/ratings.csv", RATINGS)
        bundle.writestr(f"{NAME}/movies.csv", MOVIES)
        bundle.writestr(f"{NAME}/genome-scores.csv", b"movieId,tagId,relevance\n")
    return archive.read_bytes()


def test_fetch_verifies_and_uploads_needed_files(spark, server_root, tmp_path):
    root, base_url = server_root
    data = build_zip(root)
    sha256 = hashlib.sha256(data).hexdigest()
    registry = {NAME: datasets.Dataset(NAME, sha256=sha256, size=len(data))}
    destination = tmp_path / "copy"

    checksum = datasets.fetch(
        spark, NAME, str(destination), registry=registry, base_url=base_url
    )

    assert checksum == f"sha256:{sha256}"
    assert (destination / "ratings.csv").read_bytes() == RATINGS
    assert (destination / "movies.csv").read_bytes() == MOVIES
    assert not (destination / "genome-scores.csv").exists()
    assert (destination / datasets.COMPLETE_MARKER).exists()


def test_fetch_reuses_complete_copy(spark, server_root, tmp_path):
    root, base_url = server_root
    data = build_zip(root)
    registry = {NAME: datasets.Dataset(NAME, sha256=hashlib.sha256(data).hexdigest())}
    destination = tmp_path / "copy"
    first = datasets.fetch(spark, NAME, str(destination), registry=registry, base_url=base_url)
    (root / f"{NAME}.zip").unlink()

    second = datasets.fetch(spark, NAME, str(destination), registry=registry, base_url=base_url)

    assert second == first


def test_fetch_rejects_checksum_mismatch(spark, server_root, tmp_path):
    root, base_url = server_root
    build_zip(root)
    registry = {NAME: datasets.Dataset(NAME, sha256="0" * 64)}
    destination = tmp_path / "copy"

    with pytest.raises(InputDataError, match="checksum mismatch") as raised:
        datasets.fetch(spark, NAME, str(destination), registry=registry, base_url=base_url)

    assert f"{base_url}/{NAME}.zip" in str(raised.value)
    assert "0" * 64 in str(raised.value)
    assert not (destination / "ratings.csv").exists()
    assert not (destination / datasets.COMPLETE_MARKER).exists()


def test_fetch_rejects_size_mismatch(spark, server_root, tmp_path):
    root, base_url = server_root
    data = build_zip(root)
    registry = {NAME: datasets.Dataset(NAME, sha256="0" * 64, size=len(data) + 1)}
    with pytest.raises(InputDataError, match="size mismatch"):
        datasets.fetch(spark, NAME, str(tmp_path / "copy"), registry=registry, base_url=base_url)


def test_fetch_checks_published_md5(spark, server_root, tmp_path):
    root, base_url = server_root
    data = build_zip(root)
    md5 = hashlib.md5(data).hexdigest()
    (root / f"{NAME}.zip.md5").write_text(f"MD5 ({NAME}.zip) = {md5}\n")
    registry = {NAME: datasets.Dataset(NAME)}

    checksum = datasets.fetch(
        spark, NAME, str(tmp_path / "copy"), registry=registry, base_url=base_url
    )

    assert checksum == f"md5:{md5}"


def test_fetch_rejects_wrong_published_md5(spark, server_root, tmp_path):
    root, base_url = server_root
    build_zip(root)
    (root / f"{NAME}.zip.md5").write_text(f"MD5 ({NAME}.zip) = {'a' * 32}\n")
    registry = {NAME: datasets.Dataset(NAME)}
    with pytest.raises(InputDataError, match="checksum mismatch"):
        datasets.fetch(spark, NAME, str(tmp_path / "copy"), registry=registry, base_url=base_url)


def test_fetch_reports_missing_zip(spark, server_root, tmp_path):
    _, base_url = server_root
    registry = {NAME: datasets.Dataset(NAME, sha256="0" * 64)}
    with pytest.raises(InputDataError, match="failed to download") as raised:
        datasets.fetch(spark, NAME, str(tmp_path / "copy"), registry=registry, base_url=base_url)
    assert "--source" in str(raised.value)


def test_load_by_dataset_name(spark, server_root, tmp_path, monkeypatch):
    root, base_url = server_root
    data = build_zip(root)
    sha256 = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(datasets.DATASETS, NAME, datasets.Dataset(NAME, sha256=sha256))
    monkeypatch.setattr(datasets, "BASE_URL", base_url)
    output = tmp_path / "run"

    summary = load.run(
        StageContext(spark=spark, layout=RunLayout(str(output)), params=Parameters(), source=NAME)
    )

    assert summary["ratings"] == 2
    assert summary["movies"] == 1
    assert summary["source"] == NAME
    assert (output / "_sources" / NAME / "ratings.csv").exists()
