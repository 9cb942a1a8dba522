"""Which rows of a UNet call are cond (liked) and which are uncond (disliked).

The webui's CFGDenoiser builds one batch per denoiser call: [cond rows (each image repeated once
per AND sub-prompt) ; one uncond row per image] (an InstructPix2Pix edit model appends a third
block of image-uncond rows). It announces that layout through on_cfg_denoiser before any UNet call
and then calls the UNet on consecutive slices of it, in order: all rows at once, chunks of
batch_size rows (which may mix cond and uncond with AND prompts), or the cond rows in chunks and
then the uncond rows. When it skips the uncond rows (Negative Guidance minimum sigma, Skip Early
CFG) it simply never calls them. So a cursor over the announced layout names every row of every
call, whatever the pattern.
"""
from __future__ import annotations

from .schedule import DISLIKED, LIKED


class RowTracker:
    def __init__(self) -> None:
        self._layout: list[str] = []
        self._cursor = 0

    def new_layout(self, n_cond: int, n_total: int) -> None:
        """A denoiser call announced `n_total` rows, the first `n_cond` of them cond rows."""
        self._layout = [LIKED] * n_cond + [DISLIKED] * (n_total - n_cond)
        self._cursor = 0

    def clear(self) -> None:
        """No layout: UNet calls get no feedback until the next announcement."""
        self._layout = []
        self._cursor = 0

    def take(self, n_rows: int) -> list[str] | None:
        """The roles of the next UNet call's rows; None when the call does not fit the layout."""
        end = self._cursor + n_rows
        if end > len(self._layout):
            return None
        roles = self._layout[self._cursor:end]
        self._cursor = end
        return roles
