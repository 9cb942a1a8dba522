"""modules/rng.py (v1.10.1), without subseeds, seed resize and the NV source.

Facts encoded (webui-host-api.md §3.2, §5 "How hires fix calls the sampler a second time"):
- `ImageRNG(shape, seeds)` keeps one `torch.Generator` per image seed, so image k of a batch gets
  the same noise as its seed at batch size 1 (the webui's batch-determinism contract).
- `first()` calls `randn(seed, shape, generator)`, which also calls `manual_seed(seed)`: the global
  torch RNG is **re-seeded** with each seed of the batch, so after the first noise the global state
  is a function of the last seed. Later draws (`next()`, the sampler's randn_like through
  TorchHijack) use the per-image generators only.
- `randn_source` "GPU" on a CPU device draws on the CPU device, like "CPU".
"""
import torch

from modules import devices, shared


def randn(seed, shape, generator=None):
    manual_seed(seed)
    return torch.randn(shape, device=devices.device, generator=generator)


def randn_local(seed, shape):
    local_generator = torch.Generator(devices.cpu).manual_seed(int(seed))
    return torch.randn(shape, device=devices.cpu, generator=local_generator).to(devices.device)


def randn_like(x):
    return torch.randn_like(x)


def randn_without_seed(shape, generator=None):
    return torch.randn(shape, device=devices.device, generator=generator)


def manual_seed(seed):
    torch.manual_seed(seed)


def create_generator(seed):
    return torch.Generator(devices.device).manual_seed(int(seed))


class ImageRNG:
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        self.shape = tuple(map(int, shape))
        self.seeds = seeds
        self.generators = [create_generator(seed) for seed in seeds]
        self.is_first = True

    def first(self):
        xs = [randn(seed, self.shape, generator=generator) for seed, generator in zip(self.seeds, self.generators)]
        eta_noise_seed_delta = shared.opts.eta_noise_seed_delta or 0
        if eta_noise_seed_delta:
            self.generators = [create_generator(seed + eta_noise_seed_delta) for seed in self.seeds]
        return torch.stack(xs).to(shared.device)

    def next(self):
        if self.is_first:
            self.is_first = False
            return self.first()
        xs = [randn_without_seed(self.shape, generator=generator) for generator in self.generators]
        return torch.stack(xs).to(shared.device)


devices.randn = randn
devices.randn_local = randn_local
devices.randn_like = randn_like
devices.randn_without_seed = randn_without_seed
devices.manual_seed = manual_seed
