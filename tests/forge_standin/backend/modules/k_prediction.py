"""backend/modules/k_prediction.py (dfdcbab6), reduced to the discrete schedule of SD1.x/SDXL.

Facts encoded:
- `Prediction(prediction_type='epsilon', beta_schedule='linear', linear_start=0.00085,
  linear_end=0.012, timesteps=1000)` registers alphas_cumprod, sigmas = sqrt((1 - abar) / abar)
  and log_sigmas (:113-134); sigma_min/sigma_max are sigmas[0]/sigmas[-1].
- `timestep(sigma)` is the index of the nearest log sigma (:148-151): an integer t.
- `calculate_input(sigma, x) = x / sqrt(sigma^2 + sigma_data^2)` (:74-79), `calculate_denoised`
  for eps: x - out * sigma (:81-92). Other classes (PredictionEDM, flow) exist for other models.
"""
import torch


class Prediction(torch.nn.Module):
    def __init__(self, sigma_data=1.0, prediction_type="epsilon", linear_start=0.00085, linear_end=0.012, timesteps=1000):
        super().__init__()
        self.sigma_data = sigma_data
        self.prediction_type = prediction_type
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.register_buffer("alphas_cumprod", alphas_cumprod.float())
        self.register_buffer("sigmas", sigmas.float())
        self.register_buffer("log_sigmas", sigmas.log().float())

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def calculate_input(self, sigma, noise):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1))
        return noise / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        return model_input - model_output * sigma


class PredictionFlow(torch.nn.Module):
    """A continuous-time (flow) schedule, as Forge uses for Flux/SD3: no discrete abar."""
