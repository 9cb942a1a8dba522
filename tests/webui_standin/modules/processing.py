"""modules/processing.py (v1.10.1), reduced to txt2img with latent hires fix.

Facts encoded (webui-host-api.md §1.4 "call order", §5 "Processing fields", "How hires fix calls
the sampler a second time"):
- Hook order of one job: `before_process`; prompts (a list gives one per image) and seeds
  (`all_seeds = seed + i`);
  **`process`**; `init()` (hires target size `hr_upscale_to_x/_y` computed here, so still 0 in
  process()); per batch `n` of `n_iter`: `p.iteration`, `p.prompts`, `p.seeds`, a new
  `ImageRNG((latent_channels, height // 8, width // 8), seeds)`, `before_process_batch`,
  `process_batch`, `setup_conds()`, `sample()`, decode, `postprocess_batch`; then
  **`postprocess(p, processed)`**. An exception escaping sampling skips `postprocess`.
- `sample()`: a new sampler, `x = rng.next()`, `process_before_every_sampling`,
  `sampler.sample(p, x, c, uc, image_conditioning=p.txt2img_image_conditioning(x))`; with
  `enable_hr`: `reload_model_weights(info=hr_checkpoint_info)`, then `sample_hr_pass`:
  `is_hr_pass = True`, a new sampler, the latent interpolated to `hr_upscale_to_{y,x} // 8`
  ("Latent" upscaler: bilinear, no antialias), `txt2img_image_conditioning(samples)`, a new
  `ImageRNG` at the new shape and `noise = rng.next()`, `calculate_hr_conds()`, `before_hr`,
  `process_before_every_sampling`, `sampler.sample_img2img(p, samples, noise, hr_c, hr_uc,
  steps=hr_second_pass_steps or steps, image_conditioning=...)`, then `is_hr_pass = False`.
- `txt2img_image_conditioning(x, width=None, height=None)`: for 'hybrid'/'concat' (inpainting)
  models, a gray 0.5 image of the full size **VAE-encoded** (`images_tensor_to_samples`, global
  RNG) with a ones mask channel padded in front (1 + latent channels); otherwise zeros [B, 5, 1, 1].
- `setup_conds()`: c = `get_multicond_learned_conditioning(SdConditioning(prompts, width,
  height))`, uc = `get_learned_conditioning(SdConditioning(negative_prompts, ...,
  is_negative_prompt=True))`, over `total_steps`; in the hires pass (the refiner calling it) it
  recomputes the hires conds; `get_conds()` returns (hr_c, hr_uc) while `is_hr_pass`.
- `p.sd_model` is `shared.sd_model` (setter a no-op); `comment(text)` adds to `comments`;
  `extra_generation_params` is a dict.
Not mirrored: img2img, the image-space hires upscalers, styles, extra networks, override_settings,
conds caching, saving.
Stand-in addition: `Processed.samples` keeps the final latents for exact comparisons.
"""
from __future__ import annotations

import numpy as np
import torch

import modules.shared as shared
from modules import devices, prompt_parser, rng, sd_models, sd_samplers
from modules.sd_samplers_common import approximation_indexes, images_tensor_to_samples, samples_to_images_tensor
from modules.shared import opts

opt_C = 4
opt_f = 8


def txt2img_image_conditioning(sd_model, x, width, height):
    if sd_model.model.conditioning_key in {"hybrid", "concat"}:
        image_conditioning = torch.ones(x.shape[0], 3, height, width, device=x.device) * 0.5
        image_conditioning = images_tensor_to_samples(image_conditioning, approximation_indexes.get(opts.sd_vae_encode_method))
        image_conditioning = torch.nn.functional.pad(image_conditioning, (0, 0, 0, 0, 1, 0), value=1.0)
        return image_conditioning.to(x.dtype)
    return x.new_zeros(x.shape[0], 5, 1, 1, dtype=x.dtype, device=x.device)


