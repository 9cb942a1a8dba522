"""modules/ui_components.py (v1.10.1): `ToolButton` and `InputAccordion`, on gradio 3.41.2.

Facts encoded (webui-host-api.md §1.7, §6 "Output panel"):
- `InputAccordion(value, **kwargs)` is a `gr.Checkbox` subclass, i.e. **one script arg (a bool)**;
  the hidden checkbox gets `elem_id = f"{elem_id}-checkbox"`, the visible `gr.Accordion` gets the
  elem_id itself, class `input-accordion`, `open=value`; without an elem_id it is
  `input-accordion-{N}`. It is a context manager (entering the accordion); `.extra()` returns a
  `gr.Column` for the header.
- `ToolButton` is a small `gr.Button` with class `tool`; it accepts `tooltip=` (§6), which the
  webui's gradio patch (modules/gradio_extensons.py) pops from every component's kwargs.
Not mirrored: the JS that keeps checkbox and accordion in sync, the `.change` wiring.
"""
import gradio as gr


class FormComponent:
    webui_do_not_create_gradio_pyi_thank_you = True

    def get_expected_parent(self):
        return gr.components.Form


class ToolButton(FormComponent, gr.Button):
    """Small button with single emoji as text, fits inside gradio forms"""

    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        self.webui_tooltip = kwargs.pop("tooltip", None)  # what modules/gradio_extensons.py's patch does
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

    def get_block_name(self):
        return "button"


class InputAccordion(gr.Checkbox):
    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        kwargs_checkbox = {**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False}
        super().__init__(value, **kwargs_checkbox)
        kwargs_accordion = {
            **kwargs,
            "elem_id": self.accordion_id,
            "label": kwargs.get("label", "Accordion"),
            "elem_classes": ["input-accordion"],
            "open": value,
        }
        self.accordion = gr.Accordion(**kwargs_accordion)

    def extra(self):
        return gr.Column(elem_id=self.accordion_id + "-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"
