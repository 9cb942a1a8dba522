"""Fake checkpoints for the stand-in webui: ldm-like (SD1 and inpainting) and SDXL-like models
around the real small ldm UNet of tests/engine_support.py, with a deterministic text encoder and a
tiny VAE.

Facts encoded (webui-host-api.md §3.1 item 4, §3.4, §5):
- `sd_model.model` is the wrapper module (`DiffusionWrapper` for ldm, `OpenAIWrapper` for sgm) and
  `sd_model.model.diffusion_model` the UNet (a real `ldm...openaimodel.UNetModel`).
- SD1/SD2 (`FakeLatentDiffusion`): `apply_model(x, t, cond)` is ldm's `LatentDiffusion.apply_model`
  inside the webui's CondFunc cast (modules/sd_hijack_unet.py `apply_model`: cond tensors, x and t
  cast to `devices.dtype_unet`, under `devices.autocast()`); `DiffusionWrapper.forward(x, t,
  c_concat, c_crossattn)` calls `diffusion_model(x, t, context=cat(c_crossattn, 1))` with **t
  positional**; for conditioning_key 'hybrid' (inpainting, 9-channel UNet) it first concatenates
  `c_concat` onto x (x first).
- SDXL (`FakeSDXL`): `apply_model(x, t, cond)` = `self.model(x, t, cond)` (modules/sd_models_xl.py)
  and sgm's `OpenAIWrapper.forward` calls `diffusion_model(cat(x, c.get("concat")), timesteps=t,
  context=c["crossattn"], y=c["vector"])` with **keywords**; `get_learned_conditioning(batch)`
  returns a dict `{"crossattn", "vector"}`, the vector built from the batch's width/height when it
  is an `SdConditioning` (1024 otherwise) and the crossattn **zeroed** when the batch is a negative
  `SdConditioning` of empty prompts; the UNet's transformer blocks are sgm's (imaginAIry's copy),
  calling attn1 with keywords. Sizes are shrunk: context 32 wide, vector 1 wide (not 2048/2816).
- `alphas_cumprod`: the SD linear-beta schedule (1000 values, float32).
- Text: `get_learned_conditioning(list)` gives [B, 77 * chunks, C], 75 tokens per chunk with start
  and end tokens, all prompts of a batch padded to the same chunk count (the webui's CLIP wrapper);
  a prompt over 75 tokens has 154 rows, so with a short negative prompt the CFGDenoiser takes its
  different-token-length path (§3.2 Case B). `cond_stage_model_empty_prompt` is the crossattn of "".
- VAE: ldm's `encode_first_stage` returns a diagonal Gaussian posterior and
  `get_first_stage_encoding` returns `scale_factor * posterior.sample()` — **sampling with the
  global torch RNG** (`torch.randn`); sgm's `encode_first_stage` samples and scales itself and
  `get_first_stage_encoding` is the identity (§5 "Latent scale"). The stand-in VAE is an 8x8
  average pool and a fixed random 1x1 conv to mean/log-variance; decoding is nearest x8 and a 1x1
  conv with tanh.
- Identity fields: `sd_checkpoint_info`, `sd_model_hash`, `sd_model_checkpoint`, `used_config`
  (set by `sd_models`), `is_sdxl`, `is_sd1`, `is_sd2`, `is_sdxl_inpaint`, `parameterization`
  "eps", `cond_stage_key` "txt", `lowvram` False; `latent_channels` is absent on the SD1 models
  (the webui reads it with a default of 4) and 4 on SDXL (v1.10 sets it).
Stand-in additions for tests: `unet_calls` logs every call the webui makes through the wrapper
(rows, t, channels); `fail_at_call = n` makes the n-th such call from then on raise (a fault in
the middle of a job).
"""
from __future__ import annotations

import contextlib
import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from engine_support import CONTEXT_DIM, alphas_cumprod, randomize, small_unet, with_sgm_blocks
from modules import devices

TOKENS_PER_CHUNK = 75
VOCAB = 512


class StandinFault(RuntimeError):
    """The error `fail_at_call` raises (an out-of-memory, a NaN check, an interrupted device...)."""


def _token_id(word: str) -> int:
    return int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little") % (VOCAB - 2) + 2


