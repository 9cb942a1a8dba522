"""FABRIC in Forge (lllyasviel/stable-diffusion-webui-forge, read at main dfdcbab6): patches on a
clone of the job's UnetPatcher, Forge's own convention.

Facts relied on (file:line at dfdcbab6):
- Before every sampling pass Forge resets `p.sd_model.forge_objects` from
  `forge_objects_after_applying_lora` and then calls the scripts' process_before_every_sampling
  (modules/processing.py:1373-1377; hires pass :1510-1526, where it is called twice around the
  reset). Extensions clone `forge_objects.unet` there, patch the clone and assign it back, as
  reference_only (extensions-builtin/forge_preprocessor_reference/scripts/forge_reference.py:69,
  :187-191) and StyleAlign (extensions-builtin/sd_forge_stylealign/scripts/forge_stylealign.py:38,
  :88-90) do. Nothing on the shared model changes, and the next pass starts without FABRIC.
- `UnetPatcher.clone` deep-copies `model_options` (backend/patcher/unet.py:26-35), so FABRIC's
  patches are objects whose deepcopy is themselves: their job state must not be duplicated.
- The UNet (backend/nn/unet.py:696-763) calls every block modifier with (h, 'before'|'after',
  transformer_options) around each block, after setting transformer_options["block"] to
  ("input", i), ("middle", 0), ("output", i) and finally ("last", 0) (:709-762). So ("input", 0)
  'before' is the start of a UNet call and ("last", 0) 'after' its end. transformer_options is a
  per-call copy (backend/sampling/sampling_function.py:238-240) carrying the rows:
  cond_or_uncond (COND=0, UNCOND=1; uncond first in a plain call), cond_indices, uncond_indices,
  and sigmas (:253-257); with CFG 1 no uncond rows run at all (:295).
- A transformer block calls the attn1 replace patch registered under (block, number, block_index)
  or (block, number) instead of attn1.forward, with q, k, v already projected and
  transformer_options plus n_heads and dim_head, and applies to_out to its result
  (backend/nn/unet.py:183-235; block_index from SpatialTransformer, :320). Patches live in
  transformer_options["patches_replace"]["attn1"] (backend/patcher/base.py:15-34).
- The discrete timestep of a sigma is `predictor.timestep(sigma)` (backend/modules/k_model.py:35,
  k_prediction.py:148-151, nearest of the 1000), and the UNet's input is the latent scaled to
  unit variance, x / sqrt(sigma^2 + 1) (k_prediction.py:74-79): a reference noised by
  fabric.engine.noise.noised_latent with abar = 1 / (1 + sigma^2) (k_prediction.py:129) is that input.
- The refiner: mid-pass, the CFG denoiser swaps `shared.sd_model` (which is `p.sd_model`,
  processing.py:262-264) for the refiner checkpoint, loads its patcher with sampling_prepare
  (sd_samplers_common.py:166-211) and samples on with that model's own `forge_objects.unet`
  (sd_samplers_kdiffusion.py:61-64, sampling_function.py:326), which no process_before_every_sampling
  saw. on_cfg_denoiser fires after the swap and before the UNet call
  (sd_samplers_cfg_denoiser.py:171-184).

How FABRIC uses them: process_before_every_sampling encodes the references at the pass's latent
size and the empty prompt (VAE and text encoder run before the sampler loads the UNet), then adds
one block modifier to a clone of the UNet patcher. At the start of each UNet call it reads the
rows and the timestep; if a set is needed (weight > 0, rows of its kind present: liked for cond
rows, disliked for uncond rows) it runs that set's reference pass through the same UNet, where
the UNet is, recording every attn1's keys and values and stopping after the last attn1, and
installs its attn1 replace patches for this call only, wrapping any replace patch already there
(reference_only's, StyleAlign's). Otherwise the call runs untouched. When a refiner takes over
mid-pass, on_cfg_denoiser patches a clone of the refiner's patcher the same way (its VAE encodes
the references anew), so the feedback follows the model as it does in AUTOMATIC1111's webui.
See README "Forge" for how FABRIC composes with another extension's attn1 patch.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import torch

from modules import devices, prompt_parser

from ..engine.injection import attend_with_references, blend_with_references
from ..engine.noise import noised_latent
from ..engine.references import LatentCache, Reference
from ..engine.schedule import DISLIKED, LIKED, Schedule
from ..engine.tokens import pool_tokens
from .webui import CannotServe, CurrentJob, JobReport, forked_rng, opt, seed_from
from .webui import encode_reference as _encode_reference

NAME = "Forge"
FUSES_REFERENCE_ROWS = False  # references always run in UNet calls of their own here

Location = tuple  # (block name, block number, transformer index), as the replace patches are keyed


def _forge_attention(q, k, v, heads):
    """Forge's attention as attn1.forward calls it (backend/nn/unet.py:5, :154), looked up at call
    time."""
    from backend.nn import unet as forge_unet

    return forge_unet.attention_function(q, k, v, heads, None)


def _upcast() -> bool:
    """Forge upcasts attention to float32 unless told not to (backend/attention.py:25-30)."""
    from backend import attention

    return attention.get_attn_precision() == torch.float32


def attn1_locations(diffusion_model) -> list[Location]:
    """Where attn1 replace patches apply: every self-attention transformer block of the UNet, by
    the keys the UNet gives them (block, number, index in its SpatialTransformer)."""
    blocks = [("input", i, b) for i, b in enumerate(getattr(diffusion_model, "input_blocks", []))]
    middle = getattr(diffusion_model, "middle_block", None)
    blocks += [("middle", 0, middle)] if middle is not None else []
    blocks += [("output", i, b) for i, b in enumerate(getattr(diffusion_model, "output_blocks", []))]
    locations = []
    for name, number, block in blocks:
        for layer in block:
            for index, transformer in enumerate(getattr(layer, "transformer_blocks", [])):
                if not getattr(transformer, "disable_self_attn", False):
                    locations.append((name, number, index))
    return locations


def _servable(sd_model):
    """(UnetPatcher, its KModel, attn1 locations) of a model FABRIC can serve; CannotServe else."""
    patcher = getattr(getattr(sd_model, "forge_objects", None), "unet", None)
    kmodel = getattr(patcher, "model", None)
    predictor = getattr(kmodel, "predictor", None)
    locations = attn1_locations(getattr(kmodel, "diffusion_model", None))
    if not locations:
        raise CannotServe(f"{type(sd_model).__name__}'s diffusion model has no UNet self-attention (attn1) FABRIC can use")
    from backend.modules.k_prediction import Prediction

    # Discrete-time eps/v models (SD1.x, SD2.x, SDXL); EDM and flow models have no abar schedule.
    if type(predictor) is not Prediction or getattr(predictor, "prediction_type", None) == "const":
        raise CannotServe(f"{type(sd_model).__name__} samples with {type(predictor).__name__}, not a discrete noise schedule")
    return patcher, kmodel, locations


class _Done(Exception):
    """Raised by the last attn1 of a reference pass: the rest of the UNet is not needed."""


class _Shared:
    """Patch objects that UnetPatcher.clone's deepcopy keeps as they are (one job, one state)."""

    def __deepcopy__(self, memo):
        return self


