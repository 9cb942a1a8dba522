"""Procedural 64x64 images with known factors: one shape on a plain background.

The prompt names the shape only; colour, background, size and position are the factors a model
must choose by itself, and so the ones FABRIC's feedback can steer. Everything is drawn from a
seeded numpy generator, so a seed always gives the same image on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 64
SHAPES = ("circle", "square", "triangle")

# Named colours, pairwise at least 120 apart in RGB (the reader's margin against noise and blur).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (30, 175, 50),
    "blue": (40, 70, 225),
    "yellow": (240, 215, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
COLOURS = tuple(PALETTE)

# A shape's half extent in pixels; its centre keeps MARGIN pixels between the shape and the edge,
# so that the image border always shows the background.
MIN_HALF, MAX_HALF = 9, 20
MARGIN = 3
SUPERSAMPLE = 4  # edges are anti-aliased by drawing at 4x and averaging


@dataclass(frozen=True)
class Factors:
    shape: str
    colour: str
    background: str
    half: float  # half extent in pixels
    x: float  # centre, in pixels from the left
    y: float  # centre, in pixels from the top

    @property
    def prompt(self) -> str:
        return prompt_for(self.shape)


def prompt_for(shape: str) -> str:
    return f"a {shape}"


def sample_factors(rng: np.random.Generator, shape: str | None = None, colour: str | None = None,
                   background: str | None = None) -> Factors:
    """Factors drawn uniformly; any of shape, colour and background can be fixed."""
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or COLOURS[rng.integers(len(COLOURS))]
    others = [c for c in COLOURS if c != colour]
    background = background or others[rng.integers(len(others))]
    if background == colour:
        raise ValueError(f"the shape's colour and the background are both {colour}")
    half = float(rng.uniform(MIN_HALF, MAX_HALF))
    low, high = half + MARGIN, SIZE - half - MARGIN
    x, y = float(rng.uniform(low, high)), float(rng.uniform(low, high))
    return Factors(shape, colour, background, half, x, y)


def coverage(f: Factors) -> np.ndarray:
    """How much of each pixel the shape covers, in [0, 1], shape (SIZE, SIZE)."""
    n = SIZE * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / SUPERSAMPLE
    xs, ys = np.meshgrid(coords - f.x, coords - f.y)
    if f.shape == "circle":
        inside = xs**2 + ys**2 <= f.half**2
    elif f.shape == "square":
        inside = (np.abs(xs) <= f.half) & (np.abs(ys) <= f.half)
    elif f.shape == "triangle":
        # Pointing up, its bounding box the same square as the other shapes'.
        inside = (ys <= f.half) & (np.abs(xs) <= (ys + f.half) / 2)
    else:
        raise ValueError(f"unknown shape {f.shape!r}; known: {', '.join(SHAPES)}")
    return inside.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(axis=(1, 3))


def render(f: Factors) -> np.ndarray:
    """The image of these factors: uint8, shape (SIZE, SIZE, 3)."""
    alpha = coverage(f)[..., None]
    fg = np.array(PALETTE[f.colour], dtype=np.float64)
    bg = np.array(PALETTE[f.background], dtype=np.float64)
    return np.round(bg * (1 - alpha) + fg * alpha).astype(np.uint8)


def dataset(n: int, seed: int) -> tuple[list[Factors], np.ndarray]:
    """n factor sets and their images (uint8, (n, SIZE, SIZE, 3)) from one seed."""
    rng = np.random.default_rng(seed)
    factors = [sample_factors(rng) for _ in range(n)]
    return factors, np.stack([render(f) for f in factors])
