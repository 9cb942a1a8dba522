"""FABRIC with a LoRA, and with a second checkpoint swapped in during a job, in a real webui.

- LoRA: FABRIC_WEBUI_LORA names a LoRA for the loaded (SD1.x) checkpoint, as /sdapi/v1/loras lists
  it; unset, the first LoRA listed is used. Skipped when /sdapi/v1/loras lists none (or not that one).
- Refiner and hires checkpoint: FABRIC_WEBUI_SECOND_CHECKPOINT names a second checkpoint of the
  loaded one's kind (SD1.x, other weights), as /sdapi/v1/sd-models lists its title or model_name.
  Skipped when unset or not listed.
- SD 2.x with v-prediction: FABRIC_WEBUI_SD2 names such a checkpoint. Skipped when unset.
- SSD-1B: FABRIC_WEBUI_SSD1B names an SSD-1B checkpoint (Segmind's distilled SDXL). Skipped when
  unset. The webui (v1.7+) takes it for SDXL by its second text encoder (sd_models_config.py,
  guess_model_config_from_state_dict: sd_xl_base.yaml), then, finding no attn1 in
  middle_block.1, marks it is_ssd (sd_models.py, set_model_type) and deletes the blocks SSD-1B
  lacks from the SDXL UNet (sd_hijack.py, convert_sdxl_to_ssd): 34 attn1 layers instead of 70.
  Switch models only once the webui has loaded its first one: a switch that raced the start-up
  load once left the webui unable to switch back (a trashed model still in loaded_sd_models).
"""
import json
import os

import pytest

from webui_client import gradient, pixels, png_base64

LIKED = png_base64(gradient(1))
DISLIKED = png_base64(gradient(2))


def fabric_args(**named):
    return {"FABRIC": {"args": [{"enabled": True, "liked": [LIKED], "disliked": [DISLIKED], **named}]}}


def image(result) -> bytes:
    return pixels(result["images"][0])


def infotext(result) -> str:
    return json.loads(result["info"])["infotexts"][0]


def assert_fabric_applied(result):
    text = infotext(result)
    assert "FABRIC liked" in text and "FABRIC error" not in text, text


# -- LoRA -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora(webui):
    response = webui.client.get("/sdapi/v1/loras")
    assert response.status_code == 200, response.text
    listed = [entry["name"] for entry in response.json()]
    wanted = os.environ.get("FABRIC_WEBUI_LORA") or (listed[0] if listed else None)
    if wanted is None or wanted not in listed:
        pytest.skip(f"/sdapi/v1/loras does not list {wanted or 'any LoRA'} (listed: {listed})")
    return wanted


def test_lora(webui, lora):
    prompt = {"prompt": f"a cat <lora:{lora}:1>"}
    vanilla = image(webui.generate({}))
    with_lora = webui.generate(prompt)
    assert f"{lora}: " in infotext(with_lora), infotext(with_lora)  # "Lora hashes": the webui applied it
    assert image(with_lora) != vanilla, "the LoRA did not change the image: it was not loaded"

    with_fabric = webui.generate({**prompt, "alwayson_scripts": fabric_args()})
    assert_fabric_applied(with_fabric)
    assert f"{lora}: " in infotext(with_fabric)
    assert image(with_fabric) != image(with_lora)
    assert image(webui.generate({**prompt, "alwayson_scripts": fabric_args()})) == image(with_fabric)

    assert image(webui.generate(prompt)) == image(with_lora)  # a LoRA job after the FABRIC job


# -- a second checkpoint in the middle of a job --------------------------------------------------------


@pytest.fixture(scope="module")
def second_checkpoint(webui):
    name = os.environ.get("FABRIC_WEBUI_SECOND_CHECKPOINT")
    if not name:
        pytest.skip("FABRIC_WEBUI_SECOND_CHECKPOINT is not set")
    models = webui.client.get("/sdapi/v1/sd-models").json()
    if not any(name in (m["title"], m["model_name"]) for m in models):
        pytest.skip(f"/sdapi/v1/sd-models does not list {name}")
    loaded = webui.client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
    assert name not in loaded, f"{name} is the loaded checkpoint; it must be a second one"
    return name


# sd_checkpoints_limit 1 (the default): the webui loads a checkpoint of the same config into the
# model object it has, so the UNet stays the same object with new weights (and a new text encoder
# and VAE). 2: the second checkpoint becomes a second model object with its own UNet, which FABRIC
# must find and attach to; a FABRIC left on the first UNet would change nothing there.
SAME_UNET = {"sd_checkpoints_limit": 1}
NEW_UNET = {"sd_checkpoints_limit": 2}


