"""fabric/bench/webui_bench.py's machinery against a stand-in webui served on loopback.

The stand-in serves the real `/fabric/v1` router on a real store, and a `/sdapi/v1/txt2img` that
answers as the webui's API does (v1.10.1 modules/api/api.py: `{"images": [base64 PNG], "info":
JSON text whose "infotexts" lists one infotext per image}`), parses FABRIC's arguments with the
real parser and writes FABRIC's infotext as the script does. It sleeps longer with more
references, so the ratios mean something; no timing is asserted (a shared machine is noise).
"""
import contextlib
import io
import json
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request

from fabric.bench import webui_bench
from fabric.feedback.api import create_router
from fabric.feedback.settings import Limits, parse_script_args, settings_to_infotext
from fabric.feedback.store import FeedbackStore


class StandinWebui:
    def __init__(self, root):
        self.store = FeedbackStore(root)
        self.fail_fabric = False
        self.app = FastAPI()
        self.app.include_router(create_router(lambda: self.store, lambda: Limits()))
        self.app.add_api_route("/sdapi/v1/txt2img", self.txt2img, methods=["POST"])

    async def txt2img(self, request: Request):
        body = await request.json()
        infotext = f"{body['prompt']}\nSteps: {body['steps']}, Seed: {body['seed']}"
        fabric = body.get("alwayson_scripts", {}).get("FABRIC")
        if fabric:
            settings = parse_script_args(fabric["args"], store=self.store)
            time.sleep(0.01 * (1 + len(settings.liked)))
            entries = settings_to_infotext(settings)
            if self.fail_fabric:
                entries["FABRIC error"] = "RuntimeError"
            infotext += "".join(f", {k}: {v}" for k, v in entries.items())
        time.sleep(0.01)
        return {"images": [webui_bench.png_base64(webui_bench.picture(1, 8, 8))],
                "info": json.dumps({"infotexts": [infotext]})}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    webui = StandinWebui(tmp_path_factory.mktemp("store"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = uvicorn.Server(uvicorn.Config(webui.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    for _ in range(200):
        if runner.started:
            break
        time.sleep(0.05)
    yield webui, f"http://127.0.0.1:{port}"
    runner.should_exit = True
    thread.join(timeout=10)


def run(url, *extra):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = webui_bench.main(["--url", url, "--size", "8", "8", "--steps", "1", "--refs", "1", "2",
                                   "--budgets", "4", "--reps", "3", *extra])
    return result, out.getvalue()


def test_rows_spread_and_the_json_last_line(server):
    webui, url = server
    result, out = run(url)
    assert json.loads(out.strip().splitlines()[-1]) == result
    assert [r["config"] for r in result["rows"]] == ["vanilla", "1+1", "2+2", "2+2, token_budget 4"]
    for row in result["rows"]:
        assert len(row["seconds"]) == 3
        assert row["ratio_min"] <= row["ratio_median"] <= row["ratio_max"]
        assert row["ratio"] == pytest.approx(row["median_s"] / result["rows"][0]["median_s"])
        # the server runs in this process: its memory is readable here (as root, clear_refs too)
        assert row["peak_mb"] is None or row["peak_mb"] > 0
    assert result["rows"][0]["ratio"] == 1.0
    assert result["server_pid"] is not None
    assert result["request"]["width"] == 8 and result["reps"] == 3
    # the pictures went up once, and the requests named them by id
    assert len(webui.store.list()) == 4


def test_a_job_that_fell_back_to_vanilla_is_not_timed(server):
    webui, url = server
    webui.fail_fabric = True
    try:
        with pytest.raises(RuntimeError, match="FABRIC was not applied"):
            run(url)
    finally:
        webui.fail_fabric = False
