"""modules/shared.py + shared_items.py + options.py + shared_state.py (v1.10.1), reduced.

Facts encoded:
- `shared.sd_model` is a property of the module (shared_items.py `Shared`, installed by assigning
  the module's `__class__`) that returns `sd_models.model_data.get_sd_model()`; assigning it calls
  `model_data.set_sd_model` (webui-host-api.md §5 "Accessing the model"). So the refiner and the
  hires checkpoint swap what `shared.sd_model` returns in the middle of a job (§3.2 "Refiner").
- `opts` (options.py `Options`): values read as attributes; `__getattr__` answers from `data`, then
  from the registered option's default, else AttributeError; `add_option(key, info)` registers an
  `OptionInfo` and keeps an existing value (§6 "Settings"). The defaults below are the webui's for
  the options the sampling path reads: `batch_cond_uncond` True, `s_min_uncond` 0,
  `s_min_uncond_all` False, `skip_early_cond` 0 (§3.2 "skip_uncond"), `pad_cond_uncond` and
  `pad_cond_uncond_v0` False (§3.2 "Padding"), `enable_quantization` False (§3.4),
  `sd_vae_encode_method` "Full" (§5), `upcast_attn` False (§4.2), `cross_attention_optimization`
  "Automatic" (§4.2), `sd_checkpoints_limit` 1, `hires_fix_refiner_pass` "second pass",
  `refiner_switch_by_sample_steps` False.
- `OptionInfo(default, label, component, component_args, onchange, section, ...)` with the
  chainable `.info()`, `.needs_restart()`, `.needs_reload_ui()`, `.link()`, `.html()`.
- `state` (shared_state.py `State`): `interrupted`, `skipped`, `sampling_step`, `sampling_steps`
  (CFGDenoiserParams reads the last two, §3.3).
- `device` and `loaded_hypernetworks` (the list the attention forwards pass to
  `apply_hypernetworks`, §4.2).
"""
import sys
import types

from modules import devices


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False, category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def link(self, label, url):
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label, js_func):
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html):
        self.comment_after += html
        return self

    def needs_restart(self):
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self):
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


def options_section(section_identifier, options_dict):
    for v in options_dict.values():
        if len(section_identifier) == 2:
            v.section = section_identifier
        elif len(section_identifier) == 3:
            v.section = section_identifier[0:2]
            v.category_id = section_identifier[2]
    return options_dict


class Options:
    typemap = {int: float}

    def __init__(self, data_labels: dict):
        self.__dict__["data_labels"] = data_labels
        self.__dict__["data"] = {k: v.default for k, v in data_labels.items()}
        self.__dict__["_onchange"] = {}

    def __setattr__(self, key, value):
        if key in self.data or key in self.data_labels:
            self.data[key] = value
            handler = self._onchange.get(key)
            if handler is not None:
                handler()
            return
        super().__setattr__(key, value)

    def __getattr__(self, item):
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        return super().__getattribute__(item)

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def onchange(self, key, func, call=True):
        self._onchange[key] = func
        if call:
            func()


_defaults = {
    "batch_cond_uncond": True,
    "s_min_uncond": 0.0,
    "s_min_uncond_all": False,
    "skip_early_cond": 0.0,
    "pad_cond_uncond": False,
    "pad_cond_uncond_v0": False,
    "enable_quantization": False,
    "sd_vae_encode_method": "Full",
    "sd_vae_decode_method": "Full",
    "upcast_attn": False,
    "cross_attention_optimization": "Automatic",
    "sd_checkpoints_limit": 1,
    "hires_fix_refiner_pass": "second pass",
    "refiner_switch_by_sample_steps": False,
    "randn_source": "GPU",
    "eta_noise_seed_delta": 0,
    "always_discard_next_to_last_sigma": False,
    "sgm_noise_multiplier": False,
    "img2img_extra_noise": 0.0,
    "img2img_fix_steps": False,
    "upscaler_for_img2img": None,
    "live_preview_content": "Prompt",
    "inpainting_mask_weight": 1.0,
    "sdxl_crop_top": 0,
    "sdxl_crop_left": 0,
    "sdxl_refiner_low_aesthetic_score": 2.5,
    "sdxl_refiner_high_aesthetic_score": 6.0,
    "eta_ddim": 0.0,
    "eta_ancestral": 1.0,
}

opts = Options({key: OptionInfo(value) for key, value in _defaults.items()})


class State:
    skipped = False
    interrupted = False
    job = ""
    job_no = 0
    job_count = 0
    sampling_step = 0
    sampling_steps = 0
    current_latent = None

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = 0

    def interrupt(self):
        self.interrupted = True


state = State()
device = devices.device
loaded_hypernetworks = []
cmd_opts = types.SimpleNamespace(medvram=False, lowvram=False, no_half=True, precision="full")
parallel_processing_allowed = True


class Shared(sys.modules[__name__].__class__):
    """shared_items.py: `sd_model` as a property backed by sd_models.model_data."""

    @property
    def sd_model(self):
        import modules.sd_models

        return modules.sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        import modules.sd_models

        modules.sd_models.model_data.set_sd_model(value)


sys.modules[__name__].__class__ = Shared
