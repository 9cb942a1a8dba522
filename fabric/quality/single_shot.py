"""Single-shot feedback: one set of liked and disliked images, the same seeds with and without.

The prompt is "a circle"; liked are red circles on white and disliked blue shapes on black
(fabric.miniature.demo's references). Each variant changes one knob against the default settings;
every row is read by the hand-written reader and compared with vanilla on the same seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..engine import Schedule
from ..miniature import shapes
from ..miniature.demo import PROMPT, demo_references
from ..miniature.generate import Feedback
from ..miniature.reader import read
from .measures import burnout, diversity, fisher_p, share, wilson


@dataclass(frozen=True)
class Variant:
    name: str
    feedback: Callable[[list[np.ndarray], list[np.ndarray]], Feedback | None]
    prompt_dropout: float = 0.0


def _with(**schedule) -> Callable:
    return lambda liked, disliked: Feedback(liked, disliked, Schedule(**schedule))


def more_liked(n: int) -> list[np.ndarray]:
    """n red circles on white, of other sizes and places than the demo's two (seeded, fixed)."""
    rng = np.random.default_rng(7)
    return [shapes.render(shapes.sample_factors(rng, "circle", "red", "white")) for _ in range(n)]


def _more_liked(n: int, strength: float | None = None) -> Callable:
    def feedback(liked, disliked):
        schedule = Schedule() if strength is None else Schedule(strength=strength)
        return Feedback(liked + more_liked(n - len(liked)), disliked, schedule)
    return feedback


DEFAULT = Schedule()
VARIANTS = [
    Variant("vanilla", lambda liked, disliked: None),
    Variant("FABRIC (defaults)", lambda liked, disliked: Feedback(liked, disliked)),
    Variant("liked only", lambda liked, disliked: Feedback(liked, [])),
    Variant("disliked only", lambda liked, disliked: Feedback([], disliked)),
    Variant("strength 0.2", _with(strength=0.2)),
    Variant("strength 0.5", _with(strength=0.5)),
    Variant("strength 1.0", _with(strength=1.0)),
    Variant("neg scale 0", _with(neg_scale=0.0)),
    Variant("neg scale 0.1", _with(neg_scale=0.1)),
    Variant("neg scale 0.2", _with(neg_scale=0.2)),
    Variant("neg scale 0.3", _with(neg_scale=0.3)),
    Variant("neg scale 1", _with(neg_scale=1.0)),
    Variant("disliked only, neg scale 1, strength 1", lambda liked, disliked: Feedback([], disliked, Schedule(
        strength=1.0, neg_scale=1.0))),
    Variant("window 0-0.5 (noisy half)", _with(start=0.0, end=0.5)),
    Variant("window 0.5-1 (clean half)", _with(start=0.5, end=1.0)),
    Variant("window 0-1 (whole)", _with(start=0.0, end=1.0)),
    Variant("liked weights 1, 0.25", lambda liked, disliked: Feedback(liked, disliked, liked_weights=[1.0, 0.25])),
    Variant("token budget 16", lambda liked, disliked: Feedback(liked, disliked, token_budget=16)),
    Variant("references in separate calls", lambda liked, disliked: Feedback(liked, disliked,
                                                                              fuse_reference_rows=False)),
    Variant("8 liked", _more_liked(8)),
    Variant("8 liked, strength 1.0", _more_liked(8, 1.0)),
    Variant("prompt dropout 0.3 (vanilla)", lambda liked, disliked: None, prompt_dropout=0.3),
    Variant("prompt dropout 0.3 + FABRIC", lambda liked, disliked: Feedback(liked, disliked), prompt_dropout=0.3),
]


def liked_factor(r) -> bool:
    return r.colour == "red" and r.background == "white"


def run(generate: Callable[..., np.ndarray], seeds: list[int], variants: list[Variant] = VARIANTS,
        log: Callable[[str], None] = print) -> list[dict]:
    """generate(prompt, seeds, feedback, prompt_dropout=p) -> uint8 images: the engine's
    (fabric.miniature.generate bound to a model) or a webui's (webui_generator)."""
    liked, disliked = demo_references()
    n = len(seeds)
    rows, vanilla_images, vanilla_counts = [], None, None
    for variant in variants:
        log(f"  {variant.name} ...")
        images = generate(PROMPT, seeds, variant.feedback(liked, disliked), prompt_dropout=variant.prompt_dropout)
        readings = [read(image) for image in images]
        counts = {
            "liked": share(readings, liked_factor),
            "red": share(readings, lambda r: r.colour == "red"),
            "blue_bg": share(readings, lambda r: r.background == "blue"),
            "blue": share(readings, lambda r: r.colour == "blue"),
            "black": share(readings, lambda r: r.background == "black"),
            "circle": share(readings, lambda r: r.shape == "circle"),
        }
        if vanilla_images is None:
            vanilla_images, vanilla_counts = images, counts
        row = {"variant": variant.name, "n": n, "diversity": diversity(images)}
        for key, k in counts.items():
            low, high = wilson(k, n)
            row[key] = k
            row[f"{key}_ci"] = f"{low:.2f}-{high:.2f}"
            row[f"{key}_p"] = fisher_p(k, n, vanilla_counts[key], n)
        row.update(burnout(images, vanilla_images))
        rows.append(row)
    return rows


COLUMNS = [
    ("variant", "variant", ""),
    ("red shape", "red", "d"),
    ("p", "red_p", ".1g"),
    ("red on white", "liked", "d"),
    ("95% CI", "liked_ci", ""),
    ("p", "liked_p", ".1g"),
    ("blue shape", "blue", "d"),
    ("p", "blue_p", ".1g"),
    ("black bg", "black", "d"),
    ("p", "black_p", ".1g"),
    ("blue bg", "blue_bg", "d"),
    ("p", "blue_bg_p", ".1g"),
    ("circle", "circle", "d"),
    ("p", "circle_p", ".1g"),
    ("diversity", "diversity", ".3f"),
    ("d sat", "saturation", "+.3f"),
    ("d contrast", "contrast", "+.3f"),
    ("mean drift", "mean_drift", ".3f"),
]


def variant_named(name: str) -> Variant:
    return next(v for v in VARIANTS if v.name == name)
