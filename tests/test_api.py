"""fabric/feedback/api.py through FastAPI's test client (fastapi 0.94.0, starlette 0.26.1, as the webui pins)."""
import errno
import hashlib
import json
import urllib.parse

import pytest
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.testclient import TestClient

from fabric.feedback import api as api_module
from fabric.feedback import store as store_module
from fabric.feedback.api import FabricRequestValidation, create_router, install_request_validation
from fabric.feedback.images import image_id
from fabric.feedback.settings import Limits
from fabric.feedback.store import FeedbackStore

from payload_support import b64, data_url, encode, noise, picture, png_claiming, temp_files, tree


class Host:
    """A stand-in for the webui: the FABRIC router plus txt2img/img2img endpoints that echo."""

    def __init__(self, root, install=True):
        self.store = FeedbackStore(root)
        self.limits = Limits()
        self.calls = []
        self.app = FastAPI()
        self.app.include_router(create_router(lambda: self.store, lambda: self.limits))

        async def generate(request: Request):
            body = await request.body()
            self.calls.append(body)
            return {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}

        for path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"):
            self.app.add_api_route(path, generate, methods=["POST"])
        if install:
            self.install()

    def install(self):
        install_request_validation(self.app, lambda: self.store, lambda: self.limits)


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path / "store")


@pytest.fixture
def client(host):
    with TestClient(host.app) as c:
        yield c


def assert_error(response, status, field, words=""):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "field", "detail"}
    assert body["field"] == field, body
    if field is not None:
        assert body["detail"].startswith(f"{field}: ")
    assert words in body["detail"], body
    return body


# -- /fabric/v1/images -----------------------------------------------------------------------------


