"""The FABRIC panel's Python side, without a browser: its layout contract and its event handlers.

Handlers are called the way gradio calls them, with the values the page sends (gallery items as
``{"name": <path>, ...}`` or ``[item, caption]``, selections as ``{"index": n, "info": ...}``).
"""

import json
import os
import re
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio", reason="gradio is not installed")

from PIL import Image  # noqa: E402

from fabric.errors import FabricStoreError  # noqa: E402
from fabric.feedback.images import image_id  # noqa: E402
from fabric.ui.panel import FabricPanel, StandInAccordion  # noqa: E402
from fabric.feedback.settings import (  # noqa: E402
    POSITIONAL_ORDER,
    FabricSettings,
    FeedbackImage,
    Limits,
    parse_script_args,
    settings_to_infotext,
)
from fabric.feedback.store import FeedbackStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A panel in a Blocks, its store, gradio's temp folder and a helper writing files into it."""
    temp = tmp_path / "gradio"
    temp.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))
    store = FeedbackStore(tmp_path / "store")
    limits = {"value": Limits()}
    enabled = {"value": False}
    with gr.Blocks() as demo:
        panel = FabricPanel(
            "txt2img", get_store=lambda: store, get_limits=lambda: limits["value"],
            restore_enabled=lambda: enabled["value"],
        )
        gallery = gr.Gallery(elem_id="txt2img_gallery")
        with gr.Row():
            like, dislike = panel.add_feedback_buttons(gallery)

    counter = iter(range(10**6))

    def served(color=None, size=(24, 20), folder=temp, name=None):
        """Write a PNG where gradio serves its files; return the gallery item for it."""
        n = next(counter)
        color = color or ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256)
        path = Path(folder) / (name or f"img{n}.png")
        Image.new("RGB", size, color).save(path)
        return {"name": str(path), "data": None, "is_file": True}

    class Env:
        pass

    e = Env()
    e.__dict__.update(
        demo=demo, panel=panel, store=store, temp=temp, limits=limits, enabled=enabled, gallery=gallery,
        buttons=(like, dislike), served=served, tmp=tmp_path,
    )
    return e


def _value(update):
    assert isinstance(update, dict) and update.get("__type__") in ("update", "generic_update"), update
    return update.get("value", "<unchanged>")


def _unchanged(update):
    return isinstance(update, dict) and update.get("__type__") in ("update", "generic_update") and "value" not in update


def _like(env, gallery, index=-1, info=None, state=(), kind="liked"):
    return env.panel.feedback_from_output(kind, gallery, {"index": index, "info": info}, list(state))


# -- layout ----------------------------------------------------------------------------------------


def test_controls_are_the_script_args_in_positional_order(env):
    p = env.panel
    assert len(p.controls) == len(POSITIONAL_ORDER) == 11
    assert p.controls[0] is p.enabled and isinstance(p.enabled, StandInAccordion)
    assert p.controls[1] is p.liked and p.controls[2] is p.disliked
    assert all(isinstance(c, gr.JSON) and c.value == [] and not c.visible for c in p.controls[1:3])
    values = [c.value for c in p.controls]
    assert values == [False, [], [], 0.8, 0.0, 0.8, 0.0, 0.5, False, 0, 0.0]
    # The default values are valid script arguments and mean "off".
    settings = parse_script_args(values, store=env.store)
    assert settings == FabricSettings()
    assert p.enabled.accordion.open is False
    labels = [c.label for c in p.controls[3:]]
    assert labels == [
        "Feedback strength", "Feedback start", "Feedback end", "Minimum strength", "Negative scale",
        "Also during hires fix", "Reference token budget", "Prompt dropout",
    ]
    assert all(getattr(c, "info", None) for c in p.controls[3:])


def test_feedback_galleries_are_not_seen_as_output_galleries(env):
    # The webui's selected_gallery_index() looks at div[id$=_gallery]: FABRIC's must not match.
    for gallery in env.panel.galleries.values():
        assert not gallery.elem_id.endswith("_gallery")
        assert gallery.object_fit == "contain"


