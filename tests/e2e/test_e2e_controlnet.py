"""FABRIC beside ControlNet (Mikubill/sd-webui-controlnet) in a real webui.

ControlNet's reference_only preprocessor also injects tokens into every attn1 (self-attention), by
replacing the UNet's forward and the attn1 forwards of the model it runs on; FABRIC hooks the same
modules. The original FABRIC saved ControlNet's wrapper as "the original forward" and put it back
after ControlNet had removed it: every later request failed with HTTP 500 until a restart.

Skipped unless the webui at FABRIC_WEBUI_URL has ControlNet installed. Run it once with FABRIC's
extension folder sorting before ControlNet's and once after it (the webui orders extension scripts
by folder name), to cover both orders of script loading; the test reports which order it saw.

The tests of this module run in file order and share the images of the first one.
"""
import json

import pytest

from webui_client import gradient, pixels, png_base64

LIKED = png_base64(gradient(1))
DISLIKED = png_base64(gradient(2))
REFERENCE = png_base64(gradient(7))


def fabric(**named):
    return {"FABRIC": {"args": [{"enabled": True, "liked": [LIKED], "disliked": [DISLIKED], **named}]}}


def controlnet():
    unit = {"enabled": True, "module": "reference_only", "model": "None", "image": REFERENCE,
            "weight": 1.0, "save_detected_map": False}
    return {"ControlNet": {"args": [unit]}}


def first_image(result) -> bytes:
    """The generated picture (ControlNet may append its detected maps after it)."""
    return pixels(result["images"][0])


def infotext(result) -> str:
    return json.loads(result["info"])["infotexts"][0]


@pytest.fixture(scope="module")
def order(webui):
    """The AlwaysOn txt2img scripts in the webui's order; skips without ControlNet."""
    response = webui.client.get("/sdapi/v1/scripts")
    assert response.status_code == 200, response.text[:2000]
    names = [name.lower() for name in response.json()["txt2img"]]
    if "controlnet" not in names:
        pytest.skip("ControlNet is not installed in the webui at FABRIC_WEBUI_URL")
    assert "fabric" in names
    return names


@pytest.fixture(scope="module")
def runs(webui, order):
    """(a) vanilla, (b) ControlNet reference_only alone, (c) FABRIC alone, (d) both, in this order;
    every request must answer 200 (Webui.generate asserts it)."""
    first = "FABRIC" if order.index("fabric") < order.index("controlnet") else "ControlNet"
    print(f"\nscript order: {first} runs first ({order})")
    results = {}
    results["vanilla"] = webui.generate({})
    results["controlnet"] = webui.generate({"alwayson_scripts": controlnet()})
    results["fabric"] = webui.generate({"alwayson_scripts": fabric()})
    results["both"] = webui.generate({"alwayson_scripts": {**controlnet(), **fabric()}})
    return results


def test_each_alone_changes_the_image(runs):
    vanilla = first_image(runs["vanilla"])
    assert first_image(runs["controlnet"]) != vanilla, "reference_only did nothing: the test would prove nothing"
    assert first_image(runs["fabric"]) != vanilla
    assert "FABRIC error" not in infotext(runs["fabric"])


def test_both_in_one_request_apply_both(runs):
    both = first_image(runs["both"])
    assert both != first_image(runs["controlnet"])
    assert both != first_image(runs["fabric"])
    assert both != first_image(runs["vanilla"])
    text = infotext(runs["both"])
    assert "FABRIC strength" in text and "FABRIC error" not in text
    assert "ControlNet" in text


def test_both_again_is_reproducible(webui, runs):
    again = webui.generate({"alwayson_scripts": {**fabric(), **controlnet()}})
    assert first_image(again) == first_image(runs["both"])


def test_requests_after_the_combined_one_are_unchanged(webui, runs):
    """Nothing of either extension stays attached to the model after a request that used both."""
    assert first_image(webui.generate({"alwayson_scripts": controlnet()})) == first_image(runs["controlnet"])
    assert first_image(webui.generate({"alwayson_scripts": fabric()})) == first_image(runs["fabric"])
    assert first_image(webui.generate({})) == first_image(runs["vanilla"])


@pytest.mark.parametrize("named", [
    {"liked": [{"image": LIKED, "weight": 0}], "disliked": [{"image": DISLIKED, "weight": 0}]},
    {"strength": 0.0, "min_strength": 0.0},
    {"enabled": False},
], ids=["image weights 0", "strength 0", "disabled"])
def test_fabric_with_nothing_to_do_beside_controlnet_equals_controlnet_alone(webui, runs, named):
    result = webui.generate({"alwayson_scripts": {**controlnet(), **fabric(**named)}})
    assert first_image(result) == first_image(runs["controlnet"])
