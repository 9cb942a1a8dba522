"""The method: FABRIC attached to a UNet for one job, in plain torch.

Nothing here imports the webui, gradio, FastAPI, ldm or sgm (the import contract in
`tests/importlinter.ini` checks it): it works on any UNet whose transformer blocks look like
ldm's and sgm's. Per UNet call (design.md §1): the schedule gives each set its weight
(schedule.py), the reference latents are noised to the call's timestep (noise.py) and run through
the UNet while every attn1 records its input (unet_hooks.py, layers.py), and the main pass's attn1
attends over its own tokens and the recorded ones with log(weight) on the reference keys
(injection.py, attention.py), optionally pooled to a token budget (tokens.py). rows.py follows
the A1111 CFG batch layout; references.py holds the feedback images and their latent cache.
"""
from .attention import weighted_attention
from .references import LatentCache, Reference
from .schedule import DISLIKED, LIKED, Schedule
from .unet_hooks import Fabric, attached, cfg_halves, detach

__all__ = [
    "DISLIKED", "Fabric", "LIKED", "LatentCache", "Reference", "Schedule",
    "attached", "cfg_halves", "detach", "weighted_attention",
]
