"""The FABRIC panel in a real webui page, by clicking: generate, 👍, 👎, generate again with FABRIC on.

Debian chromium driven by playwright opens FABRIC_WEBUI_URL (a webui with this extension
installed).  Generations are 64x64 with 4 steps; on a CPU they take seconds to half a minute, so
the waits are long.  Screenshots of each stage go to tests/artifacts/e2e/ (git-ignored).

The store is the webui's own: ids are checked against GET /fabric/v1/images, and against the id
computed from the pixels of the file the output gallery shows (fabric.feedback.images.image_id), so the
image that was liked is the one that was on screen.  Set FABRIC_DOCS_SCREENSHOTS=1 to also write
the README's pictures, docs/webui-light.png and docs/webui-dark.png: txt2img with the FABRIC
accordion open (a liked and a disliked image) beside an output made with them, its 👍/👎 buttons
and its infotext, in the webui's light and dark theme.
"""

import io
import json
import os
import sys
from pathlib import Path

import pytest

from browser_support import chromium, playwright_api  # skips this module without chromium or playwright

from PIL import Image  # noqa: E402

from fabric.feedback.images import image_id  # noqa: E402
from webui_client import gradient  # noqa: E402

URL = os.environ.get("FABRIC_WEBUI_URL", "").rstrip("/")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "e2e"
TIMEOUT_MS = 30_000  # clicks, panel events
PAGE_LOAD_MS = 180_000  # the webui's page is large; a busy CPU serves it slowly
GENERATION_MS = 180_000  # per image
# The webui's own page error, not FABRIC's: a width/height change runs hires_fix.js's
# onCalcResolutionHires as an event with outputs=[] that returns six values, and gradio 3.41 throws
# "Cannot read properties of undefined (reading 'props')" applying them (webui v1.10.1, ui.py).
WEBUI_HIRES_JS = "width/height (webui hires_fix.js)"


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