@dataclass
class _Pass:
    """What one sampling pass hands its UNet calls: the model and the reference inputs."""

    kmodel: object
    locations: list
    alphas_cumprod: torch.Tensor
    reference_kwargs: dict  # UNet keyword inputs of the empty prompt, batch 1, on the CPU
    concat: torch.Tensor | None  # extra input channels of inpainting UNets, [1, c, h, w]
    latent_hw: tuple


@dataclass
class _Call:
    """FABRIC's plan for one UNet call; released at its end."""

    groups: list  # (set name, row indices tensor)
    states: dict  # set name -> {location: (keys [1, M, inner], values, bias [M])}
    patches_before: object  # transformer_options["patches_replace"] as the call had it
    open: bool = True


class _BlockModifier(_Shared):
    def __init__(self, job: "_Job", run: _Pass):
        self.job = job
        self.run = run

    def __call__(self, h, flag, transformer_options):
        block = transformer_options.get("block")
        if block == ("input", 0) and flag == "before":
            self.job.begin_call(self.run, h, transformer_options)
        elif block == ("last", 0) and flag == "after":
            self.job.end_call(transformer_options)
        return h


class _Attn1(_Shared):
    """FABRIC's attn1 replace patch for one location during one UNet call."""

    def __init__(self, job: "_Job", call: _Call, location: Location, inner):
        self.job = job
        self.call = call
        self.location = location
        self.inner = inner  # the replace patch that was there (another extension's), or None

    def host(self, q, k, v, options):
        return self.inner(q, k, v, options) if self.inner is not None else _forge_attention(q, k, v, options["n_heads"])

    def __call__(self, q, k, v, options):
        if not self.call.open or self.job.failure is not None:
            return self.host(q, k, v, options)
        try:
            return self.job.inject(self.call, self.location, q, k, v, options, self)
        except Exception as error:  # noqa: BLE001 - a fault must not take the generation down
            self.job.fail(error)
            return self.host(q, k, v, options)


