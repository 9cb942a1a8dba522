"""Reads the factors of a miniature image back from its pixels, without a learned model.

The background is the colour of the image's border (shapes keep a margin from the edge); the
shape's pixels are those far from it; their colour is the palette colour nearest to their median;
the shape is told by how much of its bounding box it fills (square 1, circle pi/4, triangle 1/2).
A generated image can be unreadable (no shape, or several blobs): its shape reads as None.

`python -m fabric.miniature.reader` measures the reader on held-out images, clean and degraded
(blur and noise, as a model's outputs are), and prints its accuracy per factor.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np

from .shapes import PALETTE, SHAPES, dataset

_NAMES = tuple(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], dtype=np.float64)

# A pixel belongs to the shape when it is this far (RGB distance) from the background: under the
# palette's 120 minimum spacing, above the noise of a blurred, noisy image.
FOREGROUND_DISTANCE = 60.0
MIN_PIXELS = 40  # fewer shape pixels than this: no shape drawn
# Fill of the bounding box: triangle 0.5, circle 0.785, square 1; the cuts lie between, the
# square's low because blur rounds its corners (measured: degraded squares fill 0.85-1).
CIRCLE_FROM, SQUARE_FROM = 0.64, 0.84


@dataclass(frozen=True)
class Reading:
    shape: str | None  # None: no single readable shape
    colour: str | None
    background: str
    fill: float  # share of the bounding box the shape's pixels fill
    pixels: int  # how many pixels the shape covers


def nearest_colour(rgb: np.ndarray) -> str:
    return _NAMES[int(np.argmin(((_RGB - rgb) ** 2).sum(axis=1)))]


def read(image: np.ndarray) -> Reading:
    """image: (H, W, 3), uint8 or float in 0..255."""
    pixels = np.asarray(image, dtype=np.float64)
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3),
                             pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    background_rgb = np.median(border, axis=0)
    background = nearest_colour(background_rgb)
    distance = np.sqrt(((pixels - background_rgb) ** 2).sum(axis=-1))
    mask = distance > FOREGROUND_DISTANCE
    count = int(mask.sum())
    if count < MIN_PIXELS:
        return Reading(None, None, background, 0.0, count)
    colour_rgb = np.median(pixels[mask], axis=0)
    colour = nearest_colour(colour_rgb)
    # The fill counts partly covered pixels by how far they are from the background toward the
    # shape's colour: blur moves coverage across the edge but keeps its sum. Only near the shape
    # (its box grown by the blur's reach) and above the noise floor, which would otherwise add up.
    alpha = np.clip(distance / max(1.0, float(np.linalg.norm(colour_rgb - background_rgb))), 0, 1)
    alpha[alpha < 0.25] = 0
    rows, cols = np.nonzero(alpha >= 0.5)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    box = (bottom - top) * (right - left)
    near = alpha[max(0, top - 2):bottom + 2, max(0, left - 2):right + 2]
    fill = float(near.sum()) / box
    if colour == background or _blobs(mask) != 1:
        return Reading(None, colour, background, fill, count)
    shape = "square" if fill >= SQUARE_FROM else "circle" if fill >= CIRCLE_FROM else "triangle"
    return Reading(shape, colour, background, fill, count)


def _blobs(mask: np.ndarray, min_pixels: int = 8) -> int:
    """Connected regions (4-neighbour) of at least min_pixels: one for a drawn shape."""
    seen = np.zeros_like(mask, dtype=bool)
    height, width = mask.shape
    blobs = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        stack, size = [start], 0
        while stack:
            r, c = stack.pop()
            size += 1
            for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= nr < height and 0 <= nc < width and mask[nr, nc] and not seen[nr, nc]:
                    seen[nr, nc] = True
                    stack.append((nr, nc))
        blobs += size >= min_pixels
    return blobs


def degrade(images: np.ndarray, seed: int, noise: float = 12.0) -> np.ndarray:
    """Blurred (3x3 box) and noisy copies, as soft as a small model's outputs."""
    x = images.astype(np.float64)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(padded[:, dr:dr + x.shape[1], dc:dc + x.shape[2]] for dr in range(3) for dc in range(3)) / 9
    noisy = blurred + np.random.default_rng(seed).normal(0, noise, x.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def accuracy(n: int = 600, seed: int = 7_000_001) -> dict[str, dict[str, float]]:
    """The reader's accuracy per factor on n held-out images (seed apart from any training data)."""
    factors, images = dataset(n, seed)
    result = {}
    for name, batch in (("clean", images), ("degraded", degrade(images, seed))):
        readings = [read(image) for image in batch]
        result[name] = {
            factor: sum(getattr(r, factor) == getattr(f, factor) for r, f in zip(readings, factors)) / n
            for factor in ("shape", "colour", "background")
        }
        result[name]["per_shape"] = {
            shape: sum(r.shape == shape for r, f in zip(readings, factors) if f.shape == shape)
            / max(1, sum(f.shape == shape for f in factors)) for shape in SHAPES}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600, help="held-out images to read (default 600)")
    args = parser.parse_args(argv)
    result = accuracy(args.images)
    print(f"reader accuracy on {args.images} held-out images")
    print(f"{'images':<10}{'shape':>8}{'colour':>8}{'background':>12}")
    for name, row in result.items():
        print(f"{name:<10}{row['shape']:>8.3f}{row['colour']:>8.3f}{row['background']:>12.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