class WebuiPage:
    """One browser context (one gradio session) on the webui, with the actions of the test."""

    def __init__(self, browser, theme=None):
        self.context = browser.new_context(viewport={"width": 1600, "height": 1200}, device_scale_factor=1)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors = []  # uncaught exceptions in the page: "stage: message" (stack on stderr)
        self.stage = "load"
        self.page.on("pageerror", self._on_error)
        self.page.goto(URL + "/" + (f"?__theme={theme}" if theme else ""), timeout=PAGE_LOAD_MS)
        # The webui's inputAccordion.js adds the visible checkbox once the UI is loaded.
        self.page.wait_for_selector("#fabric_txt2img-visible-checkbox", state="attached", timeout=PAGE_LOAD_MS)
        self.page.wait_for_selector("#fabric_like_button_txt2img", state="visible")

    def _on_error(self, exc):
        self.errors.append(f"{self.stage}: {exc.message}")
        print(f"page error during {self.stage!r}: {exc.message}\n{exc.stack}", file=sys.stderr)

    def close(self):
        self.context.close()

    def js(self, expression, arg=None):
        return self.page.evaluate(expression, arg)

    def text(self, selector):
        """textContent: also for elements inside a closed accordion (innerText is empty there)."""
        return self.js("(s) => { const e = document.querySelector(s); return e ? e.textContent : null; }", selector)

    def checked(self, selector):
        return self.js("(s) => document.querySelector(s).checked", selector)

    # -- txt2img settings

    def set_slider(self, elem_id, value):
        """Type into a slider's number box (gradio applies it on input; Tab blurs it)."""
        box = self.page.locator(f"#{elem_id} input[type=number]")
        stage = self.stage
        if elem_id in ("txt2img_width", "txt2img_height"):
            self.stage = WEBUI_HIRES_JS
        box.fill(str(value))
        box.press("Tab")
        self.page.wait_for_function(
            "([id, v]) => document.querySelector(`#${id} input[type=range]`).value === v", arg=[elem_id, str(value)]
        )
        self.page.wait_for_timeout(500)  # the release events run
        self.stage = stage

    def small_job(self):
        """One 64x64 image in 4 steps. Random weights: some prompts and samplers end in NaNs; this
        prompt with Euler does not."""
        self.stage = "settings"
        self.set_prompt("a lighthouse on a cliff")
        self.set_sampler("Euler")
        self.set_seed(1234)
        self.set_slider("txt2img_width", 64)
        self.set_slider("txt2img_height", 64)
        self.set_slider("txt2img_steps", 4)
        self.set_slider("txt2img_batch_size", 1)

    def fabric_errors(self):
        """Page errors, less the webui's own on width/height (see WEBUI_HIRES_JS)."""
        return [e for e in self.errors if not (e.startswith(WEBUI_HIRES_JS) and "reading 'props'" in e)]

    def set_prompt(self, text):
        self.page.fill("#txt2img_prompt textarea", text)

    def set_seed(self, seed):
        self.page.fill("#txt2img_seed input[type=number]", str(seed))
        self.page.press("#txt2img_seed input[type=number]", "Tab")

    def set_sampler(self, name):
        # An option is li[data-value] in gradio 3.41 (A1111), li[aria-label] in 4.40 (Forge).
        option = f"#txt2img_sampling ul.options li:is([data-value='{name}'], [aria-label='{name}'])"
        for attempt in range(3):  # gradio 4 may redraw the list while it opens, closing it again
            self.page.click("#txt2img_sampling input")
            try:
                self.page.click(option, timeout=5_000)
                break
            except playwright_api.TimeoutError:
                if attempt == 2:
                    raise
        self.page.wait_for_function(
            "(v) => document.querySelector('#txt2img_sampling input').value === v", arg=name
        )

    # -- the output gallery

    @staticmethod
    def thumbnails(gallery):
        """JS: a gallery's thumbnails, in its preview strip or, when the preview is closed, its grid."""
        return (
            f"(() => {{ const g = document.querySelector('{gallery}');"
            " const kind = g.querySelector('.preview') ? 'small' : 'lg';"
            " return g.querySelectorAll('.thumbnail-item.thumbnail-' + kind); })()"
        )

    def generation_info(self):
        return self.js("() => document.querySelector('#generation_info_txt2img textarea').value")

    def generate(self, batch_size, button="#txt2img_generate"):
        """Click Generate (or ``button``: ✨ too runs a job and writes the generation info); wait
        for the new generation info and the gallery; return the info dict.

        An error the webui shows in its log line under the gallery fails at once, with its text.
        """
        before = self.generation_info()
        log_before = self.text("#html_log_txt2img") or ""
        self.page.click(button)
        try:
            self.page.wait_for_function(
                "([before, logBefore]) => {"
                " const t = document.querySelector('#generation_info_txt2img textarea');"
                " if (t && t.value && t.value !== before) return true;"
                " const log = document.querySelector('#html_log_txt2img').textContent;"
                " return log !== logBefore && /Error|Exception/.test(log); }",
                arg=[before, log_before], timeout=GENERATION_MS * batch_size, polling=500,
            )
        except playwright_api.TimeoutError:
            self.screenshot("timeout.png")
            raise AssertionError(
                f"no generation result within {GENERATION_MS * batch_size / 1000:.0f} s;"
                f" log: {self.text('#html_log_txt2img')!r}"
            ) from None
        if self.generation_info() == before:
            self.screenshot("generation-error.png")
            raise AssertionError(f"the webui reported an error: {self.text('#html_log_txt2img')!r}")
        info = json.loads(self.generation_info())
        first = info.get("index_of_first_image", 0)
        self.page.wait_for_function(f"{self.thumbnails('#txt2img_gallery')}.length === {first + batch_size}")
        # Generate is back (the interrupt/skip buttons are gone) once the job is over.
        self.page.wait_for_selector("#txt2img_generate", state="visible", timeout=GENERATION_MS)
        return info

    def output_id(self, index):
        """The FABRIC id of the output gallery's image ``index``, from the file the page shows."""
        src = self.js(f"{self.thumbnails('#txt2img_gallery')}[{index}].querySelector('img').src")
        response = self.context.request.get(src)
        assert response.ok, (src, response.status)
        return image_id(Image.open(io.BytesIO(response.body())))

    def output_size(self, index):
        """(width, height) of the output gallery's image ``index``, from the file the page shows."""
        src = self.js(f"{self.thumbnails('#txt2img_gallery')}[{index}].querySelector('img').src")
        response = self.context.request.get(src)
        assert response.ok, (src, response.status)
        return Image.open(io.BytesIO(response.body())).size

    def select_output(self, index):
        self.page.evaluate_handle(f"{self.thumbnails('#txt2img_gallery')}[{index}]").as_element().click()
        self.page.wait_for_function(f"selected_gallery_index() === {index}")

    # -- the FABRIC panel

    # The message line's HTML: each message carries a data-t stamp, so even a repeated text is a
    # new value (the outerHTML, not the stamp, is compared: a panel without stamps works too).
    MESSAGE = (
        "(() => { const m = document.querySelector('#fabric_status_txt2img .fabric-msg');"
        " return m ? m.outerHTML : ''; })()"
    )

    def click_for_message(self, selector):
        """Click and wait for the panel's next status message; return its text."""
        return self.message_after(lambda: self.page.click(selector))

    def message_after(self, action):
        """Run ``action()`` and wait for the panel's next status message; return its text."""
        before = self.js(self.MESSAGE)
        action()
        self.page.wait_for_function(f"([before]) => {self.MESSAGE} !== before", arg=[before])
        return self.text("#fabric_status_txt2img .fabric-msg").strip()

    def wait_count(self, kind, count, tab="txt2img"):
        """The accordion header's count, the gallery's label and its thumbnails all say ``count``
        (an empty set hides its gallery and shows its hint)."""
        title = "Liked" if kind == "liked" else "Disliked"
        self.page.wait_for_function(
            "([tab, kind, title, n]) => {"
            " const c = document.querySelector(`#fabric_summary_${tab} .fabric-count-${kind}`);"
            " const g = document.querySelector(`#fabric_${kind}_${tab}`);"
            " const hint = document.querySelector(`#fabric_${kind}_hint_${tab}`);"
            " return c && c.textContent.trim() === String(n) && g.textContent.includes(`${title} images (${n})`)"
            "  && g.querySelectorAll('.thumbnail-item').length === n"
            "  && g.classList.contains('hidden') === (n === 0) && hint.classList.contains('hidden') === (n > 0); }",
            arg=[tab, kind, title, count],
        )

    def wait_fabric_on(self, tab="txt2img"):
        """FABRIC is on, and the webui's InputAccordion, which follows the switch, is open."""
        self.page.wait_for_function(
            "(tab) => document.querySelector(`#fabric_${tab}-checkbox input`).checked"
            " && document.querySelector(`#fabric_${tab}`).classList.contains('input-accordion-open')",
            arg=tab,
        )
        assert self.checked(f"#fabric_{tab}-visible-checkbox") is True

    def wait_toast(self, text):
        """A gradio toast with ``text``, on screen wherever the page is scrolled."""
        toast = self.page.locator(".toast-body", has_text=text)
        toast.wait_for(state="visible")
        box, viewport = toast.bounding_box(), self.page.viewport_size
        assert 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"], box

    def status(self, tab="txt2img"):
        return (self.text(f"#fabric_status_{tab} .fabric-msg") or "").strip()

    def screenshot(self, name, selector=None):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        if selector is None:
            self.page.screenshot(path=str(path), full_page=True)
        else:
            self.page.locator(selector).screenshot(path=str(path))
        return path

    def screenshot_panel(self, name, docs_name=None):
        """txt2img from its prompt to the end of the FABRIC accordion: the accordion beside the
        output gallery, its buttons and infotext.  ``docs_name``: also the README's picture of that
        name in docs/ when FABRIC_DOCS_SCREENSHOTS is set."""
        self.js("() => document.activeElement && document.activeElement.blur()")
        self.page.mouse.move(0, 0)  # no hover or focus ring in the picture
        box = self.js(
            "() => { const r = s => document.querySelector(s).getBoundingClientRect();"
            " const tab = r('#tab_txt2img'), top = r('#txt2img_toprow').top - 8;"
            " const bottom = Math.max(r('#fabric_txt2img').bottom, r('#html_info_txt2img').bottom) + 12;"
            " return {x: tab.left, y: top + window.scrollY, width: tab.width, height: bottom - top}; }"
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True, clip=box)
        if docs_name and os.environ.get("FABRIC_DOCS_SCREENSHOTS"):
            (ROOT / "docs" / docs_name).write_bytes(path.read_bytes())
        return path