@pytest.mark.parametrize("models", [SAME_UNET, NEW_UNET], ids=["weights into the same UNet", "a second model"])
def test_refiner_switch_reattaches_fabric(webui, second_checkpoint, models):
    """The refiner takes over at 50 %; FABRIC's window starts at 60 %, so only refiner calls can
    carry feedback: the picture changes only if FABRIC follows the swap to the refiner.

    Why no base-model call is in the window: the webui switches (sd_samplers_common.apply_refiner,
    by sigma unless refiner_switch_by_sample_steps) once (999 - t) / 1000 >= refiner_switch_at;
    FABRIC's progress is 1 - t / 999 for the same UNet timestep t. Progress >= 0.6 means t <= 399,
    where the refiner is loaded already.
    """
    refiner = {"refiner_checkpoint": second_checkpoint, "refiner_switch_at": 0.5,
               "override_settings": {"refiner_switch_by_sample_steps": False, **models}}
    plain = webui.generate(refiner)
    assert f"Refiner: {second_checkpoint}" in infotext(plain), infotext(plain)
    with_fabric = webui.generate({**refiner, "alwayson_scripts": fabric_args(start=0.6, end=1.0)})
    assert_fabric_applied(with_fabric)
    assert f"Refiner: {second_checkpoint}" in infotext(with_fabric)
    assert image(with_fabric) != image(plain), "FABRIC did not act on the refiner's UNet"
    assert image(webui.generate(refiner)) == image(plain)  # a refiner job after the FABRIC job


def test_hires_checkpoint_swap(webui, second_checkpoint):
    """The hires pass runs on the second checkpoint, a second model object (see NEW_UNET). FABRIC
    with "also during hires fix" differs from FABRIC without it only in that pass, so a difference
    there is feedback on the second model's UNet."""
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.6,
             "hr_second_pass_steps": 2, "hr_checkpoint_name": second_checkpoint,
             "override_settings": NEW_UNET}
    plain = webui.generate(hires)
    assert f"Hires checkpoint: {second_checkpoint}" in infotext(plain), infotext(plain)
    both_passes = webui.generate({**hires, "alwayson_scripts": fabric_args(hires=True)})
    assert_fabric_applied(both_passes)
    assert "FABRIC hires: True" in infotext(both_passes)
    first_pass_only = webui.generate({**hires, "alwayson_scripts": fabric_args(hires=False)})
    assert_fabric_applied(first_pass_only)
    assert len({image(plain), image(both_passes), image(first_pass_only)}) == 3
    assert image(webui.generate(hires)) == image(plain)  # a job after the FABRIC jobs


# -- SSD-1B -----------------------------------------------------------------------------------------


def test_ssd1b(webui):
    name = os.environ.get("FABRIC_WEBUI_SSD1B")
    if not name:
        pytest.skip("FABRIC_WEBUI_SSD1B is not set")
    on_checkpoint(webui, name)


def on_checkpoint(webui, name, job=None):
    """With `name` loaded: FABRIC changes the image, reproducibly, also in a hires pass, and the
    vanilla job after it is the one before it."""
    job = job or {"steps": 2}
    previous = webui.client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
    webui.load_model(name)
    try:
        plain = webui.generate(job)
        assert f"Model: {name}" in infotext(plain), infotext(plain)
        with_fabric = webui.generate({**job, "alwayson_scripts": fabric_args()})
        assert_fabric_applied(with_fabric)
        assert image(with_fabric) != image(plain)
        assert image(webui.generate({**job, "alwayson_scripts": fabric_args()})) == image(with_fabric)
        assert image(webui.generate(job)) == image(plain)
        hires = {**job, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent",
                 "denoising_strength": 0.6, "hr_second_pass_steps": 1}
        assert_fabric_applied(webui.generate({**hires, "alwayson_scripts": fabric_args(hires=True)}))
    finally:
        webui.load_model(previous)


# -- SD 2.x -----------------------------------------------------------------------------------------


def test_sd2_v_prediction(webui):
    """FABRIC_WEBUI_SD2 names an SD 2.x checkpoint whose config (a .yaml beside it, as
    /sdapi/v1/sd-models reports) says v-prediction: the OpenCLIP-H text encoder (1024-wide
    context) and a UNet predicting v. FABRIC needs only the timestep and the empty prompt's
    context from the model, so it is the same code path as SD 1.x."""
    name = os.environ.get("FABRIC_WEBUI_SD2")
    if not name:
        pytest.skip("FABRIC_WEBUI_SD2 is not set")
    listed = [m for m in webui.client.get("/sdapi/v1/sd-models").json() if name in (m["title"], m["model_name"])]
    assert listed, f"/sdapi/v1/sd-models does not list {name}"
    config = listed[0].get("config")
    assert config, f"no config beside {name}: the webui would guess one"
    if os.path.exists(config):  # the webui runs on this machine
        assert 'parameterization: "v"' in open(config).read(), config
    # Random weights: at 2 steps, or with the client's default negative prompt, vanilla Euler on
    # this v-model already ends in NaNs (the webui's NansException), with or without FABRIC.
    on_checkpoint(webui, name, {"steps": 4, "negative_prompt": ""})