class _Recorder(_Shared):
    """attn1 replace patch of a reference pass: keeps each location's keys and values."""

    def __init__(self, locations: list):
        self.locations = set(locations)
        self.recorded: dict = {}

    def __call__(self, q, k, v, options):
        block = options["block"]
        self.recorded[(block[0], block[1], options["block_index"])] = (k, v)
        if self.locations <= set(self.recorded):
            raise _Done
        return _forge_attention(q, k, v, options["n_heads"])


@dataclass
class _Job:
    """FABRIC's state for one process_images call."""

    p: object
    settings: object
    images: dict
    report: JobReport
    latents: LatentCache = field(default_factory=LatentCache)
    failure: BaseException | None = None
    calls_with_feedback: int = 0
    reference_passes: int = 0
    current: _Call | None = None
    closed: bool = False
    patched: object = None  # the patcher FABRIC last assigned to forge_objects.unet
    latents_of: object = None  # the model whose VAE encoded self.latents

    def __post_init__(self):
        s = self.settings
        self.schedule = Schedule(strength=s.strength, start=s.start, end=s.end, min_strength=s.min_strength,
                                 neg_scale=s.neg_scale)
        self.references = {LIKED: self._references(s.liked), DISLIKED: self._references(s.disliked)}
        self.report.feedback_calls = lambda: self.calls_with_feedback

    def _references(self, items) -> list[Reference]:
        refs = [Reference(key=item.id, weight=item.weight,
                          encode=lambda h, w, image=self.images[item.id], key=item.id: self._encode(image, key, h, w))
                for item in items if item.weight > 0]
        return sorted(refs, key=lambda r: (r.key, r.weight))  # order-independent results

    def _encode(self, image, key, height, width):
        return _encode_reference(image, key, height, width, self.p.sd_model)

    # -- per sampling pass (process_before_every_sampling) ----------------------------------

    def before_sampling(self, x: torch.Tensor) -> bool:
        """Patch a clone of the pass's UnetPatcher; True when this call assigned one."""
        p = self.p
        if self.closed or self.failure is not None or (getattr(p, "is_hr_pass", False) and not self.settings.hires):
            return False
        try:
            patcher, kmodel, locations = _servable(p.sd_model)
            if self._carried_by(patcher):
                return False  # this pass's patcher has FABRIC already (Forge calls the hook twice in hires)
            if p.sd_model is not self.latents_of:  # another checkpoint (hires, refiner): its own VAE
                self.latents.clear()
                self.latents_of = p.sd_model
            height, width = x.shape[-2:]
            cfg = getattr(p, "hr_cfg", p.cfg_scale) if getattr(p, "is_hr_pass", False) else p.cfg_scale
            # The VAE runs now, before the sampler loads the UNet; with CFG 1 Forge runs no uncond
            # rows (sampling_function.py:295, processing.py:499), so the disliked set is not needed.
            for name in (LIKED,) if math.isclose(cfg, 1.0) else (LIKED, DISLIKED):
                for ref in self.references[name]:
                    self.latents.latent(ref, height, width)
            in_channels = getattr(kmodel.diffusion_model, "in_channels", x.shape[1])
            run = _Pass(
                kmodel=kmodel,
                locations=locations,
                alphas_cumprod=1.0 / (1.0 + kmodel.predictor.sigmas.detach().double().cpu() ** 2),
                reference_kwargs=self._empty_prompt(height, width),
                concat=self._concat(x, height, width) if in_channels != x.shape[1] else None,
                latent_hw=(height, width),
            )
            clone = patcher.clone()
            clone.add_block_modifier(_BlockModifier(self, run))
            p.sd_model.forge_objects.unet = self.patched = clone
            return True
        except Exception as error:  # noqa: BLE001 - the job goes on without FABRIC
            self.fail(error)
            return False

    def _carried_by(self, patcher) -> bool:
        """Whether the patcher has this job's block modifier (clones share it: _Shared)."""
        modifiers = patcher.model_options.get("transformer_options", {}).get("block_modifiers", [])
        return any(isinstance(m, _BlockModifier) and m.job is self for m in modifiers)

    def follow_model(self, x: torch.Tensor) -> None:
        """Before a UNet call: if the sampler now runs another model's patcher (a refiner took
        over), patch that one too and load it again, as the swap did (sampling_prepare), since
        encoding the references may have moved models."""
        patcher = self.p.sd_model.forge_objects.unet
        # Per step, so the usual answer is cheap: FABRIC's clone, or a clone of it that a later
        # script made, is in place.
        if patcher is self.patched or self._carried_by(patcher) or not self.before_sampling(x):
            return
        from backend.sampling.sampling_function import sampling_prepare

        sampling_prepare(self.patched, x)

    def _empty_prompt(self, height: int, width: int) -> dict:
        with torch.no_grad(), devices.autocast():
            cond = self.p.sd_model.get_learned_conditioning(
                prompt_parser.SdConditioning([""], width=width * 8, height=height * 8))
        if isinstance(cond, dict):  # SDXL: crossattn and the pooled/size vector y (condition.py:104-111)
            return {"context": cond["crossattn"].detach().cpu(), "y": cond["vector"].detach().cpu()}
        return {"context": cond.detach().cpu()}

    def _concat(self, x, height: int, width: int) -> torch.Tensor:
        """Inpainting UNets' extra channels for a reference: Forge's txt2img conditioning, mask all
        ones over a gray image (modules/processing.py:103-113), with a forked RNG."""
        from modules import processing

        with forked_rng(), torch.no_grad():
            torch.manual_seed(seed_from(f"txt2img_image_conditioning {height}x{width}"))
            cond = processing.txt2img_image_conditioning(self.p.sd_model, x[:1], width * 8, height * 8)
        return cond.detach().cpu()

    # -- per UNet call -------------------------------------------------------------------------

    def begin_call(self, run: _Pass, h: torch.Tensor, options: dict) -> None:
        self.current = None
        if self.closed or self.failure is not None:
            return
        try:
            self.current = self._plan(run, h, options)
        except Exception as error:  # noqa: BLE001
            self.fail(error)
            self.current = None

    def _plan(self, run: _Pass, h: torch.Tensor, options: dict) -> _Call | None:
        sigma = options["sigmas"].flatten()[:1]
        t = float(run.kmodel.predictor.timestep(sigma).flatten()[0])
        weights = self.schedule.weights(t, len(run.alphas_cumprod))
        rows = {LIKED: options.get("cond_indices", []), DISLIKED: options.get("uncond_indices", [])}
        wanted = [name for name in (LIKED, DISLIKED) if rows[name] and weights[name] > 0 and self.references[name]]
        if not wanted:
            return None
        states = {name: self._set_states(run, name, t, weights[name], h) for name in wanted}
        groups = [(name, torch.tensor(rows[name], device=h.device)) for name in wanted]
        call = _Call(groups=groups, states=states, patches_before=options.get("patches_replace"))
        before = call.patches_before or {}
        attn1 = dict(before.get("attn1", {}))
        for location in run.locations:
            inner = attn1.get(location, attn1.get(location[:2]))
            attn1[location] = _Attn1(self, call, location, inner)
        options["patches_replace"] = {**before, "attn1": attn1}
        return call

    def end_call(self, options: dict) -> None:
        call, self.current = self.current, None
        if call is None:
            return
        call.open = False
        call.states = {}
        if self.failure is None:
            self.calls_with_feedback += 1
        if call.patches_before is None:
            options.pop("patches_replace", None)
        else:
            options["patches_replace"] = call.patches_before

    def _set_states(self, run: _Pass, name: str, t: float, weight: float, h: torch.Tensor) -> dict:
        """Each location's reference keys, values and log-weight bias for one set at timestep t."""
        refs = self.references[name]
        recorded = self._reference_pass(run, refs, t, h)
        states = {}
        for location, (keys, values) in recorded.items():
            log_pool = 0.0
            budget = self.settings.token_budget
            if budget > 0 and keys.shape[0] * keys.shape[1] > budget:
                keys, log_pool = pool_tokens(keys, budget, run.latent_hw)
                values, _ = pool_tokens(values, budget, run.latent_hw)
            per_ref = torch.tensor([math.log(weight * r.weight) + log_pool for r in refs], dtype=torch.float32)
            bias = per_ref.repeat_interleave(keys.shape[1]).to(keys.device)
            states[location] = (keys.reshape(1, -1, keys.shape[-1]), values.reshape(1, -1, values.shape[-1]), bias)
        return states

    def _reference_pass(self, run: _Pass, refs: list[Reference], t: float, h: torch.Tensor) -> dict:
        """The references noised to t through the UNet on h's device and dtype with the empty
        prompt; {location: (keys [R, N, inner], values)}. Reference-batch sized calls, halved on
        out-of-memory."""
        device, dtype = h.device, h.dtype
        height, width = run.latent_hw
        z = torch.stack([noised_latent(self.latents.latent(r, height, width).to(device), r.key, t, run.alphas_cumprod)
                         for r in refs]).to(dtype)
        if run.concat is not None:
            z = torch.cat([z, run.concat.to(device=device, dtype=dtype).expand(len(refs), -1, -1, -1)], dim=1)
        batch = max(1, int(opt("fabric_reference_batch", 8)))
        while True:
            try:
                return self._record_chunks(run, z, t, batch)
            except torch.OutOfMemoryError:
                if batch == 1:
                    raise
                batch = max(1, batch // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def _record_chunks(self, run: _Pass, z: torch.Tensor, t: float, batch: int) -> dict:
        parts: dict = {}
        unet = run.kmodel.diffusion_model
        for begin in range(0, z.shape[0], batch):
            chunk = z[begin:begin + batch]
            n = chunk.shape[0]
            kwargs = {k: v.to(device=z.device, dtype=z.dtype).expand(n, *v.shape[1:]) for k, v in run.reference_kwargs.items()}
            recorder = _Recorder(run.locations)
            # Only the recorder: the references meet no other extension's patches (and no control).
            options = {"patches_replace": {"attn1": {location: recorder for location in run.locations}}}
            try:
                with torch.no_grad():
                    unet(chunk, torch.full((n,), float(t), device=z.device), control=None,
                         transformer_options=options, **kwargs)
            except _Done:
                pass
            missing = set(run.locations) - set(recorder.recorded)
            if missing:
                raise RuntimeError(f"FABRIC: the reference pass did not reach attn1 at {sorted(missing)[:3]}")
            self.reference_passes += 1
            for location, kv in recorder.recorded.items():
                parts.setdefault(location, []).append(kv)
        return {loc: tuple(torch.cat(side) for side in zip(*kvs)) for loc, kvs in parts.items()}

    def inject(self, call: _Call, location: Location, q, k, v, options, patch: _Attn1):
        heads = options["n_heads"]
        out = patch.host(q, k, v, options) if patch.inner is not None else None
        result = torch.empty_like(q) if out is None else out.clone()
        covered = torch.zeros(q.shape[0], dtype=torch.bool, device=q.device)
        for name, rows in call.groups:
            ref_k, ref_v, bias = call.states[name][location]
            rq, rk, rv = q.index_select(0, rows), k.index_select(0, rows), v.index_select(0, rows)
            if out is None:
                rows_out = attend_with_references(rq, rk, rv, ref_k, ref_v, bias, heads, upcast=_upcast())
            else:
                rows_out = blend_with_references(out.index_select(0, rows), rq, rk, ref_k, ref_v, bias, heads)
            result.index_copy_(0, rows, rows_out.to(result.dtype))
            covered[rows] = True
        if out is None and not bool(covered.all()):
            plain = (~covered).nonzero().flatten()
            result.index_copy_(0, plain, _forge_attention(q.index_select(0, plain), k.index_select(0, plain),
                                                          v.index_select(0, plain), heads).to(result.dtype))
        return result

    # -- faults and the end ----------------------------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """FABRIC is off for the rest of the job, which goes on; said once."""
        if self.failure is None:
            self.failure = error
            self.report.failed(error, applied=self.calls_with_feedback > 0)

    def close(self) -> None:
        """Nothing outlives the job: the patches left on the last clone pass everything through."""
        self.closed = True
        if self.current is not None:
            self.current.open = False
            self.current.states = {}
            self.current = None
        self.latents.clear()
        self.latents_of = self.patched = None
        self.references = {LIKED: [], DISLIKED: []}
        self.images = {}


_current = CurrentJob()


def start_job(p, settings, images: dict, report: JobReport) -> None:
    """Open FABRIC's job for p; CannotServe when the loaded model is not one FABRIC can serve."""
    end_job()
    _servable(p.sd_model)
    _current.open(_Job(p, settings, images, report))


def before_sampling(p, **kwargs) -> None:
    job = _current.of(p)
    if job is not None and "x" in kwargs:
        job.before_sampling(kwargs["x"])


def finish_job(p) -> None:
    job = _current.of(p)
    end_job()
    if job is not None:
        print(f"FABRIC: {job.calls_with_feedback} UNet calls with feedback, {job.reference_passes} reference passes",
              file=sys.stderr)


def end_job() -> None:
    """Close the current job; idempotent. Forge drops the patched clone at the next pass itself."""
    job = _current.take()
    if job is not None:
        job.close()


def on_cfg_denoiser(params) -> None:
    job = _current.job
    if job is None or job.closed or getattr(getattr(params, "denoiser", None), "p", job.p) is not job.p:
        return
    hires_pass = bool(getattr(job.p, "is_hr_pass", False))
    if hires_pass and not job.settings.hires:
        return
    job.report.model_call(hires_pass)
    if job.failure is not None:
        return
    try:
        job.follow_model(params.x)
    except Exception as error:  # noqa: BLE001 - the job goes on without FABRIC
        job.fail(error)


def register_callbacks() -> None:
    """Everything goes through the UnetPatcher of each pass; the callback only notices a refiner."""
    from modules import script_callbacks

    script_callbacks.on_cfg_denoiser(on_cfg_denoiser)