def test_every_js_function_the_events_call_is_defined_in_fabric_js(env):
    source = (ROOT / "javascript" / "fabric.js").read_text()
    defined = set(re.findall(r"^function (\w+)\(", source, re.M))
    assert all(name.startswith("fabric_") for name in defined)
    used = set()
    for dep in env.demo.config["dependencies"]:
        if dep.get("js"):
            used.update(re.findall(r"\b(fabric_\w+)\(", dep["js"]))
    assert used and used <= defined, used - defined
    like_js = [d["js"] for d in env.demo.config["dependencies"] if d.get("js") and "fabric_output_index()" in d["js"]]
    assert len(like_js) == 2 and all("fabric_generation_info('txt2img')" in js for js in like_js)
    # A second call (another candidate last button) adds nothing.
    assert env.panel.add_feedback_buttons(env.gallery) == env.buttons


def test_style_css_uses_theme_variables():
    css = (ROOT / "style.css").read_text()
    assert "object-fit: contain" in css
    assert "var(--" in css
    assert not re.search(r"#[0-9a-fA-F]{3,6}\b", css), "colours come from the theme variables"


# -- 👍/👎 from the output gallery ----------------------------------------------------------------


def test_like_takes_the_selected_image_never_the_grid(env):
    grid, a, b = env.served(size=(48, 40)), env.served(), env.served()
    info = json.dumps({"index_of_first_image": 1, "infotexts": ["", "", ""]})
    state, status, _ = _like(env, [grid, a, b], index=2, info=info)
    assert state == [{"id": image_id(Image.open(b["name"])), "weight": 1.0}]
    assert "Added to the liked images (1)" in status
    assert [e["id"] for e in env.store.list()] == [state[0]["id"]]

    state2, status, _ = _like(env, [grid, a, b], index=0, info=info, state=state)
    assert _unchanged(state2) and "grid" in status and "fabric-msg-error" in status
    assert len(env.store.list()) == 1

    state2, status, _ = _like(env, [grid, a, b], index=-1, info=info, state=state)
    assert _unchanged(state2) and "Select an image" in status


def test_batch_size_one_takes_the_only_image(env):
    item = env.served()
    state, status, _ = _like(env, [item], index=-1, info=json.dumps({"index_of_first_image": 0}))
    assert len(state) == 1 and "Added" in status
    # Without generation info too, and as [item, caption] with the webui's ?mtime suffix.
    other = env.served()
    wrapped = [dict(other, name=other["name"] + "?1700000000.5"), "caption"]
    state, status, _ = _like(env, [wrapped], index=-1, info="", kind="disliked")
    assert len(state) == 1 and "disliked" in status


def test_liking_twice_keeps_one_copy(env):
    item = env.served()
    state = _like(env, [item], index=0)[0]
    again, status, _ = _like(env, [item], index=0, state=state)
    assert _unchanged(again) and "already in the liked set" in status
    # The same picture in another file is the same image.
    copy = env.served(color=Image.open(item["name"]).getpixel((0, 0)))
    again, status, _ = _like(env, [copy], index=0, state=state)
    assert _unchanged(again)
    assert len(env.store.list()) == 1


def test_gallery_items_outside_gradios_folders_are_never_read(env, tmp_path):
    secret = tmp_path / "outside.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(secret)
    os.symlink("/etc/passwd", env.temp / "link.png")
    os.symlink(secret, env.temp / "link2.png")
    bad_items = [
        {"name": "/etc/passwd", "is_file": True},
        {"name": "/etc/passwd?123", "is_file": True},
        {"name": str(env.temp / ".." / ".." / "etc" / "passwd"), "is_file": True},
        {"name": str(env.temp / "link.png"), "is_file": True},
        {"name": str(env.temp / "link2.png"), "is_file": True},
        {"name": str(secret), "is_file": True},
        "/etc/passwd",
        [{"name": "/etc/passwd", "is_file": True}, "caption"],
        {"name": str(env.temp) + "/../outside.png", "is_file": True},
    ]
    for item in bad_items:
        state, status, _ = _like(env, [item], index=0)
        assert _unchanged(state), item
        assert "not one this page served" in status, (item, status)
    assert env.store.list() == []


