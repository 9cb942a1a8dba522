"""FABRIC in AUTOMATIC1111's webui (v1.6-1.10): the engine attached to the loaded UNet per job.

How a job goes:
- start_job (from the script's process()): check that the loaded model has a UNet FABRIC can
  serve, detach whatever a failed job left, and open a _Job.
- on_cfg_denoiser (every denoiser call, before any UNet call): attach the engine to the UNet of the
  model that is loaded now (the refiner and the hires checkpoint swap it mid-job), encode the
  references at this latent size outside the UNet (safe under --medvram), and hand the row
  tracker the cond/uncond layout of the batch. A fault here, attaching included, turns FABRIC off
  for the rest of the job, which completes.
- finish_job (postprocess), script unload, and the next job's start: detach. postprocess is skipped
  when a job fails or is interrupted, which is why the next job and the unload detach too; while
  attached without a job, every UNet call passes through untouched.
"""
from __future__ import annotations

import sys

import torch

from modules import devices, script_callbacks, shared

from .. import engine as fabric_engine
from ..engine.layers import self_attention_layers
from ..engine.references import LatentCache, Reference
from ..engine.rows import RowTracker
from ..engine.schedule import DISLIKED, LIKED, Schedule
from .webui import REFERENCE_ROWS, CannotServe, CurrentJob, JobReport, forked_rng, opt, seed_from
from .webui import encode_reference as _encode_reference

NAME = "AUTOMATIC1111"
FUSES_REFERENCE_ROWS = True  # the "Where the feedback images run through the UNet" setting applies


def _vae_identity(sd_model) -> str:
    from modules import sd_vae

    return f"{getattr(sd_model, 'sd_model_hash', '')}|{getattr(sd_vae, 'loaded_vae_file', None)}|" \
           f"{getattr(shared.opts, 'sd_vae_encode_method', '')}"


_latent_caches: dict[str, LatentCache] = {}


def _latent_cache(sd_model) -> LatentCache:
    key = _vae_identity(sd_model)
    if key not in _latent_caches:
        _latent_caches.clear()  # one VAE at a time; the previous one's latents are useless now
        _latent_caches[key] = LatentCache()
    return _latent_caches[key]


def _project_kv_with_hypernetworks(module, hidden):
    """Keys and values as the webui's own attention computes them: hypernetworks first."""
    from modules.hypernetworks import hypernetwork

    context_k, context_v = hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, hidden)
    return module.to_k(context_k), module.to_v(context_v)


def _unet_of(sd_model):
    unet = getattr(getattr(sd_model, "model", None), "diffusion_model", None)
    if unet is None or not self_attention_layers(unet):
        raise CannotServe(f"{type(sd_model).__name__} has no UNet with self-attention layers (attn1) to attach to")
    return unet


