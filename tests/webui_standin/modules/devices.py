"""modules/devices.py (v1.10.1), for the CPU float32 configuration.

Facts encoded:
- `device`, `cpu`, `dtype`, `dtype_vae`, `dtype_unet`, `dtype_inference`: all CPU / float32 under
  `--use-cpu all --precision full --no-half` (webui-host-api.md §3.1 "dtype and casting").
- `autocast()` returns `contextlib.nullcontext()` when `dtype` is float32 (devices.py `autocast`);
  `without_autocast()` likewise.
- `cond_cast_unet` / `cond_cast_float` (used by hypernetworks, §4.2) are identities unless
  `unet_needs_upcast` (--upcast-sampling), which is off here.
- `randn`, `randn_like`, ... are attached by `modules.rng` at import, as the real rng.py does.
"""
import contextlib

import torch

cpu = torch.device("cpu")
device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = cpu
dtype = torch.float32
dtype_vae = torch.float32
dtype_unet = torch.float32
dtype_inference = torch.float32
unet_needs_upcast = False


def cond_cast_unet(input):
    return input.to(dtype_unet) if unet_needs_upcast else input


def cond_cast_float(input):
    return input.float() if unet_needs_upcast else input


def autocast(disable=False):
    if disable:
        return contextlib.nullcontext()
    if dtype == torch.float32 or dtype_inference == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast("cuda")  # pragma: no cover - never reached on the CPU configuration


def without_autocast(disable=False):
    return contextlib.nullcontext()


def torch_gc():
    pass
