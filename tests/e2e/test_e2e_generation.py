"""FABRIC through /sdapi/v1/txt2img and img2img in a real webui."""
import json
import os

import pytest

from webui_client import gradient, pixels, png_base64

LIKED = png_base64(gradient(1))
DISLIKED = png_base64(gradient(2))


def fabric_args(**named):
    return {"FABRIC": {"args": [{"enabled": True, "liked": [LIKED], "disliked": [DISLIKED], **named}]}}


def images(result):
    return [pixels(b64) for b64 in result["images"]]


def infotext(result, index=0):
    return json.loads(result["info"])["infotexts"][index]


@pytest.fixture(scope="module")
def vanilla(webui):
    return images(webui.generate({}))


def test_default_is_off_and_byte_identical(webui, vanilla):
    assert images(webui.generate({"alwayson_scripts": {"FABRIC": {"args": []}}})) == vanilla
    assert images(webui.generate({"alwayson_scripts": {"FABRIC": {"args": [{"enabled": False, "liked": [LIKED]}]}}})) == vanilla


@pytest.mark.parametrize("named", [{"liked": [], "disliked": []}, {"strength": 0.0, "min_strength": 0.0}])
def test_nothing_to_do_is_byte_identical(webui, vanilla, named):
    assert images(webui.generate({"alwayson_scripts": fabric_args(**named)})) == vanilla


def test_feedback_changes_the_image_and_is_reproducible(webui, vanilla):
    first = webui.generate({"alwayson_scripts": fabric_args()})
    assert images(first) != vanilla
    assert images(webui.generate({"alwayson_scripts": fabric_args()})) == images(first)
    text = infotext(first)
    assert "FABRIC strength: 0.8" in text and "FABRIC liked" in text
    assert images(webui.generate({})) == vanilla  # a job after a FABRIC job


@pytest.mark.parametrize("reference_rows", ["In separate UNet calls", "Auto"])
def test_batch_image_equals_its_seed_alone(webui, reference_rows):
    """Image 1 of a batch seeded 1234 is the image of seed 1235 alone, as far as the webui itself
    is batch-invariant: on a CPU, batched convolutions may round differently, so FABRIC with its
    references in separate calls may differ from its own seed alone by no more than vanilla does.
    With them in the sampler's call (Auto on a CPU) the call's batch size changes with them, so a
    few pixel levels of rounding are allowed."""
    import numpy as np

    def difference(named):
        payload = {"alwayson_scripts": fabric_args()} if named else {}
        payload["override_settings"] = {"fabric_reference_rows": reference_rows}
        batch = images(webui.generate({"batch_size": 2, **payload}))
        alone = images(webui.generate({"seed": 1235, **payload}))
        delta = np.abs(np.frombuffer(batch[1], np.uint8).astype(int) - np.frombuffer(alone[0], np.uint8))
        print(f"{reference_rows}, {'FABRIC' if named else 'vanilla'}: batch image 1 vs seed 1235 alone, "
              f"mean abs difference {delta.mean():.4f}, max {delta.max()} (0-255 pixels)")
        return delta.max()

    vanilla, with_feedback = difference(False), difference(True)
    slack = 2 if reference_rows == "In separate UNet calls" else 8
    assert with_feedback <= max(vanilla, 0) + slack, (vanilla, with_feedback)
    if vanilla == 0 and reference_rows == "In separate UNet calls":
        assert with_feedback == 0