def stored_ids(webui):
    response = webui.client.get("/fabric/v1/images")
    assert response.status_code == 200, response.text
    return [entry["id"] for entry in response.json()["images"]]


@pytest.fixture()
def page(browser):
    p = WebuiPage(browser)
    try:
        yield p
    finally:
        p.close()


def test_generate_like_dislike_generate_with_fabric(page, webui):
    p = page
    # Closed and off by default.
    assert "input-accordion-open" not in p.js("() => document.querySelector('#fabric_txt2img').className")
    assert p.checked("#fabric_txt2img-checkbox input") is False

    p.small_job()

    # 1. Generate one image.
    p.stage = "generate 1"
    info = p.generate(1)
    assert "FABRIC liked" not in info["infotexts"][0]  # off by default
    p.screenshot("01-generated.png")

    # 2. 👍 takes the only image and switches FABRIC on, which opens its accordion; a toast says
    #    so; liking it again keeps one copy.
    p.stage = "like"
    liked_id = p.output_id(0)
    p.wait_count("liked", 0)
    message = p.click_for_message("#fabric_like_button_txt2img")
    assert "Added to the liked images (1)" in message, message
    p.wait_toast("FABRIC: 👍 Added to the liked images (1). FABRIC is on.")
    p.wait_fabric_on()
    p.wait_count("liked", 1)
    p.wait_count("disliked", 0)
    store = stored_ids(webui)
    assert store.count(liked_id) == 1, (liked_id, store)
    p.stage = "like again"
    message = p.click_for_message("#fabric_like_button_txt2img")
    assert "already in the liked set (1)" in message, message
    p.wait_count("liked", 1)
    assert stored_ids(webui).count(liked_id) == 1
    p.screenshot("02-liked.png")

    # 3. A batch of 2: select the second image and 👎 it (never the grid).
    p.stage = "generate batch of 2"
    p.set_slider("txt2img_batch_size", 2)
    p.set_seed(5678)
    info = p.generate(2)
    first = info.get("index_of_first_image", 0)
    second = first + 1
    disliked_id = p.output_id(second)
    assert disliked_id != liked_id
    p.stage = "select and dislike"
    p.select_output(second)
    message = p.click_for_message("#fabric_dislike_button_txt2img")
    assert "Added to the disliked images (1)" in message, message
    p.wait_count("disliked", 1)
    p.wait_count("liked", 1)
    assert disliked_id in stored_ids(webui)
    p.screenshot("03-disliked.png")

    # 4. The accordion is open and FABRIC on since the 👍; the weight shows with a selection only.
    p.stage = "the open accordion"
    p.wait_fabric_on()
    p.page.wait_for_selector("#fabric_liked_txt2img", state="visible")
    assert not p.page.is_visible("#fabric_liked_weight_txt2img") and p.page.is_visible("#fabric_liked_clear_txt2img")
    # The gallery's label lies above its first thumbnail, not on it.
    thumb = p.page.locator("#fabric_liked_txt2img .thumbnail-item").first
    label = p.page.locator("#fabric_liked_txt2img [data-testid=block-label]").bounding_box()
    assert label["y"] + label["height"] <= thumb.bounding_box()["y"] + 0.5, (label, thumb.bounding_box())
    thumb.click()
    p.page.wait_for_selector("#fabric_liked_weight_txt2img", state="visible")
    assert p.page.locator("#fabric_liked_txt2img .preview img").first.bounding_box()["height"] >= 120
    p.page.locator("#fabric_liked_txt2img .preview button:is([aria-label='Clear'], [aria-label='Close'])").click()
    p.page.wait_for_selector("#fabric_liked_weight_txt2img", state="hidden")
    assert "Liked images (1)" in p.page.inner_text("#fabric_liked_txt2img")
    assert "Disliked images (1)" in p.page.inner_text("#fabric_disliked_txt2img")
    p.page.locator("#fabric_txt2img").scroll_into_view_if_needed()
    p.screenshot("04-panel-open.png")
    p.screenshot("04-panel-open-tab.png", "#tab_txt2img")

    # 5. Generate again with FABRIC on: the infotext names the images as the store holds them.
    p.stage = "generate with FABRIC"
    p.set_slider("txt2img_batch_size", 1)
    p.set_seed(1234)
    info = p.generate(1)
    p.page.wait_for_function(
        "(id) => document.querySelector('#html_info_txt2img').innerText.includes(id)", arg=liked_id
    )
    infotext = p.page.inner_text("#html_info_txt2img")
    assert f"FABRIC liked: {liked_id}" in infotext, infotext
    assert f"FABRIC disliked: {disliked_id}" in infotext, infotext
    assert f"FABRIC liked: {liked_id}" in info["infotexts"][0]
    assert {liked_id, disliked_id} <= set(stored_ids(webui))
    assert "FABRIC error" not in infotext
    # Same prompt, seed and settings as the liked image: the feedback changed the picture.
    assert p.output_id(0) != liked_id
    p.screenshot("05-generated-with-fabric.png")
    p.screenshot("05-generated-with-fabric-tab.png", "#tab_txt2img")
    p.screenshot_panel("05-panel.png", "webui-light.png")

    # The img2img tab's FABRIC has its own sets and switch.
    assert p.text("#fabric_summary_img2img .fabric-count-liked").strip() == "0"
    assert p.checked("#fabric_img2img-checkbox input") is False
    assert p.fabric_errors() == []


