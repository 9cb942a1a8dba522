"""The quality benchmark's statistics, against values worked out by hand or in textbooks."""
import math

import numpy as np
import pytest

from fabric.quality.measures import burnout, diversity, fisher_p, sign_test_p, similarity, wilson


def test_wilson_interval():
    low, high = wilson(0, 64)
    assert low == 0 and high == pytest.approx(1.96**2 / (64 + 1.96**2))  # the closed form at k = 0
    low, high = wilson(32, 64)
    assert low + high == pytest.approx(1.0) and 0.38 < low < 0.39  # symmetric about one half (0.381)
    assert wilson(0, 0) == (0.0, 1.0)


def test_fisher_exact_test():
    # Fisher's tea-tasting table [[3, 1], [1, 3]]: two-sided p = 34/70
    assert fisher_p(3, 4, 1, 4) == pytest.approx(34 / 70)
    assert fisher_p(5, 10, 5, 10) == pytest.approx(1.0)
    assert fisher_p(10, 10, 0, 10) == pytest.approx(2 / math.comb(20, 10))


def test_sign_test():
    assert sign_test_p(13, 16) == pytest.approx(2 * (1 + 16 + 120 + 560) / 2**16)
    assert sign_test_p(8, 16) == 1.0 and sign_test_p(3, 16) == sign_test_p(13, 16)
    assert sign_test_p(0, 0) == 1.0


def test_similarity_diversity_and_burnout():
    white = np.full((8, 8, 3), 250, np.uint8)
    black = np.zeros((8, 8, 3), np.uint8)
    half = white.copy()
    half[:4] = 0
    assert similarity(white, white) == 1.0 and similarity(white, black) == 0.0
    assert similarity(white, half) == pytest.approx(0.5)
    assert diversity(np.stack([white, white])) == 0.0 and diversity(np.stack([white, black])) == 1.0
    assert burnout(np.stack([white]), np.stack([white])) == {"saturation": 0.0, "contrast": 0.0, "mean_drift": 0.0}
    grown = burnout(np.stack([half]), np.stack([white]))
    assert grown["contrast"] > 0.4 and grown["mean_drift"] == pytest.approx(125 / 255)
