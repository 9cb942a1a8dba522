"""Noising a reference latent to the timestep of the current UNet call.

The noise comes from a generator of our own, seeded from the reference's content key and the
timestep. So the same seed and feedback give the same picture, a batch image does not depend on
its neighbours or on the order of the references, and the webui's global RNG is never consumed.
"""
from __future__ import annotations

import hashlib
import math

import torch


def noise_seed(key: str, timestep: float) -> int:
    digest = hashlib.sha256(f"{key}|{float(timestep):.6f}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def reference_noise(key: str, timestep: float, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise of `shape`, on the CPU in float32 (identical on every device)."""
    generator = torch.Generator(device="cpu").manual_seed(noise_seed(key, timestep))
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def alpha_bar(alphas_cumprod: torch.Tensor, timestep: float) -> float:
    """abar at a possibly fractional timestep.

    k-diffusion passes t = sigma_to_t(sigma), linear in log(sigma) between the discrete steps;
    inverting the same interpolation gives the noise level the UNet input really has.
    """
    acp = alphas_cumprod.detach().double().cpu()
    t = min(max(float(timestep), 0.0), len(acp) - 1.0)
    low, high = math.floor(t), math.ceil(t)
    frac = t - low
    log_sigma = lambda i: 0.5 * math.log((1.0 - acp[i].item()) / acp[i].item())  # noqa: E731
    sigma = math.exp((1.0 - frac) * log_sigma(low) + frac * log_sigma(high))
    return 1.0 / (1.0 + sigma * sigma)


def noised_latent(latent: torch.Tensor, key: str, timestep: float, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sqrt(abar_t) * latent + sqrt(1 - abar_t) * eps, in the latent's dtype and device."""
    abar = alpha_bar(alphas_cumprod, timestep)
    eps = reference_noise(key, timestep, tuple(latent.shape)).to(latent.device)
    noised = math.sqrt(abar) * latent.float() + math.sqrt(1.0 - abar) * eps
    return noised.to(latent.dtype)
