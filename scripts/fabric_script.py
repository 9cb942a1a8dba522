"""FABRIC in the webui: the AlwaysOn script that turns a job's settings into engine calls.

How a job goes:
- process(): detach whatever a failed job left, read the settings (UI controls, API args, X/Y/Z
  overrides), and when FABRIC is on with images, open a _Job and write the infotext.
- on_cfg_denoiser (every denoiser call, before any UNet call): attach the engine to the UNet of the
  model that is loaded now (the refiner and the hires checkpoint swap it mid-job), encode the
  references at this latent size outside the UNet (safe under --medvram), and hand the row
  tracker the cond/uncond layout of the batch.
- postprocess(), script unload, and the next job's process(): detach. postprocess is skipped when a
  job fails or is interrupted, which is why the next job and the unload detach too; while attached
  without a job, every UNet call passes through untouched.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from modules import devices, images, paths, script_callbacks, scripts, shared

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
from fabric.api import create_router, install_request_validation  # noqa: E402
from fabric.errors import FabricInputError, FabricStoreError  # noqa: E402
from fabric.panel import FabricPanel  # noqa: E402
from fabric.rows import RowTracker  # noqa: E402
from fabric.settings import (  # noqa: E402
    Limits,
    parse_script_args,
    settings_to_infotext,
)
from fabric.store import FeedbackStore  # noqa: E402

SECTION = ("fabric", "FABRIC")


# -- settings, store and limits ---------------------------------------------------------------------


def _opt(key: str, default):
    return getattr(shared.opts, key, default) if hasattr(shared, "opts") else default


def store_root() -> Path:
    configured = str(_opt("fabric_store_dir", "") or "").strip()
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
        max_images_per_set=int(_opt("fabric_max_images_per_set", defaults.max_images_per_set)),
        max_pixels=int(_opt("fabric_max_megapixels", defaults.max_pixels / 2**20) * 2**20),
        max_image_bytes=int(_opt("fabric_max_image_mb", defaults.max_image_bytes / 2**20) * 2**20),
        max_request_bytes=int(_opt("fabric_max_request_mb", defaults.max_request_bytes / 2**20) * 2**20),
    )


# Settings choice -> the engine's fuse_reference_rows.
REFERENCE_ROWS = {"Auto": None, "In the generation's UNet call where safe": True, "In separate UNet calls": False}


def on_ui_settings():
    from modules.shared import OptionInfo

    defaults = Limits()
    options = {
        "fabric_store_dir": OptionInfo("", "Feedback store folder (empty: <webui data>/fabric)").needs_restart(),
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
        "fabric_reference_rows": OptionInfo(
            "Auto", "Where the feedback images run through the UNet",
            gr.Radio, {"choices": list(REFERENCE_ROWS)},
        ).info("in the generation's own UNet call: faster, most of all on a CPU; separate calls: "
               "retried with fewer images when memory runs out. Auto: the first on a CPU, the second on a GPU"),
    }
    for key, info in options.items():
        info.section = SECTION
        shared.opts.add_option(key, info)


# -- one job ----------------------------------------------------------------------------------------


def _vae_identity(sd_model) -> str:
    from modules import sd_vae

    return f"{getattr(sd_model, 'sd_model_hash', '')}|{getattr(sd_vae, 'loaded_vae_file', None)}|" \
           f"{getattr(shared.opts, 'sd_vae_encode_method', '')}"


_latent_caches: dict[str, "fabric.LatentCache"] = {}


def _latent_cache(sd_model) -> "fabric.LatentCache":
    key = _vae_identity(sd_model)
    if key not in _latent_caches:
        _latent_caches.clear()  # one VAE at a time; the previous one's latents are useless now
        _latent_caches[key] = fabric.LatentCache()
    return _latent_caches[key]


def _seed_from(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def _encode_reference(image, image_id: str, height: int, width: int) -> torch.Tensor:
    """The image cropped to the generation's aspect, resized, VAE-encoded to [C, height, width].

    The VAE samples its posterior with the global RNG; a forked RNG seeded by the image keeps the
    latent reproducible and the webui's random state untouched.
    """
    from modules import sd_samplers_common

    picture = images.resize_image(1, image.convert("RGB"), width * 8, height * 8)
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    fork = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=fork), torch.no_grad(), devices.autocast():
        torch.manual_seed(_seed_from(image_id))
        method = sd_samplers_common.approximation_indexes.get(shared.opts.sd_vae_encode_method, 0)
        latent = sd_samplers_common.images_tensor_to_samples(pixels, method, shared.sd_model)
    return latent[0].detach().float().cpu()


def _project_kv_with_hypernetworks(module, hidden):
    """Keys and values as the webui's own attention computes them: hypernetworks first."""
    from modules.hypernetworks import hypernetwork

    context_k, context_v = hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, hidden)
    return module.to_k(context_k), module.to_v(context_v)


