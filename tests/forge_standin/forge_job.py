"""A Forge model and sampling pass for the tests, built from the `backend` stand-in.

Facts encoded (dfdcbab6):
- The model (`shared.sd_model`, backend/diffusion_engine/sd15.py, sdxl.py) has `forge_objects`
  (unet: UnetPatcher, clip, vae) and `forge_objects_after_applying_lora`, both with
  `shallow_copy()` (backend/diffusion_engine/base.py:8-20); it has no `.model` (the issue's
  AttributeError). `get_learned_conditioning(prompts)` returns [n, 77, C], or for SDXL a dict of
  crossattn and vector built with the prompts' width/height (sdxl.py:86-118);
  `encode_first_stage` / `get_first_stage_encoding` give the latent; `is_sdxl`, `is_inpaint`.
- processing.py:1371-1381: before each sampling pass, `sd_model.forge_objects` is reset from
  `forge_objects_after_applying_lora.shallow_copy()`, then each AlwaysOn script's
  `process_before_every_sampling(p, x=x, noise=x, c=..., uc=...)` runs in the runner's order
  (modules/scripts.py:888-894); the sampler then calls `sampling_function` with the patcher that
  is in `forge_objects.unet` at that time (sampling_function.py:326).
- With CFG 1 processing makes no uncond conditioning (processing.py:499-501).
- The refiner (sd_samplers_cfg_denoiser.py:156-184, sd_samplers_common.py:166-211): at each step
  whose completed ratio (step / steps) reaches refiner_switch_at, the CFG denoiser makes the
  refiner `shared.sd_model` (= `p.sd_model`, processing.py:262-264), calls sampling_prepare on its
  patcher, then the on_cfg_denoiser callbacks with CFGDenoiserParams(x, ..., denoiser), and the
  step samples with the refiner's own `forge_objects.unet`. Here the callbacks run at every step
  as the webui's do.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

from backend.modules.k_model import KModel
from backend.modules.k_prediction import Prediction
from backend.nn.unet import IntegratedUNet2DConditionModel
from backend.patcher.unet import UnetPatcher
from backend.sampling.sampling_function import sampling_function

CONTEXT_DIM = 32
ADM = 8


def randomize(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(param[0].numel()))
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return module.eval()


@dataclass
class ForgeObjects:
    unet: object
    clip: object = None
    vae: object = None
    clipvision: object = None

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class FakeForgeModel:
    """SD1.5-like (or SDXL-like with sdxl=True) Forge model with a small random UNet."""

    def __init__(self, seed: int = 0, sdxl: bool = False):
        self.is_sdxl = sdxl
        self.is_sd1 = not sdxl
        self.is_inpaint = False
        unet = randomize(IntegratedUNet2DConditionModel(adm_in_channels=ADM if sdxl else None), seed)
        patcher = UnetPatcher(KModel(unet, Prediction()))
        self.forge_objects = ForgeObjects(unet=patcher)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.first_stage_model = randomize(nn.Conv2d(3, 4, 1), seed + 1)
        self.encodes = 0

    def get_learned_conditioning(self, prompts):
        rows = []
        for prompt in prompts:
            g = torch.Generator().manual_seed(int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16))
            rows.append(torch.randn(77, CONTEXT_DIM, generator=g))
        cond = torch.stack(rows)
        if not self.is_sdxl:
            return cond
        size = torch.tensor([[getattr(prompts, "height", 1024) or 1024, getattr(prompts, "width", 1024) or 1024]],
                            dtype=torch.float32) / 1024
        vector = torch.cat([cond.mean(dim=1)[:, :ADM - 2], size.expand(len(prompts), 2)], dim=1)
        return {"crossattn": cond, "vector": vector}

    def encode_first_stage(self, x):
        """[-1, 1] pixels -> latent; samples a posterior with the global RNG, as a VAE does."""
        self.encodes += 1
        pooled = nn.functional.avg_pool2d(x.float(), 8)
        return self.first_stage_model(pooled) + 0.01 * torch.randn(pooled.shape[0], 4, *pooled.shape[2:])

    def get_first_stage_encoding(self, x):
        return x * 0.5


@dataclass
class P:
    """The processing object as FABRIC's Forge adapter reads it."""

    sd_model: FakeForgeModel
    cfg_scale: float = 7.0
    hr_cfg: float = 7.0
    is_hr_pass: bool = False
    extra_generation_params: dict = field(default_factory=dict)
    comments: dict = field(default_factory=dict)

    def comment(self, text):
        self.comments[text] = 1


