"""FABRIC's HTTP surface in a real webui: both argument forms, 422s, the store endpoints, faults."""
import base64
import json
import threading
import time

import pytest

from webui_client import gradient, pixels, png_base64

LIKED = png_base64(gradient(11))


def txt2img_body(fabric_args, **extra):
    return {"prompt": "a cat", "steps": 4, "width": 64, "height": 64, "seed": 99, "sampler_name": "Euler",
            "save_images": False, "alwayson_scripts": {"FABRIC": {"args": fabric_args}}, **extra}


def test_upload_then_generate_by_id_named_and_positional(webui):
    response = webui.post("/fabric/v1/images", {"images": [LIKED]})
    assert response.status_code == 200, response.text
    (image_id,) = response.json()["ids"]
    assert any(item["id"] == image_id for item in webui.client.get("/fabric/v1/images").json()["images"])
    png = webui.client.get(f"/fabric/v1/images/{image_id}")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"

    named = webui.post("/sdapi/v1/txt2img", txt2img_body([{"enabled": True, "liked": [{"image": image_id, "weight": 1.5}]}]))
    positional = webui.post("/sdapi/v1/txt2img", txt2img_body([True, [{"image": image_id, "weight": 1.5}], [], 0.8, 0.0, 0.8]))
    inline = webui.post("/sdapi/v1/txt2img", txt2img_body([{"enabled": True, "liked": [{"image": LIKED, "weight": 1.5}]}]))
    assert named.status_code == positional.status_code == inline.status_code == 200
    assert pixels(named.json()["images"][0]) == pixels(positional.json()["images"][0]) == pixels(inline.json()["images"][0])
    info = json.loads(named.json()["info"])
    assert f"{image_id}:1.5" in info["infotexts"][0]


BAD_PAYLOADS = {
    "unknown key": ([{"enabled": True, "strenght": 0.5}], "strenght"),
    "wrong type": ([{"enabled": "yes"}], "enabled"),
    "out of range": ([{"enabled": True, "strength": 7}], "strength"),
    "NaN": ([{"enabled": True, "start": float("nan")}], "start"),
    "undecodable image": ([{"enabled": True, "liked": [base64.b64encode(b"not an image").decode()]}], "liked[0]"),
    "path": ([{"enabled": True, "liked": ["/etc/passwd"]}], "liked[0]"),
    "url": ([{"enabled": True, "disliked": ["https://example.com/x.png"]}], "disliked[0]"),
    "unknown id": ([{"enabled": True, "liked": ["0123456789abcdef"]}], "liked[0]"),
    "bad weight": ([{"enabled": True, "liked": [{"image": LIKED, "weight": -1}]}], "liked[0].weight"),
    "too many images": ([{"enabled": True, "liked": [LIKED] * 100}], "liked"),
}


@pytest.mark.parametrize("case", list(BAD_PAYLOADS))
def test_bad_payload_is_422_naming_the_field_and_nothing_is_generated(webui, case):
    args, field = BAD_PAYLOADS[case]
    before = webui.client.get("/sdapi/v1/progress").json()
    response = webui.client.post("/sdapi/v1/txt2img", content=json.dumps(txt2img_body(args), allow_nan=True),
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"].startswith("alwayson_scripts.FABRIC.args[0]") and field in body["field"], body
    assert webui.client.get("/sdapi/v1/progress").json()["state"]["job_count"] == before["state"]["job_count"]


def test_openapi_lists_the_store_endpoints(webui):
    paths = webui.client.get("/openapi.json").json()["paths"]
    assert "/fabric/v1/images" in paths and "/fabric/v1/presets/{name}" in paths


def test_interrupt_in_the_middle_of_a_fabric_job_leaves_vanilla_intact(webui):
    vanilla = webui.post("/sdapi/v1/txt2img", txt2img_body([]))
    assert vanilla.status_code == 200
    long_job = txt2img_body([{"enabled": True, "liked": [LIKED], "disliked": [LIKED]}], steps=40)
    thread = threading.Thread(target=lambda: webui.post("/sdapi/v1/txt2img", long_job))
    thread.start()
    time.sleep(4)
    webui.post("/sdapi/v1/interrupt", {})
    thread.join(timeout=600)
    again = webui.post("/sdapi/v1/txt2img", txt2img_body([]))
    assert pixels(again.json()["images"][0]) == pixels(vanilla.json()["images"][0])
