"""FABRIC's self-attention on projections a host already made: q, k, v of some rows plus one set's
reference keys and values.

The engine's attn1 injection projects q, k, v with the layer's own modules and calls
attend_with_references; hosts that hand an attention patch projected tensors (Forge's attn1
replace patches receive q, k, v as [B, tokens, heads * dim_head]) call it directly.

- attend_with_references: the rows attend over [own keys ; reference keys] with bias log(w) on
  the reference keys (the paper's Eq. 2, fabric.engine.attention), as the engine does.
- blend_with_references: the same split of attention mass between the row's own keys and the
  references, where another extension's attention stands in for the attention over the own keys
  (Forge's reference_only adds its own keys there). With the host's plain attention in that role
  the result equals attend_with_references up to rounding.
"""
from __future__ import annotations

import torch

from .attention import DEFAULT_MAX_LOGITS, weighted_attention


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, inner = t.shape
    return t.view(batch, tokens, heads, inner // heads).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, dim = t.shape
    return t.transpose(1, 2).reshape(batch, tokens, heads * dim)


def attend_with_references(q, k, v, ref_k, ref_v, ref_bias, heads: int, *, upcast: bool = False,
                           max_logits: int = DEFAULT_MAX_LOGITS) -> torch.Tensor:
    """softmax over [k ; ref_k] with bias [0 ; ref_bias], for q, k, v [B, N, heads * d] and
    ref_k, ref_v [1, M, heads * d] shared by the rows, ref_bias [M]. Returns [B, N, heads * d]."""
    batch = q.shape[0]
    keys = torch.cat([k, ref_k.to(k.dtype).expand(batch, -1, -1)], dim=1)
    values = torch.cat([v, ref_v.to(v.dtype).expand(batch, -1, -1)], dim=1)
    bias = torch.cat([ref_bias.new_zeros(k.shape[1]), ref_bias]).to(q.device)
    qh, kh, vh = (_heads(t, heads) for t in (q, keys, values))
    dtype = qh.dtype
    if upcast and dtype in (torch.float16, torch.bfloat16):
        qh, kh, vh = qh.float(), kh.float(), vh.float()
    return _merge(weighted_attention(qh, kh, vh, bias, max_logits=max_logits).to(dtype))


def blend_with_references(own_out, q, k, ref_k, ref_v, ref_bias, heads: int, *,
                          max_logits: int = DEFAULT_MAX_LOGITS) -> torch.Tensor:
    """alpha * own_out + (1 - alpha) * (attention over the references alone), where alpha is the
    share of attention the rows give their own keys k against the weighted references:
    alpha = sigmoid(logsumexp(q k^T s) - logsumexp(q ref_k^T s + ref_bias)), s = 1/sqrt(d).
    own_out is [B, N, heads * d], the rows' attention over their own keys as someone computed it."""
    batch, n_queries, _ = q.shape
    qh = _heads(q.float(), heads)
    kh = _heads(k.float(), heads)
    rkh = _heads(ref_k.float(), heads).expand(batch, -1, -1, -1)
    rvh = _heads(ref_v.float(), heads).expand(batch, -1, -1, -1)
    bias = ref_bias.float().to(q.device)
    scale = qh.shape[-1] ** -0.5
    keys = max(k.shape[1], ref_k.shape[1])
    rows = max(1, max_logits // max(1, batch * heads * keys))
    ref_out = torch.empty_like(qh)
    alpha = torch.empty(*qh.shape[:-1], 1, dtype=qh.dtype, device=qh.device)
    for begin in range(0, n_queries, rows):
        chunk = qh[:, :, begin:begin + rows]
        own_lse = torch.logsumexp(chunk @ kh.transpose(-1, -2) * scale, dim=-1, keepdim=True)
        ref_logits = chunk @ rkh.transpose(-1, -2) * scale + bias
        ref_lse = torch.logsumexp(ref_logits, dim=-1, keepdim=True)
        ref_out[:, :, begin:begin + rows] = torch.softmax(ref_logits, dim=-1) @ rvh
        alpha[:, :, begin:begin + rows] = torch.sigmoid(own_lse - ref_lse)
    blended = alpha * _heads(own_out.float(), heads) + (1 - alpha) * ref_out
    return _merge(blended).to(own_out.dtype)
