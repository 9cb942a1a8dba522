"""FABRIC in the webui: the AlwaysOn script that turns a job's settings into engine calls.

The script is the same in both webuis: UI, settings, infotext, API, store, X/Y/Z axes. What
differs, attaching the engine to the host's UNet for a job, is the host adapter's
(fabric/hosts/: AUTOMATIC1111's webui or Forge, found once at import):
- process(): end what a failed job left, read the settings (UI controls, API args, X/Y/Z
  overrides), and when FABRIC is on with images, start the host's job and write the infotext
  (or say once why FABRIC cannot serve this job, and write nothing as if it applied).
- process_before_every_sampling() (before each sampling pass, hires included): the host's
  before_sampling; Forge patches a clone of its UNet patcher there, A1111 attaches later, from
  on_cfg_denoiser.
- postprocess(), script unload, and the next job's process(): end the job.
"""
from __future__ import annotations

import sys
from pathlib import Path

import gradio as gr

from modules import paths, script_callbacks, scripts, shared

EXTENSION_ROOT = Path(__file__).resolve().parents[1]


def _import_engine():
    """Our `fabric` package, and a clear error if `fabric` is someone else's (a PyPI package)."""
    import fabric

    origin = Path(getattr(fabric, "__file__", "") or ".").resolve().parent
    if getattr(fabric, "FABRIC_ENGINE", None) is not True or origin != EXTENSION_ROOT / "fabric":
        raise ImportError(
            f"FABRIC: 'import fabric' found {origin}, not this extension's engine in "
            f"{EXTENSION_ROOT / 'fabric'}. Another package named 'fabric' is installed in the webui's "
            f"environment (pip uninstall fabric), or was imported first by another extension."
        )
    return fabric


fabric = _import_engine()
from fabric.feedback.api import create_router, install_request_validation  # noqa: E402
from fabric.engine.prompt_dropout import drop_words  # noqa: E402
from fabric.errors import FabricInputError, FabricStoreError  # noqa: E402
from fabric.hosts import host  # noqa: E402
from fabric.hosts.webui import REFERENCE_ROWS, CannotServe, JobReport, opt  # noqa: E402
from fabric.ui.panel import FabricPanel  # noqa: E402
from fabric.feedback.settings import Limits, parse_script_args  # noqa: E402
from fabric.feedback.store import FeedbackStore  # noqa: E402

# Settings → FABRIC, its own section under the "Stable Diffusion" category (A1111 v1.7+ and Forge
# group sections by OptionInfo.category_id, modules/options.py:14-21 and :246 in v1.10.1; without
# one they land under "Uncategorized"; v1.6 ignores the attribute).
SECTION = ("fabric", "FABRIC")
CATEGORY = "sd"

end_job = host.end_job  # ends what a job left, a failed one too; idempotent


# -- settings, store and limits ---------------------------------------------------------------------


def store_root() -> Path:
    configured = str(opt("fabric_store_dir", "") or "").strip()
    return Path(configured) if configured else Path(paths.data_path) / "fabric"


_stores: dict[Path, FeedbackStore] = {}


def get_store() -> FeedbackStore:
    root = store_root()
    if root not in _stores:
        _stores[root] = FeedbackStore(root)
    return _stores[root]


def get_limits() -> Limits:
    defaults = Limits()
    return Limits(
        max_images_per_set=int(opt("fabric_max_images_per_set", defaults.max_images_per_set)),
        max_pixels=int(opt("fabric_max_megapixels", defaults.max_pixels / 2**20) * 2**20),
        max_image_bytes=int(opt("fabric_max_image_mb", defaults.max_image_bytes / 2**20) * 2**20),
        max_request_bytes=int(opt("fabric_max_request_mb", defaults.max_request_bytes / 2**20) * 2**20),
    )