def test_img2img_tab_has_its_own_fabric_accordion(page):
    p = page
    p.page.click("#tabs > .tab-nav button:has-text('img2img')")
    p.page.wait_for_selector("#tab_img2img", state="visible")
    accordion = p.page.locator("#fabric_img2img")
    accordion.wait_for(state="visible")
    assert "FABRIC" in accordion.locator("> .label-wrap").inner_text()
    assert p.checked("#fabric_img2img-checkbox input") is False
    assert p.page.locator("#fabric_like_button_img2img").count() == 1
    assert p.page.locator("#fabric_dislike_button_img2img").count() == 1
    # Its own elements, beside (not instead of) the txt2img ones.
    assert p.page.locator("#fabric_txt2img").count() == 1
    assert p.page.locator("#fabric_liked_img2img").count() == 1
    p.page.click("#fabric_img2img > .label-wrap")
    p.page.wait_for_function("document.querySelector('#fabric_img2img-checkbox input').checked === true")
    assert p.checked("#fabric_txt2img-checkbox input") is False  # opening it there leaves txt2img off
    p.page.wait_for_selector("#fabric_liked_hint_img2img", state="visible")
    p.wait_count("liked", 0, tab="img2img")
    p.page.locator("#fabric_img2img").scroll_into_view_if_needed()
    p.screenshot("06-img2img.png")
    assert p.fabric_errors() == []


