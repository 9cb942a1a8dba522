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
    """What the user learns about FABRIC in one job, where every client reads it.

    While FABRIC applies, its settings stand in the infotext. Whenever the job asked for FABRIC
    and feedback did not reach all of what it asked for, a `FABRIC note` entry stands beside them
    (so the API's `info`, PNG Info and the UI show it) and the console gets the same line:
    - FABRIC off for the whole job (a store image gone, a model it cannot serve): the note says
      why, and the settings leave the infotext, since the image carries nothing they describe;
    - a fault mid-job: applied in k of n model calls, then off, and why;
    - no step of the job inside the feedback window (img2img at low denoising, say): the
      settings stay, so that pasting them back restores them, and the note says nothing applied;
    - a pass FABRIC served with no step in the window (the hires pass at its low noise levels):
      applied in k of n model calls, none in that pass.
    Counted in model calls: the sampler's calls of the CFG denoiser (cond and uncond rows
    together) in the passes FABRIC serves, one a step for Euler-like samplers, two for Heun or DPM2.
    (shared.state.sampling_step cannot tell steps apart: it is set after a step, so steps 0 and 1
    both read 0.) A model call applied feedback when any of its UNet calls did: the host hands
    `feedback_calls`, its count of UNet calls with feedback so far.
    """

    NOTE = "FABRIC note"
    _PASS_NAMES = {False: "first pass", True: "hires pass"}

    def __init__(self, p, settings, feedback_calls=lambda: 0):
        self.p = p
        self.settings = settings
        self.feedback_calls = feedback_calls
        self.stopped: str | None = None  # why FABRIC stopped, or never started
        self._calls: list[list] = []  # [hires pass?, feedback applied?] per model call, in order
        self._seen_feedback = 0

    def applying(self) -> None:
        self.p.extra_generation_params.update(settings_to_infotext(self.settings))

    def model_call(self, hires_pass: bool) -> None:
        """A denoiser call of a pass FABRIC serves, before its UNet calls (on_cfg_denoiser)."""
        self._settle()
        self._calls.append([bool(hires_pass), False])

    def _settle(self) -> None:
        count = self.feedback_calls()
        if count > self._seen_feedback and self._calls:
            self._calls[-1][1] = True
        self._seen_feedback = count

    def failed(self, error: BaseException, applied: bool) -> None:
        """FABRIC stopped for the rest of the job. Without any feedback applied, its settings leave
        the infotext: the image does not carry what they describe."""
        if self.stopped is not None:
            return
        self._settle()
        if isinstance(error, CannotServe):
            self.stopped = f"off for this job: {error}"
        else:
            self.stopped = f"turned off for the rest of this job by {type(error).__name__}: {error}"
        params = self.p.extra_generation_params
        if not applied:
            for key in INFOTEXT_KEYS.values():
                params.pop(key, None)
        params["FABRIC error"] = type(error).__name__
        message = f"FABRIC was {self.stopped}" if self.stopped.startswith("turned") else f"FABRIC is {self.stopped}"
        print(message, file=sys.stderr)
        self.p.comment(message)
        self._write(self.note())

    def note(self) -> str | None:
        """The note for what the job has done so far; None while feedback reached all of it."""
        self._settle()
        applied = sum(1 for _, fed in self._calls if fed)
        counts = f"applied in {applied} of {len(self._calls)} model calls"
        if self.stopped is not None:
            return f"{counts}, then {self.stopped}" if applied else self.stopped
        if not self._calls:
            return None
        if not applied:
            s = self.settings
            return (f"no step fell in the feedback window (start {s.start:g}, end {s.end:g}): "
                    f"no feedback was applied")
        unfed = [self._PASS_NAMES[hires] for hires in (False, True)
                 if any(h == hires for h, _ in self._calls) and not any(h == hires and fed for h, fed in self._calls)]
        if unfed:
            return f"{counts}: none in the {' or '.join(unfed)} (outside the feedback window)"
        return None

    def batch_done(self) -> None:
        """A batch has been sampled and its infotexts are about to be written (postprocess_batch)."""
        self._write(self.note())

    def finish(self) -> None:
        """The job is over: the note once more, and on the console if it is new."""
        note = self.note()
        self._write(note)
        if note is not None and self.stopped is None:
            print(f"FABRIC note: {note}", file=sys.stderr)

    def _write(self, note: str | None) -> None:
        if note is not None:
            self.p.extra_generation_params[self.NOTE] = note
