"""Synthetic ratings with the shape of MovieLens 25M, in the ml-25m file layout.

    python -m bench.synthetic --output /tmp/bench-data/synthetic-25m
    python -m bench.synthetic --output /tmp/bench-data/synthetic-1m --ratings 1000000

The defaults match ml-25m: 162,541 users, 59,047 rated movies and 25,000,095
ratings on the half-star scale 0.5..5. Movie popularity follows a Zipf law and
user activity a log-normal law with at least 20 ratings per user, so both have
the long tail real MovieLens has. Each rating is a global mean plus user and
movie biases plus a dot product of latent factors plus Gaussian noise, rounded
to a whole or half star, so ALS has structure to find.

The same seed and sizes always produce byte-identical files: every chunk of
users draws from its own generator spawned from the seed. Users are written in
chunks, so memory stays near one chunk plus the per-movie tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# The published size of ml-25m (movies counts only those with at least one rating).
ML25M_USERS = 162_541
ML25M_MOVIES = 59_047
ML25M_RATINGS = 25_000_095

MIN_RATINGS_PER_USER = 20
USERS_PER_CHUNK = 8192
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# Rating timestamps fall between 1995-01-09 and 2019-11-21, as in ml-25m.
FIRST_TIMESTAMP = 789_652_009
LAST_TIMESTAMP = 1_574_327_703


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and shape of one synthetic data set.

    ``popularity_exponent`` is the Zipf exponent of movie popularity (rank r is
    drawn with weight r ** -exponent). ``activity_sigma`` is the log-normal
    sigma of ratings per user. ``whole_star_share`` is the probability that a
    rating is rounded to a whole star instead of the nearest half star.
    """

    users: int = ML25M_USERS
    movies: int = ML25M_MOVIES
    ratings: int = ML25M_RATINGS
    seed: int = 42
    factors: int = 8
    popularity_exponent: float = 0.9
    activity_sigma: float = 1.1
    global_mean: float = 3.55
    user_bias_std: float = 0.4
    movie_bias_std: float = 0.45
    factor_std: float = 0.35
    noise_std: float = 0.6
    whole_star_share: float = 0.5

    def validate(self) -> SyntheticConfig:
        """Return self, or raise ValueError naming the size that cannot be generated."""
        if self.users < 1 or self.movies < 1:
            raise ValueError(
                f"users and movies must be at least 1, got {self.users}, {self.movies}"
            )
        minimum = self.users * min(MIN_RATINGS_PER_USER, self.movies)
        maximum = self.users * self.movies
        if not minimum <= self.ratings <= maximum // 2:
            raise ValueError(
                f"invalid ratings count {self.ratings} for {self.users} users and {self.movies} "
                f"movies; it must lie between {minimum} (at least {MIN_RATINGS_PER_USER} per "
                f"user) and {maximum // 2} (half the user-movie matrix)"
            )
        return self


def scaled_config(ratings: int, seed: int = 42) -> SyntheticConfig:
    """Return a config with ``ratings`` ratings and users and movies scaled like ml-25m.

    Users scale linearly with the ratings count. Movies scale with its square
    root, because a smaller MovieLens sample keeps most of the popular catalogue
    (ml-latest-small has 100,836 ratings on 9,742 movies).
    """
    share = ratings / ML25M_RATINGS
    users = max(1, round(ML25M_USERS * share))
    movies = max(MIN_RATINGS_PER_USER * 2, round(ML25M_MOVIES * share**0.5))
    return SyntheticConfig(users=users, movies=movies, ratings=ratings, seed=seed)


