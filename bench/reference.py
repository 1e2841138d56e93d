"""Single-node references for the scale benchmark: implicit's ALS and a NumPy top-k.

Both run on the same ratings.csv the pipeline reads, in this process, on the CPU.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import scipy.sparse

logger = logging.getLogger(__name__)

# Users scored per NumPy matrix product: 1024 users x 59,047 movies of float32
# is 240 MB, small enough to sit beside the ratings matrix.
USERS_PER_BLOCK = 1024


def read_ratings_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (user ids, movie ids, ratings) from a MovieLens ratings.csv with a header."""
    with open(path, "rb") as handle:
        handle.readline()
        text = handle.read()
    # Parsing the text as one whitespace-separated float stream is several times
    # faster than a CSV reader on 25 million rows.
    values = np.array(text.replace(b",", b" ").split(), dtype=np.float64).reshape(-1, 4)
    return values[:, 0].astype(np.int64), values[:, 1].astype(np.int64), values[:, 2]


def ratings_matrix(
    users: np.ndarray, movies: np.ndarray, ratings: np.ndarray
) -> scipy.sparse.csr_matrix:
    """Return the users x movies CSR matrix, rows and columns indexed by id (id 0 unused)."""
    shape = (int(users.max()) + 1, int(movies.max()) + 1)
    return scipy.sparse.csr_matrix((ratings.astype(np.float32), (users, movies)), shape=shape)


def implicit_seconds_per_iteration(
    matrix: scipy.sparse.csr_matrix, rank: int, iterations: int, threads: int
) -> dict:
    """Fit implicit's CPU ALS and return its mean and per-iteration times in seconds.

    implicit treats the ratings as confidence weights (implicit feedback), so its
    model differs from Spark's explicit ALS, but each iteration does the same
    work: one regularised least-squares solve per user and per movie.
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    times: list[float] = []
    last = [time.monotonic()]

    cpu_times: list[float] = []
    last_cpu = [time.process_time()]

    def record(iteration: int, elapsed: float, loss: float) -> None:
        now = time.monotonic()
        times.append(now - last[0])
        last[0] = now
        now_cpu = time.process_time()
        cpu_times.append(now_cpu - last_cpu[0])
        last_cpu[0] = now_cpu

    # implicit parallelises over users itself and warns that a threaded BLAS
    # underneath it slows it down, so BLAS gets one thread.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=rank,
            iterations=iterations,
            regularization=0.1,
            num_threads=threads,
            calculate_training_loss=False,
            random_state=42,
        )
        last[0] = time.monotonic()
        last_cpu[0] = time.process_time()
        model.fit(matrix, show_progress=False, callback=record)
    return {
        "library": "implicit 0.7.3 (CPU, conjugate gradient)",
        "rank": rank,
        "iterations": iterations,
        "threads": threads,
        "seconds_per_iteration": float(np.mean(times)),
        "cpu_seconds_per_iteration": float(np.mean(cpu_times)),
        "iteration_seconds": [round(value, 3) for value in times],
    }


def numpy_top_k(matrix: scipy.sparse.csr_matrix, rank: int, k: int, seed: int = 42) -> dict:
    """Score every user against every movie with NumPy, keep each user's top ``k`` unrated movies.

    Uses random factors of the given rank: the cost of scoring does not depend
    on the values. Returns the wall time in seconds and the size of the work.
    """
    rng = np.random.default_rng(seed)
    users, movies = matrix.shape
    user_factors = rng.standard_normal((users, rank), dtype=np.float32)
    movie_factors = rng.standard_normal((movies, rank), dtype=np.float32)
    rated_users = np.flatnonzero(np.diff(matrix.indptr))
    top = np.empty((rated_users.size, k), dtype=np.int64)
    started = time.monotonic()
    cpu_started = time.process_time()
    for start in range(0, rated_users.size, USERS_PER_BLOCK):
        block = rated_users[start : start + USERS_PER_BLOCK]
        scores = user_factors[block] @ movie_factors.T
        # Column 0 is no movie (ids start at 1).
        scores[:, 0] = -np.inf
        rated = matrix[block]
        scores[np.repeat(np.arange(block.size), np.diff(rated.indptr)), rated.indices] = -np.inf
        candidates = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, candidates, axis=1), axis=1)
        top[start : start + block.size] = np.take_along_axis(candidates, order, axis=1)
    seconds = time.monotonic() - started
    cpu_seconds = time.process_time() - cpu_started
    return {
        "library": f"numpy {np.__version__} (float32 matrix products, {USERS_PER_BLOCK} users a block)",
        "users": int(rated_users.size),
        "movies": int(movies - 1),
        "rank": rank,
        "k": k,
        "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }
