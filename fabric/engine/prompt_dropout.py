"""Prompt dropout (the paper's §5.4): each word of the prompt dropped with probability p.

FABRIC's feedback narrows what a prompt produces round after round; dropping words at random
(p ~ 0.3 in the paper) gives the outputs back some of their variety, traded against similarity
to the liked images. The generator is seeded by the image's own seed, not drawn from any global
state, so a run is reproducible and image k of a batch gets the same prompt as its seed alone.

Only words go: the webui's prompt syntax stays whole. `AND` and `BREAK`, and extra-network tags
such as `<lora:name:0.8>`, are never dropped; a dropped word keeps its brackets, colons and
numbers, so `(red fox:1.2)` can become `( fox:1.2)` but never an unbalanced group.
"""
from __future__ import annotations

import random
import re

_KEPT = re.compile(r"AND|BREAK|<[^<>]*>")
_LETTERS = re.compile(r"[^\W\d_]+")


def drop_words(prompt: str, p: float, seed: int) -> str:
    """`prompt` with each word dropped with probability `p`, from a generator seeded by `seed`."""
    if p <= 0.0 or not prompt:
        return prompt
    rng = random.Random(f"fabric prompt dropout {int(seed)}")  # a str seed hashes the same everywhere
    kept = []
    for word in prompt.split(" "):
        if not word or _KEPT.fullmatch(word) or not _LETTERS.search(word):
            kept.append(word)
        elif rng.random() < p:
            syntax = _LETTERS.sub("", word)
            if syntax:
                kept.append(syntax)
        else:
            kept.append(word)
    return re.sub(r" {2,}", " ", " ".join(kept)).strip()
