"""The miniature (fabric/miniature) as a Forge model, sampled as Forge samples, FABRIC through its Forge adapter.

Forge's own loader cannot load the miniature (README, "Forge and the miniature"), so this puts the
miniature's UNet weights, unchanged, into the stand-in of Forge's UNet (backend/nn/unet.py keeps
ldm's parameter names), behind the stand-in's KModel, UnetPatcher and sampling_function:
[uncond; cond] rows, integer timesteps, block modifiers and attn1 replace patches, exactly the
code paths fabric/hosts/forge.py takes in Forge. The sigmas are fabric.sampler.EulerSampler's, the
noise per seed and CFG scale those of fabric.miniature.generate, so the images compare seed by
seed with the engine's.

What stands in for Forge's model object (backend/diffusion_engine/sd15.py, as forge_job.py's
FakeForgeModel encodes it): get_learned_conditioning is the miniature's text encoder; the VAE
encodes to the posterior's mean (Forge samples it with the forked RNG FABRIC seeds per image;
the mean is what fabric.miniature.generate's references use, so both see the same latents).

    .venv/bin/python tests/forge_standin/miniature_forge.py [--seeds 64]

prints the single-shot table (fabric.quality.single_shot) through Forge's adapter and through the
engine on the same seeds, one after the other, and a JSON last line.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the stand-ins and the repository on the path
    _here = Path(__file__).resolve().parent
    for _path in (_here.parents[1], _here.parent, _here.parent / "webui_standin", _here):
        if str(_path) not in sys.path:
            sys.path.insert(0, str(_path))

import numpy as np
import torch
from PIL import Image

from backend.modules.k_model import KModel
from backend.modules.k_prediction import Prediction
from backend.nn.unet import IntegratedUNet2DConditionModel
from backend.patcher.unet import UnetPatcher
from forge_job import ForgeObjects, P, sample

from fabric.feedback.settings import FabricSettings, FeedbackImage
from fabric.hosts import forge
from fabric.hosts.webui import JobReport
from fabric.miniature.generate import CFG_SCALE, STEPS, Feedback
from fabric.miniature.model import LATENT_SIZE, UNET_CONFIG, Miniature
from fabric.sampler import EulerSampler
from fabric.engine.prompt_dropout import drop_words


def forge_unet(miniature: Miniature) -> IntegratedUNet2DConditionModel:
    """The stand-in of Forge's UNet with the miniature's UNet weights (strict: every key)."""
    config = UNET_CONFIG
    assert config["channel_mult"] == [1, 2] and config["num_res_blocks"] == 1 and config["attention_resolutions"] == [1, 2]
    unet = IntegratedUNet2DConditionModel(
        in_channels=config["in_channels"], model_channels=config["model_channels"], context_dim=config["context_dim"],
        head_channels=config["num_head_channels"], use_linear=config.get("use_linear_in_transformer", False))
    unet.load_state_dict(miniature.unet.state_dict(), strict=True)
    return unet.requires_grad_(False).eval()


class ForgeMiniature:
    """`p.sd_model` in Forge, for the miniature."""

    is_sdxl = False
    is_sd1 = True
    is_inpaint = False

    def __init__(self, miniature: Miniature):
        self.miniature = miniature
        predictor = Prediction()
        if not torch.allclose(predictor.alphas_cumprod, miniature.alphas):
            raise ValueError("Forge's SD1 schedule is not the miniature's")
        self.forge_objects = ForgeObjects(unet=UnetPatcher(KModel(forge_unet(miniature), predictor)))
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.first_stage_model = miniature.vae

    def get_learned_conditioning(self, prompts):
        return self.miniature.embed(list(prompts))

    @torch.no_grad()
    def encode_first_stage(self, x):
        mean, _ = self.miniature.vae.moments(x.float())
        return mean

    def get_first_stage_encoding(self, z):
        return z * self.miniature.scale_factor


def image_id(image: np.ndarray) -> str:
    """A store-like id (16 hex digits) naming the picture's content."""
    return hashlib.sha256(image.tobytes()).hexdigest()[:16]


