"""The Spark session: sized for this machine when run directly, left alone under spark-submit."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterable

from pyspark.sql import SparkSession

from spark_jobs.errors import ParameterError

logger = logging.getLogger(__name__)

# Share of the machine's available memory given to a local driver, which in
# local mode also runs every executor task. The rest is left to the Python
# workers and the operating system.
LOCAL_MEMORY_SHARE = 0.6
MIN_DRIVER_MEMORY_MB = 1024

# Local runs whose input files total less than this use SHORT_RUN_JAVA_OPTIONS.
SHORT_RUN_INPUT_BYTES = 64 * 1024 * 1024

# Sampled part-way through a pipeline run on ml-latest-small (Spark 3.5.6, Java 17,
# 2 cores), the JIT compiler threads had used about 55 of the JVM's 85 CPU-seconds.
# The C1 compiler alone compiles far more cheaply, at the cost of slower code in
# long hot loops, which only large inputs have. C1's frames are larger, and ALS's
# lineage overflowed the default thread stack under C1, hence the larger stack.
SHORT_RUN_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -Xss16m"


def available_memory_mb() -> int:
    """Return MemAvailable from /proc/meminfo in MiB, or 4096 where that file is missing."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


def local_driver_memory() -> str:
    megabytes = max(MIN_DRIVER_MEMORY_MB, int(available_memory_mb() * LOCAL_MEMORY_SHARE))
    return f"{megabytes}m"


def local_input_bytes(uris: Iterable[str]) -> int | None:
    """Return the total size of the files at ``uris``, or None unless every one is a local path."""
    total = 0
    for uri in uris:
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        if not os.path.exists(path):
            return None
        if os.path.isfile(path):
            total += os.path.getsize(path)
            continue
        for directory, _, names in os.walk(path):
            total += sum(os.path.getsize(os.path.join(directory, name)) for name in names)
    return total


def driver_java_options(input_bytes: int | None) -> str | None:
    """Return the local driver's extra Java options for an input of ``input_bytes`` (None: unknown)."""
    if input_bytes is not None and input_bytes < SHORT_RUN_INPUT_BYTES:
        return SHORT_RUN_JAVA_OPTIONS
    return None


def launched_by_spark_submit() -> bool:
    """Return whether spark-submit (or pyspark) started this Python process and owns the conf."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


# How long check_master waits for each standalone master to accept a connection.
MASTER_CONNECT_SECONDS = 5.0


def check_master(master: str | None) -> None:
    """Raise ParameterError when a ``spark://`` master accepts no connection.

    Without this check, Spark retries an unreachable standalone master for about
    a minute and then fails with a Java stack trace. A master list such as
    ``spark://a:7077,b:7077`` passes when any of them accepts a connection.
    Other masters are left to Spark.
    """
    if master is None or not master.startswith("spark://"):
        return
    failures = []
    for address in master[len("spark://") :].split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ParameterError(
                f"invalid value for --master: {master!r}. Expected spark://HOST:PORT, "
                f"such as spark://127.0.0.1:7077"
            )
        try:
            with socket.create_connection((host.strip("[]"), int(port)), MASTER_CONNECT_SECONDS):
                return
        except OSError as error:
            failures.append(f"{address} ({error.strerror or error})")
    raise ParameterError(
        f"invalid value for --master: failed to connect to the Spark master at "
        f"{', '.join(failures)}. "
        f"Start the master (sbin/start-master.sh in the Spark directory) or give another --master."
    )


def default_checkpoint_dir(master: str) -> str:
    """Return a checkpoint directory every executor can reach.

    Long ALS runs need checkpoints to cut their lineage, or the driver fails with
    a StackOverflowError when serialising it. On YARN the executors share HDFS;
    in local and loopback standalone mode they share this machine's disk.
    """
    if master.startswith("yarn"):
        return "hdfs:///tmp/spark_jobs/checkpoints"
    return "file://" + tempfile.mkdtemp(prefix="spark_jobs_checkpoints_")


def runs_in_one_jvm(master: str) -> bool:
    """Return whether tasks run in the driver's JVM: ``local`` and ``local[N]``, not ``local-cluster``."""
    return master == "local" or master.startswith("local[")


def skip_local_checksum_files(spark: SparkSession) -> None:
    """Stop Hadoop writing a ``.NAME.crc`` file beside each file written to local disk.

    It changes the JVM's cached ``file://`` file system, so it reaches the tasks only
    when they run in the driver's JVM. Reads still work: Hadoop 3.3's
    ChecksumFileSystem skips verification when a file has no ``.crc``, and with
    checksums off it deletes the ``.crc`` of a file it overwrites.
    NOTE: a new instance of the file system (after ``FileSystem.closeAll()``, or with
    ``fs.file.impl.disable.cache``) writes ``.crc`` files again.
    """
    jvm = spark.sparkContext._jvm
    configuration = spark.sparkContext._jsc.hadoopConfiguration()
    local = jvm.org.apache.hadoop.fs.Path("file:///").getFileSystem(configuration)
    local.setWriteChecksum(False)


def prepare_for_stages(spark: SparkSession, checkpoint_dir: str | None = None) -> None:
    """Set what the stages need on a session, however it was started.

    That is a checkpoint directory, unless one is set, and on a single-JVM local
    master no ``.crc`` files. The course notebook calls it on its own session.
    """
    context = spark.sparkContext
    if context.getCheckpointDir() is None:
        context.setCheckpointDir(checkpoint_dir or default_checkpoint_dir(context.master))
    if runs_in_one_jvm(context.master):
        skip_local_checksum_files(spark)


def build_session(
    app_name: str = "spark_jobs",
    *,
    master: str | None = None,
    driver_memory: str | None = None,
    shuffle_partitions: int | None = None,
    checkpoint_dir: str | None = None,
    input_bytes: int | None = None,
) -> SparkSession:
    """Return the Spark session for a stage, creating it if needed.

    Under spark-submit the submitted configuration wins, and only what
    ``prepare_for_stages`` sets is added. Run directly, the session is local
    (``local[*]`` unless ``master`` names another), bound to loopback, with
    driver memory from what the machine has available, and with the quick-start
    JIT settings when ``input_bytes`` is known and small.
    """
    builder = SparkSession.builder.appName(app_name)
    if not launched_by_spark_submit():
        cores = os.cpu_count() or 1
        builder = (
            builder.master(master or "local[*]")
            .config("spark.driver.memory", driver_memory or local_driver_memory())
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            # Progress bars would interleave with the stage logs on stderr.
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", str(shuffle_partitions or max(4, 2 * cores)))
            .config("spark.sql.adaptive.enabled", "true")
            .config("spark.sql.session.timeZone", "UTC")
            # Each task already has a core of its own; NumPy's BLAS threads in the
            # Python workers would only compete with the other tasks.
            .config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1")
            .config("spark.executorEnv.OMP_NUM_THREADS", "1")
        )
        java_options = driver_java_options(input_bytes)
        if java_options:
            builder = builder.config("spark.driver.extraJavaOptions", java_options)
        # PySpark starts its Python workers with PYSPARK_PYTHON, or else whichever
        # python3 is first on PATH, which may have another NumPy than the driver.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = builder.getOrCreate()
    context = spark.sparkContext
    context.setLogLevel("WARN")
    prepare_for_stages(spark, checkpoint_dir)
    logger.info(
        "Spark %s session: master %s, driver memory %s, shuffle partitions %s, "
        "driver Java options %s",
        spark.version,
        context.master,
        context.getConf().get("spark.driver.memory", "default"),
        spark.conf.get("spark.sql.shuffle.partitions"),
        context.getConf().get("spark.driver.extraJavaOptions", "none"),
    )
    return spark
