"""backend/nn/unet.py (dfdcbab6), reduced to a small UNet of the same structure.

Facts encoded:
- `attention_function` is bound at import (:5) and `CrossAttention.forward(x, context=None,
  value=None, mask=None, transformer_options={})` (:133-155) projects with to_q/to_k/to_v
  (no bias) and applies to_out after the attention.
- `BasicTransformerBlock._forward` (:183-279): attn1_patch entries may replace (n, context,
  value) first; then the attn1 replace patch under (block[0], block[1], block_index), else under
  `block`, gets q, k, v already projected plus extra_options (transformer_options without
  patches/patches_replace, plus n_heads and dim_head), and to_out is applied to its result;
  without one, attn1.forward runs. attn1_output_patch, attn2 likewise.
- `SpatialTransformer.forward` sets transformer_options["block_index"] per transformer block (:320).
- `TimestepEmbedSequential.forward(x, emb, context, transformer_options, output_shape)` (:75-92)
  with block_inner_modifiers.
- `IntegratedUNet2DConditionModel.forward(x, timesteps, context, y, control, transformer_options)`
  (:696-763): sets transformer_options["block"] to ("input", i), ("middle", 0), ("output", i),
  ("last", 0) and calls every block modifier (h, 'before'|'after', transformer_options) around
  each; `y` enters through label_emb when the model has classes (SDXL's ADM vector), and is
  asserted present exactly then (:701).
- The modules carry ldm's parameter names, which Forge's loader keeps (a checkpoint's
  `model.diffusion_model.*` keys load as they are): GroupNorm of 32 groups (eps 1e-6 in the
  SpatialTransformer), proj_in/proj_out 1x1 convolutions unless use_linear (:282-323), the
  feed-forward a GEGLU (`ff.net.0.proj`, `ff.net.2`, :104-130), ResBlock out_layers
  (norm, SiLU, Dropout, conv) (:377-431), heads = channels // head channels (:562-567). So the
  miniature's UNet (fabric/miniature, ldm's UNetModel) loads into it unchanged.
"""
import math

import torch
from torch import nn

from backend.attention import attention_function


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepBlock(nn.Module):
    pass


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64):
        super().__init__()
        inner = dim_head * heads
        context_dim = context_dim or query_dim
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None, value=None, mask=None, transformer_options={}):
        q = self.to_q(x)
        context = x if context is None else context
        k = self.to_k(context)
        v = self.to_v(value) if value is not None else self.to_v(context)
        return self.to_out(attention_function(q, k, v, self.heads, mask))


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * nn.functional.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, n_heads, d_head, context_dim):
        super().__init__()
        self.disable_self_attn = False
        self.attn1 = CrossAttention(dim, heads=n_heads, dim_head=d_head)
        self.norm1 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=n_heads, dim_head=d_head)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.n_heads = n_heads
        self.d_head = d_head

    def forward(self, x, context=None, transformer_options={}):
        block = transformer_options.get("block", None)
        block_index = transformer_options.get("block_index", 0)
        patches = transformer_options.get("patches", {})
        replace = transformer_options.get("patches_replace", {})
        extra = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
        extra["n_heads"] = self.n_heads
        extra["dim_head"] = self.d_head
        n = self.norm1(x)
        context_attn1 = value_attn1 = None
        if "attn1_patch" in patches:
            context_attn1 = value_attn1 = n
            for p in patches["attn1_patch"]:
                n, context_attn1, value_attn1 = p(n, context_attn1, value_attn1, extra)
        key = (block[0], block[1], block_index) if block is not None else None
        attn1 = replace.get("attn1", {})
        if key not in attn1:
            key = block
        if key in attn1:
            if context_attn1 is None:
                context_attn1 = value_attn1 = n
            q = self.attn1.to_q(n)
            k = self.attn1.to_k(context_attn1)
            v = self.attn1.to_v(value_attn1)
            n = self.attn1.to_out(attn1[key](q, k, v, extra))
        else:
            n = self.attn1(n, context=context_attn1, value=value_attn1, transformer_options=extra)
        for p in patches.get("attn1_output_patch", []):
            n = p(n, extra)
        x = x + n
        x = x + self.attn2(self.norm2(x), context=context, transformer_options=extra)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, channels, n_heads, d_head, context_dim, depth=1, use_linear=True):
        super().__init__()
        inner = n_heads * d_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.use_linear = use_linear
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, n_heads, d_head, context_dim) for _ in range(depth)])
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv2d(inner, channels, 1)

    def forward(self, x, context=None, transformer_options={}):
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.reshape(b, -1, h * w).transpose(1, 2)
        if self.use_linear:
            x = self.proj_in(x)
        for i, block in enumerate(self.transformer_blocks):
            transformer_options["block_index"] = i
            x = block(x, context=context, transformer_options=transformer_options)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(b, -1, h, w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class ResBlock(TimestepBlock):
    def __init__(self, channels, emb_channels, out_channels):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb, transformer_options={}):
        h = self.in_layers(x) + self.emb_layers(emb)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, output_shape=None):
        size = output_shape[2:4] if output_shape is not None else (x.shape[2] * 2, x.shape[3] * 2)
        return self.conv(nn.functional.interpolate(x, size=size, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x, emb, context=None, transformer_options={}, output_shape=None):
        inner_modifiers = transformer_options.get("block_inner_modifiers", [])
        for index, layer in enumerate(self):
            for modifier in inner_modifiers:
                x = modifier(x, "before", layer, index, self, transformer_options)
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb, transformer_options)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, transformer_options)
            elif isinstance(layer, Upsample):
                x = layer(x, output_shape=output_shape)
            else:
                x = layer(x)
            for modifier in inner_modifiers:
                x = modifier(x, "after", layer, index, self, transformer_options)
        return x


