"""FABRIC on paths only Forge has, in a real Forge (skipped against AUTOMATIC1111's webui).

- CFG 1: Forge then runs no uncond rows at all (backend/sampling/sampling_function.py:295;
  modules/processing.py:499-501), so the disliked images must cost nothing and change nothing.
- Forge's own attn1 users in the same request: its built-in ControlNet's reference_only and
  StyleAlign both register attn1 replace patches on the pass's UnetPatcher, as FABRIC does.
  Forge runs the AlwaysOn scripts in load order (modules/scripts.py:888-894): built-in
  extensions before installed ones, so here FABRIC comes after both; the other order is covered
  by tests/test_forge_host.py on the stand-in.
- Every sampler and every schedule type Forge lists (/sdapi/v1/samplers, /sdapi/v1/schedulers).
"""
import json
import os

import pytest

from webui_client import gradient, pixels, png_base64

LIKED = png_base64(gradient(1))
DISLIKED = png_base64(gradient(2))
REFERENCE = png_base64(gradient(7))
SMALL = {"steps": 2}


@pytest.fixture(scope="module", autouse=True)
def forge_only(webui):
    if not webui.forge:
        pytest.skip("Forge only: the webui at FABRIC_WEBUI_URL is AUTOMATIC1111's")


def fabric(liked=(LIKED,), disliked=(DISLIKED,), **named):
    return {"FABRIC": {"args": [{"enabled": True, "liked": list(liked), "disliked": list(disliked), **named}]}}


def images(result):
    return [pixels(b64) for b64 in result["images"]]


def infotext(result, index=0):
    return json.loads(result["info"])["infotexts"][index]


def assert_applied(result):
    text = infotext(result)
    assert "FABRIC liked" in text and "FABRIC error" not in text, text


# -- CFG 1 ------------------------------------------------------------------------------------------


def test_cfg_1_disliked_images_change_nothing_and_liked_ones_apply(webui):
    cfg1 = {"cfg_scale": 1}
    plain = images(webui.generate(cfg1))
    assert images(webui.generate({**cfg1, "alwayson_scripts": fabric(liked=())})) == plain
    liked = webui.generate({**cfg1, "alwayson_scripts": fabric()})
    assert images(liked) != plain
    assert_applied(liked)
    assert images(webui.generate({**cfg1, "alwayson_scripts": fabric()})) == images(liked)
    assert images(webui.generate(cfg1)) == plain


# -- Forge's other attn1 users --------------------------------------------------------------------


def reference_only():
    unit = {"enabled": True, "module": "reference_only", "model": "None", "image": REFERENCE,
            "weight": 1.0, "save_detected_map": False}
    return {"ControlNet": {"args": [unit]}}


def style_align():
    return {"StyleAlign Integrated": {"args": [True, 1.0]}}


@pytest.mark.parametrize("other", [reference_only, style_align], ids=["reference_only", "StyleAlign"])
def test_beside_another_attn1_patch_both_apply(webui, other):
    job = {"batch_size": 2}  # StyleAlign shares attention across the batch
    plain = images(webui.generate(job))
    alone = images(webui.generate({**job, "alwayson_scripts": other()}))
    fabric_alone = images(webui.generate({**job, "alwayson_scripts": fabric()}))
    both = webui.generate({**job, "alwayson_scripts": {**other(), **fabric()}})
    assert_applied(both)
    assert alone[:2] != plain and fabric_alone[:2] != plain
    assert images(both)[:2] not in (plain, alone[:2], fabric_alone[:2])
    assert images(webui.generate({**job, "alwayson_scripts": {**other(), **fabric()}}))[:2] == images(both)[:2]
    assert images(webui.generate(job)) == plain


# -- samplers and schedule types -------------------------------------------------------------------


def pytest_generate_tests(metafunc):
    """One test per sampler and schedule type the webui lists (none when it is not Forge)."""
    from webui_client import Webui

    url = os.environ.get("FABRIC_WEBUI_URL", "").rstrip("/")
    for name, path, key in (("sampler", "/sdapi/v1/samplers", "name"), ("scheduler", "/sdapi/v1/schedulers", "label")):
        if name in metafunc.fixturenames:
            webui = Webui(url) if url else None
            names = [e[key] for e in webui.client.get(path).json()] if webui is not None and webui.forge else []
            metafunc.parametrize(name, names)


def assert_feedback_visible(webui, job, kind="txt2img"):
    plain = images(webui.generate(job, kind=kind))
    with_feedback = webui.generate({**job, "alwayson_scripts": fabric(end=1.0)}, kind=kind)
    assert images(with_feedback) != plain
    assert_applied(with_feedback)


def test_every_sampler_forge_lists(webui, sampler):
    if sampler == "DPM adaptive":
        # It chooses its own steps between a first and a last sigma. From pure noise (txt2img:
        # the model's whole sigma range, modules/sd_samplers_kdiffusion.py:215-217) random weights
        # keep its error estimate high: it ran over 7 minutes here, with or without FABRIC. In
        # img2img it integrates only over the denoised part of the schedule (:159-163).
        job = {"steps": 4, "sampler_name": sampler, "init_images": [REFERENCE], "denoising_strength": 0.3}
        assert_feedback_visible(webui, job, kind="img2img")
        return
    steps = 4 if sampler == "UniPC" else SMALL["steps"]  # UniPC wants more steps than its order, 3
    assert_feedback_visible(webui, {"steps": steps, "sampler_name": sampler})


def test_every_schedule_type_forge_lists(webui, scheduler):
    assert_feedback_visible(webui, {**SMALL, "sampler_name": "Euler", "scheduler": scheduler})


def test_batch_size_and_count_together(webui):
    job = {**SMALL, "batch_size": 2, "n_iter": 2}
    plain = images(webui.generate(job))
    result = webui.generate({**job, "alwayson_scripts": fabric()})
    pictures = images(result)
    assert len(pictures) >= 4 and all(a != b for a, b in zip(pictures[-4:], plain[-4:]))
    assert all("FABRIC liked" in t and "FABRIC error" not in t for t in json.loads(result["info"])["infotexts"])


# -- SDXL through Forge's own loader ---------------------------------------------------------------


def test_sdxl_with_forges_fp8_weight_storage(webui):
    """FABRIC_WEBUI_SDXL in Forge, its UNet weights stored in float8 (Forge's "Diffusion in Low
    Bits", forge_unet_storage_dtype), which lets SDXL fit a small machine; computation stays
    float32. Plain, with feedback, after, and the hires pass with feedback. (test_sdxl in
    test_e2e_generation.py runs the same checks with the weights as loaded.)"""
    if not webui.sdxl:
        pytest.skip("FABRIC_WEBUI_SDXL is not set")
    options = webui.client.get("/sdapi/v1/options").json()
    previous = {key: options[key] for key in ("sd_model_checkpoint", "forge_unet_storage_dtype")}
    response = webui.post("/sdapi/v1/options", {"sd_model_checkpoint": webui.sdxl,
                                                "forge_unet_storage_dtype": "float8-e4m3fn"})
    assert response.status_code == 200, response.text[:2000]
    try:
        plain = images(webui.generate(SMALL))
        with_feedback = webui.generate({**SMALL, "alwayson_scripts": fabric()})
        assert images(with_feedback) != plain
        assert_applied(with_feedback)
        assert images(webui.generate(SMALL)) == plain
        hires = {**SMALL, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent",
                 "denoising_strength": 0.6, "hr_second_pass_steps": 1}
        assert_applied(webui.generate({**hires, "alwayson_scripts": fabric(hires=True)}))
    finally:
        webui.post("/sdapi/v1/options", previous)
