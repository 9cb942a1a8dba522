"""The paper's section 5.2: simulated users who give feedback over rounds toward a hidden target.

Each user has a target image nobody tells the model about (here a yellow circle on gray: the
prompt "a circle" leaves its colours to chance). A round is a batch of 4 images from fresh seeds;
after it, the image most similar to the target is liked and the least similar disliked, and the
feedback accumulates over the rounds. The baseline is vanilla sampling from the same seeds. Per
round: the best, mean and worst similarity to the target within a batch, and the batch's diversity,
averaged over users. The paper found FABRIC ahead of the baseline from round 2 on, and the
diversity falling as the feedback narrows the outputs. The feedback here is the model's own
outputs, which the original extension's issue #34 names as the worst case for burnout, so each
round also reports FABRIC's saturation and contrast against vanilla on the same seeds.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..engine import Schedule
from ..miniature import shapes
from ..miniature.demo import PROMPT
from ..miniature.generate import Feedback
from .measures import burnout, diversity, sign_test_p, similarity

TARGET = shapes.Factors("circle", "yellow", "gray", 15.0, 32.0, 32.0)
BATCH = 4


def run(generate: Callable[..., np.ndarray], users: int = 16, rounds: int = 3, seed: int = 50_000,
        prompt_dropout: float = 0.0, schedule: Schedule = Schedule(),
        log: Callable[[str], None] = print) -> list[dict]:
    target = shapes.render(TARGET)
    totals = {(kind, r): [] for kind in ("vanilla", "FABRIC") for r in range(rounds)}
    burnouts = {r: [] for r in range(rounds)}
    for user in range(users):
        liked, disliked = [], []
        for r in range(rounds):
            seeds = [seed + (user * rounds + r) * BATCH + i for i in range(BATCH)]
            vanilla = generate(PROMPT, seeds, prompt_dropout=prompt_dropout)
            for kind in ("vanilla", "FABRIC"):
                # before any feedback (round 1), FABRIC's batch is vanilla's
                images = vanilla if kind == "vanilla" or not liked else generate(
                    PROMPT, seeds, Feedback(list(liked), list(disliked), schedule), prompt_dropout=prompt_dropout)
                scores = [similarity(image, target) for image in images]
                totals[(kind, r)].append((max(scores), float(np.mean(scores)), min(scores), diversity(images)))
                if kind == "FABRIC":
                    burnouts[r].append(burnout(images, vanilla))
                    liked.append(images[int(np.argmax(scores))])
                    disliked.append(images[int(np.argmin(scores))])
        log(f"  user {user + 1}/{users}")
    rows = []
    for r in range(rounds):
        row = {"round": r + 1}
        for kind in ("vanilla", "FABRIC"):
            best, mean, worst, div = np.mean(totals[(kind, r)], axis=0)
            row.update({f"{kind}_best": best, f"{kind}_mean": mean, f"{kind}_worst": worst, f"{kind}_diversity": div})
        better = sum(f[1] > v[1] for f, v in zip(totals[("FABRIC", r)], totals[("vanilla", r)]))
        row["users_better"] = better
        row["users_better_p"] = sign_test_p(better, users) if r > 0 else 1.0  # round 1 is vanilla's own batch
        for key in ("saturation", "contrast"):
            row[key] = float(np.mean([b[key] for b in burnouts[r]]))
        rows.append(row)
    return rows


COLUMNS = [
    ("round", "round", "d"),
    ("vanilla best", "vanilla_best", ".3f"),
    ("mean", "vanilla_mean", ".3f"),
    ("worst", "vanilla_worst", ".3f"),
    ("diversity", "vanilla_diversity", ".3f"),
    ("FABRIC best", "FABRIC_best", ".3f"),
    ("mean", "FABRIC_mean", ".3f"),
    ("worst", "FABRIC_worst", ".3f"),
    ("diversity", "FABRIC_diversity", ".3f"),
    ("users better (mean)", "users_better", "d"),
    ("p (sign test)", "users_better_p", ".2g"),
    ("d sat", "saturation", "+.3f"),
    ("d contrast", "contrast", "+.3f"),
]