def test_upload_list_fetch_delete(host, client):
    pics = [picture(1), picture(2)]
    r = client.post("/fabric/v1/images", json={"images": [b64(pics[0]), data_url(pics[1]), b64(pics[0], "BMP")]})
    assert r.status_code == 200, r.text
    ids = r.json()["ids"]
    assert ids == [image_id(pics[0]), image_id(pics[1]), image_id(pics[0])]

    listed = client.get("/fabric/v1/images").json()["images"]
    assert sorted(e["id"] for e in listed) == sorted(set(ids))
    assert all(e["width"] == 8 and e["height"] == 6 and e["bytes"] > 0 for e in listed)

    r = client.get(f"/fabric/v1/images/{ids[1]}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (host.store.images_dir / f"{ids[1]}.png").read_bytes()

    r = client.delete(f"/fabric/v1/images/{ids[1]}")
    assert r.status_code == 200 and r.json() == {"deleted": ids[1]}
    assert_error(client.get(f"/fabric/v1/images/{ids[1]}"), 404, "id", "no image with id")
    assert_error(client.delete(f"/fabric/v1/images/{ids[1]}"), 404, "id")


def test_empty_upload(client):
    assert client.post("/fabric/v1/images", json={"images": []}).json() == {"ids": []}


@pytest.mark.parametrize(
    "images, field, words",
    [
        ([5], "images[0]", "base64 string"),
        (["ok", "/etc/passwd"], "images[1]", "paths and URLs are never read"),
        (["ok", "https://example.com/cat.png"], "images[1]", "paths and URLs are never read"),
        (["ok", "bm90IGFuIGltYWdl"], "images[1]", "not a readable image"),
        (["ok", b64(png_claiming(50000, 50000))], "images[1]", "limit"),
        (["ok", b64(encode(picture(3, size=(64, 64)))[:-30])], "images[1]", "truncated"),
        (["ok"] * 17, "images", "at most 16 images per upload"),
        ("not a list", "images", "not a valid list"),
        ([{"image": "x"}], "images[0]", "base64 string"),
    ],
)
def test_upload_errors_store_nothing(host, client, images, field, words):
    good = b64(picture(1))
    if isinstance(images, list):
        images = [good if v == "ok" else v for v in images]
    assert_error(client.post("/fabric/v1/images", json={"images": images}), 422, field, words)
    assert not host.store.root.exists() or tree(host.store.root) == {}


def test_upload_body_errors(client):
    assert_error(client.post("/fabric/v1/images", json={}), 422, "images", "field required")
    assert_error(
        client.post("/fabric/v1/images", content=b"{oops", headers={"content-type": "application/json"}),
        422, "body", "not valid JSON",
    )


def test_upload_over_the_image_byte_limit(host, client):
    host.limits = Limits(max_image_bytes=100)
    assert_error(client.post("/fabric/v1/images", json={"images": [b64(noise((32, 32)))]}), 422,
                 "images[0]", "over the limit of 100")


def test_body_over_the_request_limit_is_413(host, client):
    host.limits = Limits(max_request_bytes=1000)
    body = {"images": [b64(noise((32, 32)))]}
    r = client.post("/fabric/v1/images", json=body)
    assert_error(r, 413, None, "over FABRIC's limit of 1000 bytes")
    assert r.json()["error"] == "RequestTooLarge"

    # without a Content-Length header (chunked): counted while reading
    def chunks():
        data = json.dumps(body).encode()
        for i in range(0, len(data), 300):
            yield data[i : i + 300]

    r = client.post("/fabric/v1/images", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert host.store.list() == []


@pytest.mark.parametrize("bad", ["zzz", "ABCDEF0123456789", "0123456789abcdef0", "..%2F..%2Fetc%2Fpasswd"])
def test_malformed_image_ids(client, bad):
    r = client.get(f"/fabric/v1/images/{bad}")
    if r.status_code == 404 and r.json().get("detail") == "Not Found":
        return  # a slash after decoding: no such route, nothing reached the store
    assert_error(r, 422, "id", "not an image id")


def test_store_errors_are_507_and_change_nothing(host, client, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "replace", full)
    body = assert_error(client.post("/fabric/v1/images", json={"images": [b64(picture(1))]}), 507, None, "full")
    assert body["error"] == "FabricStoreError"
    monkeypatch.undo()
    assert host.store.list() == [] and temp_files(host.store.root) == []


# -- /fabric/v1/presets and prune ----------------------------------------------------------------------


def quoted(name):
    # dots too: a client's URL library resolves a bare ".." segment before sending
    return urllib.parse.quote(name, safe="").replace(".", "%2E")


@pytest.mark.parametrize("name", ["mine", "../../etc/passwd", "..", "/", "a/b", "名前 👍", "שלום עולם", "x" * 100])
def test_preset_round_trip(host, client, name):
    a = host.store.add(picture(1))
    r = client.put(f"/fabric/v1/presets/{quoted(name)}",
                   json={"liked": [a, {"image": b64(picture(2)), "weight": 1.5}], "disliked": [{"id": a, "weight": 0.5}]})
    assert r.status_code == 200, r.text
    want = {
        "name": name,
        "liked": [{"id": a, "weight": 1.0}, {"id": image_id(picture(2)), "weight": 1.5}],
        "disliked": [{"id": a, "weight": 0.5}],
    }
    assert r.json() == want
    assert client.get(f"/fabric/v1/presets/{quoted(name)}").json() == want
    listed = client.get("/fabric/v1/presets").json()["presets"]
    assert [p["name"] for p in listed] == [name] and "mtime" in listed[0]
    assert host.store.has(image_id(picture(2)))
    assert client.delete(f"/fabric/v1/presets/{quoted(name)}").json() == {"deleted": name}
    assert_error(client.get(f"/fabric/v1/presets/{quoted(name)}"), 404, "name", "no preset named")
    # nothing was written outside the store
    assert all(p.is_relative_to(host.store.root) for p in host.store.root.parent.rglob("*"))


@pytest.mark.parametrize(
    "name, words", [("a\x00b", "control"), ("x" * 101, "at most 100"), ("\u202eevil", "bidirectional")]
)
def test_bad_preset_names(client, name, words):
    assert_error(client.put(f"/fabric/v1/presets/{quoted(name)}", json={}), 422, "name", words)
    assert_error(client.get(f"/fabric/v1/presets/{quoted(name)}"), 422, "name", words)


def test_preset_body_errors_store_nothing(host, client):
    inline = b64(picture(5))
    cases = [
        ({"liked": [inline, "0123456789abcdef"]}, "liked[1]", "no image with id"),
        ({"liked": [inline], "disliked": [{"image": inline, "weight": 5}]}, "disliked[0].weight", "between 0 and 4"),
        ({"liked": [inline, 3]}, "liked[1]", "a feedback image must be"),
        ({"liked": "abc"}, "liked", "not a valid list"),
        ({"liked": [inline] * 17}, "liked", "at most 16"),
    ]
    for body, field, words in cases:
        assert_error(client.put("/fabric/v1/presets/p", json=body), 422, field, words)
    assert host.store.list() == [] and host.store.list_presets() == []


def test_prune(host, client):
    a, b, c = (host.store.add(picture(i)) for i in range(3))
    client.put("/fabric/v1/presets/keep", json={"liked": [a]})
    assert client.post("/fabric/v1/prune", json={"keep": [b]}).json() == {"removed": [c]}
    assert sorted(client.post("/fabric/v1/prune").json()["removed"]) == [b]
    assert_error(client.post("/fabric/v1/prune", json={"keep": ["nope"]}), 422, "keep[0]", "not an image id")


def test_openapi_documents_the_endpoints(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, methods in {
        "/fabric/v1/images": {"get", "post"},
        "/fabric/v1/images/{id}": {"get", "delete"},
        "/fabric/v1/presets": {"get"},
        "/fabric/v1/presets/{name}": {"get", "put", "delete"},
        "/fabric/v1/prune": {"post"},
    }.items():
        assert methods <= set(paths[path]), path
    upload = paths["/fabric/v1/images"]["post"]
    assert "422" in upload["responses"] and "413" in upload["responses"]
    schema = spec["components"]["schemas"]["ImageUpload"]["properties"]["images"]
    assert "never read" in schema["description"]
    assert "image/png" in paths["/fabric/v1/images/{id}"]["get"]["responses"]["200"]["content"]
    assert client.get("/docs").status_code == 200


# -- the check of txt2img/img2img payloads ------------------------------------------------------------


def fabric_request(args, key="FABRIC", **extra):
    return json.dumps({"prompt": "a cat", "steps": 4, "alwayson_scripts": {key: {"args": args}}, **extra}).encode()


def test_validation_installed_after_the_app_started_serving(tmp_path):
    host = Host(tmp_path / "store", install=False)
    bad = fabric_request([{"enabled": True, "strenght": 0.5}])
    with TestClient(host.app) as client:
        assert client.post("/sdapi/v1/txt2img", content=bad).status_code == 200  # not yet checked
        assert host.app.middleware_stack is not None  # the stack is built: the app is serving
        with pytest.raises(RuntimeError, match="after an application has started"):
            host.app.add_middleware(CORSMiddleware)  # why add_middleware cannot be used here
        host.install()
        assert_error(client.post("/sdapi/v1/txt2img", content=bad), 422,
                     "alwayson_scripts.FABRIC.args[0].strenght", "did you mean 'strength'")
        assert len(host.calls) == 1  # only the request from before the installation
        host.install()  # again (Reload UI): replaces, does not stack
        assert sum(m.cls is FabricRequestValidation for m in host.app.user_middleware) == 1
        assert client.post("/sdapi/v1/img2img", content=bad).status_code == 422
        assert len(host.calls) == 1


def test_validation_on_a_gradio_app_like_the_webuis(tmp_path):
    import gradio as gr
    from gradio.routes import App

    with gr.Blocks() as demo:
        gr.Markdown("webui")
    app = App.create_app(demo)
    store = FeedbackStore(tmp_path)
    calls = []

    @app.post("/sdapi/v1/txt2img")
    async def txt2img(request: Request):
        calls.append(await request.body())
        return {}

    with TestClient(app) as client:
        assert client.get("/config").status_code == 200  # gradio's app is serving
        install_request_validation(app, lambda: store, Limits)
        app.include_router(create_router(lambda: store, Limits))
        assert_error(client.post("/sdapi/v1/txt2img", content=fabric_request([True, [5]])), 422,
                     "alwayson_scripts.FABRIC.args[1][0]")
        assert client.post("/sdapi/v1/txt2img", content=fabric_request([True])).status_code == 200
        assert client.post("/fabric/v1/images", json={"images": [b64(picture(1))]}).status_code == 200
    assert len(calls) == 1


def test_valid_payloads_reach_the_endpoint_byte_identical(host, client):
    a = host.store.add(picture(1))
    inline = b64(picture(2))
    bodies = [
        fabric_request([{"enabled": True, "liked": [a, {"image": inline, "weight": 2}], "strength": 0.5}]),
        fabric_request([True, [a], [data_url(picture(3))], 0.5, 0.0, 0.8, 0.0, 0.5, False, 0], key="fabric"),
        fabric_request([False], key="Fabric"),
        fabric_request([]),
        b'{"prompt":"no fabric","alwayson_scripts":{"ControlNet":{"args":[{"x":1}]}}}',
        b'{"prompt":"no scripts"}',
        b'{ "prompt" : "odd   spacing" ,\n "alwayson_scripts" : { "FABRIC" : { "args" : [ { "enabled" : false } ] } } }',
        b'{"alwayson_scripts": {"FABRIC": {}}}',  # no args: the defaults
        b'{"alwayson_scripts": []}',
        b"[1, 2, 3]",
        b"not json at all",
        b"",
        "{\"prompt\": \"unicode \u00e9\u00e8 \U0001f431\"}".encode(),
    ]
    for i, body in enumerate(bodies):
        for path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"):
            r = client.post(path, content=body)
            assert r.status_code == 200, (i, r.text)
            assert r.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}, i
    assert host.calls == [b for b in bodies for _ in range(2)]
    # the check stores the valid payloads' inline pictures, as the job would
    assert sorted(e["id"] for e in host.store.list()) == sorted([a, image_id(picture(2)), image_id(picture(3))])


BAD_PAYLOADS = [
    ([{"enabled": "yes"}], "alwayson_scripts.FABRIC.args[0].enabled", "true or false"),
    ([{"strength": 7}], "alwayson_scripts.FABRIC.args[0].strength", "between 0 and 1"),
    ([{"liked": ["/etc/passwd"]}], "alwayson_scripts.FABRIC.args[0].liked[0]", "never read"),
    ([{"liked": ["http://127.0.0.1/cat.png"]}], "alwayson_scripts.FABRIC.args[0].liked[0]", "never read"),
    ([{"liked": ["0123456789abcdef"]}], "alwayson_scripts.FABRIC.args[0].liked[0]", "no image with id"),
    ([{"disliked": [{"image": "QUJD", "weight": 1}]}], "alwayson_scripts.FABRIC.args[0].disliked[0].image", "readable"),
    ([{"liked": [b64(png_claiming(50000, 50000))]}], "alwayson_scripts.FABRIC.args[0].liked[0]", "limit"),
    ([{"liked": ["x"] * 17}], "alwayson_scripts.FABRIC.args[0].liked", "at most 16"),
    ([{"token_budget": -5}], "alwayson_scripts.FABRIC.args[0].token_budget", "between 0"),
    ([{"enabled": True}, True], "alwayson_scripts.FABRIC.args[1]", "no values may follow"),
    ([True, "abc"], "alwayson_scripts.FABRIC.args[1]", "(liked) must be a list"),
    ([True, [], [], 0.5, 0.6, 0.5], "alwayson_scripts.FABRIC.args[5]", "(end) must not be before start"),
    ({"enabled": True}, "alwayson_scripts.FABRIC.args", "must be a list"),
    ([{"enabled": None}], "alwayson_scripts.FABRIC.args[0].enabled", "must not be null"),
    ([{"enabled": True, "liked": [{"image": b64(picture(4)), "weight": None}]}],
     "alwayson_scripts.FABRIC.args[0].liked[0].weight", "must not be null"),
    ([{name: None for name in ("enabled", "liked", "disliked", "strength")}],
     "alwayson_scripts.FABRIC.args[0].enabled", "must not be null"),
]


@pytest.mark.parametrize("args, field, words", BAD_PAYLOADS, ids=[p[1].rsplit(".", 1)[-1] for p in BAD_PAYLOADS])
def test_bad_payloads_get_422_and_nothing_is_generated(host, client, args, field, words):
    for path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img/"):
        r = client.post(path, content=fabric_request(args))
        body = assert_error(r, 422, field, words)
        assert body["error"] == "FabricInputError"
    assert host.calls == []
    assert host.store.list() == []


def test_each_inline_image_is_decoded_once_per_request(tmp_path, monkeypatch):
    """The edge checks and stores a request's inline images; the job's script, handed the same
    base64 text by the webui, finds them by id instead of decoding them again."""
    from fabric.feedback import settings as settings_module
    from fabric.feedback.settings import parse_script_args

    host = Host(tmp_path / "store")
    jobs = []

    async def generate(request: Request):  # what the webui's script does with the request's args
        args = json.loads(await request.body())["alwayson_scripts"]["FABRIC"]["args"]
        jobs.append(parse_script_args(args, store=host.store, from_hook=True))
        return {}

    host.app.router.routes = [r for r in host.app.router.routes if getattr(r, "path", "") != "/sdapi/v1/txt2img"]
    host.app.add_api_route("/sdapi/v1/txt2img", generate, methods=["POST"])
    decoded = []
    real_decode = settings_module.decode_image
    monkeypatch.setattr(settings_module, "decode_image", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    inline = [b64(picture(7)), data_url(picture(8))]
    with TestClient(host.app) as client:
        r = client.post("/sdapi/v1/txt2img", content=fabric_request(
            [{"enabled": True, "liked": [inline[0]], "disliked": [{"image": inline[1], "weight": 2}]}]))
    assert r.status_code == 200, r.text
    assert len(decoded) == 2
    settings = jobs[0]
    assert [i.id for i in settings.liked] == [image_id(picture(7))]
    assert [(i.id, i.weight) for i in settings.disliked] == [(image_id(picture(8)), 2.0)]
    # without the edge (the UI, a caller inside the process) the script decodes and stores itself
    host.store.delete(image_id(picture(7)))
    again = parse_script_args([{"enabled": True, "liked": [inline[0]]}], store=host.store, from_hook=True)
    assert len(decoded) == 3 and [i.id for i in again.liked] == [image_id(picture(7))]


def test_a_store_that_refuses_the_inline_images_gets_507_and_nothing_runs(host, client, monkeypatch):
    def refuse(*args, **kwargs):
        raise store_module.FabricStoreError("the disk is full")

    monkeypatch.setattr(host.store, "add", refuse)
    r = client.post("/sdapi/v1/txt2img", content=fabric_request([{"enabled": True, "liked": [b64(picture(9))]}]))
    assert_error(r, 507, None, "the disk is full")
    assert host.calls == []


def test_nan_and_infinity_in_the_json(host, client):
    # Python's json (and the webui's FastAPI) accept these non-standard literals
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"alwayson_scripts": {"fabric": {"args": [{"strength": %s}]}}}' % literal
        assert_error(client.post("/sdapi/v1/txt2img", content=body), 422,
                     "alwayson_scripts.fabric.args[0].strength", "finite")
    assert host.calls == []


def test_entry_that_is_not_an_object(host, client):
    body = b'{"alwayson_scripts": {"FABRIC": [true]}}'
    assert_error(client.post("/sdapi/v1/txt2img", content=body), 422, "alwayson_scripts.FABRIC", "must be an object")
    # every key spelling is checked
    body = b'{"alwayson_scripts": {"FABRIC": {"args": []}, "fabric": {"args": [{"start": 3}]}}}'
    assert_error(client.post("/sdapi/v1/txt2img", content=body), 422, "alwayson_scripts.fabric.args[0].start")
    assert host.calls == []


def test_oversized_requests_get_413(host, client):
    host.limits = Limits(max_request_bytes=2000)
    body = fabric_request([{"enabled": True, "liked": [b64(noise((32, 32)))]}])
    assert len(body) > 2000
    r = client.post("/sdapi/v1/txt2img", content=body)
    assert_error(r, 413, None, "over FABRIC's limit of 2000 bytes")

    def chunks():
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    assert client.post("/sdapi/v1/txt2img", content=chunks()).status_code == 413
    assert host.calls == []
    # other endpoints are not bounded by it
    assert client.post("/sdapi/v1/other", content=body).status_code == 404


def test_other_methods_and_paths_pass_untouched(host, client):
    host.app.add_api_route("/sdapi/v1/options", lambda: {"ok": True}, methods=["GET"])
    assert client.get("/sdapi/v1/options").json() == {"ok": True}
    assert client.get("/sdapi/v1/txt2img").status_code == 405


def test_a_bug_in_the_check_lets_the_request_through(host, client, monkeypatch, caplog):
    def broken(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(api_module, "parse_script_args", broken)
    body = fabric_request([{"enabled": True}])
    assert client.post("/sdapi/v1/txt2img", content=body).status_code == 200
    assert host.calls == [body]
    assert "passed on unchecked" in caplog.text


def test_answers_carry_the_hosts_cors_headers(tmp_path):
    host = Host(tmp_path / "store", install=False)
    host.app.add_middleware(CORSMiddleware, allow_origins=["https://front.example"], allow_methods=["*"])
    with TestClient(host.app) as client:
        client.get("/openapi.json")
        host.install()
        r = client.post("/sdapi/v1/txt2img", content=fabric_request([{"strength": 9}]),
                        headers={"origin": "https://front.example"})
    assert r.status_code == 422
    assert r.headers["access-control-allow-origin"] == "https://front.example"


def test_limits_are_read_per_request(host, client):
    a = host.store.add(picture(1))
    body = fabric_request([{"liked": [a, a, a]}])
    assert client.post("/sdapi/v1/txt2img", content=body).status_code == 200
    host.limits = Limits(max_images_per_set=2)
    assert_error(client.post("/sdapi/v1/txt2img", content=body), 422, "alwayson_scripts.FABRIC.args[0].liked",
                 "at most 2 images")