class _Job:
    """FABRIC's state for one process_images call."""

    def __init__(self, p, settings):
        self.p = p
        self.settings = settings
        self.rows = RowTracker()
        self.fabric: fabric.Fabric | None = None
        store = get_store()
        self.images = {item.id: store.get(item.id) for item in (*settings.liked, *settings.disliked)}
        self._concat: dict[tuple[int, int], torch.Tensor] = {}
        self._model: str | None = None

    def references(self, items) -> list:
        return [
            fabric.Reference(
                key=item.id,
                encode=lambda h, w, image=self.images[item.id], key=item.id: _encode_reference(image, key, h, w),
                weight=item.weight,
            )
            for item in items
        ]

    # engine for the model loaded now

    def _unet(self):
        return shared.sd_model.model.diffusion_model

    def ensure_attached(self, height: int, width: int) -> "fabric.Fabric":
        unet = self._unet()
        # A same-config refiner/hires checkpoint is loaded into the same model object: same UNet,
        # new weights, text encoder and VAE; the empty prompt and the latents must follow it.
        model = _vae_identity(shared.sd_model)
        if self.fabric is not None and self.fabric.unet is unet and self.fabric.attached and self._model == model:
            return self.fabric
        self.detach()
        self._model = model
        self._concat.clear()
        sd_model = shared.sd_model
        settings = self.settings
        self.fabric = fabric.Fabric(
            unet,
            references={fabric.LIKED: self.references(settings.liked), fabric.DISLIKED: self.references(settings.disliked)},
            schedule=fabric.Schedule(
                strength=settings.strength, start=settings.start, end=settings.end,
                min_strength=settings.min_strength, neg_scale=settings.neg_scale,
            ),
            alphas_cumprod=sd_model.alphas_cumprod,
            reference_kwargs=self._empty_prompt(sd_model, height, width),
            reference_concat=self._concat_for if getattr(unet, "in_channels", 4) != self._latent_channels() else None,
            rows=self.rows.take,
            latent_cache=_latent_cache(sd_model),
            token_budget=settings.token_budget,
            reference_batch=int(_opt("fabric_reference_batch", 8)),
            fuse_reference_rows=REFERENCE_ROWS.get(_opt("fabric_reference_rows", "Auto")),
            project_kv=_project_kv_with_hypernetworks,
            upcast=bool(_opt("upcast_attn", False)),
            on_failure=self.on_failure,
        ).attach()
        return self.fabric

    def _latent_channels(self) -> int:
        return int(getattr(shared.sd_model, "latent_channels", 4))

    def _empty_prompt(self, sd_model, height: int, width: int) -> dict:
        from modules import prompt_parser

        with torch.no_grad(), devices.autocast():
            cond = sd_model.get_learned_conditioning(prompt_parser.SdConditioning([""], width=width * 8, height=height * 8))
        if isinstance(cond, dict):  # SDXL: crossattn and the pooled/size vector
            return {"context": cond["crossattn"], "y": cond["vector"]}
        return {"context": cond}

    def _concat_for(self, height: int, width: int) -> torch.Tensor:
        return self._concat[(height, width)]

    def _prepare_concat(self, height: int, width: int) -> None:
        """Extra input channels of inpainting UNets: the webui's txt2img conditioning (mask all
        ones over a gray image), computed outside the UNet call."""
        if (height, width) in self._concat:
            return
        dummy = torch.zeros(1, self._latent_channels(), height, width, device=shared.device)
        # The VAE samples its posterior with the global RNG: fork it, as _encode_reference does.
        fork = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=fork), torch.no_grad(), devices.autocast():
            torch.manual_seed(_seed_from(f"txt2img_image_conditioning {height}x{width}"))
            cond = self.p.txt2img_image_conditioning(dummy, width=width * 8, height=height * 8)
        self._concat[(height, width)] = cond

    # per denoiser call

    def on_cfg_denoiser(self, params) -> None:
        self.rows.clear()
        if getattr(self.p, "is_hr_pass", False) and not self.settings.hires:
            return
        height, width = params.x.shape[-2:]
        engine = self.ensure_attached(height, width)
        if engine.failure is not None:
            return
        try:
            for name in (fabric.LIKED, fabric.DISLIKED):
                engine.reference_latents(name, height, width)  # encode here, not inside the UNet
            if engine.reference_concat is not None:
                self._prepare_concat(height, width)
        except Exception as error:  # noqa: BLE001 - a broken reference must not break the job
            engine.fail(error)
            return
        text_cond = params.text_cond
        n_cond = (text_cond["crossattn"] if isinstance(text_cond, dict) else text_cond).shape[0]
        self.rows.new_layout(n_cond, params.x.shape[0])

    def on_failure(self, error: BaseException) -> None:
        message = f"FABRIC was turned off for the rest of this job: {type(error).__name__}: {error}"
        print(message, file=sys.stderr)
        self.p.extra_generation_params["FABRIC error"] = f"{type(error).__name__}"
        self.p.comment(message)

    def detach(self) -> None:
        if self.fabric is not None:
            self.fabric.detach()
        self.rows.clear()