class StableDiffusionProcessingTxt2Img:
    def __init__(self, *, prompt="", negative_prompt="", seed=1, batch_size=1, n_iter=1, steps=6, cfg_scale=7.0,
                 width=128, height=128, sampler_name="Euler", s_min_uncond=None, eta=None,
                 enable_hr=False, hr_scale=2.0, hr_second_pass_steps=0, denoising_strength=0.6,
                 hr_checkpoint_info=None, hr_sampler_name=None,
                 refiner_checkpoint_info=None, refiner_switch_at=None, scripts=None, script_args=None):
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.seed = seed
        self.subseed = -1
        self.subseed_strength = 0.0
        self.seed_resize_from_h = self.seed_resize_from_w = -1
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.steps = steps
        self.cfg_scale = cfg_scale
        self.width = width
        self.height = height
        self.sampler_name = sampler_name
        self.s_min_uncond = s_min_uncond if s_min_uncond is not None else opts.s_min_uncond
        self.eta = eta
        self.enable_hr = enable_hr
        self.hr_scale = hr_scale
        self.hr_second_pass_steps = hr_second_pass_steps
        self.denoising_strength = denoising_strength
        self.hr_checkpoint_info = hr_checkpoint_info
        self.hr_sampler_name = hr_sampler_name
        self.hr_upscale_to_x = self.hr_upscale_to_y = 0
        self.truncate_x = self.truncate_y = 0
        self.latent_scale_mode = None
        self.refiner_checkpoint_info = refiner_checkpoint_info
        self.refiner_switch_at = refiner_switch_at
        self.scripts = scripts
        self.script_args = list(script_args or [])
        self.extra_generation_params: dict = {}
        self.comments: dict = {}
        self.is_api = False
        self.is_hr_pass = False
        self.sampler = None
        self.c = self.uc = self.hr_c = self.hr_uc = None
        self.iteration = 0

    @property
    def sd_model(self):
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value):
        pass

    def comment(self, text):
        self.comments[text] = 1

    def txt2img_image_conditioning(self, x, width=None, height=None):
        self.is_using_inpainting_conditioning = self.sd_model.model.conditioning_key in {"hybrid", "concat"}
        return txt2img_image_conditioning(self.sd_model, x, width or self.width, height or self.height)

    def init(self, all_prompts, all_seeds, all_subseeds):
        if self.enable_hr:
            self.hr_upscale_to_x = int(self.width * self.hr_scale)
            self.hr_upscale_to_y = int(self.height * self.hr_scale)
            self.latent_scale_mode = {"mode": "bilinear", "antialias": False}
            self.extra_generation_params["Hires upscale"] = self.hr_scale
            self.extra_generation_params["Hires upscaler"] = "Latent"

    def _total_steps(self):
        config = sd_samplers.find_sampler_config(self.sampler_name)
        return config.total_steps(self.steps) if config else self.steps

    def setup_conds(self):
        if self.is_hr_pass:
            self.hr_c = None
            self.calculate_hr_conds()
            return
        prompts = prompt_parser.SdConditioning(self.prompts, width=self.width, height=self.height)
        negative_prompts = prompt_parser.SdConditioning(self.negative_prompts, width=self.width, height=self.height, is_negative_prompt=True)
        total_steps = self._total_steps()
        self.firstpass_steps = total_steps
        with devices.autocast():
            self.uc = prompt_parser.get_learned_conditioning(self.sd_model, negative_prompts, total_steps)
            self.c = prompt_parser.get_multicond_learned_conditioning(self.sd_model, prompts, total_steps)
        self.hr_c = self.hr_uc = None

    def calculate_hr_conds(self):
        if self.hr_c is not None:
            return
        prompts = prompt_parser.SdConditioning(self.prompts, width=self.hr_upscale_to_x, height=self.hr_upscale_to_y)
        negative_prompts = prompt_parser.SdConditioning(self.negative_prompts, width=self.hr_upscale_to_x, height=self.hr_upscale_to_y, is_negative_prompt=True)
        with devices.autocast():
            self.hr_uc = prompt_parser.get_learned_conditioning(self.sd_model, negative_prompts, self.firstpass_steps)
            self.hr_c = prompt_parser.get_multicond_learned_conditioning(self.sd_model, prompts, self.firstpass_steps)

    def get_conds(self):
        if self.is_hr_pass:
            return self.hr_c, self.hr_uc
        return self.c, self.uc

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.rng.next()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(p=self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning, image_conditioning=self.txt2img_image_conditioning(x))
        del x
        if not self.enable_hr:
            return samples
        with sd_models.SkipWritingToConfig():
            sd_models.reload_model_weights(info=self.hr_checkpoint_info)
        return self.sample_hr_pass(samples, seeds)

    def sample_hr_pass(self, samples, seeds):
        self.is_hr_pass = True
        target_width, target_height = self.hr_upscale_to_x, self.hr_upscale_to_y
        self.sampler = sd_samplers.create_sampler(self.hr_sampler_name or self.sampler_name, self.sd_model)
        samples = torch.nn.functional.interpolate(samples, size=(target_height // opt_f, target_width // opt_f),
                                                  mode=self.latent_scale_mode["mode"], antialias=self.latent_scale_mode["antialias"])
        image_conditioning = self.txt2img_image_conditioning(samples)
        self.rng = rng.ImageRNG(samples.shape[1:], self.seeds)
        noise = self.rng.next()
        with devices.autocast():
            self.calculate_hr_conds()
        if self.scripts is not None:
            self.scripts.before_hr(self)
            self.scripts.process_before_every_sampling(p=self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc)
        samples = self.sampler.sample_img2img(self, samples, noise, self.hr_c, self.hr_uc,
                                              steps=self.hr_second_pass_steps or self.steps, image_conditioning=image_conditioning)
        self.sampler = None
        self.is_hr_pass = False
        return samples


class Processed:
    def __init__(self, p, images, samples, seed, all_seeds):
        self.images = images
        self.samples = samples
        self.seed = seed
        self.all_seeds = all_seeds
        self.extra_generation_params = dict(p.extra_generation_params)
        self.comments = "".join(f"{comment}\n" for comment in p.comments)
        self.width, self.height = p.width, p.height


def process_images(p) -> Processed:
    shared.state.interrupted = shared.state.skipped = False
    if p.scripts is not None:
        p.scripts.before_process(p)
    return process_images_inner(p)


def process_images_inner(p) -> Processed:
    count = p.n_iter * p.batch_size
    p.all_prompts = list(p.prompt) if isinstance(p.prompt, list) else [p.prompt] * count
    p.all_negative_prompts = list(p.negative_prompt) if isinstance(p.negative_prompt, list) else [p.negative_prompt] * count
    p.all_seeds = [int(p.seed) + i for i in range(count)]
    p.all_subseeds = [0] * count
    if p.scripts is not None:
        p.scripts.process(p)

    images, latents = [], []
    with torch.no_grad():
        with devices.autocast():
            p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
        for n in range(p.n_iter):
            p.iteration = n
            window = slice(n * p.batch_size, (n + 1) * p.batch_size)
            p.prompts, p.negative_prompts = p.all_prompts[window], p.all_negative_prompts[window]
            p.seeds, p.subseeds = p.all_seeds[window], p.all_subseeds[window]
            latent_channels = getattr(shared.sd_model, "latent_channels", opt_C)
            p.rng = rng.ImageRNG((latent_channels, p.height // opt_f, p.width // opt_f), p.seeds)
            if p.scripts is not None:
                p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
                p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            p.setup_conds()
            with devices.autocast():
                samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds,
                                   subseeds=p.subseeds, subseed_strength=p.subseed_strength, prompts=p.prompts)
            x_samples = torch.stack([samples_to_images_tensor(s[None], 0, p.sd_model)[0] for s in samples]).float()
            x_samples = torch.clamp((x_samples + 1.0) / 2.0, min=0.0, max=1.0)
            if p.scripts is not None:
                p.scripts.postprocess_batch(p, x_samples, batch_number=n)
            for x_sample in x_samples:
                images.append((255.0 * np.moveaxis(x_sample.cpu().numpy(), 0, 2)).astype(np.uint8))
            latents.append(samples)

    res = Processed(p, images, torch.cat(latents), p.all_seeds[0], p.all_seeds)
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res
