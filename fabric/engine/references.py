"""Feedback references and the cache of their encoded latents."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

# (latent height, latent width) -> clean latent [C, h, w], already scaled by the VAE scale factor.
Encoder = Callable[[int, int], torch.Tensor]


@dataclass(frozen=True)
class Reference:
    """One feedback image as the engine sees it.

    `key` identifies the image's content (the store id); it seeds the reference noise and keys the
    latent cache. `encode` turns the image into a latent of a given size: the host owns the VAE and
    the resize/crop. `weight` multiplies the set's schedule weight for this image (0 drops it).
    """

    key: str
    encode: Encoder
    weight: float = 1.0


class LatentCache:
    """Encoded latents by (content key, latent size); least recently used first out.

    Hires fix changes the size mid-job, hence the size in the key. One cache per VAE: a latent of
    another model's VAE is another latent.
    """

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, int, int], torch.Tensor] = OrderedDict()

    def latent(self, reference: Reference, height: int, width: int) -> torch.Tensor:
        key = (reference.key, height, width)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        latent = reference.encode(height, width)
        if tuple(latent.shape[-2:]) != (height, width):
            raise ValueError(
                f"reference {reference.key}: encoder returned a latent of size "
                f"{tuple(latent.shape[-2:])}, expected {(height, width)}"
            )
        self._entries[key] = latent
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return latent

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
