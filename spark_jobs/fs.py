"""File operations on any URI Spark can reach, through Hadoop's FileSystem API.

Going through the JVM means the same call works on a local path, ``file://``,
``hdfs://`` and ``s3://`` (EMRFS on EMR, S3A elsewhere), so no stage has a code
path that only works locally.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)


def _path_and_fs(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return path, fs


def exists(spark: SparkSession, uri: str) -> bool:
    path, fs = _path_and_fs(spark, uri)
    return bool(fs.exists(path))


def is_directory(spark: SparkSession, uri: str) -> bool:
    path, fs = _path_and_fs(spark, uri)
    return bool(fs.exists(path) and fs.getFileStatus(path).isDirectory())


def delete(spark: SparkSession, uri: str) -> bool:
    """Delete a file or directory tree; return whether anything was there."""
    path, fs = _path_and_fs(spark, uri)
    return bool(fs.delete(path, True))


def delete_if_empty(spark: SparkSession, uri: str) -> bool:
    """Delete a directory only if it contains nothing; return whether it was deleted.

    The check and the delete are one call to the filesystem, so a directory that
    another process writes into at the same moment is left in place.
    """
    path, fs = _path_and_fs(spark, uri)
    try:
        return bool(fs.delete(path, False))
    except Py4JJavaError as error:
        # Hadoop raises an IOException for a directory that is not empty. Other
        # failures, such as a denied permission, also leave the folder in place.
        logger.debug("kept %s: %s", uri, error.java_exception)
        return False


def rename(spark: SparkSession, source: str, target: str) -> None:
    """Move ``source`` to ``target``, replacing nothing: the caller deletes ``target`` first.

    Raises OSError when the filesystem reports failure, which Hadoop signals by
    returning False instead of raising.
    """
    source_path, fs = _path_and_fs(spark, source)
    target_path, _ = _path_and_fs(spark, target)
    fs.mkdirs(target_path.getParent())
    if not fs.rename(source_path, target_path):
        raise OSError(f"failed to rename {source} to {target}")


def list_names(spark: SparkSession, uri: str) -> list[str]:
    """Return the names of the entries directly under a directory, sorted."""
    path, fs = _path_and_fs(spark, uri)
    if not fs.exists(path):
        return []
    return sorted(status.getPath().getName() for status in fs.listStatus(path))


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``, replacing any file there."""
    path, fs = _path_and_fs(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    """Return the whole content of a file; raises FileNotFoundError naming the URI."""
    path, fs = _path_and_fs(spark, uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"file not found: {uri}")
    length = fs.getFileStatus(path).getLen()
    stream = fs.open(path)
    try:
        jvm = spark.sparkContext._jvm
        buffer = jvm.java.io.ByteArrayOutputStream()
        jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, buffer, 65536, False)
        data = bytes(buffer.toByteArray())
    finally:
        stream.close()
    if len(data) != length:
        raise OSError(f"short read from {uri}: {len(data)} of {length} bytes")
    return data


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    write_bytes(spark, uri, text.encode("utf-8"))


def read_text(spark: SparkSession, uri: str) -> str:
    return read_bytes(spark, uri).decode("utf-8")


def write_json(spark: SparkSession, uri: str, value: Any) -> None:
    write_text(spark, uri, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(spark: SparkSession, uri: str) -> Any:
    return json.loads(read_text(spark, uri))


def status(spark: SparkSession, uri: str) -> tuple[int, int]:
    """Return (length in bytes, modification time in ms since the epoch) of a file."""
    path, fs = _path_and_fs(spark, uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"file not found: {uri}")
    file_status = fs.getFileStatus(path)
    return int(file_status.getLen()), int(file_status.getModificationTime())


def copy_from_local(spark: SparkSession, local_path: str, uri: str) -> None:
    """Copy a file on the driver's disk to ``uri``, replacing any file there.

    Hadoop streams the copy, so a file larger than the driver's memory is fine.
    """
    jvm = spark.sparkContext._jvm
    target, fs = _path_and_fs(spark, uri)
    fs.copyFromLocalFile(False, True, jvm.org.apache.hadoop.fs.Path(local_path), target)
