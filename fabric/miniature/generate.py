"""Images from the miniature, vanilla or with FABRIC, as the webui would make them.

One image per seed, its noise drawn from torch.Generator(seed) as the webui draws it; Euler on
the model's schedule with CFG ([cond; uncond] rows in one call: fabric.sampler). With feedback,
FABRIC's engine is attached to the UNet for the job and detached after it, as the webui's hosts
do; prompt dropout (the paper's section 5.4) is applied per image from its seed, as the script does.
A batch of seeds is sampled in one batch, so image k depends only on seed k (up to float rounding).
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..engine import DISLIKED, LIKED, Fabric, LatentCache, Schedule
from ..engine.prompt_dropout import drop_words
from ..sampler import EulerSampler
from .model import LATENT_SIZE, Miniature

STEPS, CFG_SCALE = 20, 5.0


@dataclass
class Feedback:
    liked: list[np.ndarray] = field(default_factory=list)  # uint8 64x64x3 images
    disliked: list[np.ndarray] = field(default_factory=list)
    schedule: Schedule = field(default_factory=Schedule)
    liked_weights: list[float] | None = None
    token_budget: int = 0
    fuse_reference_rows: bool | None = None


def noise(seeds: list[int]) -> torch.Tensor:
    return torch.cat([
        torch.randn(1, 4, LATENT_SIZE, LATENT_SIZE, generator=torch.Generator().manual_seed(s)) for s in seeds])


def _references(miniature: Miniature, images: list[np.ndarray], prefix: str, weights: list[float] | None):
    weights = weights or [1.0] * len(images)
    # the key names the content, as the store's ids do: it seeds the reference noise per image
    return [miniature.reference(f"{prefix}{i}-{hashlib.sha256(image.tobytes()).hexdigest()[:16]}", image, w)
            for i, (image, w) in enumerate(zip(images, weights))]


def generate(miniature: Miniature, prompt: str, seeds: list[int], feedback: Feedback | None = None, *,
             steps: int = STEPS, cfg_scale: float = CFG_SCALE, prompt_dropout: float = 0.0,
             batch: int = 32, on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """uint8 images [len(seeds), 64, 64, 3]; on_step(done, total) after each sampling step."""
    sampler = EulerSampler(miniature.unet, miniature.alphas, steps, torch.device("cpu"), torch.float32)
    empty = miniature.embed([""])
    out = []
    total, done = steps * -(-len(seeds) // batch), [0]
    with_feedback = feedback is not None and (feedback.liked or feedback.disliked)
    if with_feedback:
        # one job's references and latent cache serve every chunk: each image is encoded once
        references = {
            LIKED: _references(miniature, feedback.liked, "liked", feedback.liked_weights),
            DISLIKED: _references(miniature, feedback.disliked, "disliked", None),
        }
        cache = LatentCache()

    def step_done():
        done[0] += 1
        if on_step is not None:
            on_step(done[0], total)

    for begin in range(0, len(seeds), batch):
        chunk = seeds[begin:begin + batch]
        prompts = [drop_words(prompt, prompt_dropout, s) if prompt_dropout > 0 else prompt for s in chunk]
        cond = miniature.embed(prompts)
        uncond = empty.expand(len(chunk), -1, -1)
        job = contextlib.nullcontext()
        if with_feedback:
            job = Fabric(
                miniature.unet,
                references=references,
                schedule=feedback.schedule,
                alphas_cumprod=miniature.alphas,
                reference_kwargs={"context": empty},
                latent_cache=cache,
                token_budget=feedback.token_budget,
                fuse_reference_rows=feedback.fuse_reference_rows,
            )
        with job:
            latents, _ = sampler.sample(noise(chunk), cond, uncond, cfg_scale, after_step=step_done)
        if isinstance(job, Fabric) and job.failure is not None:
            raise RuntimeError(f"FABRIC failed on the miniature: {job.failure!r}") from job.failure
        out.append(miniature.decode(latents))
    return np.concatenate(out)
