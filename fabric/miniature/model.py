"""The miniature Stable Diffusion: SD1's structure at 64x64 pixels, small enough to commit and train.

The parts are ldm's own classes (the UNetModel and the autoencoder's Encoder and Decoder), under
the key names of an ldm LatentDiffusion checkpoint, so that the same weights load here, in the
webui (export.py writes the checkpoint and its .yaml) and through FABRIC's hosts unchanged:
- an 8x autoencoder (64x64x3 pixels -> 8x8x4 latents), ldm's AutoencoderKL layout, 64 and 128 channels;
- a UNetModel with model_channels 64 and seven SpatialTransformer blocks at the 8x8 and 4x4
  latent levels, cross-attending to SD1's 768-wide text embeddings;
- SD1's text encoder with seeded random weights, regenerated at load (text_encoder.py).

The weights file (weights/miniature.safetensors by default, fp16, committed; train.py writes
it) holds the UNet, the autoencoder and the text embeddings the UNet was trained on; loading
refuses a text encoder that no longer gives them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..engine import Reference
from ..sampler import alphas_cumprod
from .text_encoder import TextEncoder

WEIGHTS = Path(__file__).with_name("weights") / "miniature.safetensors"
UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."
EMBEDDINGS_KEY = "miniature.trained_embeddings"
CHECK_PROMPTS = ("", "a circle", "a square", "a triangle")
# fp16 storage of the embeddings plus float differences between CPUs stay far below this; a text
# encoder regenerated differently (another seed, init or layout) differs by about 1.
EMBEDDING_TOLERANCE = 0.02
LATENT_SIZE = 8  # 64 pixels / the autoencoder's factor 8

UNET_CONFIG = {
    "image_size": LATENT_SIZE,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 64,
    "attention_resolutions": [1, 2],
    "num_res_blocks": 1,
    "channel_mult": [1, 2],
    "num_head_channels": 32,
    "use_spatial_transformer": True,
    "transformer_depth": 1,
    "context_dim": 768,
    "use_checkpoint": False,
    "legacy": False,
}
# 64 channels at full resolution, 128 below: ldm's GroupNorm has 32 groups, and 32 channels would
# make the decoder's last norm a per-channel instance norm that cannot keep a flat colour (seen in
# the first trial); the full-resolution level is most of the training time.
VAE_CONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 64,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 64,
    "ch_mult": [1, 1, 2, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "dropout": 0.0,
}


def build_unet() -> nn.Module:
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**UNET_CONFIG)


class Autoencoder(nn.Module):
    """ldm's AutoencoderKL without its training machinery (pytorch_lightning): same keys."""

    def __init__(self):
        super().__init__()
        from ldm.modules.diffusionmodules.model import Decoder, Encoder

        self.encoder = Encoder(**VAE_CONFIG)
        self.decoder = Decoder(**VAE_CONFIG)
        z = VAE_CONFIG["z_channels"]
        self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1)
        self.post_quant_conv = nn.Conv2d(z, z, 1)

    def moments(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the posterior of pixels in [-1, 1], [B, 3, 64, 64]."""
        mean, logvar = self.quant_conv(self.encoder(pixels)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, 64, 64, 3] -> float [B, 3, 64, 64] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_images(pixels: torch.Tensor) -> np.ndarray:
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class Miniature:
    unet: nn.Module
    vae: Autoencoder
    text: TextEncoder
    scale_factor: float
    alphas: torch.Tensor = field(default_factory=alphas_cumprod)
    info: dict = field(default_factory=dict)
    _embeddings: dict = field(default_factory=dict, repr=False)

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """[len(prompts), 77, 768], cached per prompt (the miniature has few)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._embeddings]
        if missing:
            for p, e in zip(missing, self.text(missing)):
                self._embeddings[p] = e
        return torch.stack([self._embeddings[p] for p in prompts])

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> torch.Tensor:
        """Scaled latents [B, 4, 8, 8] of uint8 images: the posterior's mean, so no RNG is used."""
        mean, _ = self.vae.moments(to_pixels(images))
        return mean * self.scale_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return to_images(self.vae.decode(latents / self.scale_factor))

    def reference(self, key: str, image: np.ndarray, weight: float = 1.0) -> Reference:
        """A FABRIC reference of a 64x64 image (the miniature's latents are always 8x8)."""

        def encode(height: int, width: int) -> torch.Tensor:
            if (height, width) != (LATENT_SIZE, LATENT_SIZE):
                raise ValueError(f"the miniature samples 8x8 latents, not {height}x{width}")
            return self.encode(image[None])[0]

        return Reference(key=key, encode=encode, weight=weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The UNet and autoencoder under LatentDiffusion's keys."""
        state = {UNET_PREFIX + k: v for k, v in self.unet.state_dict().items()}
        state.update({VAE_PREFIX + k: v for k, v in self.vae.state_dict().items()})
        return state


def _split(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}


def check_embeddings(text: TextEncoder, stored: torch.Tensor) -> None:
    """Refuse a text encoder whose embeddings differ from those the UNet was trained on."""
    now = text(list(CHECK_PROMPTS))
    diff = (now - stored.float()).abs().max().item()
    if diff > EMBEDDING_TOLERANCE:
        raise RuntimeError(
            f"the regenerated text encoder gives other embeddings than the miniature was trained on "
            f"(max difference {diff:.3g} > {EMBEDDING_TOLERANCE}): its seeds or layout changed, so the "
            f"UNet would read noise; retrain with python -m fabric.miniature.train")


def load(path: Path | str = WEIGHTS) -> Miniature:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no miniature weights; python -m fabric.miniature.train writes them")
    state = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    text = TextEncoder()
    check_embeddings(text, state[EMBEDDINGS_KEY])
    unet, vae = build_unet(), Autoencoder()
    unet.load_state_dict(_split(state, UNET_PREFIX))
    vae.load_state_dict(_split(state, VAE_PREFIX))
    for module in (unet, vae):
        module.requires_grad_(False).eval()
    info = json.loads(metadata.get("training", "{}"))
    return Miniature(unet, vae, text, float(metadata["scale_factor"]), info=info)


def save(miniature: Miniature, path: Path | str = WEIGHTS) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() for k, v in miniature.state_dict().items()}
    state[EMBEDDINGS_KEY] = miniature.text(list(CHECK_PROMPTS)).half().contiguous()
    metadata = {"scale_factor": repr(miniature.scale_factor), "training": json.dumps(miniature.info)}
    save_file(state, str(path), metadata=metadata)