def test_files_the_gallery_produced_are_allowed_where_ever_they_are(env, tmp_path):
    # The webui shows saved outputs from its outputs folder and registers them with gradio.
    folder = tmp_path / "outputs"
    folder.mkdir()
    item = env.served(folder=folder)
    name = item["name"] + "?1700000000.0"
    state, status, _ = _like(env, [dict(item, name=name)], index=0)
    assert _unchanged(state) and "not one this page served" in status
    env.gallery.temp_files.add(name)
    state, status, _ = _like(env, [dict(item, name=name)], index=0)
    assert len(state) == 1, status


def test_extra_allowed_path_check_and_dirs(env, tmp_path):
    folder = tmp_path / "webui_temp"
    folder.mkdir()
    item = env.served(folder=folder)
    with gr.Blocks():
        panel = FabricPanel(
            "img2img", get_store=lambda: env.store, get_limits=Limits, allowed_dirs=lambda: [str(folder)],
        )
    state = panel.feedback_from_output("liked", [item], {"index": 0}, [])[0]
    assert len(state) == 1
    item = env.served(folder=tmp_path)
    with gr.Blocks():
        panel = FabricPanel(
            "img2img", get_store=lambda: env.store, get_limits=Limits,
            is_allowed_path=lambda name: name == item["name"],
        )
    state = panel.feedback_from_output("liked", [item], {"index": 0}, [])[0]
    assert len(state) == 1


def test_refusals_are_messages_and_lose_nothing(env, tmp_path):
    good = env.served()
    state = _like(env, [good], index=0)[0]
    before = list(state)

    not_image = env.temp / "notes.png"
    not_image.write_text("hello")
    result, status, _ = _like(env, [{"name": str(not_image), "is_file": True}], index=0, state=state)
    assert _unchanged(result) and "not a readable image" in status

    env.limits["value"] = Limits(max_pixels=100)
    result, status, _ = _like(env, [env.served(size=(20, 20))], index=0, state=state)
    assert _unchanged(result) and "over the limit" in status

    env.limits["value"] = Limits(max_image_bytes=64)
    result, status, _ = _like(env, [env.served(size=(20, 20))], index=0, state=state)
    assert _unchanged(result) and "over the limit" in status and "MB" in status

    env.limits["value"] = Limits(max_images_per_set=1)
    result, status, _ = _like(env, [env.served()], index=0, state=state)
    assert _unchanged(result) and "full" in status

    env.limits["value"] = Limits()
    result, status, _ = _like(env, [], index=0, state=state)
    assert _unchanged(result) and "empty" in status

    gone = env.served()
    os.remove(gone["name"])
    result, status, _ = _like(env, [gone], index=0, state=state)
    assert _unchanged(result) and "gone" in status

    assert state == before and len(env.store.list()) == 1