SAMPLERS = ["Euler a", "DPM++ 2M", "Heun", "DPM++ SDE", "DDIM", "PLMS", "UniPC", "LCM"]
# modules/sd_schedulers.py (v1.10): the "Schedule type" choices besides Automatic.
SCHEDULERS = ["Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
              "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler(webui, scheduler):
    """FABRIC reads the progress from the timestep each UNet call gets, whatever spaced the sigmas;
    a window over the second half of the steps (start 0.5) still acts under every schedule."""
    job = {"sampler_name": "Euler", "scheduler": scheduler}
    plain = images(webui.generate(job))
    with_feedback = webui.generate({**job, "alwayson_scripts": fabric_args(start=0.5, end=1.0)})
    assert images(with_feedback) != plain
    assert f"Schedule type: {scheduler}" in infotext(with_feedback)
    assert "FABRIC start: 0.5" in infotext(with_feedback) and "FABRIC error" not in infotext(with_feedback)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler(webui, sampler):
    plain = images(webui.generate({"sampler_name": sampler}))
    with_feedback = webui.generate({"sampler_name": sampler, "alwayson_scripts": fabric_args()})
    assert images(with_feedback) != plain
    assert "FABRIC" in infotext(with_feedback) and "FABRIC error" not in infotext(with_feedback)


LONG_PROMPT = ", ".join(["a very detailed painting of a cat"] * 12)

PATTERNS = {
    "batch_cond_uncond off": {"override_settings": {"batch_cond_uncond": False}, "batch_size": 2},
    "long prompt: cond and uncond in separate calls": {"prompt": LONG_PROMPT},
    "AND prompts": {"prompt": "a cat AND a dog:0.5", "batch_size": 2,
                    "override_settings": {"batch_cond_uncond": False}},
    "negative guidance minimum sigma": {"s_min_uncond": 5.0},
    "NGMS all steps": {"s_min_uncond": 5.0, "override_settings": {"s_min_uncond_all": True}},
    "skip early CFG": {"override_settings": {"skip_early_cond": 0.5}},
    "batch count": {"n_iter": 2},
    "token merging": {"override_settings": {"token_merging_ratio": 0.5}},
}


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_call_patterns(webui, pattern):
    payload = PATTERNS[pattern]
    plain = images(webui.generate(payload))
    with_feedback = webui.generate({**payload, "alwayson_scripts": fabric_args()})
    assert images(with_feedback) != plain
    assert "FABRIC error" not in infotext(with_feedback)
    assert images(webui.generate(payload)) == plain


# The setting's titles in v1.10.1 (modules/sd_hijack_optimizations.py: "name - label", or the name),
# and the name that apply_optimizations logs ("Applying attention optimization: <name>... done.").
ATTENTION_OPTIMIZATIONS = {
    "Doggettx": "Doggettx", "sub-quadratic": "sub-quadratic", "V1 - original v1": "V1", "InvokeAI": "InvokeAI",
    "sdp-no-mem - scaled dot product without memory efficient attention": "sdp-no-mem",
    "sdp - scaled dot product": "sdp", "None": None,
}


@pytest.fixture
def attention_setting(webui):
    """Switch the webui's cross attention optimization for real and put it back afterwards.

    override_settings would not do: v1.10.1 applies them with run_callbacks=False
    (modules/processing.py:833), so the optimization is never re-applied. POST /sdapi/v1/options
    runs the setting's onchange, which re-applies it (modules/initialize_util.py:186) and logs
    which one it applied; FABRIC_WEBUI_LOG names the webui's console log to check that in."""
    original = webui.options(["cross_attention_optimization"])
    if original["cross_attention_optimization"] is None:
        pytest.skip("this webui has no cross attention optimization setting (Forge)")
    log = os.environ.get("FABRIC_WEBUI_LOG")
    if not log:
        pytest.skip("FABRIC_WEBUI_LOG (the webui's console log) is needed to see the optimization applied")

    def switch(title: str) -> None:
        start = os.path.getsize(log)
        webui.set_options({"cross_attention_optimization": title})
        with open(log, "rb") as handle:
            handle.seek(start)
            written = handle.read().decode("utf-8", "replace")
        name = ATTENTION_OPTIMIZATIONS[title]
        expected = "Disabling attention optimization" if name is None else f"Applying attention optimization: {name}..."
        assert expected in written, f"switching to {title!r} logged: {written[-500:]!r}"

    yield switch
    webui.set_options(original)


@pytest.mark.parametrize("optimization", list(ATTENTION_OPTIMIZATIONS))
def test_attention_optimizations(webui, attention_setting, optimization):
    attention_setting(optimization)
    plain = images(webui.generate({}))
    with_feedback = webui.generate({"alwayson_scripts": fabric_args()})
    assert images(with_feedback) != plain and "FABRIC error" not in infotext(with_feedback)
    assert images(webui.generate({})) == plain


def test_hires_fix(webui):
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.6,
             "hr_second_pass_steps": 2}
    plain = images(webui.generate(hires))
    first_pass_only = images(webui.generate({**hires, "alwayson_scripts": fabric_args()}))
    both = images(webui.generate({**hires, "alwayson_scripts": fabric_args(hires=True)}))
    assert len({plain[0], first_pass_only[0], both[0]}) == 3


def test_img2img_and_inpainting(webui):
    init = png_base64(gradient(5))
    payload = {"init_images": [init], "denoising_strength": 0.75}
    plain = images(webui.generate(payload, kind="img2img"))
    assert images(webui.generate({**payload, "alwayson_scripts": fabric_args()}, kind="img2img")) != plain
    from PIL import Image

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpaint = {**payload, "mask": png_base64(mask), "inpainting_fill": 1}
    plain = images(webui.generate(inpaint, kind="img2img"))
    assert images(webui.generate({**inpaint, "alwayson_scripts": fabric_args()}, kind="img2img")) != plain


def test_infotext_field_restores_the_settings(webui):
    first = webui.generate({"alwayson_scripts": fabric_args(strength=0.6)})
    text = infotext(first)
    # Positional [True]: switch FABRIC on and keep the other arguments the infotext restored (a
    # named object would give every key it leaves out its default, i.e. no images).
    again = webui.generate({"infotext": text, "alwayson_scripts": {"FABRIC": {"args": [True]}}})
    assert images(again) == images(first)


def test_sdxl(webui):
    if not webui.sdxl:
        pytest.skip("FABRIC_WEBUI_SDXL is not set")
    previous = webui.client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
    webui.load_model(webui.sdxl)
    try:
        plain = images(webui.generate({"steps": 2}))
        with_feedback = webui.generate({"steps": 2, "alwayson_scripts": fabric_args()})
        assert images(with_feedback) != plain and "FABRIC error" not in infotext(with_feedback)
        assert images(webui.generate({"steps": 2})) == plain
        hires = {"steps": 2, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent",
                 "denoising_strength": 0.6, "hr_second_pass_steps": 1}
        with_hires = webui.generate({**hires, "alwayson_scripts": fabric_args(hires=True)})
        assert "FABRIC error" not in infotext(with_hires)
    finally:
        webui.load_model(previous)


def test_xyz_plot_axes(webui):
    """X/Y/Z plot with FABRIC's strength as the X axis: one image per value, each with its own
    strength in the infotext."""
    info = webui.client.get("/sdapi/v1/script-info").json()
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    choices = xyz["args"][0]["choices"]
    strength_axis = choices.index("[FABRIC] Strength")
    nothing = choices.index("Nothing")
    script_args = [strength_axis, "0.2, 0.8", [], nothing, "", [], nothing, "", [],
                   False, True, False, False, 0, 0, 0, 0, False]
    result = webui.generate({"script_name": "x/y/z plot", "script_args": script_args,
                             "alwayson_scripts": fabric_args()})
    texts = json.loads(result["info"])["infotexts"]
    lone = [t for t in texts if "FABRIC strength" in t]
    assert any("FABRIC strength: 0.2" in t for t in lone) and any("FABRIC strength: 0.8" in t for t in lone)
    pictures = images(result)
    assert len(set(pictures[-2:])) == 2
