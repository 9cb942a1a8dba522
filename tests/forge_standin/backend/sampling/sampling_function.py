"""backend/sampling/sampling_function.py (dfdcbab6), reduced to the row layout of UNet calls.

Facts encoded:
- `calc_cond_uncond_batch` (:154-289): the conds (COND = 0) and then the uncond (UNCOND = 1) are
  queued; the indices that can be batched together are reversed (:187), so a plain call runs
  [uncond rows ; cond rows] and `cond_or_uncond` is [1, 0]; with too little free memory fewer
  entries run per call (:208-213; here `max_entries`). Each call gets a shallow copy of
  model_options["transformer_options"] (:238-240) with cond_or_uncond, sigmas (the sigma per
  image, not t), cond_mark, cond_indices and uncond_indices (:253-257; :140-151 for the
  indices: each entry spans batch-size rows), then `model.apply_model(input_x, timestep_, **c)`.
- `sampling_function_inner` (:292-322): with cond_scale 1 (and no disable_cfg1_optimization) the
  uncond is dropped (:295), sampler_pre_cfg_function entries run first (:300-301), CFG combines
  the predictions.
- `sampling_function` (:325-363): the UnetPatcher's conditioning_modifiers run in order on
  (model, x, timestep, uncond, cond, cond_scale, model_options, seed) before the CFG pass.
- `sampling_prepare(unet, x)` (:366-398) loads the patcher's model (and its control models) where
  it samples; the sampler calls it before sampling (sd_samplers_kdiffusion.py:137-138) and again
  after a refiner swap (sd_samplers_common.py:210). Here it counts its calls per patcher.

A cond here is a dict of the UNet's conditions for the batch: {"c_crossattn": [B, 77, C]} plus
{"y": [B, adm]} for SDXL-like models.
"""
import math

import torch

COND = 0
UNCOND = 1


def compute_cond_indices(cond_or_uncond, sigmas):
    rows = int(sigmas.shape[0])
    cond_indices, uncond_indices = [], []
    for i, kind in enumerate(cond_or_uncond):
        (cond_indices if kind == COND else uncond_indices).extend(range(i * rows, (i + 1) * rows))
    return cond_indices, uncond_indices


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options, max_entries=None):
    out = {COND: torch.zeros_like(x_in), UNCOND: torch.zeros_like(x_in)}
    count = {COND: 0, UNCOND: 0}
    to_run = [(c, COND) for c in cond] + [(u, UNCOND) for u in (uncond or [])]
    while to_run:
        batch = list(range(len(to_run)))
        batch.reverse()
        batch = batch[:max_entries] if max_entries else batch
        entries = [to_run[i] for i in batch]
        for i in sorted(batch, reverse=True):
            to_run.pop(i)
        kinds = [kind for _, kind in entries]
        c = {key: torch.cat([conds[key] for conds, _ in entries]) for key in entries[0][0]}
        options = model_options["transformer_options"].copy()
        options["cond_or_uncond"] = kinds[:]
        options["sigmas"] = timestep
        options["cond_mark"] = torch.tensor([kind for kind in kinds for _ in range(x_in.shape[0])])
        options["cond_indices"], options["uncond_indices"] = compute_cond_indices(kinds, timestep)
        output = model.apply_model(torch.cat([x_in] * len(entries)), torch.cat([timestep] * len(entries)),
                                   transformer_options=options, **c).chunk(len(entries))
        for o, kind in zip(output, kinds):
            out[kind] += o
            count[kind] += 1
    return tuple(out[k] / max(count[k], 1) for k in (COND, UNCOND))


def sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None, max_entries=None):
    if math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False):
        uncond_ = None
    else:
        uncond_ = uncond
    for fn in model_options.get("sampler_pre_cfg_function", []):
        model, cond, uncond_, x, timestep, model_options = fn(model, cond, uncond_, x, timestep, model_options)
    cond_pred, uncond_pred = calc_cond_uncond_batch(model, cond, uncond_, x, timestep, model_options, max_entries)
    return uncond_pred + (cond_pred - uncond_pred) * cond_scale


prepared: list = []  # the patchers sampling_prepare was called with, in order


def sampling_prepare(unet, x):
    prepared.append(unet)


def sampling_function(unet_patcher, x, sigma, uncond, cond, cond_scale, seed=0, max_entries=None):
    """The CFG denoiser's call into Forge's backend for one step (x and sigma of the batch)."""
    model = unet_patcher.model
    model_options = unet_patcher.model_options
    timestep = sigma
    for modifier in model_options.get("conditioning_modifiers", []):
        model, x, timestep, uncond, cond, cond_scale, model_options, seed = modifier(
            model, x, timestep, uncond, cond, cond_scale, model_options, seed)
    return sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options, seed, max_entries)
