"""modules/sd_models.py (v1.10.1), reduced to model identity, loading and swapping.

Facts encoded (webui-host-api.md §5, §3.2 "Refiner", §4.2 "When ... (re)applied"):
- `model_data` (`ModelData`) holds `sd_model` and `loaded_sd_models` (most recent first, at most
  `opts.sd_checkpoints_limit`, default 1); `shared.sd_model` reads `model_data.get_sd_model()`.
- `reload_model_weights(sd_model=None, info=None)`: returns the current model when it already has
  that checkpoint; otherwise, **if the new checkpoint has the same config** (`used_config`), the
  weights are loaded **into the same model object** (same UNet object, new weights, new hash and
  checkpoint info); with a different config the old model is dropped and a new object is built
  (`load_model`). Either way `sd_hijack.model_hijack.hijack()` re-applies the attention
  optimisation class-wide and `on_model_loaded` callbacks run. The refiner (`apply_refiner`) and
  the hires checkpoint go through this function in the middle of a job.
- `SkipWritingToConfig` is a context manager (no config file here).
Stand-in: `CheckpointInfo(title, config, make_model)` names a "checkpoint" of a config whose
weights are a fake model built by `make_model()` (tests/webui_standin/fake_models.py).
"""
from __future__ import annotations

import contextlib

from modules import script_callbacks, sd_hijack, shared


class CheckpointInfo:
    def __init__(self, title: str, config: str, make_model):
        self.config = config
        self.title = self.name = self.name_for_extra = self.model_name = title
        self.short_title = title
        self.filename = f"/models/Stable-diffusion/{title}.safetensors"
        self.hash = self.sha256 = self.shorthash = f"{abs(hash(title)) % 16**10:010x}"
        self.make_model = make_model

    def __repr__(self):
        return f"CheckpointInfo({self.title!r})"


class ModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False

    def get_sd_model(self):
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        if v is None:
            return
        self.was_loaded_at_least_once = True
        try:
            self.loaded_sd_models.remove(v)
        except ValueError:
            pass
        self.loaded_sd_models.insert(0, v)


model_data = ModelData()


class SkipWritingToConfig(contextlib.ContextDecorator):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _identify(model, info: CheckpointInfo) -> None:
    model.sd_checkpoint_info = info
    model.sd_model_checkpoint = info.filename
    model.sd_model_hash = info.shorthash
    model.used_config = info.config


def load_model(checkpoint_info: CheckpointInfo):
    """A fresh model object for a checkpoint; drops the oldest beyond sd_checkpoints_limit."""
    while len(model_data.loaded_sd_models) >= shared.opts.sd_checkpoints_limit and model_data.loaded_sd_models:
        model_data.loaded_sd_models.pop()
    model = checkpoint_info.make_model()
    _identify(model, checkpoint_info)
    model_data.set_sd_model(model)
    sd_hijack.model_hijack.hijack(model)
    script_callbacks.model_loaded_callback(model)
    return model


def load_model_weights(model, checkpoint_info: CheckpointInfo) -> None:
    """The checkpoint's weights into an existing model object of the same config."""
    donor = checkpoint_info.make_model()
    model.load_state_dict(donor.state_dict())
    _identify(model, checkpoint_info)


def reload_model_weights(sd_model=None, info: CheckpointInfo | None = None, forced_reload=False):
    sd_model = sd_model if sd_model is not None else model_data.sd_model
    if info is None:
        return sd_model
    if sd_model is not None and sd_model.sd_checkpoint_info is info and not forced_reload:
        return sd_model
    if sd_model is None or info.config != sd_model.used_config:
        return load_model(info)
    sd_hijack.model_hijack.undo_hijack(sd_model)
    try:
        load_model_weights(sd_model, info)
    finally:
        sd_hijack.model_hijack.hijack(sd_model)
        script_callbacks.model_loaded_callback(sd_model)
    return sd_model