class TextEncoder(nn.Module):
    """Words -> a learned vector each; [start, words..., end, end...] per 77-token chunk."""

    def __init__(self, seed: int, width: int = CONTEXT_DIM):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, width)
        self.positional = nn.Parameter(torch.zeros(77, width))
        randomize(self, seed)

    def tokenize(self, text: str) -> list[list[int]]:
        words = [_token_id(word) for word in text.lower().split()]
        chunks = [words[i:i + TOKENS_PER_CHUNK] for i in range(0, len(words), TOKENS_PER_CHUNK)] or [[]]
        return [[0, *chunk] + [1] * (TOKENS_PER_CHUNK + 1 - len(chunk)) for chunk in chunks]

    def forward(self, texts) -> torch.Tensor:
        tokenized = [self.tokenize(text) for text in texts]
        n_chunks = max(len(chunks) for chunks in tokenized)
        empty = self.tokenize("")[0]
        rows = []
        for chunks in tokenized:
            chunks = chunks + [empty] * (n_chunks - len(chunks))
            ids = torch.tensor(chunks)
            rows.append((self.embedding(ids) + self.positional).reshape(-1, self.embedding.embedding_dim))
        return torch.stack(rows)


class DiagonalGaussianDistribution:
    """ldm.modules.distributions.distributions.DiagonalGaussianDistribution.sample()."""

    def __init__(self, parameters):
        self.parameters = parameters
        self.mean, self.logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(self.logvar, -30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self):
        return self.mean + self.std * torch.randn(self.mean.shape).to(device=self.parameters.device)


class FakeVAE(nn.Module):
    def __init__(self, seed: int, latent_channels: int = 4):
        super().__init__()
        self.encoder_conv = nn.Conv2d(3, 2 * latent_channels, 1)
        self.decoder_conv = nn.Conv2d(latent_channels, 3, 1)
        randomize(self, seed)
        with torch.no_grad():
            self.encoder_conv.bias[latent_channels:] = -3.0  # posterior std ~0.2

    @property
    def dtype(self):
        return self.encoder_conv.weight.dtype

    def encode(self, x):
        return DiagonalGaussianDistribution(self.encoder_conv(F.avg_pool2d(x, 8)))

    def decode(self, z):
        return torch.tanh(self.decoder_conv(F.interpolate(z, scale_factor=8, mode="nearest")))


class DiffusionWrapper(nn.Module):
    """ldm.models.diffusion.ddpm.DiffusionWrapper.forward for 'crossattn', 'hybrid' and 'concat'."""

    def __init__(self, diffusion_model, conditioning_key):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = conditioning_key
        self.calls: list[dict] = []
        self.fail_at_call: int | None = None

    def _log(self, x, t):
        self.calls.append({"rows": x.shape[0], "t": t.detach().clone(), "channels": x.shape[1]})
        if self.fail_at_call is not None and len(self.calls) >= self.fail_at_call:
            raise StandinFault(f"stand-in fault at UNet call {len(self.calls)}")

    def forward(self, x, t, c_concat: list = None, c_crossattn: list = None, c_adm=None):
        if self.conditioning_key == "crossattn":
            cc = torch.cat(c_crossattn, 1)
            self._log(x, t)
            return self.diffusion_model(x, t, context=cc)
        if self.conditioning_key == "hybrid":
            xc = torch.cat([x] + c_concat, dim=1)
            cc = torch.cat(c_crossattn, 1)
            self._log(xc, t)
            return self.diffusion_model(xc, t, context=cc)
        if self.conditioning_key == "concat":
            xc = torch.cat([x] + c_concat, dim=1)
            self._log(xc, t)
            return self.diffusion_model(xc, t)
        raise NotImplementedError(self.conditioning_key)


class OpenAIWrapper(DiffusionWrapper):
    """sgm.modules.diffusionmodules.wrappers.OpenAIWrapper.forward."""

    def __init__(self, diffusion_model):
        super().__init__(diffusion_model, "crossattn")

    def forward(self, x, t, c, **kwargs):
        x = torch.cat((x, c.get("concat", torch.Tensor([]).type_as(x))), dim=1)
        self._log(x, t)
        return self.diffusion_model(x, timesteps=t, context=c.get("crossattn", None), y=c.get("vector", None), **kwargs)


def _cast_cond(cond):
    """modules/sd_hijack_unet.py apply_model: cast the cond dict's tensors to dtype_unet."""
    if isinstance(cond, dict):
        for key in cond.keys():
            if isinstance(cond[key], list):
                cond[key] = [x.to(devices.dtype_unet) if isinstance(x, torch.Tensor) else x for x in cond[key]]
            else:
                cond[key] = cond[key].to(devices.dtype_unet) if isinstance(cond[key], torch.Tensor) else cond[key]
    return cond