def ratings_per_user(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Return each user's ratings count: log-normal, at least 20, summing exactly to the total."""
    floor = min(MIN_RATINGS_PER_USER, config.movies)
    cap = config.movies // 2
    weights = rng.lognormal(mean=0.0, sigma=config.activity_sigma, size=config.users)
    extra_total = config.ratings - floor * config.users
    counts = floor + np.floor(weights / weights.sum() * extra_total).astype(np.int64)
    np.minimum(counts, cap, out=counts)
    # Hand out what rounding and the cap left over, one rating at a time to the
    # users with room, starting at random positions so no user id is favoured.
    remainder = config.ratings - int(counts.sum())
    while remainder > 0:
        room = np.flatnonzero(counts < cap)
        chosen = rng.choice(room, size=min(remainder, room.size), replace=False)
        counts[chosen] += 1
        remainder -= chosen.size
    return counts


def movie_popularity(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Return each movie's draw probability: Zipf over a random order, so ids carry no rank."""
    ranks = rng.permutation(config.movies) + 1
    weights = ranks.astype(np.float64) ** -config.popularity_exponent
    return weights / weights.sum()


def draw_movies(
    counts: np.ndarray, popularity: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return (user index, movie index) pairs, ``counts[u]`` distinct movies for user ``u``.

    Pairs come out sorted by user, then movie. Movies are drawn by popularity,
    and a user whose draws repeat draws again for the shortfall. After eight
    rounds the shortfall is drawn uniformly, so heavy users cannot loop on the head.
    """
    movies = popularity.size
    cumulative = np.cumsum(popularity)
    cumulative[-1] = 1.0
    keys = np.empty(0, dtype=np.int64)
    need = counts.astype(np.int64).copy()
    for attempt in range(64):
        users = np.repeat(np.arange(counts.size, dtype=np.int64), need + need // 4 + 1)
        if attempt < 8:
            drawn = np.searchsorted(cumulative, rng.random(users.size), side="right")
        else:
            drawn = rng.integers(0, movies, users.size)
        keys = np.union1d(keys, users * movies + drawn)
        have = np.bincount(keys // movies, minlength=counts.size)
        if np.all(have >= counts):
            break
        need = np.maximum(counts - have, 0)
    else:
        raise RuntimeError(
            "failed to draw enough distinct movies per user; lower the ratings count"
        )
    # Keep a random subset of each user's distinct movies of exactly the wanted size.
    user_of_key = keys // movies
    order = np.lexsort((rng.random(keys.size), user_of_key))
    starts = np.concatenate(([0], np.cumsum(have)[:-1]))
    position = np.arange(keys.size) - np.repeat(starts, have)
    kept = np.sort(keys[order][position < np.repeat(counts, have)])
    return kept // movies, kept % movies


def half_stars(scores: np.ndarray, whole_star_share: float, rng: np.random.Generator) -> np.ndarray:
    """Round scores to the MovieLens scale: whole stars with the given share, else half stars."""
    whole = rng.random(scores.size) < whole_star_share
    rounded = np.where(whole, np.round(scores), np.round(scores * 2) / 2)
    return np.clip(rounded, 0.5, 5.0).astype(np.float32)


def write_movies(path: Path, config: SyntheticConfig, rng: np.random.Generator) -> None:
    """Write movies.csv: ids 1..movies, titles with a year (some quoted with commas), genres."""
    years = rng.integers(1902, 2020, config.movies)
    genre_count = rng.integers(1, 4, config.movies)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["movieId", "title", "genres"])
        for index in range(config.movies):
            movie_id = index + 1
            # One title in ten has a comma, as MovieLens's "Title, The (Year)" does,
            # so readers of this file must honour quoting.
            if movie_id % 10 == 0:
                title = f"Synthetic Movie {movie_id}, The ({years[index]})"
            else:
                title = f"Synthetic Movie {movie_id} ({years[index]})"
            picks = rng.choice(len(GENRES), size=genre_count[index], replace=False)
            writer.writerow([movie_id, title, "|".join(GENRES[pick] for pick in sorted(picks))])


def generate(config: SyntheticConfig, output: Path) -> dict:
    """Write ratings.csv and movies.csv for ``config`` under ``output`` and return a summary.

    Creates ``output`` when missing and overwrites both files. The summary is
    also written as ``synthetic.json`` beside them.
    """
    config.validate()
    started = time.monotonic()
    output.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(config.seed)
    shape_seed, movie_seed, chunk_seeds = root.spawn(3)
    shape_rng = np.random.default_rng(shape_seed)

    counts = ratings_per_user(config, shape_rng)
    popularity = movie_popularity(config, shape_rng)
    movie_bias = shape_rng.normal(0.0, config.movie_bias_std, config.movies)
    movie_factors = shape_rng.normal(0.0, config.factor_std, (config.movies, config.factors))
    write_movies(output / "movies.csv", config, np.random.default_rng(movie_seed))

    chunk_starts = range(0, config.users, USERS_PER_CHUNK)
    histogram = np.zeros(10, dtype=np.int64)
    rated = np.zeros(config.movies, dtype=bool)
    with open(output / "ratings.csv", "w", encoding="ascii", newline="") as handle:
        handle.write("userId,movieId,rating,timestamp\n")
        for start, seed in zip(chunk_starts, chunk_seeds.spawn(len(chunk_starts)), strict=True):
            rng = np.random.default_rng(seed)
            chunk_counts = counts[start : start + USERS_PER_CHUNK]
            users, movies = draw_movies(chunk_counts, popularity, rng)
            user_bias = rng.normal(0.0, config.user_bias_std, chunk_counts.size)
            user_factors = rng.normal(0.0, config.factor_std, (chunk_counts.size, config.factors))
            scores = (
                config.global_mean
                + user_bias[users]
                + movie_bias[movies]
                + np.einsum("ij,ij->i", user_factors[users], movie_factors[movies])
                + rng.normal(0.0, config.noise_std, users.size)
            )
            stars = half_stars(scores, config.whole_star_share, rng)
            timestamps = rng.integers(FIRST_TIMESTAMP, LAST_TIMESTAMP, users.size)
            histogram += np.bincount((stars * 2).astype(np.int64) - 1, minlength=10)
            rated[movies] = True
            _write_rating_rows(handle, users + start + 1, movies + 1, stars, timestamps)
            logger.info("users %d..%d written", start + 1, start + chunk_counts.size)

    summary = {
        "config": asdict(config),
        "users": config.users,
        "movies_in_catalogue": config.movies,
        "movies_rated": int(rated.sum()),
        "ratings": int(counts.sum()),
        "ratings_per_user_max": int(counts.max()),
        "rating_histogram": {f"{(i + 1) / 2:.1f}": int(n) for i, n in enumerate(histogram)},
        "seconds": round(time.monotonic() - started, 1),
    }
    (output / "synthetic.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


_STAR_TEXT = np.array([f"{(i + 1) / 2:.1f}" for i in range(10)])


def _write_rating_rows(
    handle, users: np.ndarray, movies: np.ndarray, stars: np.ndarray, timestamps: np.ndarray
) -> None:
    star_text = _STAR_TEXT[(stars * 2).astype(np.int64) - 1]
    rows = zip(
        users.tolist(), movies.tolist(), star_text.tolist(), timestamps.tolist(), strict=True
    )
    handle.writelines(f"{user},{movie},{star},{stamp}\n" for user, movie, star, stamp in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.synthetic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", required=True, type=Path, help="directory to write into")
    parser.add_argument(
        "--ratings",
        type=int,
        default=ML25M_RATINGS,
        help="number of ratings; users and movies scale with it (default: ml-25m)",
    )
    parser.add_argument("--users", type=int, help="number of users (default: scaled)")
    parser.add_argument("--movies", type=int, help="number of movies (default: scaled)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    config = scaled_config(args.ratings, seed=args.seed)
    if args.ratings == ML25M_RATINGS:
        config = SyntheticConfig(seed=args.seed)
    overrides = {"users": args.users, "movies": args.movies}
    config = SyntheticConfig(**{**asdict(config), **{k: v for k, v in overrides.items() if v}})
    try:
        summary = generate(config, args.output)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
