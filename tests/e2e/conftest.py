"""End-to-end tests against a running webui with this extension installed.

Set FABRIC_WEBUI_URL (e.g. http://127.0.0.1:7860, started with --api) to run them; they are
skipped otherwise. FABRIC_WEBUI_SDXL names an SDXL checkpoint (as /sdapi/v1/sd-models lists its
title or model_name) for the SDXL test;
the other tests use the checkpoint the webui has loaded (an SD1.x one).
"""
import os

import pytest

from webui_client import Webui

URL = os.environ.get("FABRIC_WEBUI_URL", "").rstrip("/")


def pytest_collection_modifyitems(config, items):
    if URL:
        return
    skip = pytest.mark.skip(reason="FABRIC_WEBUI_URL is not set: no webui to test against")
    for item in items:
        if "tests/e2e" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def webui():
    return Webui(URL)