def test_send_to_img2img_paste_and_png_info_restore_fabric(page, webui, tmp_path):
    """FABRIC's settings travel with the image: "Send to img2img" under the gallery, the ↙ paste
    button reading an infotext from the prompt box, and PNG Info → Send to txt2img. Restoring does
    not switch FABRIC on (the default of the "restore enabled" setting); sending to img2img copies
    the switch as it is."""
    p = page
    p.small_job()
    p.stage = "generate and like"
    p.generate(1)
    liked_id = p.output_id(0)
    p.click_for_message("#fabric_like_button_txt2img")
    p.wait_count("liked", 1)
    p.wait_fabric_on()  # the 👍 did it
    p.set_slider("fabric_strength_txt2img", 0.55)
    p.stage = "generate with FABRIC"
    info = p.generate(1)
    infotext = info["infotexts"][0]
    assert "FABRIC strength: 0.55" in infotext and f"FABRIC liked: {liked_id}" in infotext, infotext
    src = p.js(f"{p.thumbnails('#txt2img_gallery')}[{info.get('index_of_first_image', 0)}].querySelector('img').src")
    png = tmp_path / "with-fabric.png"
    png.write_bytes(p.context.request.get(src).body())

    def strength(tab):
        return p.js(f"() => document.querySelector('#fabric_strength_{tab} input[type=number]').value")

    # 1. Send to img2img: the switch, the sets and the sliders arrive in img2img's accordion.
    p.stage = "send to img2img"
    assert p.checked("#fabric_img2img-checkbox input") is False
    p.page.click("#txt2img_send_to_img2img")
    p.page.wait_for_selector("#tab_img2img", state="visible")
    p.page.wait_for_function("document.querySelector('#fabric_img2img-checkbox input').checked === true")
    p.wait_count("liked", 1, tab="img2img")
    p.page.wait_for_function("() => document.querySelector('#fabric_strength_img2img input[type=number]').value === '0.55'")
    p.screenshot("07-sent-to-img2img.png", "#tab_img2img")

    # 2. ↙ in txt2img: an infotext in the prompt box restores the sets and sliders, and the
    #    status line says so instead of repeating the previous action's message.
    p.stage = "paste"
    pasted = "Pasted FABRIC settings: 1 liked image, 0 disliked images."
    p.page.click("#tabs > .tab-nav button:has-text('txt2img')")
    p.page.wait_for_selector("#tab_txt2img", state="visible")
    assert "Cleared the liked set (1 image;" in p.click_for_message("#fabric_liked_clear_txt2img")
    p.wait_count("liked", 0)
    p.set_slider("fabric_strength_txt2img", 0.9)
    p.set_prompt(infotext)
    p.page.click("#txt2img_toprow #paste")
    p.page.wait_for_function("() => document.querySelector('#fabric_strength_txt2img input[type=number]').value === '0.55'")
    p.wait_count("liked", 1)
    assert p.status() == pasted

    # 3. PNG Info → Send to txt2img, from the saved file's own parameters.
    p.stage = "png info"
    assert "Cleared" in p.click_for_message("#fabric_liked_clear_txt2img")
    p.wait_count("liked", 0)
    p.set_slider("fabric_strength_txt2img", 0.9)
    p.page.click("#tabs > .tab-nav button:has-text('PNG Info')")
    p.page.set_input_files("#pnginfo_image input[type=file]", str(png))
    p.page.wait_for_function(
        "() => (document.querySelector('#pnginfo_generation_info textarea') || {}).value?.includes('FABRIC strength')",
        timeout=GENERATION_MS,
    )
    p.page.click("#txt2img_tab")
    p.page.wait_for_selector("#tab_txt2img", state="visible")
    p.page.wait_for_function("() => document.querySelector('#fabric_strength_txt2img input[type=number]').value === '0.55'")
    p.wait_count("liked", 1)
    assert strength("txt2img") == "0.55"
    assert p.status() == pasted
    assert p.fabric_errors() == []


