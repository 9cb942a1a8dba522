"""The miniature's images and their reader (fabric/miniature): the ground truth that the effect
measurements stand on, so the reader is checked on held-out images, clean and degraded."""
from __future__ import annotations

import numpy as np
import pytest

from fabric.miniature import reader, shapes


def test_a_seed_gives_the_same_images_and_factors():
    f1, a = shapes.dataset(8, seed=3)
    f2, b = shapes.dataset(8, seed=3)
    _, c = shapes.dataset(8, seed=4)
    assert f1 == f2 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (8, 64, 64, 3) and a.dtype == np.uint8


def test_factors_are_drawn_as_asked():
    f = shapes.Factors("square", "red", "white", half=10, x=32, y=32)
    image = shapes.render(f)
    assert tuple(image[32, 32]) == shapes.PALETTE["red"] and tuple(image[0, 0]) == shapes.PALETTE["white"]
    assert tuple(image[32, 43]) == shapes.PALETTE["white"] and tuple(image[32, 41]) == shapes.PALETTE["red"]
    assert f.prompt == "a square"
    with pytest.raises(ValueError, match="both red"):
        shapes.sample_factors(np.random.default_rng(0), colour="red", background="red")


def test_shapes_keep_a_margin_so_the_border_shows_the_background():
    factors, images = shapes.dataset(200, seed=11)
    for f, image in zip(factors, images):
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        assert (border == shapes.PALETTE[f.background]).all()


def test_the_palette_is_spaced_beyond_the_readers_margin():
    rgb = np.array(list(shapes.PALETTE.values()), dtype=float)
    distances = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1))[np.triu_indices(len(rgb), 1)]
    assert distances.min() >= 2 * reader.FOREGROUND_DISTANCE


def test_the_reader_is_accurate_on_held_out_images():
    result = reader.accuracy(n=240, seed=8_100_000)
    assert result["clean"]["colour"] == result["clean"]["background"] == 1.0
    # Small circles' anti-aliased edges fill up to ~0.84 of their box, where blurred squares begin.
    assert result["clean"]["shape"] >= 0.99
    degraded = result["degraded"]
    assert degraded["colour"] >= 0.98 and degraded["background"] >= 0.98
    assert degraded["shape"] >= 0.95 and min(degraded["per_shape"].values()) >= 0.9


def test_the_reader_refuses_what_is_not_one_shape():
    blank = np.full((64, 64, 3), shapes.PALETTE["gray"], dtype=np.uint8)
    assert reader.read(blank).shape is None and reader.read(blank).background == "gray"
    two = shapes.render(shapes.Factors("circle", "red", "black", 9, 14, 14))
    two[40:55, 40:55] = shapes.PALETTE["red"]
    assert reader.read(two).shape is None and reader.read(two).colour == "red"
