"""Real ldm (and sgm-style) UNets with random weights for the engine tests."""
from __future__ import annotations

import math

import torch
from torch import nn

from ldm.modules.diffusionmodules.openaimodel import UNetModel
from ldm.modules.diffusionmodules.util import make_beta_schedule

import fabric

CONTEXT_DIM = 32


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Give every weight a random value: a fresh ldm UNet outputs exactly zero (zero_module)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() > 1:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(fan_in))
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return module


def small_unet(seed: int = 0, *, y: bool = False, in_channels: int = 4) -> UNetModel:
    """A small SD-shaped ldm UNet: spatial transformers at two resolutions, 7 attn1 layers."""
    unet = UNetModel(
        image_size=16,
        in_channels=in_channels,
        out_channels=4,
        model_channels=32,
        attention_resolutions=[2, 4],
        num_res_blocks=1,
        channel_mult=[1, 2, 2],
        num_head_channels=16,
        use_spatial_transformer=True,
        transformer_depth=1,
        context_dim=CONTEXT_DIM,
        use_checkpoint=False,
        legacy=False,
        num_classes="continuous" if y else None,
    )
    return randomize(unet, seed).eval()


def sd15_unet() -> UNetModel:
    """The SD1.5 UNet configuration (configs/v1-inference.yaml, as the benchmark builds it)."""
    from fabric.bench.engine_bench import SD15_CONFIG

    return randomize(UNetModel(image_size=32, **SD15_CONFIG), 0).eval()


def with_sgm_blocks(unet: UNetModel) -> UNetModel:
    """Swap every ldm BasicTransformerBlock for sgm's (imaginAIry's copy), keeping the weights.

    sgm's block calls attn1 with keywords and extra arguments (additional_tokens,
    n_times_crossframe_attn_in_self), as SDXL does in the webui.
    """
    from imaginairy.modules.sgm import attention as sgm

    for module in list(unet.modules()):
        blocks = getattr(module, "transformer_blocks", None)
        if blocks is None:
            continue
        for i, block in enumerate(blocks):
            attn = block.attn1
            replacement = sgm.BasicTransformerBlock(
                dim=attn.to_q.in_features,
                n_heads=attn.heads,
                d_head=attn.to_q.out_features // attn.heads,
                context_dim=block.attn2.to_k.in_features,
                checkpoint=False,
            )
            replacement.load_state_dict(block.state_dict())
            blocks[i] = replacement.eval()
    return unet


def alphas_cumprod() -> torch.Tensor:
    betas = make_beta_schedule("linear", 1000, linear_start=0.00085, linear_end=0.0120)
    return torch.cumprod(1.0 - torch.as_tensor(betas, dtype=torch.float64), 0).float()


def reference(key: str, seed: int, weight: float = 1.0, channels: int = 4) -> fabric.Reference:
    """A reference whose 'VAE' is a deterministic random latent per (seed, size)."""

    def encode(height: int, width: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed * 1000 + height * 31 + width)
        return torch.randn(channels, height, width, generator=generator)

    return fabric.Reference(key=key, encode=encode, weight=weight)


def make_fabric(unet, liked=(), disliked=(), *, schedule=None, context=None, **kwargs) -> fabric.Fabric:
    if context is None:
        context = torch.zeros(1, 5, CONTEXT_DIM)
    return fabric.Fabric(
        unet,
        references={fabric.LIKED: list(liked), fabric.DISLIKED: list(disliked)},
        schedule=schedule or fabric.Schedule(),
        alphas_cumprod=alphas_cumprod(),
        reference_kwargs={"context": context},
        **kwargs,
    )


def cfg_inputs(batch: int = 1, size: int = 16, seed: int = 1, t: float = 400.0):
    """A CFG batch: rows [cond_0..cond_B-1, uncond_0..uncond_B-1] as the webui builds it."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, size, size, generator=generator)
    cond = torch.randn(batch, 5, CONTEXT_DIM, generator=generator)
    uncond = torch.randn(batch, 5, CONTEXT_DIM, generator=generator)
    return torch.cat([x, x]), torch.full((2 * batch,), t), torch.cat([cond, uncond])
