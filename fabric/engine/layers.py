"""Finding a UNet's self-attention layers by structure.

A self-attention layer is the `attn1` of a transformer block that also has `attn2`, `norm1` and
`ff` (ldm's and sgm's BasicTransformerBlock alike), and that has the projections to_q, to_k, to_v,
to_out and `heads`. Matching structure instead of classes covers ldm (SD1/SD2), sgm (SDXL) and
copies of them without importing either.
"""
from __future__ import annotations

from torch import nn

_ATTENTION_PARTS = ("to_q", "to_k", "to_v", "to_out", "heads")
_BLOCK_PARTS = ("attn1", "attn2", "norm1", "ff")


def is_transformer_block(module: nn.Module) -> bool:
    return all(hasattr(module, part) for part in _BLOCK_PARTS)


def self_attention_layers(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, attn1 module) of every transformer block, in registration order."""
    layers = []
    for name, block in unet.named_modules():
        if not is_transformer_block(block) or getattr(block, "disable_self_attn", False):
            continue
        attn = block.attn1
        if all(hasattr(attn, part) for part in _ATTENTION_PARTS):
            layers.append((f"{name}.attn1" if name else "attn1", attn))
    return layers
