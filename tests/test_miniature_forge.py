"""The miniature steered through FABRIC's Forge adapter (fabric/hosts/forge.py).

Forge's loader refuses the miniature (README, "Forge and the miniature"), so its trained UNet
weights go into the stand-in of Forge's UNet (tests/forge_standin/backend/nn/unet.py, ldm's
parameter names), sampled as Forge samples (tests/forge_standin/miniature_forge.py). First the
stand-in must be the miniature's UNet, then the adapter must compute what the engine computes on
that UNet, and then the effect must be there in the images, counted against Forge vanilla on the
same seeds, on the same CPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
for _path in (TESTS / "forge_standin", TESTS / "webui_standin", TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import miniature_forge  # noqa: E402
from forge_job import P, sample  # noqa: E402

import fabric  # noqa: E402
from fabric.hosts import forge  # noqa: E402
from fabric.hosts.webui import encode_reference  # noqa: E402
from fabric.miniature.demo import PROMPT, demo_references  # noqa: E402
from fabric.miniature.generate import CFG_SCALE, Feedback  # noqa: E402
from fabric.miniature.model import LATENT_SIZE, load  # noqa: E402
from fabric.miniature.reader import read  # noqa: E402
from fabric.sampler import EulerSampler  # noqa: E402

SEEDS = list(range(64))


@pytest.fixture(autouse=True)
def no_job_left_open():
    yield
    forge.end_job()


@pytest.fixture(scope="module")
def miniature():
    return load()


@pytest.fixture(scope="module")
def model(miniature):
    return miniature_forge.ForgeMiniature(miniature)


@pytest.fixture(scope="module")
def liked():
    return demo_references()[0]


def red(images) -> int:
    return sum(read(image).colour == "red" for image in images)


def circles(images) -> int:
    return sum(read(image).shape == "circle" for image in images)


def test_the_forge_unet_is_the_miniatures(miniature, model):
    unet = model.forge_objects.unet.model.diffusion_model
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, LATENT_SIZE, LATENT_SIZE, generator=generator)
    t = torch.tensor([999.0, 321.0])
    context = miniature.embed(["a circle", ""])
    with torch.no_grad():
        expected = miniature.unet(x, t, context=context)
        got = unet(x, t, context=context)
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def test_the_adapter_computes_what_the_engine_computes_on_the_same_unet(miniature, model, liked):
    """The engine attached to the Forge UNet (rows uncond-first as Forge batches them, references
    in passes of their own as Forge runs them) samples what the adapter samples, to rounding."""
    seeds = [0, 1]
    feedback = Feedback(liked, [])
    settings, pictures = miniature_forge.fabric_settings(feedback)
    kmodel = model.forge_objects_after_applying_lora.unet.model
    schedule = EulerSampler(miniature.unet, miniature.alphas, 20, torch.device("cpu"), torch.float32).sigmas.float()
    refs = {fabric.LIKED: [fabric.Reference(
        image.id, lambda h, w, i=image.id: encode_reference(pictures[i], i, h, w, model))
        for image in settings.liked]}
    s = feedback.schedule
    engine = fabric.Fabric(
        kmodel.diffusion_model, references=refs,
        schedule=fabric.Schedule(strength=s.strength, start=s.start, end=s.end, min_strength=s.min_strength,
                                 neg_scale=s.neg_scale),
        alphas_cumprod=kmodel.predictor.alphas_cumprod,
        reference_kwargs={"context": model.get_learned_conditioning([""])},
        rows=lambda n: [fabric.DISLIKED] * (n // 2) + [fabric.LIKED] * (n // 2),
        fuse_reference_rows=False,
    )
    with engine:
        expected = sample(P(model, cfg_scale=CFG_SCALE), seeds=seeds, prompt=PROMPT, size=LATENT_SIZE,
                          schedule=schedule)
    assert engine.reference_passes > 0
    got = miniature.decode(expected)
    adapter = miniature_forge.generate(model, PROMPT, seeds, feedback)
    vanilla = miniature_forge.generate(model, PROMPT, seeds)
    # to rounding of 8-bit pixels, and FABRIC changed them
    assert abs(got.astype(int) - adapter.astype(int)).max() <= 1
    assert abs(vanilla.astype(int) - adapter.astype(int)).mean() > 5


def black(images) -> int:
    return sum(read(image).background == "black" for image in images)


def test_liked_images_steer_the_miniature_through_forge_and_the_prompt_stays(model, liked):
    # here: red shapes 11 -> 21 of 64 (the engine on the ldm UNet: 26; Forge's integer
    # timesteps and its own reference noise move single seeds), black backgrounds 13 -> 0,
    # circles 40 -> 49; the margins leave room for another CPU's rounding
    vanilla = miniature_forge.generate(model, PROMPT, SEEDS)
    steered = miniature_forge.generate(model, PROMPT, SEEDS, Feedback(liked, []))
    assert red(steered) >= red(vanilla) + 6, (red(vanilla), red(steered))
    assert black(steered) <= black(vanilla) // 2, (black(vanilla), black(steered))
    assert circles(steered) >= circles(vanilla) - 4, (circles(vanilla), circles(steered))
