"""A small client for the webui's API, and test pictures, for the end-to-end tests."""
import base64
import io
import os

import httpx
from PIL import Image


class Webui:
    def __init__(self, url: str):
        self.client = httpx.Client(base_url=url, timeout=1800)
        self.sdxl = os.environ.get("FABRIC_WEBUI_SDXL")

    def post(self, path: str, payload: dict) -> httpx.Response:
        return self.client.post(path, json=payload)

    def generate(self, payload: dict, *, kind: str = "txt2img") -> dict:
        """One generation; `override_settings` apply to this request only (the webui restores them)."""
        body = {"steps": 4, "width": 64, "height": 64, "cfg_scale": 7, "seed": 1234,
                "sampler_name": "Euler", "prompt": "a cat", "negative_prompt": "blurry",
                "save_images": False, "send_images": True, **payload}
        body["override_settings_restore_afterwards"] = True
        response = self.post(f"/sdapi/v1/{kind}", body)
        assert response.status_code == 200, response.text[:2000]
        return response.json()

    def load_model(self, name: str) -> None:
        """Make `name` the loaded checkpoint (the webui keeps it until told otherwise)."""
        response = self.post("/sdapi/v1/options", {"sd_model_checkpoint": name})
        assert response.status_code == 200, response.text[:2000]


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def pixels(b64: str) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB").tobytes()


def gradient(seed: int, size: int = 64) -> Image.Image:
    """A distinct, deterministic test picture."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((size, size), Image.BICUBIC)
