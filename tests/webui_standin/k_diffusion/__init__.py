"""Stand-in for k-diffusion at the commit the webui pins (crowsonkb/k-diffusion ab527a9a,
webui-host-api.md §0), reduced to what the webui's Euler and Heun samplers use.

- `external.CompVisDenoiser`: the k-diffusion -> ldm bridge (§3.4).
- `sampling.sample_euler`, `sampling.sample_heun`: first- and second-order loops (§3.2 "Second-order
  samplers call the denoiser twice per step").
- `sampling.torch` is the module-level name the webui replaces with `TorchHijack(p)` (modules/
  sd_samplers_common.py `Sampler.initialize`), so `torch.randn_like` in the loops draws from the
  job's per-image generators, not the global RNG.
"""
from . import external, sampling, utils  # noqa: F401
