"""modules/sd_samplers.py (v1.10.1): `create_sampler(name, model)`.

Fact encoded (webui-host-api.md §3.1 item 1): a new sampler object (and so a new CFGDenoiser) is
created per `p.sample()` and again for the hires pass; `sampler.config` is its `SamplerData`.
"""
from modules import sd_samplers_kdiffusion, sd_samplers_timesteps

all_samplers = [*sd_samplers_kdiffusion.samplers_data_k_diffusion, *sd_samplers_timesteps.samplers_data_timesteps]
all_samplers_map = {x.name: x for x in all_samplers}


def find_sampler_config(name):
    return all_samplers_map.get(name)


def create_sampler(name, model):
    config = find_sampler_config(name)
    assert config is not None, f"bad sampler name: {name}"
    sampler = config.constructor(model)
    sampler.config = config
    return sampler
