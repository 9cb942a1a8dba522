"""modules/script_callbacks.py (v1.10.1), reduced to the callbacks FABRIC registers or relies on.

Facts encoded (webui-host-api.md §3.3, §6 "Other callbacks"):
- Registration functions `on_cfg_denoiser`, `on_cfg_denoised`, `on_cfg_after_cfg`, `on_ui_settings`,
  `on_app_started`, `on_script_unloaded`, `on_before_ui`, `on_model_loaded`, `on_before_component`,
  `on_after_component`, `on_list_optimizers`, each taking `name=` (v1.9+). Callbacks are global,
  not tied to a Script, and stay registered until `clear_callbacks()` (run by `load_scripts`).
- `CFGDenoiserParams(x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond,
  text_uncond, denoiser)` (denoiser v1.8+), `CFGDenoisedParams(x, sampling_step,
  total_sampling_steps, inner_model)`, `AfterCFGCallbackParams(x, sampling_step,
  total_sampling_steps)`.
- The invokers call every callback in order and **catch and report** its exceptions
  (`report_exception`), so a failing callback never stops sampling; `script_unloaded_callback`
  runs them in reverse order.
- No ordering by metadata.ini or user priority: one extension here, so the order is registration
  order (what `sort_callbacks` gives without instructions).
"""
import inspect
import os
from collections import namedtuple

from modules import errors

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback", "name"])


class CFGDenoiserParams:
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


callback_map = dict(
    callbacks_app_started=[],
    callbacks_model_loaded=[],
    callbacks_ui_settings=[],
    callbacks_cfg_denoiser=[],
    callbacks_cfg_denoised=[],
    callbacks_cfg_after_cfg=[],
    callbacks_before_component=[],
    callbacks_after_component=[],
    callbacks_script_unloaded=[],
    callbacks_before_ui=[],
    callbacks_list_optimizers=[],
)


def report_exception(c, job):
    errors.report(f"Error executing callback {job} for {c.script}", exc_info=True)


def add_callback(callbacks, fun, *, name=None, category="unknown", filename=None):
    if filename is None:
        stack = [x for x in inspect.stack() if x.filename != __file__]
        filename = stack[0].filename if stack else "unknown file"
    callback_name = f"{os.path.basename(filename)}/{category}"
    if name is not None:
        callback_name += f"/{name}"
    unique = callback_name
    for index in range(1000):
        if not any(x.name == unique for x in callbacks):
            break
        unique = f"{callback_name}-{index + 1}"
    callbacks.append(ScriptCallback(filename, fun, unique))


def ordered_callbacks(category):
    return list(callback_map["callbacks_" + category])


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def remove_callbacks_for_function(callback_func):
    for callback_list in callback_map.values():
        for callback_to_remove in [cb for cb in callback_list if cb.callback == callback_func]:
            callback_list.remove(callback_to_remove)


def remove_current_script_callbacks():
    stack = [x for x in inspect.stack() if x.filename != __file__]
    filename = stack[0].filename if stack else "unknown file"
    if filename == "unknown file":
        return
    for callback_list in callback_map.values():
        for callback_to_remove in [cb for cb in callback_list if cb.script == filename]:
            callback_list.remove(callback_to_remove)


def _invoke(category, *args):
    for c in ordered_callbacks(category):
        try:
            c.callback(*args)
        except Exception:
            report_exception(c, f"{category}_callback")


def cfg_denoiser_callback(params: CFGDenoiserParams):
    _invoke("cfg_denoiser", params)


def cfg_denoised_callback(params: CFGDenoisedParams):
    _invoke("cfg_denoised", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams):
    _invoke("cfg_after_cfg", params)


def ui_settings_callback():
    _invoke("ui_settings")


def app_started_callback(demo, app):
    _invoke("app_started", demo, app)


def model_loaded_callback(sd_model):
    _invoke("model_loaded", sd_model)


def before_ui_callback():
    _invoke("before_ui")


def script_unloaded_callback():
    for c in reversed(ordered_callbacks("script_unloaded")):
        try:
            c.callback()
        except Exception:
            report_exception(c, "script_unloaded")


def on_app_started(callback, *, name=None):
    add_callback(callback_map["callbacks_app_started"], callback, name=name, category="app_started")


def on_model_loaded(callback, *, name=None):
    add_callback(callback_map["callbacks_model_loaded"], callback, name=name, category="model_loaded")


def on_ui_settings(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name, category="ui_settings")


def on_cfg_denoiser(callback, *, name=None):
    add_callback(callback_map["callbacks_cfg_denoiser"], callback, name=name, category="cfg_denoiser")


def on_cfg_denoised(callback, *, name=None):
    add_callback(callback_map["callbacks_cfg_denoised"], callback, name=name, category="cfg_denoised")


def on_cfg_after_cfg(callback, *, name=None):
    add_callback(callback_map["callbacks_cfg_after_cfg"], callback, name=name, category="cfg_after_cfg")


def on_before_component(callback, *, name=None):
    add_callback(callback_map["callbacks_before_component"], callback, name=name, category="before_component")


def on_after_component(callback, *, name=None):
    add_callback(callback_map["callbacks_after_component"], callback, name=name, category="after_component")


def on_script_unloaded(callback, *, name=None):
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")


def on_before_ui(callback, *, name=None):
    add_callback(callback_map["callbacks_before_ui"], callback, name=name, category="before_ui")


def on_list_optimizers(callback, *, name=None):
    add_callback(callback_map["callbacks_list_optimizers"], callback, name=name, category="list_optimizers")
