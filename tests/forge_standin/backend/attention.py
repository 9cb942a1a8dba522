"""backend/attention.py (dfdcbab6), reduced.

Facts encoded:
- `attention_function(q, k, v, heads, mask=None)` takes projected q, k, v [B, tokens, heads * d]
  and returns [B, tokens, heads * d]; which implementation is bound at import (:430-441; on a
  CPU sub-quadratic, here torch SDPA, which computes the same attention).
- `get_attn_precision()` returns torch.float32 (upcast) unless --disable-attention-upcast (:25-30).
"""
import torch
import torch.nn.functional as F


def get_attn_precision(attn_precision=torch.float32):
    return attn_precision


def attention_pytorch(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False):
    b, _, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, heads * d)


attention_function = attention_pytorch
