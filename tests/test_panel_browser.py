"""The FABRIC panel in a real browser: Debian chromium driven by playwright on a gradio 3.41 page.

The page (tests/panel_page.py) hosts the panel beside an output gallery with the webui's element
ids and stand-ins for the webui's JS helpers.  One gradio server and one browser serve the module;
every test opens its own browser context, i.e. its own gradio session.  Screenshots go to
tests/artifacts/ (git-ignored); the README's pictures come from the real webui
(tests/e2e/test_e2e_browser.py).
"""

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from browser_support import chromium  # skips this module without chromium or playwright
pytest.importorskip("gradio", reason="gradio is not installed")

from PIL import Image  # noqa: E402

from fabric.feedback.settings import Limits  # noqa: E402
from fabric.feedback.store import FeedbackStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
TIMEOUT_MS = 15_000


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("panel")
    saved = {k: os.environ.get(k) for k in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED")}
    os.environ["GRADIO_TEMP_DIR"] = str(base / "gradio")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import panel_page  # imports gradio; after GRADIO_TEMP_DIR is set

    store = FeedbackStore(base / "store")
    port = _free_port()
    with panel_page.injected_head():
        demo = panel_page.build_page(store, limits=Limits(max_images_per_set=4))
        demo.queue(concurrency_count=2)
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", store=store, demo=demo, files=base / "files")
        finally:
            demo.close()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


class Session:
    """One browser context on the test page, with the panel's actions."""

    def __init__(self, browser, server, *, dark=False, open_panel=True):
        self.server = server
        self.context = browser.new_context(viewport={"width": 1360, "height": 1000}, device_scale_factor=1)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(server.url + ("?__theme=dark" if dark else ""))
        self.page.wait_for_selector("#fabric_txt2img .label-wrap")
        if open_panel:
            self.open_panel()

    def open_panel(self):
        self.page.click("#fabric_txt2img .label-wrap")
        self.page.wait_for_selector("#fabric_strength_txt2img", state="visible")

    def close(self):
        self.context.close()

    # -- the output side

    def generate(self, count):
        before = self.page.input_value("#generation_info_txt2img textarea")
        self.page.click(f"#test_generate_{count}")
        self.page.wait_for_function(
            "([before]) => { const t = document.querySelector('#generation_info_txt2img textarea');"
            " return t && t.value && t.value !== before; }",
            arg=[before],
        )
        total = count + (1 if count > 1 else 0)
        self.page.wait_for_function(f"{self.THUMBNAILS('#txt2img_gallery')}.length === {total}")

    @staticmethod
    def THUMBNAILS(gallery):
        """JS: a gallery's thumbnails, in its preview strip or, when the preview is closed, its grid."""
        return (
            f"(() => {{ const g = document.querySelector('{gallery}');"
            " const kind = g.querySelector('.preview') ? 'small' : 'lg';"
            " return g.querySelectorAll('.thumbnail-item.thumbnail-' + kind); })()"
        )

    def click_thumbnail(self, gallery, index):
        self.page.evaluate_handle(f"{self.THUMBNAILS(gallery)}[{index}]").as_element().click()

    def select_output(self, index):
        self.click_thumbnail("#txt2img_gallery", index)
        self.page.wait_for_function(f"selected_gallery_index() === {index}")

    def close_output_preview(self):
        if self.page.locator("#txt2img_gallery .preview").count():
            self.page.click("#txt2img_gallery .preview button[aria-label='Clear']")
        self.page.wait_for_function("selected_gallery_index() === -1")

    # -- actions that answer in the status line

    MESSAGE = "#fabric_status_txt2img .fabric-msg"
    MESSAGE_STAMP = "(() => { const m = document.querySelector('#fabric_status_txt2img .fabric-msg'); return m ? m.dataset.t : ''; })()"

    def status(self):
        return self.page.inner_text(self.MESSAGE).strip()

    def act(self, do):
        """Run ``do()`` and wait for the panel's next message; return its text."""
        before = self.page.evaluate(self.MESSAGE_STAMP)
        do()
        self.page.wait_for_function(f"([before]) => {self.MESSAGE_STAMP} !== before", arg=[before])
        return self.status()

    def click(self, elem_id):
        return self.act(lambda: self.page.click(f"#{elem_id}"))

    def like(self):
        return self.click("fabric_like_button_txt2img")

    def dislike(self):
        return self.click("fabric_dislike_button_txt2img")

    def upload(self, kind, paths):
        selector = f"#fabric_{kind}_upload_txt2img input[type=file]"
        return self.act(lambda: self.page.set_input_files(selector, [str(p) for p in paths]))

    def drop(self, kind, path):
        """Drag and drop a file onto the upload box, as a user would from a file manager."""
        data = Path(path).read_bytes()

        def do():
            transfer = self.page.evaluate_handle(
                "([bytes, name]) => { const dt = new DataTransfer();"
                " dt.items.add(new File([new Uint8Array(bytes)], name, {type: 'image/png'})); return dt; }",
                [list(data), Path(path).name],
            )
            target = f"#fabric_{kind}_upload_txt2img input[type=file]"
            self.page.locator(target).locator("xpath=..").dispatch_event("dragenter", {"dataTransfer": transfer})
            self.page.locator(target).locator("xpath=..").dispatch_event("drop", {"dataTransfer": transfer})

        return self.act(do)

    def select_feedback(self, kind, index, weight=None):
        """Select an image of a FABRIC gallery; with ``weight``, wait until the weight box shows it."""
        # The select event (not queued) answers with the image's weight in the weight box.
        with self.page.expect_response(lambda r: r.url.endswith("/run/predict")):
            self.click_thumbnail(f"#fabric_{kind}_txt2img", index)
        self.page.wait_for_function(f"fabric_gallery_selection('fabric_{kind}_txt2img').index === {index}")
        if weight is not None:
            self.page.wait_for_function(
                f"document.querySelector('#fabric_{kind}_weight_txt2img input[type=number]').value === '{weight:g}'"
            )

    def set_weight(self, kind, weight):
        box = f"#fabric_{kind}_weight_txt2img input[type=number]"

        def do():
            self.page.fill(box, str(weight))
            self.page.wait_for_timeout(300)  # a person's pause between typing and Enter
            self.page.press(box, "Enter")  # fabric.js: Enter in the weight box applies it

        return self.act(do)

    def wait_count(self, kind, count):
        """The set shows ``count`` images: its gallery with that label, or its hint when empty."""
        gallery, hint = f"#fabric_{kind}_txt2img", f"#fabric_{kind}_hint_txt2img"
        if count == 0:
            self.page.wait_for_selector(hint, state="visible")
            self.page.wait_for_selector(gallery, state="hidden")
            return
        title = "Liked" if kind == "liked" else "Disliked"
        self.page.wait_for_function(
            "([sel, text]) => document.querySelector(sel).innerText.includes(text)",
            arg=[gallery, f"{title} images ({count})"],
        )
        self.page.wait_for_function(f"{self.THUMBNAILS(gallery)}.length === {count}")
        assert self.page.is_hidden(hint)

    def visible(self, selector):
        return self.page.locator(selector).is_visible()

    def toasts(self):
        return [t.strip() for t in self.page.locator(".toast-body .toast-text").all_inner_texts()]

    def args(self):
        """The panel's control values, as the webui would pass them to the script."""
        before = self.page.input_value("#test_args textarea")
        self.page.click("#test_inspect")
        self.page.wait_for_function(
            "([before]) => document.querySelector('#test_args textarea').value !== before", arg=[before]
        )
        return json.loads(self.page.input_value("#test_args textarea"))

    def ids(self, kind):
        return [e["id"] for e in self.args()[kind]]

    def screenshot(self, name, selector="#tab_txt2img", *, clean=False):
        """Save a screenshot to tests/artifacts/; ``clean`` hides the test page's own controls."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        style = None
        if clean:
            style = self.page.add_style_tag(content=(
                "#test_inspect, #test_args, #html_info_txt2img, #test_paste, #test_paste_text"
                " { display: none !important; }"
            ))
        self.page.locator(selector).screenshot(path=str(path))
        if style is not None:
            style.evaluate("el => el.remove()")
        return path


def _png(folder, name, color, size=(48, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new("RGB", size, color).save(path)
    return path


def test_like_dislike_upload_weight_presets(server, browser):
    s = Session(browser, server)
    try:
        store = server.store
        stored = lambda: {p.stem for p in (store.root / "images").glob("*.png")}  # noqa: E731

        # A batch of 3 with its grid first: the preview shows the grid selected; 👍 refuses it.
        s.generate(3)
        assert s.page.evaluate("selected_gallery_index()") == 0
        assert "grid" in s.like()
        assert stored() == set()

        # Select the second image (gallery index 2) and like it; liking it again keeps one copy.
        s.select_output(2)
        assert "Added to the liked images (1)" in s.like()
        assert "already in the liked set" in s.like()
        s.wait_count("liked", 1)
        liked = s.ids("liked")
        assert len(liked) == 1 and stored() == set(liked)

        # Nothing selected in a batch of 3: a message, nothing added.
        s.close_output_preview()
        assert "Select an image in the output gallery" in s.dislike()
        s.select_output(3)
        assert "Added to the disliked images (1)" in s.dislike()
        s.wait_count("disliked", 1)

        # Batch size 1 with nothing selected: the only image is taken.
        s.generate(1)
        s.close_output_preview()
        assert "Added to the liked images (2)" in s.like()
        s.wait_count("liked", 2)
        assert len(stored()) == 3

        # Upload several files at once; a file that is not an image is refused, the rest kept.
        files = server.files
        red, blue = _png(files, "red.png", (220, 20, 20)), _png(files, "blue.png", (20, 20, 220))
        junk = files / "notes.txt"
        junk.write_text("not a picture")
        message = s.upload("disliked", [red, blue, junk])
        assert "Added 2 images to the disliked set (3)" in message
        assert "notes.txt" in message and "not a readable image" in message
        assert "fabric-msg-error" in s.page.inner_html("#fabric_status_txt2img")
        s.wait_count("disliked", 3)
        # Set full (the page's limit is 4): the second file is refused with a message.
        green, white = _png(files, "green.png", (20, 200, 20)), _png(files, "white.png", (250, 250, 250))
        message = s.upload("disliked", [green, white])
        assert "Added 1 image" in message and "full" in message
        s.wait_count("disliked", 4)
        assert len(s.ids("disliked")) == 4

        # Drag and drop onto the liked upload box.
        assert "Added 1 image to the liked set (3)" in s.drop("liked", _png(files, "drop.png", (240, 200, 0)))
        s.wait_count("liked", 3)

        # Remove the selected image: ❌ and the weight show only while an image of the set is selected.
        assert not s.visible("#fabric_disliked_remove_txt2img") and not s.visible("#fabric_disliked_weight_txt2img")
        before = s.ids("disliked")
        s.select_feedback("disliked", 1)
        s.page.wait_for_selector("#fabric_disliked_remove_txt2img", state="visible")
        assert s.visible("#fabric_disliked_weight_txt2img") and not s.visible("#fabric_liked_weight_txt2img")
        assert "Removed it from the disliked set (3 left)" in s.click("fabric_disliked_remove_txt2img")
        s.wait_count("disliked", 3)
        assert s.ids("disliked") == before[:1] + before[2:]

        # The weight of the selected image; selecting an image shows its weight.
        s.select_feedback("liked", 1, weight=1)
        assert "Weight of liked image 2: 1.5" in s.set_weight("liked", 1.5)
        weights = [e["weight"] for e in s.args()["liked"]]
        assert weights == [1.0, 1.5, 1.0]
        s.page.wait_for_function("document.querySelector('#fabric_liked_txt2img').innerText.includes('× 1.5')")
        s.select_feedback("liked", 0, weight=1)
        s.select_feedback("liked", 1, weight=1.5)
        s.screenshot("panel-light.png")

        # Presets: save, clear both sets, load, delete.
        args = s.args()
        s.page.fill("#fabric_preset_txt2img input", "round one")
        s.page.press("#fabric_preset_txt2img input", "Enter")
        assert "Saved preset 'round one': 3 liked, 3 disliked" in s.click("fabric_preset_save_txt2img")
        assert [p["name"] for p in store.list_presets()] == ["round one"]
        assert "Cleared the liked set" in s.click("fabric_liked_clear_txt2img")
        assert "Cleared the disliked set" in s.click("fabric_disliked_clear_txt2img")
        s.wait_count("liked", 0)
        s.wait_count("disliked", 0)
        assert s.args()["liked"] == []
        assert "Loaded preset 'round one': 3 liked, 3 disliked" in s.click("fabric_preset_load_txt2img")
        s.wait_count("liked", 3)
        s.wait_count("disliked", 3)
        loaded = s.args()
        assert loaded["liked"] == args["liked"] and loaded["disliked"] == args["disliked"]
        s.page.wait_for_function("document.querySelector('#fabric_liked_txt2img').innerText.includes('× 1.5')")
        s.screenshot("panel.png", clean=True)
        assert "Deleted preset 'round one'" in s.click("fabric_preset_delete_txt2img")
        assert store.list_presets() == []
        assert "Pick a preset to load" in s.click("fabric_preset_load_txt2img")

        # Generation with FABRIC on carries the ids in the infotext; pasting it elsewhere restores.
        s.page.check("#fabric_txt2img-checkbox input")
        s.generate(1)
        infotext = s.page.input_value("#html_info_txt2img textarea")
        assert "FABRIC liked" in infotext and all(i in infotext for i in s.ids("liked"))
        assert s.errors == []
    finally:
        s.close()

    other = Session(browser, server)
    try:
        assert other.args()["liked"] == [] and other.args()["enabled"] is False
        other.page.fill("#test_paste_text textarea", infotext)
        other.page.click("#test_paste")
        other.wait_count("liked", 3)
        other.wait_count("disliked", 3)
        restored = other.args()
        assert restored["enabled"] is True
        assert restored["liked"] == loaded["liked"] and restored["disliked"] == loaded["disliked"]
        # The status line tells what the paste did, not what the previous action did.
        assert "Pasted FABRIC settings: 3 liked images, 3 disliked images." == other.status()
        assert "Cleared" in other.click("fabric_liked_clear_txt2img")
        other.page.fill("#test_paste_text textarea", "a prompt\nSteps: 20")
        other.page.click("#test_paste")
        other.page.wait_for_selector(other.MESSAGE, state="detached")
    finally:
        other.close()


def test_two_sessions_have_their_own_sets(server, browser):
    a, b = Session(browser, server), Session(browser, server)
    try:
        a.generate(1)
        b.generate(3)
        b.select_output(1)
        # Both like at the same time.
        a.page.click("#fabric_like_button_txt2img")
        b.page.click("#fabric_dislike_button_txt2img")
        a.wait_count("liked", 1)
        b.wait_count("disliked", 1)
        a_args, b_args = a.args(), b.args()
        assert len(a_args["liked"]) == 1 and a_args["disliked"] == []
        assert b_args["liked"] == [] and len(b_args["disliked"]) == 1
        assert a_args["liked"][0]["id"] != b_args["disliked"][0]["id"]
        # B's page never shows A's image.
        assert "Liked images (0)" in b.page.inner_text("#fabric_liked_txt2img")
        assert "Disliked images (0)" in a.page.inner_text("#fabric_disliked_txt2img")
        assert a.errors == [] and b.errors == []
    finally:
        a.close()
        b.close()


def test_dark_theme_screenshot(server, browser):
    s = Session(browser, server, dark=True)
    try:
        assert s.page.evaluate("document.body.classList.contains('dark')")
        s.generate(3)
        for index in (1, 3):
            s.select_output(index)
            s.like()
        s.select_output(2)
        s.dislike()
        s.wait_count("liked", 2)
        s.wait_count("disliked", 1)
        s.select_feedback("liked", 0, weight=1)
        s.set_weight("liked", 0.75)
        s.screenshot("panel-dark.png", clean=True)
        assert s.errors == []
    finally:
        s.close()


def test_feedback_with_the_panel_closed_switches_fabric_on_and_shows_a_toast(server, browser):
    s = Session(browser, server, open_panel=False)
    try:
        assert s.page.is_checked("#fabric_txt2img-checkbox input") is False
        s.generate(1)
        s.close_output_preview()
        s.page.mouse.wheel(0, 2000)  # wherever the page is scrolled
        assert "Added to the liked images (1)" in s.like()
        toast = s.page.locator(".toast-body", has_text="FABRIC: 👍 Added to the liked images (1). FABRIC is on.")
        toast.wait_for(state="visible")
        box, viewport = toast.bounding_box(), s.page.viewport_size
        assert 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"]
        assert s.page.is_checked("#fabric_txt2img-checkbox input") is True
        assert s.args()["enabled"] is True
        # A refusal changes nothing: no new "on" toast, the switch stays as the user sets it.
        s.open_panel()
        s.page.uncheck("#fabric_txt2img-checkbox input")
        assert "already in the liked set" in s.like()
        assert s.page.is_checked("#fabric_txt2img-checkbox input") is False
        assert s.errors == []
    finally:
        s.close()


def test_sets_are_compact_and_say_how_to_fill_them(server, browser):
    s = Session(browser, server)
    try:
        # Empty: a hint instead of a gallery, and no tools without an image to act on.
        for kind, thumb in (("liked", "👍"), ("disliked", "👎")):
            hint = s.page.inner_text(f"#fabric_{kind}_hint_txt2img")
            assert thumb in hint and "under the output gallery" in hint and "drop image files" in hint
            assert s.page.is_hidden(f"#fabric_{kind}_txt2img")
            for tool in ("weight", "remove", "clear"):
                assert not s.visible(f"#fabric_{kind}_{tool}_txt2img"), (kind, tool)
        # The drop box has no label lying over its text, and it is low.
        upload = s.page.locator("#fabric_liked_upload_txt2img")
        assert not upload.locator("[data-testid=block-label]").is_visible()
        assert upload.bounding_box()["height"] <= 90

        s.generate(3)
        for index in (1, 2):
            s.select_output(index)
            s.like()
        s.wait_count("liked", 2)
        s.wait_count("disliked", 0)
        assert s.visible("#fabric_liked_clear_txt2img") and not s.visible("#fabric_liked_weight_txt2img")
        # The label sits above the first thumbnail, not on it; two small thumbnails take one low row.
        label = s.page.locator("#fabric_liked_txt2img [data-testid=block-label]").bounding_box()
        thumbs = s.page.locator("#fabric_liked_txt2img .thumbnail-item").all()
        first = thumbs[0].bounding_box()
        assert label["y"] + label["height"] <= first["y"] + 0.5, (label, first)
        assert thumbs[1].bounding_box()["y"] == first["y"] and first["height"] <= 72
        assert s.page.locator("#fabric_liked_txt2img").bounding_box()["height"] <= 140
        # Selecting shows the weight with that image's value; ❌ removes it; the tools hide again.
        s.select_feedback("liked", 1, weight=1)
        assert s.visible("#fabric_liked_weight_txt2img") and s.visible("#fabric_liked_remove_txt2img")
        assert s.page.locator("#fabric_liked_txt2img .preview img").first.bounding_box()["height"] >= 120
        s.screenshot("panel-compact.png")
        assert "Removed it from the liked set (1 left)" in s.click("fabric_liked_remove_txt2img")
        s.wait_count("liked", 1)
        s.page.wait_for_selector("#fabric_liked_weight_txt2img", state="hidden")
        assert s.errors == []
    finally:
        s.close()


def test_presets_saved_elsewhere_appear_on_page_load_and_when_the_list_opens(server, browser):
    ident = server.store.add(Image.new("RGB", (16, 16), (9, 99, 199)))
    server.store.save_preset("saved before", [{"id": ident}], [])  # after the page was built
    s = Session(browser, server)
    try:
        options = "#fabric_preset_txt2img ul.options li"
        s.page.click("#fabric_preset_txt2img input")
        s.page.locator(options, has_text="saved before").wait_for(state="visible")
        s.page.keyboard.press("Escape")
        s.page.click("#fabric_strength_txt2img")  # the list closes
        server.store.save_preset("saved meanwhile", [], [{"id": ident}])
        # Opening the list asks the store again: the new preset is there the next time it opens.
        with s.page.expect_response(lambda r: r.url.endswith("/run/predict")):
            s.page.click("#fabric_preset_txt2img input")
        s.page.keyboard.press("Escape")
        s.page.click("#fabric_strength_txt2img")
        s.page.click("#fabric_preset_txt2img input")
        option = s.page.locator(options, has_text="saved meanwhile")
        option.wait_for(state="visible")
        option.click()
        assert "Loaded preset 'saved meanwhile': 0 liked, 1 disliked." in s.click("fabric_preset_load_txt2img")
        s.wait_count("disliked", 1)
        assert s.errors == []
    finally:
        for name in ("saved before", "saved meanwhile"):
            server.store.delete_preset(name)
        s.close()