def on_ui_settings():
    from modules.shared import OptionInfo

    defaults = Limits()
    options = {
        # Read again at every use (store_root), so a change applies without a restart.
        "fabric_store_dir": OptionInfo("", "Feedback store folder (empty: <webui data>/fabric)"),
        "fabric_restore_enabled": OptionInfo(
            False, "Pasting generation parameters that used FABRIC also turns FABRIC on"
        ).info("off: the settings and images are restored, the FABRIC switch stays as it is"),
        "fabric_max_images_per_set": OptionInfo(
            defaults.max_images_per_set, "Most liked (and most disliked) images per generation",
            gr.Slider, {"minimum": 1, "maximum": 64, "step": 1},
        ),
        "fabric_max_megapixels": OptionInfo(
            defaults.max_pixels / 2**20, "Largest feedback image, in megapixels", gr.Number
        ),
        "fabric_max_image_mb": OptionInfo(
            defaults.max_image_bytes / 2**20, "Largest base64 image in an API request, in MiB", gr.Number
        ),
        "fabric_max_request_mb": OptionInfo(
            defaults.max_request_bytes / 2**20, "Largest API request FABRIC reads, in MiB", gr.Number
        ),
        "fabric_reference_batch": OptionInfo(
            8, "Feedback images per UNet call of the reference pass (lower it if VRAM is short)",
            gr.Slider, {"minimum": 1, "maximum": 32, "step": 1},
        ),
        # Registered in Forge too, so that an API request overriding it works in both webuis.
        "fabric_reference_rows": OptionInfo(
            "Auto", "Where the feedback images run through the UNet",
            gr.Radio, {"choices": list(REFERENCE_ROWS)},
        ).info("in the generation's own UNet call: faster, most of all on a CPU; separate calls: "
               "retried with fewer images when memory runs out. Auto: the first on a CPU, the second on a GPU"
               if host.FUSES_REFERENCE_ROWS else "in Forge always in separate UNet calls; this applies in AUTOMATIC1111's webui"),
    }
    for key, info in options.items():
        info.section = SECTION
        info.category_id = CATEGORY
        shared.opts.add_option(key, info)


# -- the script -------------------------------------------------------------------------------------


class FabricScript(scripts.Script):
    def title(self):
        return "FABRIC"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        from modules.ui_components import InputAccordion, ToolButton

        tab = "img2img" if is_img2img else "txt2img"
        self.panel = FabricPanel(
            tab,
            get_store=get_store,
            get_limits=get_limits,
            accordion_factory=InputAccordion,
            tool_button_factory=ToolButton,
            restore_enabled=lambda: bool(opt("fabric_restore_enabled", False)),
            # The webui serves saved outputs from their own folder and registers them with gradio.
            is_allowed_path=_is_webui_output_file,
        )
        self.infotext_fields = self.panel.infotext_fields
        self.paste_field_names = self.panel.paste_field_names
        self._watch_output_panel(tab)
        return self.panel.controls

    def _watch_output_panel(self, tab: str) -> None:
        """The output gallery is built after the script UIs: wire the 👍/👎 buttons when its
        button row gets its last button."""
        self._gallery = None

        def remember_gallery(component):
            self._gallery = component.component

        def add_buttons(component):
            if self._gallery is not None:
                self.panel.add_feedback_buttons(self._gallery)

        last_button = "txt2img_upscale" if tab == "txt2img" and _has_upscale_button() else f"{tab}_send_to_extras"
        self.on_after_component(remember_gallery, elem_id=f"{tab}_gallery")
        self.on_after_component(add_buttons, elem_id=last_button)

    def process(self, p, *args):
        end_job()
        self._report = None
        try:
            settings = parse_script_args(list(args), store=get_store(), limits=get_limits(), from_hook=True)
            settings = _apply_xyz_overrides(p, settings)
            if not settings.enabled or not (settings.liked or settings.disliked):
                return
            store = get_store()
            images = {item.id: store.get(item.id) for item in (*settings.liked, *settings.disliked)}
        except (FabricInputError, FabricStoreError) as error:
            # The HTTP edge refuses bad API payloads before a job starts; this is the UI, a deleted
            # or damaged store file, or a caller that bypassed the edge. Generate without FABRIC.
            if not _asks_for_fabric(args):
                return
            message = f"FABRIC is off for this job: {error}"
            print(message, file=sys.stderr)
            p.comment(message)  # the UI's html_info shows comments; the API's info does not
            p.extra_generation_params[JobReport.NOTE] = f"off for this job: {error}"
            return
        report = JobReport(p, settings)
        try:
            host.start_job(p, settings, images, report)
        except CannotServe as error:
            report.failed(error, applied=False)
            return
        self._report = report
        report.applying()

    def process_batch(self, p, *args, **kwargs):
        # Right before the webui computes this batch's conditioning from p.prompts; the infotext
        # keeps the prompt as typed (p.all_prompts), beside FABRIC's dropout setting.
        report = self._report_of(p)
        if report is None or report.settings.prompt_dropout <= 0:
            return
        rate, seeds = report.settings.prompt_dropout, list(p.seeds)
        for name in ("prompts", "hr_prompts"):
            prompts = getattr(p, name, None)
            if isinstance(prompts, list) and len(prompts) == len(seeds):
                setattr(p, name, [drop_words(prompt, rate, seed) for prompt, seed in zip(prompts, seeds)])

    def process_before_every_sampling(self, p, *args, **kwargs):
        host.before_sampling(p, **kwargs)

    def postprocess_batch(self, p, *args, **kwargs):
        # After a batch is sampled and before its images' infotexts are written: the note of
        # what FABRIC did not apply so far reaches those infotexts (and the API's info).
        report = self._report_of(p)
        if report is not None:
            report.batch_done()

    def postprocess(self, p, processed, *args):
        host.finish_job(p)
        report = self._report_of(p)
        if report is not None:
            report.finish()
            note = p.extra_generation_params.get(JobReport.NOTE)
            if note is not None and processed is not None and hasattr(processed, "extra_generation_params"):
                processed.extra_generation_params[JobReport.NOTE] = note
        self._report = None

    def _report_of(self, p):
        report = getattr(self, "_report", None)
        return report if report is not None and report.p is p else None


