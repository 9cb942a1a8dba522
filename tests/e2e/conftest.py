"""End-to-end tests against a running webui with this extension installed.

Set FABRIC_WEBUI_URL (e.g. http://127.0.0.1:7860, started with --api) to run them; they are
skipped otherwise. FABRIC_WEBUI_SDXL names an SDXL checkpoint (as /sdapi/v1/sd-models lists its
title or model_name) for the SDXL test;
the other tests use the checkpoint the webui has loaded (an SD1.x one).

The same files run against AUTOMATIC1111's webui and Forge; the client finds out which from the
webui itself. What only one of them has is skipped on the other with the reason (A1111_ONLY here;
test_e2e_forge.py is Forge's own).
"""
import os

import pytest

from webui_client import Webui

URL = os.environ.get("FABRIC_WEBUI_URL", "").rstrip("/")


# Test (file::name or file::name[parameters]) -> why it does not apply to Forge.
A1111_ONLY = {
    "test_e2e_generation.py::test_attention_optimizations":
        "Forge picks its attention at start-up (backend/attention.py:430-441); the Cross attention "
        "optimization setting has no effect there",
    "test_e2e_generation.py::test_batch_image_equals_its_seed_alone[Auto]":
        "in Forge FABRIC always runs the references in UNet calls of their own (no Auto choice)",
    "test_e2e_generation.py::test_infotext_field_restores_the_settings":
        "Forge's API cannot apply an `infotext` at dfdcbab6, with or without FABRIC (a vanilla "
        "request fails too: modules/api/api.py:407 calls isinstance with list[str] -> HTTP 500)",
    "test_e2e_browser.py::test_upscale_button_with_fabric":
        "Forge's own ✨ upscale fails with FABRIC off too at dfdcbab6: txt2img_upscale_function hands "
        "the VAE encoder a 4-channel image (\"expected input[1, 4, 64, 64] to have 3 channels\")",
}


def _e2e(item) -> bool:
    return "tests/e2e" in str(item.fspath).replace(os.sep, "/")


def pytest_collection_modifyitems(config, items):
    if not URL:
        skip = pytest.mark.skip(reason="FABRIC_WEBUI_URL is not set: no webui to test against")
        for item in items:
            if _e2e(item):
                item.add_marker(skip)
        return
    if not any(_e2e(item) for item in items) or not Webui(URL).forge:
        return
    for item in items:
        key = f"{os.path.basename(str(item.fspath))}::{item.name}"
        reason = A1111_ONLY.get(key) or A1111_ONLY.get(key.split("[")[0])
        if _e2e(item) and reason:
            item.add_marker(pytest.mark.skip(reason=f"AUTOMATIC1111 only: {reason}"))


@pytest.fixture(scope="session")
def webui():
    return Webui(URL)