def fabric_settings(feedback: Feedback) -> tuple[FabricSettings, dict]:
    """The settings and the pictures (by id) the script hands the adapter for this feedback."""
    s = feedback.schedule
    liked_weights = feedback.liked_weights or [1.0] * len(feedback.liked)
    pictures = {image_id(i): Image.fromarray(i) for i in (*feedback.liked, *feedback.disliked)}
    settings = FabricSettings(
        enabled=True,
        liked=tuple(FeedbackImage(image_id(i), w) for i, w in zip(feedback.liked, liked_weights)),
        disliked=tuple(FeedbackImage(image_id(i)) for i in feedback.disliked),
        strength=s.strength, start=s.start, end=s.end, min_strength=s.min_strength, neg_scale=s.neg_scale,
        token_budget=feedback.token_budget)
    return settings, pictures


def generate(model: ForgeMiniature, prompt: str, seeds: list[int], feedback: Feedback | None = None, *,
             steps: int = STEPS, cfg_scale: float = CFG_SCALE, prompt_dropout: float = 0.0,
             batch: int = 32) -> np.ndarray:
    """uint8 images [len(seeds), 64, 64, 3], as fabric.miniature.generate.generate makes them,
    sampled through Forge's code paths; with feedback, one FABRIC job per batch through the
    Forge adapter, as the script runs it (start, process_before_every_sampling, on_cfg_denoiser,
    finish). A job FABRIC stopped raises: a measurement must not count vanilla images as FABRIC's."""
    miniature = model.miniature
    schedule = EulerSampler(miniature.unet, miniature.alphas, steps, torch.device("cpu"), torch.float32).sigmas.float()
    with_feedback = feedback is not None and (feedback.liked or feedback.disliked)
    out = []
    for begin in range(0, len(seeds), batch):
        chunk = seeds[begin:begin + batch]
        prompts = [drop_words(prompt, prompt_dropout, s) if prompt_dropout > 0 else prompt for s in chunk]
        p = P(model, cfg_scale=cfg_scale)
        kwargs = dict(seeds=chunk, prompt=prompts, size=LATENT_SIZE, schedule=schedule)
        if not with_feedback:
            latents = sample(p, **kwargs)
        else:
            settings, pictures = fabric_settings(feedback)
            report = JobReport(p, settings)
            forge.start_job(p, settings, pictures, report)
            report.applying()
            try:
                latents = sample(p, (lambda p, **kw: forge.before_sampling(p, **kw),),
                                 denoiser_callbacks=(forge.on_cfg_denoiser,), **kwargs)
            finally:
                forge.finish_job(p)
                report.finish()
            if report.stopped is not None:
                raise RuntimeError(f"FABRIC stopped on the miniature in Forge: {report.stopped}")
        out.append(miniature.decode(latents))
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import functools
    import json
    import time

    from fabric.bench.text_table import text_table
    from fabric.miniature import generate as engine
    from fabric.miniature.model import load
    from fabric.quality import single_shot
    from fabric.quality.__main__ import machine

    parser = argparse.ArgumentParser(prog="tests/forge_standin/miniature_forge.py", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=64)
    args = parser.parse_args(argv)
    begin = time.perf_counter()
    miniature = load()
    # Forge always runs the references in UNet calls of their own: the fused-rows row means nothing here.
    variants = [v for v in single_shot.VARIANTS if v.name != "references in separate calls"]
    seeds = list(range(args.seeds))
    result = {"machine": machine()}
    for name, images in (("Forge adapter", functools.partial(generate, ForgeMiniature(miniature))),
                         ("engine (AUTOMATIC1111)", functools.partial(engine.generate, miniature))):
        print(f"\n{name}: prompt \"a circle\", {args.seeds} seeds ({result['machine']})", flush=True)
        rows = single_shot.run(images, seeds, variants, log=lambda m: print(m, flush=True))
        print(text_table(rows, single_shot.COLUMNS), flush=True)
        result[name] = rows
    result["seconds"] = round(time.perf_counter() - begin)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
