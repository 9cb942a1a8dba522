"""When feedback applies and how strongly: the paper's step schedule on the noise level."""
from __future__ import annotations

from dataclasses import dataclass

LIKED = "liked"
DISLIKED = "disliked"


@dataclass(frozen=True)
class Schedule:
    """Feedback weights as a function of the UNet timestep.

    progress = 1 - t / (T - 1) runs from 0 (pure noise) to 1 (clean). Inside [start, end] the liked
    references get `strength`, outside `min_strength`; the disliked ones get that times
    `neg_scale`. Measuring progress on the timestep, not the step index, makes the schedule the
    same for every sampler, for img2img and for the hires pass.
    """

    strength: float = 0.8
    start: float = 0.0
    end: float = 0.8
    min_strength: float = 0.0
    neg_scale: float = 0.5

    def progress(self, timestep: float, num_timesteps: int = 1000) -> float:
        return 1.0 - float(timestep) / (num_timesteps - 1)

    def weights(self, timestep: float, num_timesteps: int = 1000) -> dict[str, float]:
        progress = self.progress(timestep, num_timesteps)
        weight = self.strength if self.start <= progress <= self.end else self.min_strength
        weight = max(0.0, weight)
        return {LIKED: weight, DISLIKED: max(0.0, weight * self.neg_scale)}