class _FakeModelBase(nn.Module):
    parameterization = "eps"
    cond_stage_key = "txt"
    lowvram = False
    is_sdxl_inpaint = False
    sd_checkpoint_info = None
    sd_model_hash = None
    sd_model_checkpoint = None
    used_config = None

    @property
    def unet_calls(self) -> list[dict]:
        return self.model.calls

    @property
    def fail_at_call(self):
        return self.model.fail_at_call

    @fail_at_call.setter
    def fail_at_call(self, value):
        """Make the value-th UNet call from now on raise StandinFault (None: never)."""
        self.model.fail_at_call = None if value is None else len(self.model.calls) + value

    @property
    def cond_stage_model_empty_prompt(self):
        cond = self.get_learned_conditioning([""])
        return cond["crossattn"] if isinstance(cond, dict) else cond

    def ema_scope(self, context=None):
        return contextlib.nullcontext()

    def decode_first_stage(self, z):
        return self.first_stage_model.decode(z / self.scale_factor)


class FakeLatentDiffusion(_FakeModelBase):
    """SD1-like: ldm LatentDiffusion (conditioning_key 'crossattn', or 'hybrid' with a 9-channel UNet)."""

    is_sdxl = False
    is_sd1 = True
    is_sd2 = False
    scale_factor = 0.18215

    def __init__(self, seed: int, *, inpainting: bool = False):
        super().__init__()
        unet = small_unet(seed, in_channels=9 if inpainting else 4)
        self.model = DiffusionWrapper(unet, "hybrid" if inpainting else "crossattn")
        self.cond_stage_model = TextEncoder(seed + 1)
        self.first_stage_model = FakeVAE(seed + 2)
        self.register_buffer("alphas_cumprod", alphas_cumprod())

    def get_learned_conditioning(self, texts):
        return self.cond_stage_model(list(texts))

    def apply_model(self, x_noisy, t, cond, return_ids=False):
        cond = _cast_cond(cond)
        with devices.autocast():
            x_noisy, t = x_noisy.to(devices.dtype_unet), t.to(devices.dtype_unet)
            if not isinstance(cond, dict):
                cond = {"c_concat" if self.model.conditioning_key == "concat" else "c_crossattn": cond if isinstance(cond, list) else [cond]}
            return self.model(x_noisy, t, **cond)

    def encode_first_stage(self, x):
        return self.first_stage_model.encode(x)

    def get_first_stage_encoding(self, encoder_posterior):
        z = encoder_posterior.sample() if isinstance(encoder_posterior, DiagonalGaussianDistribution) else encoder_posterior
        return self.scale_factor * z


class FakeSDXL(_FakeModelBase):
    """SDXL-like: sgm DiffusionEngine as modules/sd_models_xl.py patches it."""

    is_sdxl = True
    is_sd1 = False
    is_sd2 = False
    latent_channels = 4
    scale_factor = 0.13025

    def __init__(self, seed: int):
        super().__init__()
        self.model = OpenAIWrapper(with_sgm_blocks(small_unet(seed, y=True)))
        self.text_encoder = TextEncoder(seed + 1)
        self.vector_proj = nn.Linear(CONTEXT_DIM + 2, 1)
        randomize(self.vector_proj, seed + 3)
        self.first_stage_model = FakeVAE(seed + 2)
        self.register_buffer("alphas_cumprod", alphas_cumprod())

    def get_learned_conditioning(self, batch):
        width = getattr(batch, "width", 1024) or 1024
        height = getattr(batch, "height", 1024) or 1024
        crossattn = self.text_encoder(list(batch))
        if getattr(batch, "is_negative_prompt", False) and all(x == "" for x in batch):
            crossattn = torch.zeros_like(crossattn)  # force_zero_embeddings=['txt']
        size = torch.tensor([[math.log(height), math.log(width)]]).repeat(len(batch), 1)
        vector = self.vector_proj(torch.cat([crossattn.mean(dim=1), size], dim=1))
        return {"crossattn": crossattn, "vector": vector}

    def apply_model(self, x, t, cond):
        cond = _cast_cond(cond)
        with devices.autocast():
            return self.model(x.to(devices.dtype_unet), t.to(devices.dtype_unet), cond)

    def encode_first_stage(self, x):
        return self.scale_factor * self.first_stage_model.encode(x).sample()

    def get_first_stage_encoding(self, x):
        return x