class _Job:
    """FABRIC's state for one process_images call."""

    def __init__(self, p, settings, images: dict, report: JobReport):
        self.p = p
        self.settings = settings
        self.report = report
        self.rows = RowTracker()
        self.fabric: fabric_engine.Fabric | None = None
        self._engines: list[fabric_engine.Fabric] = []  # one per model the job attached to
        report.feedback_calls = lambda: self.calls_with_feedback
        self.images = images
        self._concat: dict[tuple[int, int], torch.Tensor] = {}
        self._model: str | None = None
        self._broken = False  # attaching failed: FABRIC is off for the rest of the job

    def references(self, items) -> list:
        return [
            Reference(
                key=item.id,
                encode=lambda h, w, image=self.images[item.id], key=item.id: _encode_reference(image, key, h, w),
                weight=item.weight,
            )
            for item in items
        ]

    # engine for the model loaded now

    def ensure_attached(self, height: int, width: int) -> fabric_engine.Fabric:
        unet = _unet_of(shared.sd_model)
        # A same-config refiner/hires checkpoint is loaded into the same model object: same UNet,
        # new weights, text encoder and VAE; the empty prompt and the latents must follow it.
        model = _vae_identity(shared.sd_model)
        if self.fabric is not None and self.fabric.unet is unet and self.fabric.attached and self._model == model:
            return self.fabric
        self.detach()
        self._model = model
        self._concat.clear()
        sd_model = shared.sd_model
        settings = self.settings
        self.fabric = fabric_engine.Fabric(
            unet,
            references={LIKED: self.references(settings.liked), DISLIKED: self.references(settings.disliked)},
            schedule=Schedule(
                strength=settings.strength, start=settings.start, end=settings.end,
                min_strength=settings.min_strength, neg_scale=settings.neg_scale,
            ),
            alphas_cumprod=sd_model.alphas_cumprod,
            reference_kwargs=self._empty_prompt(sd_model, height, width),
            reference_concat=self._concat_for if getattr(unet, "in_channels", 4) != self._latent_channels() else None,
            rows=self.rows.take,
            latent_cache=_latent_cache(sd_model),
            token_budget=settings.token_budget,
            reference_batch=int(opt("fabric_reference_batch", 8)),
            fuse_reference_rows=REFERENCE_ROWS.get(opt("fabric_reference_rows", "Auto")),
            project_kv=_project_kv_with_hypernetworks,
            upcast=bool(opt("upcast_attn", False)),
            on_failure=self.on_failure,
        ).attach()
        self._engines.append(self.fabric)
        return self.fabric

    @property
    def calls_with_feedback(self) -> int:
        return sum(engine.calls_with_feedback for engine in self._engines)

    def _latent_channels(self) -> int:
        return int(getattr(shared.sd_model, "latent_channels", 4))

    def _empty_prompt(self, sd_model, height: int, width: int) -> dict:
        from modules import prompt_parser

        with torch.no_grad(), devices.autocast():
            cond = sd_model.get_learned_conditioning(prompt_parser.SdConditioning([""], width=width * 8, height=height * 8))
        if isinstance(cond, dict):  # SDXL: crossattn and the pooled/size vector
            return {"context": cond["crossattn"], "y": cond["vector"]}
        return {"context": cond}

    def _concat_for(self, height: int, width: int) -> torch.Tensor:
        return self._concat[(height, width)]

    def _prepare_concat(self, height: int, width: int) -> None:
        """Extra input channels of inpainting UNets: the webui's txt2img conditioning (mask all
        ones over a gray image), computed outside the UNet call."""
        if (height, width) in self._concat:
            return
        dummy = torch.zeros(1, self._latent_channels(), height, width, device=shared.device)
        with forked_rng(), torch.no_grad(), devices.autocast():
            torch.manual_seed(seed_from(f"txt2img_image_conditioning {height}x{width}"))
            cond = self.p.txt2img_image_conditioning(dummy, width=width * 8, height=height * 8)
        self._concat[(height, width)] = cond

    # per denoiser call

    def on_cfg_denoiser(self, params) -> None:
        self.rows.clear()
        hires_pass = bool(getattr(self.p, "is_hr_pass", False))
        if hires_pass and not self.settings.hires:
            return
        self.report.model_call(hires_pass)
        if self._broken:
            return
        height, width = params.x.shape[-2:]
        try:
            engine = self.ensure_attached(height, width)
        except Exception as error:  # noqa: BLE001 - a model FABRIC cannot serve must not break the job
            self._broken = True
            self.detach()
            self.report.failed(error, applied=self._applied())
            return
        if engine.failure is not None:
            return
        try:
            for name in (LIKED, DISLIKED):
                engine.reference_latents(name, height, width)  # encode here, not inside the UNet
            if engine.reference_concat is not None:
                self._prepare_concat(height, width)
        except Exception as error:  # noqa: BLE001 - a broken reference must not break the job
            engine.fail(error)
            return
        text_cond = params.text_cond
        n_cond = (text_cond["crossattn"] if isinstance(text_cond, dict) else text_cond).shape[0]
        self.rows.new_layout(n_cond, params.x.shape[0])

    def _applied(self) -> bool:
        return self.calls_with_feedback > 0

    def on_failure(self, error: BaseException) -> None:
        self.report.failed(error, applied=self._applied())

    def detach(self) -> None:
        if self.fabric is not None:
            self.fabric.detach()
        self.rows.clear()


_current = CurrentJob()


def start_job(p, settings, images: dict, report: JobReport) -> None:
    """Open FABRIC's job for p; CannotServe when the loaded model has no UNet FABRIC can attach to."""
    end_job()
    _unet_of(shared.sd_model)
    _current.open(_Job(p, settings, images, report))


def before_sampling(p, **kwargs) -> None:
    """A1111 attaches from on_cfg_denoiser, where the latent size and the loaded model are known."""


def finish_job(p) -> None:
    job = _current.of(p)
    end_job()
    if job is not None and job.fabric is not None:
        print(
            f"FABRIC: {job.calls_with_feedback} UNet calls with feedback, "
            f"{job.fabric.reference_passes} reference passes "
            f"({job.fabric.fused_calls} of the calls carried them)",
            file=sys.stderr,
        )


def end_job() -> None:
    """Detach FABRIC from the job's UNet and from every loaded model's UNet; idempotent."""
    job = _current.take()
    if job is not None:
        job.detach()
    for unet in _loaded_unets():
        fabric_engine.detach(unet)


def _loaded_unets():
    """The UNets of the loaded models, without loading one (shared.sd_model loads lazily)."""
    from modules import sd_models

    data = getattr(sd_models, "model_data", None)
    models = [getattr(data, "sd_model", None), *getattr(data, "loaded_sd_models", [])]
    unets = []
    for model in models:
        unet = getattr(getattr(model, "model", None), "diffusion_model", None)
        if unet is not None and all(unet is not u for u in unets):
            unets.append(unet)
    return unets


def on_cfg_denoiser(params) -> None:
    job = _current.job
    if job is None:
        return
    denoiser_p = getattr(getattr(params, "denoiser", None), "p", job.p)
    if denoiser_p is not job.p:
        return
    job.on_cfg_denoiser(params)


def register_callbacks() -> None:
    script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
