"""FABRIC: steering diffusion with liked and disliked images through self-attention.

The engine of the webui extension (arXiv 2307.10159), in plain torch: it imports nothing from the
webui, ldm or sgm, and works on any UNet whose transformer blocks look like theirs.
"""
from .engine import DISLIKED, LIKED, Fabric, LatentCache, Reference, Schedule, attached, cfg_halves, detach
from .engine import weighted_attention

# The webui script checks this marker: a PyPI package called `fabric` exists and may shadow ours.
FABRIC_ENGINE = True

__all__ = [
    "DISLIKED",
    "FABRIC_ENGINE",
    "Fabric",
    "LIKED",
    "LatentCache",
    "Reference",
    "Schedule",
    "attached",
    "cfg_halves",
    "detach",
    "weighted_attention",
]
