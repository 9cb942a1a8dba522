"""Weighted self-attention: the paper's Eq. 2 on torch's scaled_dot_product_attention.

FABRIC multiplies the attention probability of every reference key by that reference's weight
and renormalises each row. That is exactly softmax(Q K^T * scale + b) with b = log(w) on reference
keys and 0 on the row's own keys, so one additive float bias over the keys is all the kernel needs.
The bias is a single [1, 1, 1, keys] row broadcast by SDPA, never expanded per query.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Bound on the elements of one chunk's attention logits (batch * heads * queries * keys) for the
# case where SDPA falls back to its math kernel, which materialises them: 2**27 fp32 = 512 MiB.
DEFAULT_MAX_LOGITS = 2**27


def weighted_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_bias: torch.Tensor | None = None,
    *,
    max_logits: int = DEFAULT_MAX_LOGITS,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + key_bias) v for q [B, H, Nq, D], k and v [B, H, Nk, D].

    key_bias is [Nk] (log weights; 0 for plain keys) and broadcasts over batch, heads and queries.
    Queries are processed in chunks so that no chunk's logits exceed max_logits elements.
    """
    batch, heads, n_queries, _ = q.shape
    n_keys = k.shape[2]
    mask = None if key_bias is None else key_bias.to(q.dtype).view(1, 1, 1, n_keys)
    rows_per_chunk = max(1, max_logits // max(1, batch * heads * n_keys))
    if rows_per_chunk >= n_queries:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = torch.empty_like(q)
    for begin in range(0, n_queries, rows_per_chunk):
        end = min(begin + rows_per_chunk, n_queries)
        out[:, :, begin:end] = F.scaled_dot_product_attention(q[:, :, begin:end], k, v, attn_mask=mask)
    return out
