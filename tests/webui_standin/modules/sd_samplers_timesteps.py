"""modules/sd_samplers_timesteps.py (v1.10.1): DDIM through the timesteps path.

Facts encoded (webui-host-api.md §3.1 items 1-3, §3.4 "Timesteps path"):
- `CompVisTimestepsDenoiser(sd_model).forward(x, t, **kw)` = `sd_model.apply_model(x, t, **kw)`
  (no c_in scaling: the latent is already in DDPM form), built lazily from the current
  `shared.sd_model` by `CFGDenoiserTimesteps.inner_model`.
- `get_timesteps`: `clip(range(0, 1000, 1000 // steps) + 1, 0, 999)`.
- `CFGDenoiserTimesteps.get_pred_x0` reads `alphas_cumprod[t]`.
"""
import inspect

import torch

import modules.shared as shared
from modules import devices, sd_samplers_common, sd_samplers_timesteps_impl
from modules.sd_samplers_cfg_denoiser import CFGDenoiser

samplers_timesteps = [
    ("DDIM", sd_samplers_timesteps_impl.ddim, ["ddim"], {}),
]

samplers_data_timesteps = [
    sd_samplers_common.SamplerData(label, lambda model, funcname=funcname: CompVisSampler(funcname, model), aliases, options)
    for label, funcname, aliases, options in samplers_timesteps
]


class CompVisTimestepsDenoiser(torch.nn.Module):
    def __init__(self, model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inner_model = model

    def forward(self, input, timesteps, **kwargs):
        return self.inner_model.apply_model(input, timesteps, **kwargs)


class CFGDenoiserTimesteps(CFGDenoiser):
    def __init__(self, sampler):
        super().__init__(sampler)
        self.alphas = shared.sd_model.alphas_cumprod
        self.mask_before_denoising = True

    def get_pred_x0(self, x_in, x_out, sigma):
        ts = sigma.to(dtype=int)
        a_t = self.alphas[ts][:, None, None, None]
        sqrt_one_minus_at = (1 - a_t).sqrt()
        return (x_in - sqrt_one_minus_at * x_out) / a_t.sqrt()

    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisTimestepsDenoiser(shared.sd_model)
        return self.model_wrap


class CompVisSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model):
        super().__init__(funcname)
        self.eta_option_field = "eta_ddim"
        self.eta_infotext_field = "Eta DDIM"
        self.eta_default = 0.0
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_timesteps(self, p, steps):
        return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps)), device=devices.device) + 1, 0, 999)

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        timesteps = self.get_timesteps(p, steps)
        timesteps_sched = timesteps[:t_enc]
        alphas_cumprod = shared.sd_model.alphas_cumprod
        xi = x * torch.sqrt(alphas_cumprod[timesteps[t_enc]]) + noise * torch.sqrt(1 - alphas_cumprod[timesteps[t_enc]])
        extra_params_kwargs = self.initialize(p)
        if "timesteps" in inspect.signature(self.func).parameters:
            extra_params_kwargs["timesteps"] = timesteps_sched
        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        self.sampler_extra_args = {
            "cond": conditioning,
            "image_cond": image_conditioning,
            "uncond": unconditional_conditioning,
            "cond_scale": p.cfg_scale,
            "s_min_uncond": self.s_min_uncond,
        }
        samples = self.launch_sampling(t_enc + 1, lambda: self.func(self.model_wrap_cfg, xi, extra_args=self.sampler_extra_args, disable=False, callback=self.callback_state, **extra_params_kwargs))
        self.add_infotext(p)
        return samples

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        timesteps = self.get_timesteps(p, steps)
        extra_params_kwargs = self.initialize(p)
        if "timesteps" in inspect.signature(self.func).parameters:
            extra_params_kwargs["timesteps"] = timesteps
        self.last_latent = x
        self.sampler_extra_args = {
            "cond": conditioning,
            "image_cond": image_conditioning,
            "uncond": unconditional_conditioning,
            "cond_scale": p.cfg_scale,
            "s_min_uncond": self.s_min_uncond,
        }
        samples = self.launch_sampling(steps, lambda: self.func(self.model_wrap_cfg, x, extra_args=self.sampler_extra_args, disable=False, callback=self.callback_state, **extra_params_kwargs))
        self.add_infotext(p)
        return samples
