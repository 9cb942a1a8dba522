"""modules/hypernetworks/hypernetwork.py (v1.10.1), reduced.

Facts encoded (webui-host-api.md §4.2 "Shared signature"):
- `apply_hypernetworks(hypernetworks, context, layer=None)` returns `(context_k, context_v)`: each
  loaded hypernetwork whose `layers` has an entry for the context's width (`context.shape[2]`)
  transforms the keys' and the values' input with its two modules, in turn; other widths pass
  through (`apply_single_hypernetwork`).
- `attention_CrossAttention_forward(self, x, context=None, mask=None, **kwargs)`: the plain einsum
  attention the webui installs for the "None" optimisation and on undo; k and v are projected
  from the hypernetwork-transformed context, for attn1 (context = x) and attn2 alike.
Stand-in: `Hypernetwork(layers={width: (module_k, module_v)})` replaces the trained file format;
`HypernetworkModule` is the residual form the webui's modules have (`x + linear(x) * multiplier`)
and records the shapes it sees in `seen` so a test can tell which tokens went through it.
"""
import torch
from einops import rearrange
from torch import einsum, nn

from modules import devices, shared


class HypernetworkModule(nn.Module):
    multiplier = 1.0

    def __init__(self, dim, seed):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(dim, dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(dim, dim, generator=generator) / dim ** 0.5)
            self.linear.bias.zero_()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return x + self.linear(x) * self.multiplier


class Hypernetwork:
    def __init__(self, name, layers):
        self.name = name
        self.layers = layers  # width -> (module for k, module for v)


def apply_single_hypernetwork(hypernetwork, context_k, context_v, layer=None):
    hypernetwork_layers = (hypernetwork.layers if hypernetwork is not None else {}).get(context_k.shape[2], None)
    if hypernetwork_layers is None:
        return context_k, context_v
    if layer is not None:
        layer.hyper_k = hypernetwork_layers[0]
        layer.hyper_v = hypernetwork_layers[1]
    context_k = devices.cond_cast_unet(hypernetwork_layers[0](devices.cond_cast_float(context_k)))
    context_v = devices.cond_cast_unet(hypernetwork_layers[1](devices.cond_cast_float(context_v)))
    return context_k, context_v


def apply_hypernetworks(hypernetworks, context, layer=None):
    context_k = context
    context_v = context
    for hypernetwork in hypernetworks:
        context_k, context_v = apply_single_hypernetwork(hypernetwork, context_k, context_v, layer)
    return context_k, context_v


def attention_CrossAttention_forward(self, x, context=None, mask=None, **kwargs):
    h = self.heads
    q = self.to_q(x)
    context = x if context is None else context
    context_k, context_v = apply_hypernetworks(shared.loaded_hypernetworks, context, self)
    k = self.to_k(context_k)
    v = self.to_v(context_v)
    q, k, v = (rearrange(t, "b n (h d) -> (b h) n d", h=h) for t in (q, k, v))
    sim = einsum("b i d, b j d -> b i j", q, k) * self.scale
    if mask is not None:
        raise NotImplementedError("masks are not used by the UNets of the webui")
    attn = sim.softmax(dim=-1)
    out = einsum("b i j, b j d -> b i d", attn, v)
    out = rearrange(out, "(b h) n d -> b n (h d)", h=h)
    return self.to_out(out)
