"""What the quality benchmark counts and compares: shares with intervals, tests, similarity, burnout."""
from __future__ import annotations

import math

import numpy as np

from ..miniature.reader import Reading


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a share k/n (sound at 0 and n, unlike k/n +- 2 se)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def fisher_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact test of k1/n1 against k2/n2 (the tables' p values)."""
    total, successes = n1 + n2, k1 + k2

    def probability(a: int) -> float:
        return math.comb(successes, a) * math.comb(total - successes, n1 - a) / math.comb(total, n1)

    observed = probability(k1)
    low, high = max(0, successes - n2), min(successes, n1)
    return min(1.0, sum(p for a in range(low, high + 1) if (p := probability(a)) <= observed * (1 + 1e-9)))


def sign_test_p(wins: int, n: int) -> float:
    """Two-sided sign test: how likely `wins` or a count as far from n/2 is among n paired
    comparisons if neither side were better (ties count as losses here, so it is conservative)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(0, min(wins, n - wins) + 1)) / 2**n
    return min(1.0, 2 * tail)


def histogram(image: np.ndarray, bins: int = 4) -> np.ndarray:
    """A normalised RGB histogram, bins per channel."""
    q = (np.asarray(image, dtype=np.int64) * bins) // 256
    index = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    h = np.bincount(index.ravel(), minlength=bins**3).astype(np.float64)
    return h / h.sum()


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Colour-histogram intersection in [0, 1]: 1 for the same colours in the same amounts."""
    return float(np.minimum(histogram(a), histogram(b)).sum())


def diversity(images: np.ndarray) -> float:
    """In-batch diversity: the mean of 1 - similarity over pairs (the paper's measure, on colours)."""
    n = len(images)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    return float(np.mean([1 - similarity(images[i], images[j]) for i, j in pairs])) if pairs else 0.0


def burnout(images: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Colour saturation and contrast of images, and how far their mean drifts from reference's.

    Burnout (the original extension's issue #34) shows as oversaturated, high-contrast images whose
    overall colour runs away; each number is against the vanilla images of the same seeds.
    """
    x = np.asarray(images, dtype=np.float64) / 255
    r = np.asarray(reference, dtype=np.float64) / 255

    def saturation(v):
        high, low = v.max(-1), v.min(-1)
        return float(np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0).mean())

    def contrast(v):
        return float(v.mean(-1).reshape(len(v), -1).std(axis=1).mean())

    return {
        "saturation": saturation(x) - saturation(r),
        "contrast": contrast(x) - contrast(r),
        "mean_drift": float(np.abs(x.mean(axis=(0, 1, 2)) - r.mean(axis=(0, 1, 2))).mean()),
    }


def share(readings: list[Reading], test) -> int:
    return sum(1 for r in readings if test(r))