def test_store_not_writable_is_a_message(env, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    broken = FeedbackStore(blocker)
    with gr.Blocks():
        panel = FabricPanel("txt2img", get_store=lambda: broken, get_limits=Limits)
    item = env.served()
    state, status, _ = panel.feedback_from_output("liked", [item], {"index": 0}, [])
    assert _unchanged(state) and "fabric-msg-error" in status
    assert "could not write" in status or "not writable" in status

    class Failing:
        def add(self, img):
            raise FabricStoreError("the FABRIC store is not writable: read-only file system; nothing was changed")

        def list_presets(self):
            return []

    with gr.Blocks():
        panel = FabricPanel("txt2img", get_store=Failing, get_limits=Limits)
    state, status, _ = panel.feedback_from_output("liked", [item], {"index": 0}, [{"id": "0" * 16, "weight": 1}])
    assert _unchanged(state) and "not writable" in status
    _, state, status, _ = panel.upload("liked", [item], [])
    assert _unchanged(state) and "not writable" in status


def test_data_url_items_are_decoded_safely(env):
    import base64
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (10, 10), (9, 9, 9)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    state = _like(env, [{"name": None, "data": url, "is_file": False}], index=0)[0]
    assert len(state) == 1
    state, status, _ = _like(env, [{"name": None, "data": "data:text/plain;base64,aGk=", "is_file": False}], index=0)
    assert _unchanged(state) and "image" in status


# -- upload, remove, clear, weight ---------------------------------------------------------------------


def test_upload_adds_what_it_can_and_names_what_it_refused(env, tmp_path):
    a, b = env.served(), env.served()
    junk = env.temp / "junk.txt"
    junk.write_text("x")
    outside = env.served(folder=tmp_path)
    files = [dict(a, orig_name="a.png"), dict(b, orig_name="b.png"), {"name": str(junk), "is_file": True,
             "orig_name": "junk.txt"}, dict(outside, orig_name="outside.png")]
    box, state, status, _ = env.panel.upload("disliked", files, [])
    assert box is None
    assert len(state) == 2
    assert "Added 2 images to the disliked set (2)" in status
    assert "junk.txt" in status and "outside.png" in status and "fabric-msg-error" in status
    # Again: already there, nothing changes.
    box, again, status, _ = env.panel.upload("disliked", files[:2], state)
    assert _unchanged(again) and "2 already in the set" in status
    # The set limit stops an upload part way, with a message.
    env.limits["value"] = Limits(max_images_per_set=3)
    _, state, status, _ = env.panel.upload("disliked", [env.served(), env.served()], state)
    assert len(state) == 3 and "Added 1 image" in status and "full" in status
    # A file gradio's own preprocessing would have copied from anywhere is refused.
    _, again, status, _ = env.panel.upload("liked", [{"name": "/etc/passwd", "is_file": True}], [])
    assert _unchanged(again) and "passwd" in status


def test_remove_clear_and_weight(env):
    entries = [{"id": f"{i:016x}", "weight": 1.0} for i in range(3)]
    state, status = env.panel.remove_selected("liked", entries, {"index": 1})
    assert [e["id"] for e in state] == [entries[0]["id"], entries[2]["id"]] and "2 left" in status
    state, status = env.panel.remove_selected("liked", entries, {"index": -1})
    assert _unchanged(state) and "Select an image" in status
    state, status = env.panel.remove_selected("liked", entries, {"index": 7})
    assert _unchanged(state)

    state, status = env.panel.set_weight("liked", entries, {"index": 2}, 2.5)
    assert state[2]["weight"] == 2.5 and state[0]["weight"] == 1.0 and "2.5" in status
    for bad in (-1, 4.5, float("nan"), "x", None):
        state, status = env.panel.set_weight("liked", entries, {"index": 0}, bad)
        assert _unchanged(state), bad
    state, status = env.panel.set_weight("liked", entries, {}, 2)
    assert _unchanged(state) and "Select an image" in status

    state, status = env.panel.clear("disliked", entries)
    assert state == [] and "stay in the store" in status
    state, status = env.panel.clear("disliked", [])
    assert _unchanged(state)


def test_state_from_the_page_is_sanitised(env):
    from fabric.ui.panel import _entries

    good = "0123456789abcdef"
    junk = [
        {"id": good, "weight": 9}, {"id": good, "weight": 1}, {"id": "../../etc"}, "nonsense", None, 5,
        {"id": "fedcba9876543210", "weight": "heavy"}, "aaaaaaaaaaaaaaaa",
    ]
    assert _entries(junk) == [
        {"id": good, "weight": 4.0}, {"id": "fedcba9876543210", "weight": 1.0}, {"id": "a" * 16, "weight": 1.0}
    ]
    assert _entries("not json") == [] and _entries({"id": good}) == [] and _entries(None) == []
    assert _entries(json.dumps([{"id": good}])) == [{"id": good, "weight": 1.0}]


def test_gallery_value_shows_weights_and_missing_images(env):
    item = env.served()
    ident = env.store.add(Image.open(item["name"]))
    value = env.panel.gallery_value([{"id": ident, "weight": 1.0}, {"id": ident, "weight": 2.0},
                                     {"id": "f" * 16, "weight": 1.0}])
    assert value[0] == (str(env.store.images_dir / f"{ident}.png"), None)
    assert value[1][1] == "× 2"
    assert isinstance(value[2][0], Image.Image) and value[2][1] is None
    gallery_update, hint, clear, summary = env.panel._refresh_fn("liked")([{"id": ident, "weight": 1}], [])
    assert gallery_update["label"] == "Liked images (1)" and len(gallery_update["value"]) == 1
    assert gallery_update["visible"] is True and hint["visible"] is False and clear["visible"] is True
    assert "fabric-count-liked\">1<" in summary and "fabric-count-disliked\">0<" in summary


def test_an_empty_set_shows_how_to_fill_it_instead_of_a_gallery(env):
    p = env.panel
    for kind, thumb in (("liked", "👍"), ("disliked", "👎")):
        # As built: the set is empty.
        assert p.galleries[kind].visible is False and p.clear_buttons[kind].visible is False
        hint = p.hints[kind].value
        assert p.hints[kind].visible is not False and thumb in hint and "under the output gallery" in hint
        assert "drop image files" in hint
        gallery, hint, clear, _ = p._refresh_fn(kind)([], [])
        assert gallery["visible"] is False and gallery["label"] == f"{kind.title()} images (0)"
        assert hint["visible"] is True and clear["visible"] is False
    # The weight and ❌ are marked for fabric.js/style.css, which show them only with a selection.
    assert all("fabric-weight" in w.elem_classes and w.label == "Weight of the selected image" for w in p.weights.values())
    assert all("fabric-remove" in b.elem_classes for b in p.remove_buttons.values())
    css = (ROOT / "style.css").read_text()
    assert ".fabric-set:not(.fabric-has-selection) .fabric-weight" in css
    assert ".fabric-set:not(.fabric-has-selection) .fabric-remove" in css
    assert "fabric-has-selection" in (ROOT / "javascript" / "fabric.js").read_text()
    # The upload boxes have no label to lie over their drop text.
    assert all(u.show_label is False for u in p.uploads.values())


def _dependency(env, trigger, block=None):
    """The one event ``trigger`` of ``block`` (None: of the page, e.g. "load") in gradio 3.41's config."""
    found = [d for d in env.demo.config["dependencies"]
             if d["trigger"] == trigger and (d["targets"] == [] if block is None else block._id in d["targets"])]
    assert len(found) == 1, (trigger, block)
    return found[0]


def test_adding_feedback_switches_fabric_on_and_says_so(env, monkeypatch):
    toasts = []
    monkeypatch.setattr(gr, "Info", lambda message, *a, **k: toasts.append(message))
    p = env.panel
    # Every way images enter a set has the switch among its outputs.
    for block, trigger in ((env.buttons[0], "click"), (env.buttons[1], "click"), (p.uploads["liked"], "upload"),
                           (p.uploads["disliked"], "upload"), (p.preset_load, "click")):
        assert p.enabled._id in _dependency(env, trigger, block)["outputs"]

    item = env.served()
    state, status, enabled = _like(env, [item], index=0)
    assert len(state) == 1 and _value(enabled) is True
    assert toasts == ["FABRIC: 👍 Added to the liked images (1). FABRIC is on."]
    # Nothing added: the switch is left as it is, no toast.
    _, status, enabled = _like(env, [item], index=0, state=state)
    assert "already" in status and _unchanged(enabled)
    _, status, enabled = _like(env, [], index=0)
    assert _unchanged(enabled) and len(toasts) == 1

    _, state, status, enabled = p.upload("disliked", [env.served()], [])
    assert len(state) == 1 and _value(enabled) is True and "FABRIC is on" in toasts[-1]
    _, _, status, enabled = p.upload("disliked", [{"name": "/etc/passwd", "is_file": True}], [])
    assert _unchanged(enabled)

    a = env.store.add(Image.new("RGB", (8, 8), (5, 5, 5)))
    p.save_preset("one", [{"id": a, "weight": 1.0}], [])
    *_, enabled = p.load_preset("one")
    assert _value(enabled) is True and "Loaded preset 'one'" in toasts[-1]
    *_, enabled = p.load_preset("none such")
    assert _unchanged(enabled)


def test_counts_read_singular_and_plural(env):
    one = [{"id": "0" * 16, "weight": 1.0}]
    two = one + [{"id": "1" * 16, "weight": 1.0}]
    assert "(1 image;" in env.panel.clear("liked", one)[1]
    assert "(2 images;" in env.panel.clear("liked", two)[1]
    _, _, status, _ = env.panel.upload("liked", [env.served()], [])
    assert "Added 1 image to" in status
    a = env.store.add(Image.new("RGB", (8, 8), (1, 1, 1)))
    b = env.store.add(Image.new("RGB", (8, 8), (2, 2, 2)))
    env.panel.save_preset("p", [{"id": a}], [{"id": b}])
    env.store.delete(b)
    assert "1 disliked image is no longer in the store" in env.panel.load_preset("p")[2]


def test_pasting_an_infotext_replaces_the_status_line(env):
    a = env.store.add(Image.new("RGB", (8, 8), (1, 1, 1)))
    b = env.store.add(Image.new("RGB", (8, 8), (2, 2, 2)))
    params = settings_to_infotext(FabricSettings(
        enabled=True, liked=(FeedbackImage(a),), disliked=(FeedbackImage(a), FeedbackImage(b)),
    ))
    status = _value(_restore(env, params)[env.panel.status])
    assert "Pasted FABRIC settings: 1 liked image, 2 disliked images." in status and "fabric-msg-ok" in status
    env.store.delete(b)
    status = _value(_restore(env, params)[env.panel.status])
    assert "1 liked image, 1 disliked image." in status
    assert "1 disliked image is no longer in the store" in status and "fabric-msg-error" in status
    assert _value(_restore(env, {"Steps": "20"})[env.panel.status]) == ""


def test_presets_are_listed_again_on_page_load_and_when_the_list_opens(env):
    # Another session (or the API) saves a preset after this page was built.
    env.store.save_preset("from elsewhere", [{"id": env.store.add(Image.new("RGB", (8, 8), (3, 3, 3)))}], [])
    for dep in (_dependency(env, "focus", env.panel.preset), _dependency(env, "load")):
        assert dep["outputs"] == [env.panel.preset._id] and dep["queue"] is False
        fn = env.demo.fns[env.demo.config["dependencies"].index(dep)].fn
        assert fn() == {"__type__": "generic_update", "choices": ["from elsewhere"]}  # no value: typing goes on


# -- presets ---------------------------------------------------------------------------------------------


def test_presets_save_load_delete(env):
    a = env.store.add(Image.new("RGB", (8, 8), (1, 1, 1)))
    b = env.store.add(Image.new("RGB", (8, 8), (2, 2, 2)))
    liked, disliked = [{"id": a, "weight": 1.5}], [{"id": b, "weight": 1.0}]

    update, status = env.panel.save_preset("  ", liked, disliked)
    assert _unchanged(update) and "name" in status
    update, status = env.panel.save_preset("empty", [], [])
    assert _unchanged(update) and "Nothing to save" in status
    update, status = env.panel.save_preset("round 1", liked, disliked)
    assert update["choices"] == ["round 1"] and update["value"] == "round 1" and "Saved" in status
    update, status = env.panel.save_preset("round 1", liked, [])
    assert "Replaced" in status
    env.panel.save_preset("round 1", liked, disliked)

    got_liked, got_disliked, status, _ = env.panel.load_preset("round 1")
    assert got_liked == liked and got_disliked == disliked and "Loaded" in status

    # An image deleted from the store is dropped on load, with a message.
    env.store.delete(b)
    got_liked, got_disliked, status, _ = env.panel.load_preset("round 1")
    assert got_liked == liked and got_disliked == [] and "no longer in the store" in status

    got_liked, got_disliked, status, _ = env.panel.load_preset("nope")
    assert _unchanged(got_liked) and _unchanged(got_disliked) and "nope" in status

    assert env.panel.refresh_presets()["choices"] == ["round 1"]
    update, status = env.panel.delete_preset("round 1")
    assert update["choices"] == [] and update["value"] is None and "Deleted" in status
    update, status = env.panel.delete_preset("round 1")
    assert _unchanged(update) and "no preset" in status


# -- infotext ------------------------------------------------------------------------------------------


def _restore(env, params):
    return {comp: key(params) for comp, key in env.panel.infotext_fields if callable(key)}


def test_infotext_restores_every_setting(env):
    a = env.store.add(Image.new("RGB", (8, 8), (1, 1, 1)))
    unknown = "f" * 16
    settings = FabricSettings(
        enabled=True, liked=(FeedbackImage(a, 1.5), FeedbackImage(unknown)), disliked=(FeedbackImage(a),),
        strength=0.6, start=0.1, end=0.7, min_strength=0.05, neg_scale=0.25, hires=True, token_budget=512,
    )
    params = {"Steps": "20", **settings_to_infotext(settings)}
    p = env.panel
    assert [c for c, key in p.infotext_fields if callable(key)] == [*p.controls, p.status]
    restored = _restore(env, params)
    assert _unchanged(restored[p.enabled])  # restore_enabled is off: the state is left as it is
    assert _value(restored[p.liked]) == [{"id": a, "weight": 1.5}]  # the unknown id is dropped
    assert _value(restored[p.disliked]) == [{"id": a, "weight": 1.0}]
    expected = {p.strength: 0.6, p.start: 0.1, p.end: 0.7, p.min_strength: 0.05, p.neg_scale: 0.25,
                p.hires: True, p.token_budget: 512}
    assert {c: _value(restored[c]) for c in expected} == expected

    env.enabled["value"] = True
    assert _value(_restore(env, params)[p.enabled]) is True
    # An infotext without FABRIC: enabled goes off only when restoring is on; nothing else changes.
    plain = _restore(env, {"Steps": "20"})
    assert _value(plain[p.enabled]) is False
    assert all(_unchanged(plain[c]) for c in p.controls[1:])
    assert _value(plain[p.status]) == ""  # the previous action's message goes
    env.enabled["value"] = False
    assert _unchanged(_restore(env, {"Steps": "20"})[p.enabled])


def test_send_to_img2img_carries_every_control(env):
    """modules/infotext_utils.connect_paste_params_buttons (v1.10): "Send to img2img" under
    txt2img's gallery copies source components to destination components, matched by the key of
    each (component, key) field whose key is in the scripts' paste_field_names, in field order."""
    with gr.Blocks():
        img2img = FabricPanel("img2img", get_store=lambda: env.store, get_limits=Limits)
    source, destination = env.panel, img2img
    names = source.paste_field_names
    assert names == destination.paste_field_names and len(names) == len(source.controls)
    inputs = [c for c, key in source.infotext_fields if key in names]
    outputs = [c for c, key in destination.infotext_fields if key in names]
    assert inputs == source.controls and outputs == destination.controls  # each to its counterpart
    # and pasting an infotext (↙, PNG Info) leaves those copies alone: no infotext has their keys
    params = settings_to_infotext(FabricSettings(enabled=True, strength=0.5))
    assert not any(key in params for key in names)


def test_infotext_with_bad_values_leaves_those_controls(env):
    p = env.panel
    restored = _restore(env, {"FABRIC strength": "lots", "FABRIC end": "0.5", "FABRIC liked": "nothex"})
    assert _unchanged(restored[p.strength])
    assert _value(restored[p.end]) == 0.5
    assert _value(restored[p.liked]) == []  # FABRIC was on without readable liked images


def test_buttons_with_a_generation_info_component(tmp_path, monkeypatch):
    temp = tmp_path / "gradio"
    temp.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))
    store = FeedbackStore(tmp_path / "store")
    with gr.Blocks() as demo:
        panel = FabricPanel("img2img", get_store=lambda: store, get_limits=Limits)
        gallery = gr.Gallery(elem_id="img2img_gallery")
        info = gr.Textbox(visible=False, elem_id="generation_info_img2img")
        with gr.Row():
            panel.add_feedback_buttons(gallery, info)
    js = [d["js"] for d in demo.config["dependencies"] if d.get("js") and "fabric_output_index()" in d["js"]]
    assert len(js) == 2 and not any("fabric_generation_info" in j for j in js)
    items = []
    for n in range(3):
        path = temp / f"{n}.png"
        Image.new("RGB", (8, 8), (n, 50, 50)).save(path)
        items.append({"name": str(path), "is_file": True})
    from_output = panel._output_fn("disliked", with_info=True)
    text = json.dumps({"index_of_first_image": 1})
    state, status, _ = from_output(items, {"index": 0}, text, [])
    assert "grid" in status
    state, status, _ = from_output(items, {"index": 1}, text, [])
    assert len(state) == 1 and "disliked" in status
