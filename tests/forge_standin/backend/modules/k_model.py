"""backend/modules/k_model.py (dfdcbab6).

Facts encoded: `KModel` holds `diffusion_model` and `predictor` (:7-23); `apply_model(x, t,
c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs)` (:25-46) scales
the input with predictor.calculate_input(sigma, x), appends c_concat channels, casts to the
computation dtype, turns sigma into the discrete timestep with predictor.timestep (:35), passes
the other conditions (SDXL's y) as keywords and returns the denoised latent.
"""
import torch


class KModel(torch.nn.Module):
    def __init__(self, model, predictor, computation_dtype=torch.float32):
        super().__init__()
        self.diffusion_model = model
        self.predictor = predictor
        self.computation_dtype = computation_dtype

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = t
        xc = self.predictor.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat], dim=1)
        dtype = self.computation_dtype
        t = self.predictor.timestep(t).float()
        extra = {k: v.to(dtype) for k, v in kwargs.items()}
        out = self.diffusion_model(xc.to(dtype), t, context=c_crossattn.to(dtype), control=control,
                                   transformer_options=transformer_options, **extra).float()
        return self.predictor.calculate_denoised(sigma, out, x)
