"""A small client for the webui's API, and test pictures, for the end-to-end tests."""
import base64
import functools
import io
import os

import httpx
from PIL import Image


class Webui:
    def __init__(self, url: str):
        self.client = httpx.Client(base_url=url, timeout=1800)
        self.sdxl = os.environ.get("FABRIC_WEBUI_SDXL")

    @functools.cached_property
    def forge(self) -> bool:
        """Whether the webui is Forge: it has Forge's own settings (modules_forge/, e.g. forge_preset)."""
        response = self.client.get("/sdapi/v1/options")
        assert response.status_code == 200, response.text[:2000]
        return "forge_preset" in response.json()

    def post(self, path: str, payload: dict) -> httpx.Response:
        return self.client.post(path, json=payload)

    def generate(self, payload: dict, *, kind: str = "txt2img") -> dict:
        """One generation; `override_settings` apply to this request only.

        The webui restores an overridden setting afterwards only if its key is in config.json
        (v1.10.1 modules/processing.py:823 snapshots `opts.data` alone): a setting still at its
        default would stay changed for every later test. The client puts back what changed."""
        body = {"steps": 4, "width": 64, "height": 64, "cfg_scale": 7, "seed": 1234,
                "sampler_name": "Euler", "prompt": "a cat", "negative_prompt": "blurry",
                "save_images": False, "send_images": True, **payload}
        body["override_settings_restore_afterwards"] = True
        if self.forge and body.get("enable_hr"):
            # Forge's hires pass reads hr_additional_modules, None unless the request names it
            # (modules/processing.py:1197, :1405 at dfdcbab6: TypeError otherwise).
            body.setdefault("hr_additional_modules", ["Use same choices"])
        overridden = list(body.get("override_settings") or {})
        before = self.options(overridden) if overridden else {}
        try:
            response = self.post(f"/sdapi/v1/{kind}", body)
        finally:
            if overridden:
                changed = {k: v for k, v in before.items() if self.options([k]).get(k) != v}
                if changed:
                    self.set_options(changed)
        assert response.status_code == 200, response.text[:2000]
        return response.json()

    def options(self, keys) -> dict:
        response = self.client.get("/sdapi/v1/options")
        assert response.status_code == 200, response.text[:2000]
        values = response.json()
        return {k: values.get(k) for k in keys}

    def set_options(self, values: dict) -> None:
        response = self.post("/sdapi/v1/options", values)
        assert response.status_code == 200, response.text[:2000]

    def load_model(self, name: str) -> None:
        """Make `name` the loaded checkpoint (the webui keeps it until told otherwise)."""
        response = self.post("/sdapi/v1/options", {"sd_model_checkpoint": name})
        assert response.status_code == 200, response.text[:2000]


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def b64_image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def pixels(b64: str) -> bytes:
    return b64_image(b64).convert("RGB").tobytes()


def gradient(seed: int, size: int = 64) -> Image.Image:
    """A distinct, deterministic test picture."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((size, size), Image.BICUBIC)
