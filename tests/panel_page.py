"""A gradio 3.41 page that hosts the FABRIC panel the way the webui does, for browser tests.

The txt2img tab has the panel in the settings column and, beside it, an output panel with the
webui's element ids: the gallery ``txt2img_gallery`` (preview mode, like the webui's), the button
row ``image_buttons_txt2img`` whose last button is ``txt2img_upscale`` (where the webui script adds
👍/👎 from an after-component callback), and the hidden ``generation_info_txt2img`` Textbox.
"Generate" buttons make 1 image, or 3 images plus a grid first (``index_of_first_image`` = 1), and
show FABRIC's parsed script arguments; "Inspect" shows the raw values of the panel's controls; a
paste box applies an infotext through ``panel.infotext_fields`` like the webui's paste button.

The page head gets stand-ins for the webui's JS helpers (``gradioApp()``,
``selected_gallery_index()``; webui-host-api.md §6), ``javascript/fabric.js`` and ``style.css``,
injected by wrapping gradio's TemplateResponse as the webui's modules/ui_gradio_extensions.py does.
"""

import contextlib
import json
import random
import re
import time
from pathlib import Path

import gradio as gr
import gradio.routes
from PIL import Image, ImageDraw

from fabric.errors import FabricError
from fabric.ui.panel import FabricPanel, stand_in_tool_button
from fabric.feedback.settings import POSITIONAL_ORDER, Limits, parse_script_args, settings_to_infotext

ROOT = Path(__file__).resolve().parent.parent

# The webui's helpers the panel relies on (javascript/ui.js, script.js), written to the contract
# in webui-host-api.md §6: the selected index is that of `.thumbnail-item.thumbnail-small.selected`
# among the thumbnails of the visible tab's `div[id$=_gallery]`, -1 when none is selected.
WEBUI_JS_STAND_IN = """
function gradioApp() {
    var app = document.querySelector('gradio-app');
    if (!app) return document;
    return app.shadowRoot ? app.shadowRoot : app;
}
function all_gallery_buttons() {
    var found = gradioApp().querySelectorAll(
        '[style="display: block;"].tabitem div[id$=_gallery] .thumbnail-item.thumbnail-small');
    return Array.prototype.filter.call(found, function(el) { return el.parentElement.offsetParent !== null; });
}
function selected_gallery_index() {
    return all_gallery_buttons().findIndex(function(el) { return el.classList.contains('selected'); });
}
"""