def test_upscale_button_with_fabric(page, webui):
    """✨ under the txt2img gallery (webui 1.8+) reruns the selected image's job with hires fix,
    skipping the first pass (txt2img.txt2img_upscale: p.firstpass_image, p.txt2img_upscale):
    FABRIC with "Also during hires fix" applies in that pass, at the hires size.

    The ✨ pass is not reproducible in the webui itself (it VAE-encodes the shown image, sampling
    the posterior with the unseeded global RNG), so the test checks the job, not its pixels."""
    p = page
    p.small_job()
    assert p.checked("#txt2img_hr-checkbox input") is False  # hires fix itself stays off

    p.stage = "generate and like"
    p.generate(1)
    message = p.click_for_message("#fabric_like_button_txt2img")
    assert "Added to the liked images" in message, message
    p.wait_count("liked", 1)

    p.stage = "FABRIC on (by the 👍), also during hires fix"
    p.wait_fabric_on()
    p.page.click("#fabric_advanced_txt2img > .label-wrap")
    p.page.locator("#fabric_hires_txt2img input[type=checkbox]").check()
    assert p.checked("#fabric_hires_txt2img input[type=checkbox]") is True

    p.stage = "generate with FABRIC"
    info = p.generate(1)
    assert "FABRIC liked" in info["infotexts"][0] and "FABRIC error" not in info["infotexts"][0]
    index = info.get("index_of_first_image", 0)
    assert p.output_size(index) == (64, 64)

    p.stage = "upscale"
    info = p.generate(1, button="#txt2img_upscale")
    text = info["infotexts"][index]
    assert "Hires upscale: 2" in text, text
    assert "FABRIC liked" in text and "FABRIC hires: True" in text, text
    assert "FABRIC error" not in text, text
    assert "FABRIC error" not in p.page.inner_text("#html_info_txt2img")
    assert p.output_size(index) == (128, 128)
    p.screenshot("07-upscaled-with-fabric.png")
    assert p.fabric_errors() == []


