"""modules/sd_samplers_kdiffusion.py (v1.10.1): Euler and Heun through k-diffusion.

Facts encoded (webui-host-api.md §3.1 items 1-3, §3.4):
- `CFGDenoiserKDiffusion.inner_model` is (re)built lazily from **the current `shared.sd_model`**:
  `k_diffusion.external.CompVisDenoiser(shared.sd_model, quantize=opts.enable_quantization)`
  (CompVisVDenoiser for v-models is not in the stand-in); `update_inner_model()` drops it after a
  refiner swap.
- `sample(p, x, cond, uncond, steps, image_conditioning)`: sigmas from the model's schedule
  ("Automatic" scheduler: `model_wrap.get_sigmas(steps)`), x *= sigmas[0], then
  `func(model_wrap_cfg, x, extra_args={cond, image_cond, uncond, cond_scale, s_min_uncond},
  sigmas=...)` under `launch_sampling`.
- `sample_img2img(p, x, noise, ...)` (the hires pass): `setup_img2img_steps`, sigmas cut to
  `sigmas[steps - t_enc - 1:]`, xi = x + noise * sigma_sched[0]; `init_latent = x`.
- Heun has option `second_order` (total_steps x2).
"""
import inspect

import k_diffusion.external
import k_diffusion.sampling

import modules.shared as shared
from modules import sd_samplers_cfg_denoiser, sd_samplers_common

samplers_k_diffusion = [
    ("Euler", "sample_euler", ["k_euler"], {}),
    ("Heun", "sample_heun", ["k_heun"], {"second_order": True}),
]

samplers_data_k_diffusion = [
    sd_samplers_common.SamplerData(label, lambda model, funcname=funcname: KDiffusionSampler(funcname, model), aliases, options)
    for label, funcname, aliases, options in samplers_k_diffusion
]


class CFGDenoiserKDiffusion(sd_samplers_cfg_denoiser.CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = k_diffusion.external.CompVisDenoiser(shared.sd_model, quantize=shared.opts.enable_quantization)
        return self.model_wrap


class KDiffusionSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model, options=None):
        super().__init__(funcname)
        self.options = options or {}
        self.func = getattr(k_diffusion.sampling, self.funcname)
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_sigmas(self, p, steps):
        return self.model_wrap.get_sigmas(steps).cpu()

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        sigmas = self.get_sigmas(p, steps)
        sigma_sched = sigmas[steps - t_enc - 1:]
        xi = x + noise * sigma_sched[0]
        extra_params_kwargs = self.initialize(p)
        if "sigmas" in inspect.signature(self.func).parameters:
            extra_params_kwargs["sigmas"] = sigma_sched
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
        sigmas = self.get_sigmas(p, steps)
        x = x * sigmas[0]
        extra_params_kwargs = self.initialize(p)
        if "sigmas" in inspect.signature(self.func).parameters:
            extra_params_kwargs["sigmas"] = sigmas
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
