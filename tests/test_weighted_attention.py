"""fabric.engine.attention against the paper's explicit formula: multiply probabilities, renormalise."""
import itertools

import pytest
import torch

from fabric.engine.attention import weighted_attention


def explicit(q, k, v, weights):
    """Eq. 2 written out: softmax probabilities times per-key weight, rows renormalised."""
    probs = torch.softmax(q.double() @ k.double().transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    probs = probs * weights.double()
    probs = probs / probs.sum(-1, keepdim=True)
    return (probs @ v.double()).to(q.dtype)


def case(batch, heads, n_own, n_ref, dim, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n_own, dim, generator=g)
    k = torch.randn(batch, heads, n_own + n_ref, dim, generator=g)
    v = torch.randn(batch, heads, n_own + n_ref, dim, generator=g)
    ref_weights = torch.rand(n_ref, generator=g) * 2.0
    weights = torch.cat([torch.ones(n_own), ref_weights])
    return q, k, v, weights


SHAPES = list(itertools.product([1, 3], [1, 4], [1, 7, 64], [0, 5, 130], [8, 40, 64]))


@pytest.mark.parametrize("batch,heads,n_own,n_ref,dim", SHAPES)
@pytest.mark.parametrize("max_logits", [2**27, 97])  # unchunked, and chunks of very few queries
def test_equals_explicit_formula(batch, heads, n_own, n_ref, dim, max_logits):
    q, k, v, weights = case(batch, heads, n_own, n_ref, dim, seed=n_own * 7 + n_ref + dim)
    got = weighted_attention(q, k, v, weights.log(), max_logits=max_logits)
    torch.testing.assert_close(got, explicit(q, k, v, weights), rtol=1e-5, atol=2e-6)


def test_zero_weight_masks_the_key():
    q, k, v, weights = case(2, 2, 6, 4, 16, seed=3)
    weights[6:8] = 0.0
    got = weighted_attention(q, k, v, weights.log())
    without = weighted_attention(q, torch.cat([k[:, :, :6], k[:, :, 8:]], 2), torch.cat([v[:, :, :6], v[:, :, 8:]], 2),
                                 torch.cat([weights[:6], weights[8:]]).log())
    torch.testing.assert_close(got, without, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, explicit(q, k, v, weights), rtol=1e-5, atol=1e-6)


def test_unit_weights_are_plain_attention():
    q, k, v, _ = case(2, 3, 9, 9, 24, seed=5)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(weighted_attention(q, k, v, torch.zeros(k.shape[2])), plain)
    torch.testing.assert_close(weighted_attention(q, k, v, None), plain)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("max_logits", [2**27, 500])
def test_half_precision(dtype, tol, max_logits):
    q, k, v, weights = case(2, 4, 32, 96, 40, seed=11)
    got = weighted_attention(q.to(dtype), k.to(dtype), v.to(dtype), weights.log(), max_logits=max_logits)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), explicit(q, k, v, weights), rtol=tol, atol=tol)
