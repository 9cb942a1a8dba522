"""What both webuis share: their `modules` package, as A1111 v1.6-1.10 and Forge (dfdcbab6) lay it out.

The host adapters build on this: options, encoding a feedback image with the model's VAE, and
telling the user what FABRIC did with a job (console, infotext, comments), once.
"""
from __future__ import annotations

import hashlib
import sys

import numpy as np
import torch

from modules import devices, images, shared

from ..feedback.settings import INFOTEXT_KEYS, settings_to_infotext

# Settings choice -> the A1111 engine's fuse_reference_rows (Forge runs separate reference calls).
REFERENCE_ROWS = {"Auto": None, "In the generation's UNet call where safe": True, "In separate UNet calls": False}


class CannotServe(Exception):
    """FABRIC cannot work with this host, version or model; the message says why."""


def opt(key: str, default):
    return getattr(shared.opts, key, default) if hasattr(shared, "opts") else default


def seed_from(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def forked_rng():
    """The global RNGs saved and restored around a block: the VAE samples its posterior with them,
    and the webui's random state must not move."""
    devices_to_fork = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    return torch.random.fork_rng(devices=devices_to_fork)


def encode_reference(image, image_id: str, height: int, width: int, sd_model=None) -> torch.Tensor:
    """The image cropped to the generation's aspect, resized, VAE-encoded to [C, height, width].

    A forked RNG seeded by the image keeps the latent reproducible and the webui's random state
    untouched. Both webuis have images.resize_image and sd_samplers_common.images_tensor_to_samples
    (Forge: modules/images.py:252, modules/sd_samplers_common.py:96).
    """
    from modules import sd_samplers_common

    picture = images.resize_image(1, image.convert("RGB"), width * 8, height * 8)
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with forked_rng(), torch.no_grad(), devices.autocast():
        torch.manual_seed(seed_from(image_id))
        method = sd_samplers_common.approximation_indexes.get(shared.opts.sd_vae_encode_method, 0)
        latent = sd_samplers_common.images_tensor_to_samples(pixels, method, sd_model or shared.sd_model)
    return latent[0].detach().float().cpu()


class CurrentJob:
    """The FABRIC job of the generation under way, in each host's adapter. One at a time: the
    webui runs one generation at a time (its queue lock), and a job left open by a failed
    generation is closed by the next start_job."""

    def __init__(self) -> None:
        self.job = None

    def open(self, job) -> None:
        self.job = job

    def of(self, p):
        """The open job if it is p's, else None (another script's nested processing, say)."""
        job = self.job
        return job if job is not None and job.p is p else None

    def take(self):
        """The open job, which is no longer open; None if there was none."""
        job, self.job = self.job, None
        return job


class JobReport:
    """What the user learns about FABRIC in one job: its settings in the infotext while it applies,
    and at most one note when it stops or cannot start."""

    def __init__(self, p, settings):
        self.p = p
        self.settings = settings
        self.noted = False

    def applying(self) -> None:
        self.p.extra_generation_params.update(settings_to_infotext(self.settings))

    def failed(self, error: BaseException, applied: bool) -> None:
        """FABRIC stopped for the rest of the job. Without any feedback applied, its settings leave
        the infotext: the image does not carry what they describe."""
        if self.noted:
            return
        self.noted = True
        if isinstance(error, CannotServe):
            message = f"FABRIC is off for this job: {error}"
        else:
            message = f"FABRIC was turned off for the rest of this job: {type(error).__name__}: {error}"
        print(message, file=sys.stderr)
        params = self.p.extra_generation_params
        if not applied:
            for key in INFOTEXT_KEYS.values():
                params.pop(key, None)
        params["FABRIC error"] = type(error).__name__
        self.p.comment(message)
