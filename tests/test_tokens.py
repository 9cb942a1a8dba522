import math

import torch

from fabric.engine.attention import weighted_attention
from fabric.engine.tokens import pool_tokens, token_grid


def test_token_grid():
    assert token_grid(64, (16, 16)) == (8, 8)
    assert token_grid(16, (16, 16)) == (4, 4)
    assert token_grid(256, (16, 16)) == (16, 16)
    assert token_grid(12, (6, 8)) == (3, 4)
    assert token_grid(9, (5, 5)) == (3, 3)  # odd sizes round up when downsampling
    assert token_grid(50, (16, 16)) is None  # e.g. after token merging


def test_pooling_respects_budget_and_factor():
    tokens = torch.randn(3, 64, 8)
    pooled, log_factor = pool_tokens(tokens, 3 * 16, (8, 8))
    assert pooled.shape == (3, 16, 8) and math.isclose(log_factor, math.log(4))
    pooled, log_factor = pool_tokens(tokens, 3 * 64, (8, 8))
    assert pooled.shape == tokens.shape and log_factor == 0.0
    pooled, log_factor = pool_tokens(torch.randn(2, 50, 8), 40, (16, 16))  # no grid: pairs
    assert pooled.shape[1] * 2 <= 40 and math.isclose(log_factor, math.log(2 ** round(math.log2(50 / pooled.shape[1]))))


def test_pooling_blocks_of_equal_tokens_changes_nothing():
    """Proportional attention: a pooled token with log(factor) is exactly the 4 tokens it replaced."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn(2, 8, 4, 4, generator=g)  # [R, C, h, w]
    fine = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3)  # 2x2 blocks of equal tokens
    tokens = fine.reshape(2, 8, 64).transpose(1, 2)  # [R, 64, C]
    pooled, log_factor = pool_tokens(tokens, 2 * 16, (8, 8))
    q = torch.randn(1, 1, 10, 8, generator=g)
    full_k = tokens.reshape(1, 1, -1, 8)
    small_k = pooled.reshape(1, 1, -1, 8)
    full = weighted_attention(q, full_k, full_k, torch.full((full_k.shape[2],), math.log(0.7)))
    small = weighted_attention(q, small_k, small_k, torch.full((small_k.shape[2],), math.log(0.7) + log_factor))
    torch.testing.assert_close(full, small, rtol=1e-5, atol=1e-6)