_current_job: _Job | None = None


def end_job() -> None:
    """Detach FABRIC from the job's UNet and from every loaded model's UNet; idempotent."""
    global _current_job
    if _current_job is not None:
        _current_job.detach()
        _current_job = None
    for unet in _loaded_unets():
        fabric.detach(unet)


def _loaded_unets():
    """The UNets of the loaded models, without loading one (shared.sd_model loads lazily)."""
    from modules import sd_models

    data = getattr(sd_models, "model_data", None)
    models = [getattr(data, "sd_model", None), *getattr(data, "loaded_sd_models", [])]
    unets = []
    for model in models:
        unet = getattr(getattr(model, "model", None), "diffusion_model", None)
        if unet is not None and all(unet is not u for u in unets):
            unets.append(unet)
    return unets


def on_cfg_denoiser(params) -> None:
    job = _current_job
    if job is None:
        return
    denoiser_p = getattr(getattr(params, "denoiser", None), "p", job.p)
    if denoiser_p is not job.p:
        return
    job.on_cfg_denoiser(params)


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
            restore_enabled=lambda: bool(_opt("fabric_restore_enabled", False)),
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
        global _current_job
        end_job()
        try:
            settings = parse_script_args(list(args), store=get_store(), limits=get_limits(), from_hook=True)
            settings = _apply_xyz_overrides(p, settings)
            if not settings.enabled or not (settings.liked or settings.disliked):
                return
            _current_job = _Job(p, settings)
        except (FabricInputError, FabricStoreError) as error:
            # The HTTP edge refuses bad API payloads before a job starts; this is the UI, a deleted
            # or damaged store file, or a caller that bypassed the edge. Generate without FABRIC.
            message = f"FABRIC is off for this job: {error}"
            print(message, file=sys.stderr)
            p.comment(message)
            return
        p.extra_generation_params.update(settings_to_infotext(settings))

    def postprocess(self, p, processed, *args):
        job = _current_job
        end_job()
        if job is not None and job.p is p and job.fabric is not None:
            print(
                f"FABRIC: {job.fabric.calls_with_feedback} UNet calls with feedback, "
                f"{job.fabric.reference_passes} reference passes "
                f"({job.fabric.fused_calls} of the calls carried them)",
                file=sys.stderr,
            )


def _is_webui_output_file(name: str) -> bool:
    from modules import ui_tempdir

    return bool(getattr(shared, "demo", None)) and ui_tempdir.check_tmp_file(shared.demo, name)


def _has_upscale_button() -> bool:
    """The ✨ button under the txt2img gallery exists from v1.8 (modules/txt2img.txt2img_upscale)."""
    from modules import txt2img

    return hasattr(txt2img, "txt2img_upscale")


# -- X/Y/Z plot ---------------------------------------------------------------------------------------

_XYZ_FIELDS = {"enabled": "Enabled", "strength": "Strength", "start": "Start", "end": "End",
               "min_strength": "Minimum strength", "neg_scale": "Negative scale"}


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


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(on_app_started)
script_callbacks.on_script_unloaded(on_script_unloaded)
script_callbacks.on_before_ui(_register_xyz_axes)