class IntegratedUNet2DConditionModel(nn.Module):
    """Two levels (model_channels and twice that), one ResBlock each, a transformer after every
    ResBlock: 7 attn1 layers at ("input", 1, 0), ("input", 3, 0), ("middle", 0, 0),
    ("output", 0..3, 0). With model_channels 64, context_dim 768, head_channels 32 and
    use_linear False it is the miniature's UNet (fabric/miniature/model.py UNET_CONFIG)."""

    def __init__(self, in_channels=4, model_channels=32, context_dim=32, head_channels=16, adm_in_channels=None,
                 use_linear=True):
        super().__init__()
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.num_classes = "sequential" if adm_in_channels else None
        emb = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        if adm_in_channels:
            self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(adm_in_channels, emb), nn.SiLU(), nn.Linear(emb, emb)))
        c1, c2 = model_channels, model_channels * 2

        def st(ch):
            return SpatialTransformer(ch, ch // head_channels, head_channels, context_dim, use_linear=use_linear)

        self.input_blocks = nn.ModuleList([
            TimestepEmbedSequential(nn.Conv2d(in_channels, c1, 3, padding=1)),
            TimestepEmbedSequential(ResBlock(c1, emb, c1), st(c1)),
            TimestepEmbedSequential(Downsample(c1)),
            TimestepEmbedSequential(ResBlock(c1, emb, c2), st(c2)),
        ])
        self.middle_block = TimestepEmbedSequential(ResBlock(c2, emb, c2), st(c2), ResBlock(c2, emb, c2))
        self.output_blocks = nn.ModuleList([
            TimestepEmbedSequential(ResBlock(c2 + c2, emb, c2), st(c2)),
            TimestepEmbedSequential(ResBlock(c2 + c1, emb, c2), st(c2), Upsample(c2)),
            TimestepEmbedSequential(ResBlock(c2 + c1, emb, c1), st(c1)),
            TimestepEmbedSequential(ResBlock(c1 + c1, emb, c1), st(c1)),
        ])
        self.out = nn.Sequential(nn.GroupNorm(32, c1), nn.SiLU(), nn.Conv2d(c1, 4, 3, padding=1))

    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        modifiers = transformer_options.get("block_modifiers", [])
        assert (y is not None) == (self.num_classes is not None)
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        hs = []
        h = x
        for i, module in enumerate(self.input_blocks):
            transformer_options["block"] = ("input", i)
            for m in modifiers:
                h = m(h, "before", transformer_options)
            h = module(h, emb, context, transformer_options)
            for m in modifiers:
                h = m(h, "after", transformer_options)
            hs.append(h)
        transformer_options["block"] = ("middle", 0)
        for m in modifiers:
            h = m(h, "before", transformer_options)
        h = self.middle_block(h, emb, context, transformer_options)
        for m in modifiers:
            h = m(h, "after", transformer_options)
        for i, module in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", i)
            h = torch.cat([h, hs.pop()], dim=1)
            output_shape = hs[-1].shape if hs else None
            for m in modifiers:
                h = m(h, "before", transformer_options)
            h = module(h, emb, context, transformer_options, output_shape)
            for m in modifiers:
                h = m(h, "after", transformer_options)
        transformer_options["block"] = ("last", 0)
        for m in modifiers:
            h = m(h, "before", transformer_options)
        h = self.out(h)
        for m in modifiers:
            h = m(h, "after", transformer_options)
        return h.type(x.dtype)