def sigmas(model: FakeForgeModel, steps: int) -> torch.Tensor:
    predictor = model.forge_objects.unet.model.predictor
    high, low = math.log(float(predictor.sigma_max)), math.log(float(predictor.sigma_min))
    return torch.cat([torch.linspace(high, low, steps).exp(), torch.zeros(1)])


def conds(model: FakeForgeModel, prompts: list[str], size: int):
    from modules.prompt_parser import SdConditioning

    cond = model.get_learned_conditioning(SdConditioning(prompts, width=size * 8, height=size * 8))
    if isinstance(cond, dict):
        return {"c_crossattn": cond["crossattn"], "y": cond["vector"]}
    return {"c_crossattn": cond}


def sample(p: P, hooks=(), *, steps: int = 4, size: int = 8, seeds=(1,), prompt="a fox", negative="",
           extra_conds: int = 0, max_entries=None, x=None, first_step: int = 0, refiner=None,
           switch_at: float = 0.5, denoiser_callbacks=(), schedule: torch.Tensor | None = None) -> torch.Tensor:
    """One sampling pass, Euler, as Forge runs it: reset forge_objects, the scripts' hooks
    (callables (p, x=...)), then sampling_function with the patcher in forge_objects.unet.
    prompt is one for the batch or a list of one per image; extra_conds adds AND sub-prompts
    (more COND entries); max_entries splits the UNet calls; a refiner model takes over at
    switch_at; denoiser_callbacks are the on_cfg_denoiser callbacks; schedule, the sigmas ending
    in 0, replaces the log-linear one of `steps` steps."""
    from backend.sampling.sampling_function import sampling_prepare
    from modules.script_callbacks import CFGDenoiserParams

    model = p.sd_model
    model.forge_objects = model.forge_objects_after_applying_lora.shallow_copy()
    sig = (sigmas(model, steps) if schedule is None else schedule)[first_step:]
    if x is None:
        x = torch.stack([torch.randn(4, size, size, generator=torch.Generator().manual_seed(s)) for s in seeds]) * sig[0]
    for hook in hooks:
        hook(p, x=x)
    batch = x.shape[0]

    prompts = list(prompt) if isinstance(prompt, (list, tuple)) else [prompt] * batch

    def conditioning(model):
        cond = [conds(model, prompts, size)]
        cond += [conds(model, [f"{text} {i}" for text in prompts], size) for i in range(extra_conds)]
        return cond, None if p.cfg_scale == 1 else [conds(model, [negative] * batch, size)]

    cond, uncond = conditioning(model)
    denoiser = SimpleNamespace(p=p)
    with torch.no_grad():
        for i in range(len(sig) - 1):
            if refiner is not None and p.sd_model is not refiner and i / (len(sig) - 1) >= switch_at:
                p.sd_model = model = refiner
                model.forge_objects = model.forge_objects_after_applying_lora.shallow_copy()  # as loaded
                sampling_prepare(model.forge_objects.unet, x)
                cond, uncond = conditioning(model)  # the refiner's text encoder (p.setup_conds)
            for callback in denoiser_callbacks:
                callback(CFGDenoiserParams(x, None, sig[i], i, len(sig) - 1, cond, uncond, denoiser))
            patcher = model.forge_objects.unet
            sigma = sig[i] * torch.ones(batch)
            denoised = sampling_function(patcher, x, sigma, uncond, cond, p.cfg_scale, max_entries=max_entries)
            x = x + (x - denoised) / sig[i] * (sig[i + 1] - sig[i])
    return x
