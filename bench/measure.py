"""Run a command and measure its wall time and the peak memory of its whole process tree."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Measurement:
    """Wall time, peak resident memory, CPU time and exit status of one command.

    ``cpu_seconds`` is user plus system time summed over the process tree as last
    sampled, so it misses up to half a second per process. On a machine shared
    with other work it varies less than the wall time does.
    """

    seconds: float
    peak_rss_mib: float
    cpu_seconds: float
    returncode: int

    def to_dict(self) -> dict[str, float]:
        return {
            "wall_seconds": round(self.seconds, 2),
            "peak_rss_mib": round(self.peak_rss_mib),
            "cpu_seconds": round(self.cpu_seconds, 1),
            "returncode": self.returncode,
        }


def _sample_tree(process: psutil.Process, cpu_seconds: dict[int, float]) -> int:
    """Return the summed RSS of ``process`` and its descendants; record each one's CPU time."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
            times = member.cpu_times()
            cpu_seconds[member.pid] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_measured(
    command: list[str],
    log: Path,
    stdout: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Measurement:
    """Run ``command``, sending stderr (and stdout unless ``stdout`` is given) to ``log``.

    Peak memory is the largest sum of resident set sizes over the command and
    all its descendants (the Python driver, the JVM and any Python workers),
    sampled every half second, so a spike shorter than that can be missed.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    cpu_seconds: dict[int, float] = {}
    with contextlib.ExitStack() as files:
        errors = files.enter_context(open(log, "w", encoding="utf-8"))
        output = files.enter_context(open(stdout, "w", encoding="utf-8")) if stdout else errors
        started = time.monotonic()
        child = subprocess.Popen(command, stdout=output, stderr=errors, text=True, cwd=cwd, env=env)
        process = psutil.Process(child.pid)
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                try:
                    peak = max(peak, _sample_tree(process, cpu_seconds))
                except psutil.NoSuchProcess:
                    return
                stop.wait(POLL_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = child.wait()
        seconds = time.monotonic() - started
        stop.set()
        sampler.join()
    measurement = Measurement(
        seconds=seconds,
        peak_rss_mib=peak / 2**20,
        cpu_seconds=sum(cpu_seconds.values()),
        returncode=returncode,
    )
    logger.info("%s: %s", " ".join(command[:4]), measurement.to_dict())
    return measurement
