"""Runs scripts/fabric_script.py inside the stand-in webui (tests/webui_standin/modules).

`Webui` loads the script exactly as the webui does (modules/scripts.py `load_scripts`: sys.path
prefixed with the extension root only while importing, the file loaded by
`importlib.util.spec_from_file_location`), registers the script's settings, creates the txt2img
runner and builds the script's UI in a `gr.Blocks()` (args_from/args_to from its controls, the
API's default args from a second `ui()` call), points the feedback store at a temporary folder,
and runs txt2img jobs through `modules.processing.process_images` with FABRIC's values in its
slice of `p.script_args`.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

STANDIN_DIR = Path(__file__).resolve().parent
TESTS_DIR = STANDIN_DIR.parent
EXTENSION_ROOT = TESTS_DIR.parent
SCRIPT_PATH = EXTENSION_ROOT / "scripts" / "fabric_script.py"

for _path in (str(TESTS_DIR), str(STANDIN_DIR)):
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import fake_models  # noqa: E402
import modules  # noqa: E402

assert Path(modules.__file__).resolve().parent == STANDIN_DIR / "modules", f"'modules' is not the stand-in: {modules.__file__}"

from modules import (  # noqa: E402
    errors,
    paths,
    processing,
    script_callbacks,
    scripts,
    sd_hijack,
    sd_models,
    shared,
)

OPTION_DEFAULTS = dict(shared.opts.data)

CHECKPOINTS = {
    "sd15": ("sd1", lambda: fake_models.FakeLatentDiffusion(10)),
    "sd15-other": ("sd1", lambda: fake_models.FakeLatentDiffusion(20)),
    "sd15-refiner": ("sd1-refiner", lambda: fake_models.FakeLatentDiffusion(30)),
    "sd15-inpainting": ("sd1-inpainting", lambda: fake_models.FakeLatentDiffusion(40, inpainting=True)),
    "sdxl": ("sdxl", lambda: fake_models.FakeSDXL(50)),
}


def checkpoint(title: str) -> sd_models.CheckpointInfo:
    config, make = CHECKPOINTS[title]
    return sd_models.CheckpointInfo(title, config, make)


def test_image(seed: int, width: int = 96, height: int = 80) -> Image.Image:
    """A deterministic picture (smooth colour field plus noise), not square, so the crop matters."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(xx / (7 + seed % 5)), np.cos(yy / (5 + seed % 3)), np.sin((xx + yy) / 11)], axis=-1)
    pixels = (base * 90 + 128 + rng.normal(0, 20, (height, width, 3))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


@contextlib.contextmanager
def started_webui(tmp: Path):
    """A stand-in webui with the script loaded, at one torch thread (2 shared cores: one thread is
    ~50x faster than two under load); closed, and the thread count put back, afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ui = Webui(tmp)
    try:
        yield ui
    finally:
        ui.close()
        torch.set_num_threads(threads)


class Webui:
    def __init__(self, tmp: Path):
        self.tmp = Path(tmp)
        paths.data_path = str(self.tmp / "data")
        errors.reported.clear()
        scripts.load_scripts([scripts.ScriptFile(str(EXTENSION_ROOT), SCRIPT_PATH.name, str(SCRIPT_PATH))])
        if errors.reported:
            raise RuntimeError(f"loading the script failed: {errors.reported}") from errors.reported[0][1]
        self.module = next(s.module for s in scripts.scripts_data if s.path == str(SCRIPT_PATH))
        self.host = sys.modules["fabric.hosts"].host  # the host adapter the script picked: A1111's here
        import fabric.feedback.settings

        self.settings = fabric.feedback.settings
        script_callbacks.ui_settings_callback()
        self.runner = scripts.ScriptRunner()
        self.runner.initialize_scripts(False)
        import gradio as gr

        with gr.Blocks():
            self.runner.setup_ui()
        if errors.reported:
            raise RuntimeError(f"building the script's UI failed: {errors.reported}") from errors.reported[0][1]
        self.script = next(s for s in self.runner.alwayson_scripts if s.title() == "FABRIC")
        self.default_script_args = self.runner.default_script_args()
        self.fabric_callbacks = {k: list(v) for k, v in script_callbacks.callback_map.items()}
        from fabric.feedback.store import FeedbackStore

        self.store_dir = self.tmp / "store"
        self.store = FeedbackStore(self.store_dir)
        self.reset()

    # -- state between tests -------------------------------------------------------------------

    def reset(self, model: str = "sd15"):
        """Default options, no hypernetworks, FABRIC's callbacks only, a fresh model loaded."""
        self.module.end_job()
        shared.opts.data.update(OPTION_DEFAULTS)
        for key, info in shared.opts.data_labels.items():  # FABRIC's settings, added by the script
            if key.startswith("fabric_"):
                shared.opts.data[key] = info.default
        shared.opts.fabric_store_dir = str(self.store_dir)
        shared.loaded_hypernetworks.clear()
        shared.state.interrupted = shared.state.skipped = False
        for key, callbacks in self.fabric_callbacks.items():
            script_callbacks.callback_map[key][:] = callbacks
        sd_models.model_data.sd_model = None
        sd_models.model_data.loaded_sd_models.clear()
        sd_hijack.optimizers.clear()
        errors.reported.clear()
        return self.load(model)

    def load(self, title: str):
        return sd_models.load_model(checkpoint(title))

    @property
    def model(self):
        return shared.sd_model

    # -- feedback ------------------------------------------------------------------------------

    def add_image(self, seed: int, **size) -> str:
        return self.store.add(test_image(seed, **size))

    def args(self, **settings) -> list:
        """FABRIC's positional script args (fabric.feedback.settings.POSITIONAL_ORDER), defaults elsewhere."""
        values = dict(self.settings.DEFAULTS)
        unknown = set(settings) - set(values)
        assert not unknown, unknown
        values.update(settings)
        return [list(v) if isinstance(v, tuple) else v for v in (values[name] for name in self.settings.POSITIONAL_ORDER)]

    # -- jobs ----------------------------------------------------------------------------------

    def make_p(self, fabric_args=None, **kwargs) -> processing.StableDiffusionProcessingTxt2Img:
        """A txt2img job; `fabric_args` fill FABRIC's slice of p.script_args (None: the UI defaults,
        what the API sends for a request that does not mention FABRIC)."""
        kwargs.setdefault("prompt", "a red fox in the snow")
        kwargs.setdefault("negative_prompt", "blurry")
        kwargs.setdefault("seed", 1234)
        script_args = list(self.default_script_args)
        if fabric_args is not None:  # as Api.init_script_args: missing trailing args keep the UI defaults
            for i, value in enumerate(list(fabric_args)[: self.script.args_to - self.script.args_from]):
                script_args[self.script.args_from + i] = value
        return processing.StableDiffusionProcessingTxt2Img(scripts=self.runner, script_args=script_args, **kwargs)

    def job(self, fabric_args=None, **kwargs):
        """One txt2img job with the script; returns (Processed, p)."""
        p = self.make_p(fabric_args, **kwargs)
        processed = processing.process_images(p)
        return processed, p

    def vanilla(self, **kwargs):
        """The same job as if the extension were not installed: no script, no callbacks."""
        p = self.make_p(None, **kwargs)
        p.scripts = None
        with self.without_extension():
            processed = processing.process_images(p)
        return processed, p

    @contextlib.contextmanager
    def without_extension(self):
        saved = {k: list(v) for k, v in script_callbacks.callback_map.items()}
        script_callbacks.clear_callbacks()
        try:
            yield
        finally:
            for key, callbacks in saved.items():
                script_callbacks.callback_map[key][:] = callbacks

    def close(self):
        self.module.end_job()
        sd_hijack.restore_original_forwards()


# -- observing a job -------------------------------------------------------------------------------


class Recorder:
    """One entry per CFGDenoiser call: what FABRIC did during it.

    Registers an `on_cfg_denoiser` callback (after FABRIC's, so it sees the same call) and wraps
    the engine's reference pass and the script's row tracker at class level:
    entry = {"step", "hr", "unet", "rows" (x_in rows announced), "calls" (roles per UNet call,
    None = untouched), "passes" [(set, unet, t, z channels, reference kwargs)]}.
    """

    def __init__(self, monkeypatch):
        import fabric.engine
        import fabric.engine.rows

        self.entries: list[dict] = []
        self.encodes: list[tuple[str, int, int]] = []
        recorder = self

        def on_cfg_denoiser(params):
            recorder.entries.append({
                "step": params.denoiser.step,
                "hr": bool(getattr(params.denoiser.p, "is_hr_pass", False)),
                "unet": shared.sd_model.model.diffusion_model,
                "rows": params.x.shape[0],
                "sigma": params.sigma.detach().clone(),
                "calls": [],
                "passes": [],
            })

        script_callbacks.on_cfg_denoiser(on_cfg_denoiser, name="test recorder")

        original_take = fabric.engine.rows.RowTracker.take

        def take(self, n_rows):
            roles = original_take(self, n_rows)
            if recorder.entries:
                recorder.entries[-1]["calls"].append(roles)
            return roles

        original_inputs = fabric.engine.Fabric._reference_inputs

        def reference_inputs(self, names, x, timesteps):
            """One entry per set whose references ran, in their own calls or in the generation's."""
            if recorder.entries:
                for name in names:
                    recorder.entries[-1]["passes"].append({
                        "set": name, "unet": self.unet, "t": float(timesteps.flatten()[0]),
                        "kwargs": {k: v.clone() for k, v in self.reference_kwargs.items()},
                    })
            return original_inputs(self, names, x, timesteps)

        monkeypatch.setattr(fabric.engine.rows.RowTracker, "take", take)
        monkeypatch.setattr(fabric.engine.Fabric, "_reference_inputs", reference_inputs)

    def passes(self, set_name=None, hr=None):
        return [p for e in self.entries if hr is None or e["hr"] == hr for p in e["passes"]
                if set_name is None or p["set"] == set_name]


def is_clean(unet) -> bool:
    """No hook, no instance attribute from FABRIC on the UNet or any of its modules."""
    if unet._forward_pre_hooks or unet._forward_hooks:
        return False
    return all("forward" not in module.__dict__ and not any(k.startswith("_fabric") for k in module.__dict__)
               for module in unet.modules())
