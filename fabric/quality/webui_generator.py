"""The quality benchmark's images from a running webui, through its HTTP API (`--webui URL`).

The webui (A1111 or Forge, with this extension installed) must have the miniature's checkpoint
loaded (`python -m fabric.miniature.export <webui>/models/Stable-diffusion`, then select it, or
`--checkpoint NAME`). A job is the engine's job as the API spells it: `/sdapi/v1/txt2img`, 64x64,
Euler, the same steps and CFG, FABRIC's settings as named keys of `alwayson_scripts`, the feedback
images sent as base64 PNGs. The webui draws image k of a batch from seed + k, so a run of
consecutive seeds is one request; the images are then the webui's for those seeds, and every row is
compared with vanilla from the same webui.

Two things the API cannot say are done here as the script would do them:
- prompt dropout without feedback (the script drops words only in a FABRIC job): each seed is its
  own request with the prompt `fabric.engine.prompt_dropout.drop_words` gives that seed, which is
  the prompt the script would have sampled;
- references in separate UNet calls: the webui's setting `fabric_reference_rows` is set for the
  job and put back after it (Forge always runs them separately).

Every request sets the webui's Emphasis to "No norm" for itself (`override_settings`, which the
webui undoes after the job), where the webui lists that setting (A1111 has it from 1.8). Its
default, "Original", rescales the prompt's embedding by its mean before and after the weights
(A1111 v1.10.1 modules/sd_emphasis.py:41-46). The miniature's untrained text encoder ends in a
LayerNorm of weight 1 and bias 0, so that mean is near zero, and for the prompt "circle" (what
prompt dropout makes of "a circle") it came out exactly 0.0 in float32 on an AMD EPYC: the webui
divided 0 by 0 and stopped the job with "A tensor with NaNs was produced in Unet". With every
weight 1, "No norm" gives the same embedding as "Original" wherever "Original" gives a number.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json

import httpx
import numpy as np
from PIL import Image

from ..bench.webui_bench import png_base64
from ..engine.prompt_dropout import drop_words
from ..miniature.generate import CFG_SCALE, STEPS, Feedback
from ..miniature.shapes import SIZE as IMAGE_SIZE

MAX_BATCH = 16
REFERENCE_ROWS = {None: "Auto", True: "In the generation's UNet call where safe", False: "In separate UNet calls"}


class WebuiGenerator:
    """generate(prompt, seeds, feedback, prompt_dropout=...) through a webui, as
    fabric.miniature.generate.generate does it on the engine."""

    def __init__(self, url: str, checkpoint: str | None = None, timeout: float = 3600,
                 transport: httpx.BaseTransport | None = None):
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, transport=transport)
        self.url = url
        if checkpoint:
            self._post("/sdapi/v1/options", {"sd_model_checkpoint": checkpoint})
        options = self.client.get("/sdapi/v1/options").json()
        self.checkpoint = options.get("sd_model_checkpoint")
        self.override_settings = {"emphasis": "No norm"} if "emphasis" in options else {}
        self.flavour = "Forge" if "forge_preset" in options else "A1111"

    def describe(self) -> str:
        return f"{self.flavour} webui at {self.url}, checkpoint {self.checkpoint}"

    def __call__(self, prompt: str, seeds: list[int], feedback: Feedback | None = None, *,
                 prompt_dropout: float = 0.0) -> np.ndarray:
        with_feedback = feedback is not None and bool(feedback.liked or feedback.disliked)
        if prompt_dropout > 0 and not with_feedback:
            return np.concatenate([self._request(drop_words(prompt, prompt_dropout, s), [s], None)
                                   for s in seeds])
        with self._reference_rows(feedback.fuse_reference_rows if with_feedback else None):
            return np.concatenate([self._request(prompt, run, feedback if with_feedback else None, prompt_dropout)
                                   for run in _consecutive_runs(seeds, MAX_BATCH)])

    def _request(self, prompt: str, seeds: list[int], feedback: Feedback | None,
                 prompt_dropout: float = 0.0) -> np.ndarray:
        body = {"prompt": prompt, "negative_prompt": "", "width": IMAGE_SIZE, "height": IMAGE_SIZE,
                "steps": STEPS, "cfg_scale": CFG_SCALE, "sampler_name": "Euler", "seed": seeds[0],
                "batch_size": len(seeds), "n_iter": 1, "save_images": False, "send_images": True,
                "override_settings": self.override_settings}
        if feedback is not None:
            body["alwayson_scripts"] = {"FABRIC": {"args": [fabric_args(feedback, prompt_dropout)]}}
        result = self._post("/sdapi/v1/txt2img", body)
        infotexts = json.loads(result["info"])["infotexts"]
        if feedback is not None:
            for text in infotexts:
                applied = "FABRIC liked" in text or "FABRIC disliked" in text
                if not applied or "FABRIC error" in text or "FABRIC note" in text:
                    raise RuntimeError(f"FABRIC did not apply in the webui's job: {text}")
        images = result["images"][-len(seeds):]  # after the batch's grid, when the webui adds one
        return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(b.split(",", 1)[-1]))).convert("RGB")) for b in images])

    def _post(self, path: str, body: dict) -> dict:
        response = self.client.post(path, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    @contextlib.contextmanager
    def _reference_rows(self, fuse: bool | None):
        if fuse is None:
            yield
            return
        previous = self.client.get("/sdapi/v1/options").json().get("fabric_reference_rows", "Auto")
        self._post("/sdapi/v1/options", {"fabric_reference_rows": REFERENCE_ROWS[fuse]})
        try:
            yield
        finally:
            self._post("/sdapi/v1/options", {"fabric_reference_rows": previous})


def fabric_args(feedback: Feedback, prompt_dropout: float) -> dict:
    """FABRIC's script arguments for a job, as named keys (fabric.feedback.settings)."""
    liked_weights = feedback.liked_weights or [1.0] * len(feedback.liked)
    s = feedback.schedule
    return {
        "enabled": True,
        "liked": [{"image": png_base64(Image.fromarray(i)), "weight": w} for i, w in zip(feedback.liked, liked_weights)],
        "disliked": [png_base64(Image.fromarray(i)) for i in feedback.disliked],
        "strength": s.strength, "start": s.start, "end": s.end, "min_strength": s.min_strength,
        "neg_scale": s.neg_scale, "token_budget": feedback.token_budget, "prompt_dropout": prompt_dropout,
    }


def _consecutive_runs(seeds: list[int], most: int) -> list[list[int]]:
    """seeds cut into runs of consecutive numbers, at most `most` long: one request each."""
    runs: list[list[int]] = []
    for s in seeds:
        if runs and s == runs[-1][-1] + 1 and len(runs[-1]) < most:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs
