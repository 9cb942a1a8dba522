"""modules/sd_samplers_common.py (v1.10.1), reduced.

Facts encoded:
- `approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}` and
  `images_tensor_to_samples(image, approximation=None, model=None)`: image [B,3,H,W] in [0,1] is
  mapped to [-1,1] and, for "Full", encoded per image with
  `model.get_first_stage_encoding(model.encode_first_stage(img))` (webui-host-api.md §5 "PIL image
  -> latent"); for ldm that samples the posterior with the **global** torch RNG. TAESD/approx
  encoders are not in the stand-in.
- `samples_to_images_tensor` / `decode_first_stage`: latents back to [-1,1] images ("Full").
- `apply_refiner(cfg_denoiser, sigma)` (§3.2 "Refiner"): at the top of every CFGDenoiser.forward;
  completed ratio from the sigma's nearest index in `inner_model.sigmas`, or from the sigma read as
  a timestep (DDIM path, AttributeError); once past `p.refiner_switch_at` with a
  `p.refiner_checkpoint_info` different from the loaded one, it calls
  `sd_models.reload_model_weights(info=...)` (swapping `shared.sd_model`), `p.setup_conds()` and
  `cfg_denoiser.update_inner_model()`; with hires fix on, only in the pass that
  `opts.hires_fix_refiner_pass` names.
- `Sampler`: `initialize(p)` sets `model_wrap_cfg.p`, `step = 0`, `s_min_uncond` from
  `p.s_min_uncond`, and replaces `k_diffusion.sampling.torch` with `TorchHijack(p)` whose
  `randn_like` returns `p.rng.next()`; `launch_sampling(steps, func)` sets `model_wrap_cfg.steps`,
  `total_steps = config.total_steps(steps)` (x2 for second-order samplers) and
  `state.sampling_steps`, and turns `InterruptedException` into the last latent;
  `callback_state` sets `state.sampling_step`.
- `SamplerData(name, constructor, aliases, options).total_steps(steps)`.
"""
from __future__ import annotations

import inspect
from collections import namedtuple

import torch

from modules import devices, shared
from modules.shared import opts, state

approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}

SamplerDataTuple = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])


class SamplerData(SamplerDataTuple):
    def total_steps(self, steps):
        if self.options.get("second_order", False):
            steps = steps * 2
        return steps


def setup_img2img_steps(p, steps=None):
    if opts.img2img_fix_steps or steps is not None:
        requested_steps = steps or p.steps
        steps = int(requested_steps / min(p.denoising_strength, 0.999)) if p.denoising_strength > 0 else 0
        t_enc = requested_steps - 1
    else:
        steps = p.steps
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
    return steps, t_enc


def samples_to_images_tensor(sample, approximation=None, model=None):
    if approximation not in (None, 0):
        raise NotImplementedError("the stand-in has only the full VAE")
    if model is None:
        model = shared.sd_model
    with torch.no_grad(), devices.without_autocast():
        return model.decode_first_stage(sample.to(model.first_stage_model.dtype))


def decode_first_stage(model, x):
    x = x.to(devices.dtype_vae)
    approx_index = approximation_indexes.get(opts.sd_vae_decode_method, 0)
    return samples_to_images_tensor(x, approx_index, model)


def images_tensor_to_samples(image, approximation=None, model=None):
    """image[0, 1] -> latent"""
    if approximation is None:
        approximation = approximation_indexes.get(opts.sd_vae_encode_method, 0)
    if approximation == 3:
        raise NotImplementedError("the stand-in has no TAESD")
    if model is None:
        model = shared.sd_model
    model.first_stage_model.to(devices.dtype_vae)
    image = image.to(shared.device, dtype=devices.dtype_vae)
    image = image * 2 - 1
    if len(image) > 1:
        x_latent = torch.stack([
            model.get_first_stage_encoding(model.encode_first_stage(torch.unsqueeze(img, 0)))[0]
            for img in image
        ])
    else:
        x_latent = model.get_first_stage_encoding(model.encode_first_stage(image))
    return x_latent


def store_latent(decoded):
    state.current_latent = decoded


class InterruptedException(BaseException):
    pass


def apply_refiner(cfg_denoiser, sigma=None):
    from modules import sd_models

    if opts.refiner_switch_by_sample_steps or sigma is None:
        completed_ratio = cfg_denoiser.step / cfg_denoiser.total_steps
        cfg_denoiser.p.extra_generation_params["Refiner switch by sampling steps"] = True
    else:
        try:
            timestep = torch.argmin(torch.abs(cfg_denoiser.inner_model.sigmas.to(sigma.device) - torch.max(sigma)))
        except AttributeError:  # DDIM: sigma is the timestep
            timestep = torch.max(sigma).to(dtype=int)
        completed_ratio = (999 - timestep) / 1000

    refiner_switch_at = getattr(cfg_denoiser.p, "refiner_switch_at", None)
    refiner_checkpoint_info = getattr(cfg_denoiser.p, "refiner_checkpoint_info", None)
    if refiner_switch_at is not None and completed_ratio < refiner_switch_at:
        return False
    if refiner_checkpoint_info is None or shared.sd_model.sd_checkpoint_info == refiner_checkpoint_info:
        return False
    if getattr(cfg_denoiser.p, "enable_hr", False):
        is_second_pass = cfg_denoiser.p.is_hr_pass
        if opts.hires_fix_refiner_pass == "first pass" and is_second_pass:
            return False
        if opts.hires_fix_refiner_pass == "second pass" and not is_second_pass:
            return False
        if opts.hires_fix_refiner_pass != "second pass":
            cfg_denoiser.p.extra_generation_params["Hires refiner"] = opts.hires_fix_refiner_pass

    cfg_denoiser.p.extra_generation_params["Refiner"] = refiner_checkpoint_info.short_title
    cfg_denoiser.p.extra_generation_params["Refiner switch at"] = refiner_switch_at
    with sd_models.SkipWritingToConfig():
        sd_models.reload_model_weights(info=refiner_checkpoint_info)
    devices.torch_gc()
    cfg_denoiser.p.setup_conds()
    cfg_denoiser.update_inner_model()
    return True


class TorchHijack:
    """Replaces k_diffusion.sampling's `torch`, so randn_like draws from the job's ImageRNG."""

    def __init__(self, p):
        self.rng = p.rng

    def __getattr__(self, item):
        if item == "randn_like":
            return self.randn_like
        if hasattr(torch, item):
            return getattr(torch, item)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{item}'")

    def randn_like(self, x):
        return self.rng.next()


class Sampler:
    def __init__(self, funcname):
        self.funcname = funcname
        self.func = funcname
        self.extra_params = []
        self.config: SamplerData | None = None
        self.last_latent = None
        self.s_min_uncond = None
        self.eta = None
        self.eta_option_field = "eta_ancestral"
        self.eta_infotext_field = "Eta"
        self.eta_default = 1.0
        self.conditioning_key = getattr(shared.sd_model.model, "conditioning_key", "crossattn")
        self.p = None
        self.model_wrap_cfg = None
        self.sampler_extra_args = None
        self.options = {}

    def callback_state(self, d):
        state.sampling_step = d["i"]

    def launch_sampling(self, steps, func):
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = self.config.total_steps(steps)
        state.sampling_steps = steps
        state.sampling_step = 0
        try:
            return func()
        except InterruptedException:
            return self.last_latent

    def initialize(self, p) -> dict:
        import k_diffusion.sampling

        self.p = p
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.mask = p.mask if hasattr(p, "mask") else None
        self.model_wrap_cfg.nmask = p.nmask if hasattr(p, "nmask") else None
        self.model_wrap_cfg.step = 0
        self.model_wrap_cfg.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.eta = p.eta if p.eta is not None else getattr(opts, self.eta_option_field, 0.0)
        self.s_min_uncond = getattr(p, "s_min_uncond", 0.0)

        k_diffusion.sampling.torch = TorchHijack(p)

        extra_params_kwargs = {}
        if "eta" in inspect.signature(self.func).parameters:
            if self.eta != self.eta_default:
                p.extra_generation_params[self.eta_infotext_field] = self.eta
            extra_params_kwargs["eta"] = self.eta
        return extra_params_kwargs

    def add_infotext(self, p):
        if self.model_wrap_cfg.padded_cond_uncond:
            p.extra_generation_params["Pad conds"] = True
        if self.model_wrap_cfg.padded_cond_uncond_v0:
            p.extra_generation_params["Pad conds v0"] = True