def _asks_for_fabric(args) -> bool:
    """Whether raw script args switch FABRIC on, read without validating them: a job whose
    settings cannot be used says so only when FABRIC was asked for."""
    first = args[0] if args else None
    if isinstance(first, dict):
        return first.get("enabled") is True
    return first is True


def _is_webui_output_file(name: str) -> bool:
    from modules import ui_tempdir

    return bool(getattr(shared, "demo", None)) and ui_tempdir.check_tmp_file(shared.demo, name)


def _has_upscale_button() -> bool:
    """The ✨ button under the txt2img gallery exists from v1.8 (modules/txt2img.txt2img_upscale)."""
    from modules import txt2img

    return hasattr(txt2img, "txt2img_upscale")


# -- X/Y/Z plot ---------------------------------------------------------------------------------------

_XYZ_FIELDS = {"enabled": "Enabled", "strength": "Strength", "start": "Start", "end": "End",
               "min_strength": "Minimum strength", "neg_scale": "Negative scale",
               "prompt_dropout": "Prompt dropout"}


def _apply_xyz_overrides(p, settings):
    overrides = getattr(p, "fabric_xyz", None)
    if not overrides:
        return settings
    import dataclasses

    return dataclasses.replace(settings, **overrides)


def _register_xyz_axes() -> None:
    xyz = next((s.module for s in scripts.scripts_data if s.script_class.__module__ == "xyz_grid.py"), None)
    if xyz is None or any(getattr(o, "label", "").startswith("[FABRIC]") for o in xyz.axis_options):
        return

    def setter(field, cast):
        def apply(p, value, _values):
            p.fabric_xyz = {**getattr(p, "fabric_xyz", {}), field: cast(value)}
        return apply

    def to_bool(value):
        return str(value).strip().lower() in ("1", "true", "yes", "on")

    for field, label in _XYZ_FIELDS.items():
        if field == "enabled":
            xyz.axis_options.append(xyz.AxisOption(f"[FABRIC] {label}", str, setter(field, to_bool), choices=lambda: ["True", "False"]))
        else:
            xyz.axis_options.append(xyz.AxisOption(f"[FABRIC] {label}", float, setter(field, float)))


# -- callbacks ------------------------------------------------------------------------------------------


def on_app_started(demo, app):
    install_request_validation(app, get_store, get_limits)
    app.include_router(create_router(get_store, get_limits))


def on_script_unloaded():
    end_job()


host.register_callbacks()
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(on_app_started)
script_callbacks.on_script_unloaded(on_script_unloaded)
script_callbacks.on_before_ui(_register_xyz_axes)