_PARAM = re.compile(r'\s*([\w][\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_infotext_params(text):
    """The ``key: value`` pairs of an infotext's last line (the webui's quoting rules)."""
    params = {}
    last = (text or "").strip().splitlines()[-1:] or [""]
    for key, value in _PARAM.findall(last[0]):
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass
        params[key.strip()] = value
    return params


def _picture(rng, size=64):
    img = Image.new("RGB", (size, size), tuple(rng.randrange(40, 220) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = rng.randrange(size), rng.randrange(size)
        r = rng.randrange(6, 20)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    return img


def _grid(images):
    size = images[0].width
    grid = Image.new("RGB", (size * 2, size * 2), (0, 0, 0))
    for i, img in enumerate(images[:4]):
        grid.paste(img, ((i % 2) * size, (i // 2) * size))
    return grid


def build_page(store, *, limits=None, restore_enabled=lambda: True):
    """The test page's Blocks and its panel."""
    limits_holder = {"limits": limits or Limits()}

    def get_limits():
        return limits_holder["limits"]

    with gr.Blocks(title="FABRIC panel test page", analytics_enabled=False) as demo:
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                with gr.Row():
                    with gr.Column(scale=6, elem_id="txt2img_settings"):
                        panel = FabricPanel(
                            "txt2img", get_store=lambda: store, get_limits=get_limits, restore_enabled=restore_enabled
                        )
                        with gr.Row():
                            paste_text = gr.Textbox(label="Infotext to paste", lines=1, elem_id="test_paste_text")
                            paste = gr.Button("↙ Paste", elem_id="test_paste")
                    with gr.Column(scale=5, elem_id="txt2img_results"):
                        with gr.Row():
                            gen1 = gr.Button("Generate 1", elem_id="test_generate_1", variant="primary")
                            gen3 = gr.Button("Generate 3", elem_id="test_generate_3", variant="primary")
                            inspect = gr.Button("Inspect", elem_id="test_inspect")
                        with gr.Group(elem_id="txt2img_gallery_container"):
                            gallery = gr.Gallery(
                                label="Output", show_label=False, elem_id="txt2img_gallery", columns=4, preview=True,
                                height=320,
                            )
                        with gr.Row(elem_id="image_buttons_txt2img", elem_classes=["image-buttons"]):
                            for elem_id, text in (("txt2img_open_folder", "📂"), ("save_txt2img", "💾"),
                                                  ("txt2img_send_to_extras", "📐"), ("txt2img_upscale", "✨")):
                                stand_in_tool_button(text, elem_id=elem_id)
                            # The webui script does this in an after-component callback of the
                            # row's last button; the generation info Textbox comes later.
                            panel.add_feedback_buttons(gallery)
                        generation_info = gr.Textbox(visible=False, elem_id="generation_info_txt2img")
                        html_info = gr.Textbox(label="Infotext", elem_id="html_info_txt2img", lines=2)
                        args_dump = gr.Textbox(label="FABRIC arguments", elem_id="test_args", lines=2)
            with gr.Tab("Other", id="other", elem_id="tab_other"):
                gr.Markdown("Another tab")

        def generate(count):
            def run(*args):
                rng = random.Random()
                images = [_picture(rng) for _ in range(count)]
                first = 0
                if count > 1:
                    images.insert(0, _grid(images))
                    first = 1
                try:
                    settings = parse_script_args(list(args), store=store, limits=get_limits())
                    entries = settings_to_infotext(settings)
                    infotext = "test prompt\nSteps: 1" + "".join(
                        f", {k}: {json.dumps(v) if (',' in v or ':' in v) else v}" for k, v in entries.items()
                    )
                except FabricError as exc:
                    infotext = f"FABRIC error: {exc}"
                info = {"index_of_first_image": first, "infotexts": [infotext] * len(images),
                        "job_timestamp": str(time.time_ns())}
                return images, json.dumps(info), infotext
            return run

        def dump(*args):
            values = dict(zip(POSITIONAL_ORDER, args))
            values["dumped_at"] = time.time_ns()  # a new text every time, so a test sees the answer
            return json.dumps(values)

        gen1.click(generate(1), inputs=panel.controls, outputs=[gallery, generation_info, html_info])
        gen3.click(generate(3), inputs=panel.controls, outputs=[gallery, generation_info, html_info])
        inspect.click(dump, inputs=panel.controls, outputs=[args_dump])

        def paste_func(text):  # modules/infotext_utils.connect_paste: a callable, or a key of params
            params = parse_infotext_params(text)
            return [key(params) if callable(key) else gr.update() if key not in params else params[key]
                    for _, key in panel.infotext_fields]

        paste.click(paste_func, inputs=[paste_text], outputs=[c for c, _ in panel.infotext_fields])

    demo.fabric_panel = panel
    demo.fabric_limits = limits_holder
    return demo


def head_html():
    js = WEBUI_JS_STAND_IN + "\n" + (ROOT / "javascript" / "fabric.js").read_text(encoding="utf-8")
    return f"<script>{js}</script>"


def css_html():
    return f"<style>{(ROOT / 'style.css').read_text(encoding='utf-8')}</style>"


@contextlib.contextmanager
def injected_head():
    """Add the JS helpers, fabric.js and style.css to every page gradio serves (as the webui does)."""
    original = gradio.routes.templates.TemplateResponse

    def template_response(*args, **kwargs):
        res = original(*args, **kwargs)
        res.body = res.body.replace(b"</head>", head_html().encode("utf-8") + b"</head>")
        res.body = res.body.replace(b"</body>", css_html().encode("utf-8") + b"</body>")
        res.init_headers()
        return res

    gradio.routes.templates.TemplateResponse = template_response
    try:
        yield
    finally:
        gradio.routes.templates.TemplateResponse = original
