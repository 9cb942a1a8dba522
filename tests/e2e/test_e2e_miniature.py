"""FABRIC steers the trained miniature in a real webui, through the HTTP API.

FABRIC_WEBUI_MINIATURE names the miniature's checkpoint as /sdapi/v1/sd-models lists it, written
into the webui's models/Stable-diffusion by `python -m fabric.miniature.export` (with its .yaml,
which the webui reads as the config); skipped when unset. The job is the demo's and the effect
tests': prompt "a circle", 64x64, Euler, 20 steps, CFG 5, seeds 0-63 in four batches of 16 (the
webui draws image k of a batch from seed + k), the demo's liked images alone, then its disliked
images alone, at the default settings. The
webui's Euler and its float path are not the engine's own sampler, so the images are not compared
with tests/test_miniature_effect.py's; the counts are held to tests/test_miniature_effect.py's margins,
against vanilla in the same webui.
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

from fabric.miniature.demo import PROMPT, demo_references
from fabric.miniature.reader import read
from webui_client import b64_image, png_base64

JOB = {"prompt": PROMPT, "negative_prompt": "", "width": 64, "height": 64, "steps": 20, "cfg_scale": 5,
       "sampler_name": "Euler", "seed": 0, "batch_size": 16, "n_iter": 4}


@pytest.fixture(scope="module")
def miniature(webui):
    name = os.environ.get("FABRIC_WEBUI_MINIATURE")
    if not name:
        pytest.skip("FABRIC_WEBUI_MINIATURE is not set")
    listed = [m for m in webui.client.get("/sdapi/v1/sd-models").json() if name in (m["title"], m["model_name"])]
    assert listed, f"/sdapi/v1/sd-models does not list {name}"
    assert listed[0].get("config"), f"no .yaml beside {name}: the webui would build SD1.5's UNet for it"
    previous = webui.options(["sd_model_checkpoint"])["sd_model_checkpoint"]
    webui.load_model(name)
    yield name
    webui.load_model(previous)


def generate(webui, **extra) -> tuple[list[np.ndarray], list[str]]:
    result = webui.generate({**JOB, **extra})
    infotexts = json.loads(result["info"])["infotexts"]
    images = [np.asarray(b64_image(b).convert("RGB")) for b in result["images"]]
    # the webui appends a grid of the batch when it has more than one image
    return images[-len(infotexts):] if len(images) > len(infotexts) else images, infotexts


def fabric_job(liked, disliked) -> dict:
    encode = lambda images: [png_base64(Image.fromarray(i)) for i in images]  # noqa: E731
    return {"alwayson_scripts": {"FABRIC": {"args": [
        {"enabled": True, "liked": encode(liked), "disliked": encode(disliked)}]}}}


def test_fabric_steers_the_miniature_in_the_webui(webui, miniature):
    liked, disliked = demo_references()
    jobs = {"vanilla": {}, "liked": fabric_job(liked, []), "disliked": fabric_job([], disliked)}
    readings = {}
    for name, extra in jobs.items():
        images, infotexts = generate(webui, **extra)
        assert len(images) == 64
        assert all(f"Model: {miniature}" in text for text in infotexts), infotexts[0]
        if name != "vanilla":
            assert all(f"FABRIC {name}: " in text and "FABRIC error" not in text and "FABRIC note" not in text
                       for text in infotexts), infotexts[0]
        readings[name] = [read(i) for i in images]
    red = {k: sum(r.colour == "red" for r in v) for k, v in readings.items()}
    dark_or_blue = {k: sum(r.background == "black" or r.colour == "blue" for r in v) for k, v in readings.items()}
    circles = {k: sum(r.shape == "circle" for r in v) for k, v in readings.items()}
    print(f"\nin the webui, 64 seeds: red shape {red}, black background or blue shape {dark_or_blue}, circles {circles}")
    assert circles["vanilla"] >= 32, circles  # the webui draws the prompt: the checkpoint loaded as trained
    assert red["liked"] >= max(2 * red["vanilla"], red["vanilla"] + 8), red
    assert dark_or_blue["disliked"] <= dark_or_blue["vanilla"] // 2, dark_or_blue
    assert min(circles["liked"], circles["disliked"]) >= circles["vanilla"] - 4, circles


def test_the_quality_benchmark_runs_through_the_webui(webui, miniature, capsys):
    from fabric.quality import single_shot
    from fabric.quality.__main__ import main

    before = webui.options(["fabric_reference_rows"])["fabric_reference_rows"]
    main(["--webui", str(webui.client.base_url), "--seeds", "4", "--users", "1", "--rounds", "2"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert miniature in result["webui"] and ("Forge" if webui.forge else "A1111") in result["webui"]
    rows = {row["variant"]: row for row in result["single_shot"]}
    assert list(rows) == [v.name for v in single_shot.VARIANTS] and all(r["n"] == 4 for r in rows.values())
    assert rows["vanilla"]["saturation"] == 0  # every row is compared with the webui's own vanilla
    assert [r["round"] for r in result["rounds_prompt_dropout_0.3"]] == [1, 2]
    # the separate-calls row set the webui's setting for its job only
    assert webui.options(["fabric_reference_rows"])["fabric_reference_rows"] == before