def test_dark_theme(browser):
    """The webui's dark theme (?__theme=dark): 👍 and 👎 from a batch, a generation with them;
    docs/webui-dark.png with FABRIC_DOCS_SCREENSHOTS."""
    p = WebuiPage(browser, theme="dark")
    try:
        assert p.js("() => document.body.classList.contains('dark')")
        p.small_job()
        p.set_slider("txt2img_batch_size", 2)
        p.stage = "generate a batch of 2"
        info = p.generate(2)
        first = info.get("index_of_first_image", 0)
        p.stage = "like and dislike"
        p.select_output(first)
        assert "Added to the liked images (1)" in p.click_for_message("#fabric_like_button_txt2img")
        p.select_output(first + 1)
        assert "Added to the disliked images (1)" in p.click_for_message("#fabric_dislike_button_txt2img")
        p.wait_count("liked", 1)
        p.wait_count("disliked", 1)
        p.wait_fabric_on()
        p.stage = "generate with FABRIC"
        p.set_slider("txt2img_batch_size", 1)
        info = p.generate(1)
        assert "FABRIC liked" in info["infotexts"][0] and "FABRIC error" not in info["infotexts"][0]
        p.page.wait_for_function("() => document.querySelector('#html_info_txt2img').innerText.includes('FABRIC liked')")
        p.screenshot_panel("08-dark.png", "webui-dark.png")
        assert p.fabric_errors() == []
    finally:
        p.close()


def test_upload_weight_remove_and_presets(page, webui, tmp_path):
    """The panel's own controls in the webui's page: upload several files (one not an image),
    the weight of a selected image, ❌, and a preset saved here and loaded in another session."""
    p = page
    p.stage = "open the accordion"
    p.page.click("#fabric_txt2img > .label-wrap")  # the webui's InputAccordion: opening switches FABRIC on
    p.wait_fabric_on()
    p.wait_count("liked", 0)

    p.stage = "upload"
    pictures = [tmp_path / "red.png", tmp_path / "blue.png"]
    for seed, path in enumerate(pictures):
        gradient(100 + seed).save(path)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    upload = "#fabric_liked_upload_txt2img input[type=file]"
    message = p.message_after(lambda: p.page.set_input_files(upload, [str(f) for f in (*pictures, notes)]))
    assert "Added 2 images to the liked set (2)" in message and "notes.txt" in message, message
    p.wait_count("liked", 2)
    ids = [image_id(Image.open(path)) for path in pictures]
    assert set(ids) <= set(stored_ids(webui))

    p.stage = "weight"
    weight = "#fabric_liked_weight_txt2img"
    assert not p.page.is_visible(weight) and not p.page.is_visible("#fabric_liked_remove_txt2img")
    p.page.locator("#fabric_liked_txt2img .thumbnail-item").nth(1).click()
    p.page.wait_for_selector(weight, state="visible")
    p.page.wait_for_function(f"document.querySelector('{weight} input[type=number]').value === '1'")
    box = p.page.locator(f"{weight} input[type=number]")

    def type_weight():
        box.fill("1.5")
        p.page.wait_for_timeout(300)
        box.press("Enter")  # fabric.js: Enter applies it

    assert "Weight of liked image 2: 1.5." in p.message_after(type_weight)
    p.page.wait_for_function("document.querySelector('#fabric_liked_txt2img').textContent.includes('× 1.5')")

    p.stage = "preset"
    name = f"e2e {os.getpid()}"
    p.page.fill("#fabric_preset_txt2img input", name)
    p.page.press("#fabric_preset_txt2img input", "Enter")
    assert f"Saved preset '{name}': 2 liked, 0 disliked." in p.click_for_message("#fabric_preset_save_txt2img")

    p.stage = "remove"
    p.page.wait_for_selector("#fabric_liked_remove_txt2img", state="visible")
    assert "Removed it from the liked set (1 left)." in p.click_for_message("#fabric_liked_remove_txt2img")
    p.wait_count("liked", 1)
    assert p.fabric_errors() == []

    other = WebuiPage(p.page.context.browser)
    try:
        other.stage = "a preset from another session"
        other.page.click("#fabric_txt2img > .label-wrap")
        other.page.click("#fabric_preset_txt2img input")
        option = other.page.locator("#fabric_preset_txt2img ul.options li", has_text=name)
        option.click()
        message = other.click_for_message("#fabric_preset_load_txt2img")
        assert f"Loaded preset '{name}': 2 liked, 0 disliked." in message, message
        other.wait_count("liked", 2)
        other.page.wait_for_function("document.querySelector('#fabric_liked_txt2img').textContent.includes('× 1.5')")
        assert other.fabric_errors() == []
    finally:
        other.close()
        webui.client.delete(f"/fabric/v1/presets/{name}")
