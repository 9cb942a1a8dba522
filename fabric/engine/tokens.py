"""A budget on reference keys: average-pool reference tokens where they are too many.

A pooled token stands for `factor` original tokens, so it gets log(factor) added to its attention
bias (ToMe's proportional attention): a block of identical tokens then keeps the attention mass it
had before pooling, and the paper's weighting is preserved on average.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def token_grid(n_tokens: int, latent_hw: tuple[int, int]) -> tuple[int, int] | None:
    """The (h, w) grid of a layer's tokens, when they are an intact downsampled latent grid."""
    height, width = latent_hw
    for level in range(8):
        stride = 2**level
        # The UNet's downsampling convolutions round odd sizes up.
        grid = (-(-height // stride), -(-width // stride))
        if grid[0] * grid[1] == n_tokens:
            return grid
    return None


def pool_tokens(tokens: torch.Tensor, budget: int, latent_hw: tuple[int, int]) -> tuple[torch.Tensor, float]:
    """Pool [R, N, C] reference tokens until R * N' <= budget. Returns (tokens, log of the factor).

    Spatial 2x2 pooling where the tokens form a grid with even sides; pairs along the sequence
    (neighbours in raster order) otherwise, e.g. after the webui's token merging.
    """
    refs, n_tokens, channels = tokens.shape
    factor = 1
    grid = token_grid(n_tokens, latent_hw)
    while refs * tokens.shape[1] > budget and tokens.shape[1] > 1:
        if grid is not None and grid[0] % 2 == 0 and grid[1] % 2 == 0:
            spatial = tokens.transpose(1, 2).reshape(refs, channels, *grid)
            spatial = F.avg_pool2d(spatial, 2)
            grid = (grid[0] // 2, grid[1] // 2)
            tokens = spatial.reshape(refs, channels, -1).transpose(1, 2)
            factor *= 4
        else:
            grid = None
            usable = tokens.shape[1] - tokens.shape[1] % 2
            tokens = F.avg_pool1d(tokens[:, :usable].transpose(1, 2), 2).transpose(1, 2)
            factor *= 2
    return tokens.contiguous(), math.log(factor)
