"""Sampling without a webui: k-diffusion's Euler on a CompVis model's discrete schedule.

The benchmark (fabric.bench) and the miniature model's demo and quality runs (fabric.miniature,
fabric.quality) sample through this, so that what they time and what they measure is the same
loop: sigmas from the model's alphas_cumprod, fractional timesteps by log-sigma interpolation,
c_in scaling, and CFG with [cond; uncond] rows in one UNet call (the webui's default layout, which
`fabric.cfg_halves` names for the engine).
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable

import torch


def alphas_cumprod(num_timesteps: int = 1000) -> torch.Tensor:
    """SD1.5's scaled-linear beta schedule (linear_start 0.00085, linear_end 0.012)."""
    betas = torch.linspace(0.00085**0.5, 0.0120**0.5, num_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def clock() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): a step's time is the difference of two readings."""
    return time.perf_counter(), time.process_time()


def elapsed(begin: tuple[float, float]) -> tuple[float, float]:
    now = clock()
    return now[0] - begin[0], now[1] - begin[1]


class EulerSampler:
    """k-diffusion's Euler on the discrete schedule of a CompVis model, CFG in one UNet call."""

    def __init__(self, unet, alphas: torch.Tensor, steps: int, device: torch.device, dtype: torch.dtype):
        self.unet = unet
        self.device = device
        self.dtype = dtype
        self.log_sigmas = (((1 - alphas.double()) / alphas.double()) ** 0.5).log()
        t = torch.linspace(len(alphas) - 1, 0, steps, dtype=torch.float64)
        sigmas = self.t_to_sigma(t)
        self.sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
        self.timesteps = [float(self.sigma_to_t(s)) for s in sigmas]

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=len(self.log_sigmas) - 2)
        high = low + 1
        lo, hi = self.log_sigmas[low], self.log_sigmas[high]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * high).view(())

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def sample(self, noise, cond, uncond, cfg_scale: float, steps: int | None = None,
               after_step: Callable[[], None] | None = None):
        """Latents [B, C, h, w] and the (wall, CPU) seconds of each step."""
        x = noise.to(self.device, torch.float32) * self.sigmas[0].item()
        context = torch.cat([cond, uncond]).to(self.device, self.dtype)
        autocast = (
            torch.autocast("cuda", dtype=self.dtype)
            if self.device.type == "cuda" and self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        times = []
        n_steps = len(self.timesteps) if steps is None else steps
        for i in range(n_steps):
            self.sync()
            begin = clock()
            sigma, sigma_next = self.sigmas[i].item(), self.sigmas[i + 1].item()
            x_in = torch.cat([x, x]) * (1.0 / math.sqrt(sigma * sigma + 1.0))
            t_in = torch.full((x_in.shape[0],), self.timesteps[i], device=self.device, dtype=torch.float32)
            with torch.no_grad(), autocast:
                eps = self.unet(x_in.to(self.dtype), t_in, context=context).float()
            eps_cond, eps_uncond = eps.chunk(2)
            eps = eps_uncond + cfg_scale * (eps_cond - eps_uncond)
            x = x + eps * (sigma_next - sigma)  # Euler: d = (x - denoised) / sigma = eps
            self.sync()
            times.append(elapsed(begin))
            if after_step is not None:
                after_step()
        return x, times
