"""Another extension's attn1 replace patch with the protocol of Forge's reference_only
(extensions-builtin/forge_preprocessor_reference/scripts/forge_reference.py at dfdcbab6; the
facts, not its code):
- in process_before_every_sampling it clones forge_objects.unet (:69), adds a conditioning
  modifier (:76-88, :188) that runs an extra sampling_function_inner pass with cond_scale 1 over
  the reference latent noised to the step's sigma (:83-84), and registers its attn1 patch with
  set_model_replace_all (:189), then assigns the clone back (:191);
- during that extra pass the patch records each location's (k, v) (:153-155); in the real pass
  it splits rows by cond_indices / uncond_indices, lets the cond rows attend over [own k ; the
  recorded k] and the uncond rows blend the same with their plain attention by style fidelity,
  and rebuilds the batch in cond_or_uncond order (:157-185).
"""
import torch

from backend import attention
from backend.sampling.sampling_function import sampling_function_inner


class ReferenceOnly:
    def __init__(self, latent: torch.Tensor, style_fidelity: float = 0.5):
        self.latent = latent  # [1, 4, h, w]
        self.style_fidelity = style_fidelity
        self.recording = False
        self.bank = {}
        self.recorded_passes = 0

    def attention(self, q, k, v, options):
        return attention.attention_function(q, k, v, options["n_heads"])

    def conditioning_modifier(self, model, x, timestep, uncond, cond, cond_scale, model_options, seed):
        self.recording = True
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
        try:
            sampling_function_inner(model, self.latent.to(x) + noise.to(x) * timestep[0], timestep, uncond, cond, 1,
                                    model_options, seed)
        finally:
            self.recording = False
        self.recorded_passes += 1
        return model, x, timestep, uncond, cond, cond_scale, model_options, seed

    def attn1(self, q, k, v, options):
        location = (options["block"][0], options["block"][1], options["block_index"])
        if self.recording:
            self.bank[location] = (k, v)
            return self.attention(q, k, v, options)
        ref_k, ref_v = self.bank[location]
        cond, uncond = options["cond_indices"], options["uncond_indices"]
        outputs = {}
        if cond:
            outputs[0] = self.attention(q[cond], torch.cat([k[cond], ref_k[:1].expand(len(cond), -1, -1)], 1),
                                        torch.cat([v[cond], ref_v[:1].expand(len(cond), -1, -1)], 1), options)
        if uncond:
            strong = self.attention(q[uncond], k[uncond], v[uncond], options)
            weak = self.attention(q[uncond], torch.cat([k[uncond], ref_k[:1].expand(len(uncond), -1, -1)], 1),
                                  torch.cat([v[uncond], ref_v[:1].expand(len(uncond), -1, -1)], 1), options)
            outputs[1] = weak + (strong - weak) * self.style_fidelity
        rows = q.shape[0] // len(options["cond_or_uncond"])
        parts, seen = [], {0: 0, 1: 0}
        for kind in options["cond_or_uncond"]:
            parts.append(outputs[kind][seen[kind]:seen[kind] + rows])
            seen[kind] += rows
        return torch.cat(parts)

    def process_before_every_sampling(self, p, **kwargs):
        # Closures, as Forge's patches are: UnetPatcher.clone deep-copies model_options, and a deep
        # copy keeps a function but would copy a bound method's object.
        def conditioning_modifier(*args):
            return self.conditioning_modifier(*args)

        def attn1(q, k, v, options):
            return self.attn1(q, k, v, options)

        unet = p.sd_model.forge_objects.unet.clone()
        unet.add_conditioning_modifier(conditioning_modifier)
        unet.set_model_replace_all(attn1, "attn1")
        p.sd_model.forge_objects.unet = unet
