"""The FABRIC panel: liked and disliked galleries, the 👍/👎 buttons, upload, presets.

Plain gradio, no ``modules.*``; gradio 3.41 (AUTOMATIC1111) and 4.40 (Forge) alike, with what differs
between them in :mod:`fabric.ui.gradio_compat`.  The webui script builds it inside ``ui()`` and hands
over the webui's ``InputAccordion`` and ``ToolButton``; tests build it in a bare ``gr.Blocks`` with the
stand-ins below.  The liked and disliked sets live in two hidden ``gr.JSON`` components (lists of
``{"id", "weight"}``) that are script arguments, so every browser session has its own sets and the
panel keeps no state of its own between events.

Images reach the store from three places, and each is read only through checks:

* the output gallery (👍/👎): an item names a file; only files gradio itself serves are read
  (files the gallery produced, or files under gradio's temporary folders);
* the upload box: the handler reads only files in gradio's upload folder (gradio 3.41's own
  ``File`` preprocessing would copy whatever path the client names; see ``gradio_compat``);
* presets and pasted infotext: ids only, kept when the store has them.

Every refusal (not an image, too large, store not writable, set full) is a message in the panel's
status line and a toast, and leaves the sets as they were.  Adding images to a set switches FABRIC
on (a user who gives feedback means it to act on the next image) and says so in a toast, which
the user sees also when the accordion is closed or scrolled away.
"""

import base64
import html
import json
import logging
import math
import os
import tempfile
import time
import warnings
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import gradio as gr
from PIL import Image

from ..errors import FabricError, FabricInputError
from .gradio_compat import file_name, gradio_file_dirs, image_source, js_event, upload_box
from ..feedback.images import ID_PATTERN, decode_image, to_rgb
from ..feedback.settings import INFOTEXT_KEYS, MAX_WEIGHT, settings_from_infotext

__all__ = ["FabricPanel", "StandInAccordion", "stand_in_tool_button", "KINDS"]

log = logging.getLogger(__name__)

KINDS = ("liked", "disliked")
SLIDER_FIELDS = ("strength", "start", "end", "min_strength", "neg_scale", "hires", "token_budget", "prompt_dropout")
# Written to the infotext only when set: a FABRIC infotext without them means their default.
_ABSENT_MEANS_DEFAULT = {"prompt_dropout": 0.0}
# Keys of the "Send to" copies of the controls (see FabricPanel._infotext_fields).
SEND_TO_PREFIX = "FABRIC send-to "
_TITLES = {"liked": "Liked", "disliked": "Disliked"}
_THUMBS = {"liked": "👍", "disliked": "👎"}


class _Refusal(Exception):
    """A request the panel turns down, with the message the user sees."""


# -- stand-ins for the webui's components (used when the panel runs outside the webui) -------------


class StandInAccordion(gr.Checkbox):
    """A checkbox that is also an accordion, with the contract of the webui's ``InputAccordion``.

    The value (True = enabled) is the script argument; ``with acc:`` fills the accordion and
    ``acc.extra()`` gives a column for the header.  Unlike the webui's, the checkbox is visible (as
    the first row inside the accordion) and opening the accordion does not tick it.
    """

    # Forge (gradio 4) writes a .pyi stub beside the source of a component class without it.
    webui_do_not_create_gradio_pyi_thank_you = True

    def __init__(self, value: bool, **kwargs):
        elem_id = kwargs.pop("elem_id", None) or "fabric-accordion"
        label = kwargs.pop("label", "Accordion")
        self.accordion_id = elem_id
        self.accordion = gr.Accordion(label, open=bool(value), elem_id=elem_id, elem_classes=["input-accordion"])
        with self.accordion:
            super().__init__(value, label=f"Enable {label}", elem_id=f"{elem_id}-checkbox", **kwargs)

    def extra(self):
        return gr.Column(elem_id=f"{self.accordion_id}-extra", elem_classes=["input-accordion-extra"], min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"


def stand_in_tool_button(value: str, *, elem_id: Optional[str] = None, tooltip: Optional[str] = None, **kwargs):
    """A small emoji button, standing in for the webui's ``ToolButton`` (which shows ``tooltip``)."""
    classes = kwargs.pop("elem_classes", [])
    return gr.Button(value, elem_id=elem_id, elem_classes=["tool", "fabric-tool", *classes], size="sm", min_width=0, **kwargs)


# -- the panel -------------------------------------------------------------------------------------


class FabricPanel:
    """The FABRIC controls of one tab (``tabname`` is ``"txt2img"`` or ``"img2img"``).

    Build it inside an open ``gr.Blocks`` (the webui script: inside ``ui()``).

    get_store: returns the :class:`fabric.feedback.store.FeedbackStore` (called on every event, so the
        store location setting can change without a restart).
    get_limits: returns the current :class:`fabric.feedback.settings.Limits`.
    accordion_factory: ``factory(False, label="FABRIC", elem_id=...)`` returning a checkbox usable
        as a context manager (the webui's ``InputAccordion``); defaults to :class:`StandInAccordion`.
    tool_button_factory: ``factory(text, elem_id=..., tooltip=...)`` (the webui's ``ToolButton``).
    restore_enabled: whether pasting an infotext switches FABRIC on (when it has FABRIC keys) or
        off (when it has none); when it returns False the enabled state is left as it is.
    is_allowed_path: an extra check ``f(name) -> bool`` for output-gallery files (the webui's
        ``ui_tempdir.check_tmp_file(shared.demo, name)``).
    allowed_dirs: returns extra folders whose files may be read (the webui's temp_dir setting).

    Attributes: ``controls`` (the script's inputs in ``fabric.feedback.settings.POSITIONAL_ORDER``),
    ``infotext_fields``, ``enabled``, ``liked``/``disliked`` (the JSON states), the galleries,
    sliders and buttons, and ``status`` (the message line).
    """

    def __init__(
        self,
        tabname: str,
        *,
        get_store: Callable[[], Any],
        get_limits: Callable[[], Any],
        accordion_factory: Optional[Callable[..., Any]] = None,
        tool_button_factory: Optional[Callable[..., Any]] = None,
        restore_enabled: Optional[Callable[[], bool]] = None,
        is_allowed_path: Optional[Callable[[str], bool]] = None,
        allowed_dirs: Optional[Callable[[], Iterable[str]]] = None,
    ):
        self.tabname = tabname
        self._get_store = get_store
        self._get_limits = get_limits
        self._restore_enabled = restore_enabled or (lambda: False)
        self._is_allowed_path = is_allowed_path
        self._allowed_dirs = allowed_dirs or (lambda: ())
        self._tool_button = tool_button_factory or stand_in_tool_button
        self._root = gr.context.Context.root_block
        self._build(accordion_factory or StandInAccordion)

    # -- layout ----------------------------------------------------------------------------------

    def elem_id(self, name: str) -> str:
        return f"fabric_{name}_{self.tabname}"

    def _build(self, accordion_factory) -> None:
        tab = self.tabname
        with accordion_factory(False, label="FABRIC", elem_id=f"fabric_{tab}") as acc:
            self.enabled = acc
            if hasattr(acc, "extra"):
                with acc.extra():
                    self.summary = gr.HTML(_summary_html([], []), elem_id=self.elem_id("summary"))
            else:
                self.summary = gr.HTML(_summary_html([], []), elem_id=self.elem_id("summary"))
            self.status = gr.HTML("", elem_id=self.elem_id("status"), elem_classes=["fabric-status"])

            self.galleries, self.hints, self.uploads, self.weights = {}, {}, {}, {}
            self.remove_buttons, self.clear_buttons = {}, {}
            with gr.Row(elem_classes=["fabric-sets"]):
                for kind in KINDS:
                    self._build_set(kind)

            with gr.Row():
                self.strength = gr.Slider(
                    0.0, 1.0, value=0.8, step=0.05, label="Feedback strength", elem_id=self.elem_id("strength"),
                    info="How strongly the liked images pull (disliked: times the negative scale)",
                )
            with gr.Row():
                self.start = gr.Slider(
                    0.0, 1.0, value=0.0, step=0.05, label="Feedback start", elem_id=self.elem_id("start"),
                    info="Part of denoising done before feedback starts",
                )
                self.end = gr.Slider(
                    0.0, 1.0, value=0.8, step=0.05, label="Feedback end", elem_id=self.elem_id("end"),
                    info="Part of denoising done when feedback stops",
                )
            with gr.Accordion("Advanced", open=False, elem_id=self.elem_id("advanced")):
                with gr.Row():
                    self.min_strength = gr.Slider(
                        0.0, 1.0, value=0.0, step=0.05, label="Minimum strength", elem_id=self.elem_id("min_strength"),
                        info="Strength outside the start-end window",
                    )
                    self.neg_scale = gr.Slider(
                        0.0, 1.0, value=0.5, step=0.05, label="Negative scale", elem_id=self.elem_id("neg_scale"),
                        info="Weight of the disliked images relative to the liked",
                    )
                with gr.Row():
                    self.hires = gr.Checkbox(
                        value=False, label="Also during hires fix", elem_id=self.elem_id("hires"),
                        info="Apply the feedback in the hires pass too",
                    )
                    self.token_budget = gr.Number(
                        value=0, precision=0, minimum=0, label="Reference token budget",
                        elem_id=self.elem_id("token_budget"),
                        info="Most reference tokens per attention layer; 0 = off",
                    )
                with gr.Row():
                    self.prompt_dropout = gr.Slider(
                        0.0, 1.0, value=0.0, step=0.05, label="Prompt dropout", elem_id=self.elem_id("prompt_dropout"),
                        info="Chance of dropping each prompt word, per image (more variety; 0 = off)",
                    )
            with gr.Row(elem_classes=["fabric-presets"]):
                self.preset = gr.Dropdown(
                    choices=self._preset_names(), value=None, allow_custom_value=True, label="Preset (pick one, or type a new name)",
                    elem_id=self.elem_id("preset"), scale=4,
                )
                self.preset_save = self._tool_button("💾", elem_id=self.elem_id("preset_save"), tooltip="Save the liked and disliked sets as this preset")
                self.preset_load = self._tool_button("📂", elem_id=self.elem_id("preset_load"), tooltip="Load this preset (replaces both sets)")
                self.preset_delete = self._tool_button("🗑️", elem_id=self.elem_id("preset_delete"), tooltip="Delete this preset (its images stay in the store)")

            self.liked = gr.JSON([], visible=False, elem_id=self.elem_id("liked_state"))
            self.disliked = gr.JSON([], visible=False, elem_id=self.elem_id("disliked_state"))
            # Carries what JS reads from the page (a selected index, generation info) to a handler.
            self._selection = gr.JSON({}, visible=False, elem_id=self.elem_id("selection"))

        self.states = {"liked": self.liked, "disliked": self.disliked}
        self.like_button = self.dislike_button = None
        self.controls = [
            self.enabled, self.liked, self.disliked, self.strength, self.start, self.end,
            self.min_strength, self.neg_scale, self.hires, self.token_budget, self.prompt_dropout,
        ]
        self.infotext_fields = self._infotext_fields()
        self._wire()

    def _build_set(self, kind: str) -> None:
        with gr.Column(elem_classes=["fabric-set", f"fabric-set-{kind}"], min_width=200):
            # An empty set shows how to fill it instead of an empty gallery.
            self.hints[kind] = gr.HTML(_hint_html(kind), elem_id=self.elem_id(f"{kind}_hint"), elem_classes=["fabric-hint"])
            self.galleries[kind] = gr.Gallery(
                label=_gallery_label(kind, 0), elem_id=self.elem_id(kind), elem_classes=["fabric-gallery"],
                columns=4, height="auto", object_fit="contain", allow_preview=True, preview=False,
                show_download_button=False, show_share_button=False, visible=False,
            )
            # No label: gradio draws a File's label over its drop text when the box is low, and the
            # set's gallery or hint right above already says what the box adds to.
            self.uploads[kind] = upload_box(
                show_label=False, file_count="multiple", file_types=["image"],
                elem_id=self.elem_id(f"{kind}_upload"), elem_classes=["fabric-upload"],
            )
            with gr.Row(elem_classes=["fabric-set-tools"]):
                # fabric.js shows the weight and ❌ only while an image of this set is selected.
                self.weights[kind] = gr.Slider(
                    0.0, MAX_WEIGHT, value=1.0, step=0.05, label="Weight of the selected image",
                    elem_id=self.elem_id(f"{kind}_weight"), elem_classes=["fabric-weight"], scale=4,
                )
                self.remove_buttons[kind] = self._tool_button(
                    "❌", elem_id=self.elem_id(f"{kind}_remove"), elem_classes=["fabric-remove"],
                    tooltip=f"Remove the selected image from the {kind} set",
                )
                self.clear_buttons[kind] = self._tool_button(
                    "🧹", elem_id=self.elem_id(f"{kind}_clear"), visible=False,
                    tooltip=f"Clear the {kind} set (the images stay in the store)",
                )

    def _wire(self) -> None:
        for kind in KINDS:
            state, gallery = self.states[kind], self.galleries[kind]
            selection_js = f"fabric_gallery_selection('{self.elem_id(kind)}')"
            state.change(
                self._refresh_fn(kind), inputs=[self.liked, self.disliked],
                outputs=[gallery, self.hints[kind], self.clear_buttons[kind], self.summary],
                show_progress=False, queue=False,
            )
            gallery.select(
                self._select_fn(), inputs=[state], outputs=[self.weights[kind]], show_progress=False, queue=False
            )
            self.weights[kind].release(
                self._weight_fn(kind), **js_event(f"(s, x, w) => [s, {selection_js}, w]"),
                inputs=[state, self._selection, self.weights[kind]], outputs=[state, self.status], show_progress=False,
            )
            self.remove_buttons[kind].click(
                self._remove_fn(kind), **js_event(f"(s, x) => [s, {selection_js}]"),
                inputs=[state, self._selection], outputs=[state, self.status], show_progress=False,
            )
            self.clear_buttons[kind].click(
                self._clear_fn(kind), inputs=[state], outputs=[state, self.status], show_progress=False,
            )
            self.uploads[kind].upload(
                self._upload_fn(kind), inputs=[self.uploads[kind], state],
                outputs=[self.uploads[kind], state, self.status, self.enabled], show_progress=False,
            )
        self.start.release(lambda s, e: gr.update(value=max(s, e)), inputs=[self.start, self.end], outputs=[self.end], show_progress=False)
        self.end.release(lambda s, e: gr.update(value=min(s, e)), inputs=[self.start, self.end], outputs=[self.start], show_progress=False)
        # Presets saved in another browser session (or through the API) are listed when the page
        # loads, and again whenever the list is opened.
        self._root.load(self.refresh_presets, outputs=[self.preset], show_progress=False, queue=False)
        self.preset.focus(self.refresh_presets, outputs=[self.preset], show_progress=False, queue=False)
        self.preset_save.click(
            self.save_preset, inputs=[self.preset, self.liked, self.disliked], outputs=[self.preset, self.status],
            show_progress=False,
        )
        self.preset_load.click(
            self.load_preset, inputs=[self.preset], outputs=[self.liked, self.disliked, self.status, self.enabled],
            show_progress=False,
        )
        self.preset_delete.click(self.delete_preset, inputs=[self.preset], outputs=[self.preset, self.status], show_progress=False)

    def add_feedback_buttons(self, gallery, generation_info=None) -> Tuple[Any, Any]:
        """Create 👍 and 👎 in the current context (the output gallery's button row) for ``gallery``.

        The buttons take the image selected in ``gallery`` (JS ``selected_gallery_index()``), or
        its only image, never the grid.  ``generation_info`` is the Textbox holding the webui's
        generation info JSON (for ``index_of_first_image``); when it is not given (in the webui it
        is created after the button row), the page's ``#generation_info_<tab>`` is read instead.
        Returns the two buttons.  A second call returns the buttons of the first (so a script may
        register the callback on more than one candidate "last button").
        """
        if getattr(self, "like_button", None) is not None:
            return self.like_button, self.dislike_button
        buttons = []
        for kind in KINDS:
            button = self._tool_button(
                _THUMBS[kind], elem_id=self.elem_id(f"{kind[:-1]}_button"),
                tooltip=f"FABRIC: add the selected image to the {kind} images",
            )
            if generation_info is not None:
                inputs = [gallery, self._selection, generation_info, self.states[kind]]
                js = "(g, x, i, s) => [g, {index: fabric_output_index()}, i, s]"
                fn = self._output_fn(kind, with_info=True)
            else:
                inputs = [gallery, self._selection, self.states[kind]]
                js = (
                    "(g, x, s) => [g, {index: fabric_output_index(), "
                    f"info: fabric_generation_info('{self.tabname}')}}, s]"
                )
                fn = self._output_fn(kind, with_info=False)
            button.click(
                fn, **js_event(js), inputs=inputs, outputs=[self.states[kind], self.status, self.enabled], show_progress=False
            )
            buttons.append(button)
        self.like_button, self.dislike_button = buttons
        return buttons[0], buttons[1]

    # -- event functions (closures, so gradio sees plain signatures) -------------------------------

    def _refresh_fn(self, kind):
        def refresh(liked, disliked):
            entries = _entries(liked if kind == "liked" else disliked)
            return (
                gr.update(value=self.gallery_value(entries), label=_gallery_label(kind, len(entries)), visible=bool(entries)),
                gr.update(visible=not entries),
                gr.update(visible=bool(entries)),
                _summary_html(_entries(liked), _entries(disliked)),
            )
        return refresh

    def _select_fn(self):
        def select(state, evt: gr.SelectData):
            entries = _entries(state)
            index = evt.index if isinstance(evt.index, int) else -1
            if 0 <= index < len(entries):
                return gr.update(value=entries[index]["weight"])
            return gr.update()
        return select

    def _weight_fn(self, kind):
        def set_weight(state, selection, weight):
            return self.set_weight(kind, state, selection, weight)
        return set_weight

    def _remove_fn(self, kind):
        def remove(state, selection):
            return self.remove_selected(kind, state, selection)
        return remove

    def _clear_fn(self, kind):
        def clear(state):
            return self.clear(kind, state)
        return clear

    def _upload_fn(self, kind):
        def upload(files, state):
            return self.upload(kind, files, state)
        return upload

    def _output_fn(self, kind, *, with_info):
        if with_info:
            def from_output(gallery, selection, info, state):
                selection = dict(selection) if isinstance(selection, dict) else {}
                selection["info"] = info
                return self.feedback_from_output(kind, gallery, selection, state)
        else:
            def from_output(gallery, selection, state):
                return self.feedback_from_output(kind, gallery, selection, state)
        return from_output

    # -- handlers (public for tests; each returns the values of its event's outputs) --------------

    def feedback_from_output(self, kind: str, gallery: Any, selection: Any, state: Any):
        """👍/👎: add the selected output image to the ``kind`` set.

        -> (new state, status html, update of the enabled switch: on when the image was added)."""
        entries = _entries(state)
        selection = selection if isinstance(selection, dict) else {}
        try:
            limits = self._get_limits()
            self._check_room(kind, entries, limits)
            item = _pick_output_item(gallery, selection.get("index"), selection.get("info"))
            image = self._read_item(item, limits, self._output_allowed())
            ident = self._get_store().add(image)
        except (_Refusal, FabricError) as exc:
            return gr.update(), self._refuse(exc), gr.update()
        except Exception as exc:  # never let a handler fail silently in the page
            log.exception("FABRIC: adding an output image failed")
            return gr.update(), self._refuse(f"Could not add the image: {type(exc).__name__}: {exc}"), gr.update()
        if any(e["id"] == ident for e in entries):
            return gr.update(), _message(f"That image is already in the {kind} set ({len(entries)}).", "info"), gr.update()
        entries.append({"id": ident, "weight": 1.0})
        return (entries, *self._added(f"{_THUMBS[kind]} Added to the {kind} images ({len(entries)})."))

    def upload(self, kind: str, files: Any, state: Any):
        """Add uploaded files to the ``kind`` set.

        -> (cleared upload box, new state, status html, update of the enabled switch)."""
        entries = _entries(state)
        files = [f for f in (files if isinstance(files, list) else [files]) if f is not None]
        added, already, refused = 0, 0, []
        try:
            limits = self._get_limits()
            store = self._get_store()
        except Exception as exc:
            reason = exc if isinstance(exc, FabricError) else f"The store is not available: {exc}"
            return None, gr.update(), self._refuse(reason), gr.update()
        for item in files:
            label = os.path.basename(file_name(item) or "file")[:80]
            try:
                self._check_room(kind, entries, limits)
                image = self._read_item(item, limits, self._upload_allowed())
                ident = store.add(image)
            except (_Refusal, FabricError) as exc:
                refused.append(f"{label}: {_text(exc)}")
                continue
            except Exception as exc:
                log.exception("FABRIC: reading an uploaded image failed")
                refused.append(f"{label}: {type(exc).__name__}: {exc}")
                continue
            if any(e["id"] == ident for e in entries):
                already += 1
                continue
            entries.append({"id": ident, "weight": 1.0})
            added += 1
        parts = []
        if added:
            parts.append(f"Added {_count(added, 'image')} to the {kind} set ({len(entries)}).")
        if already:
            parts.append(f"{already} already in the set.")
        if refused:
            parts.append("Refused: " + "; ".join(refused))
            status = self._refuse(" ".join(parts))
        elif added:
            status = self._added(" ".join(parts))[0]
        else:
            status = _message(" ".join(parts) or "No files.", "info")
        return None, (entries if added else gr.update()), status, (gr.update(value=True) if added else gr.update())

    def remove_selected(self, kind: str, state: Any, selection: Any):
        entries = _entries(state)
        index = _index(selection)
        if not 0 <= index < len(entries):
            return gr.update(), self._refuse(f"Select an image in the {kind} gallery first.")
        del entries[index]
        return entries, _message(f"Removed it from the {kind} set ({len(entries)} left).", "ok")

    def clear(self, kind: str, state: Any):
        entries = _entries(state)
        if not entries:
            return gr.update(), _message(f"The {kind} set is already empty.", "info")
        return [], _message(f"Cleared the {kind} set ({_count(len(entries), 'image')}; they stay in the store).", "ok")

    def set_weight(self, kind: str, state: Any, selection: Any, weight: Any):
        entries = _entries(state)
        index = _index(selection)
        if not 0 <= index < len(entries):
            return gr.update(), self._refuse(f"Select an image in the {kind} gallery to set its weight.")
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            return gr.update(), self._refuse("The weight must be a number.")
        if not math.isfinite(weight) or not 0.0 <= weight <= MAX_WEIGHT:
            return gr.update(), self._refuse(f"The weight must be between 0 and {MAX_WEIGHT:g}.")
        entries[index]["weight"] = weight
        return entries, _message(f"Weight of {kind} image {index + 1}: {weight:g}.", "ok")

    def refresh_presets(self):
        """The preset list as the store has it now; the value is left alone, since the user may
        have typed a name already by the time the answer arrives."""
        return gr.update(choices=self._preset_names())

    def save_preset(self, name: Any, liked: Any, disliked: Any):
        liked, disliked, name = _entries(liked), _entries(disliked), _preset_name(name)
        if name is None:
            return gr.update(), self._refuse("Type a name for the preset first.")
        if not liked and not disliked:
            return gr.update(), self._refuse("Nothing to save: both sets are empty.")
        try:
            store = self._get_store()
            replaced = name in self._preset_names(store)
            saved = store.save_preset(name, liked, disliked)
        except FabricError as exc:
            return gr.update(), self._refuse(exc)
        verb = "Replaced" if replaced else "Saved"
        return (
            gr.update(choices=self._preset_names(), value=saved["name"]),
            _message(f"{verb} preset {saved['name']!r}: {len(liked)} liked, {len(disliked)} disliked.", "ok"),
        )

    def load_preset(self, name: Any):
        name = _preset_name(name)
        if name is None:
            return gr.update(), gr.update(), self._refuse("Pick a preset to load."), gr.update()
        try:
            store = self._get_store()
            preset = store.load_preset(name)
            limit = self._get_limits().max_images_per_set
        except FabricError as exc:
            return gr.update(), gr.update(), self._refuse(exc), gr.update()
        sets, notes = {}, []
        for kind in KINDS:
            entries = _entries(preset.get(kind))
            kept = [e for e in entries if store.has(e["id"])]
            if len(kept) < len(entries):
                notes.append(_gone(len(entries) - len(kept), kind))
            if len(kept) > limit:
                notes.append(f"only the first {limit} {kind} images were loaded (the limit)")
                kept = kept[:limit]
            sets[kind] = kept
        text = f"Loaded preset {preset['name']!r}: {len(sets['liked'])} liked, {len(sets['disliked'])} disliked."
        loaded = bool(sets["liked"] or sets["disliked"])
        if notes:
            status = self._refuse(text + " " + "; ".join(notes) + ".")
        else:
            status = self._added(text)[0] if loaded else _message(text, "ok")
        return sets["liked"], sets["disliked"], status, (gr.update(value=True) if loaded else gr.update())

    def delete_preset(self, name: Any):
        name = _preset_name(name)
        if name is None:
            return gr.update(), self._refuse("Pick a preset to delete.")
        try:
            self._get_store().delete_preset(name)
        except FabricError as exc:
            return gr.update(), self._refuse(exc)
        return (
            gr.update(choices=self._preset_names(), value=None),
            _message(f"Deleted preset {name!r} (its images stay in the store).", "ok"),
        )

    def gallery_value(self, entries: Sequence[dict]) -> List[Tuple[Any, Optional[str]]]:
        """What a FABRIC gallery shows for ``entries``: the stored files, weights as captions."""
        try:
            store = self._get_store()
        except Exception:
            store = None
        value = []
        for entry in entries:
            caption = None if entry["weight"] == 1.0 else f"× {entry['weight']:g}"
            value.append((self._thumbnail(store, entry["id"]), caption))
        return value

    # -- infotext -----------------------------------------------------------------------------

    def _infotext_fields(self):
        def enabled(params):
            if not self._restore_enabled():
                return gr.update()
            return gr.update(value=_has_fabric_keys(params))

        def image_set(kind):
            def restore(params):
                if not _has_fabric_keys(params):
                    return gr.update()
                return gr.update(value=self._restored_set(params, kind)[0])
            return restore

        def status(params):
            # A pasted infotext replaces what the line said about the previous action.
            if not _has_fabric_keys(params):
                return gr.update(value="")
            sets = {kind: self._restored_set(params, kind) for kind in KINDS}
            text = "Pasted FABRIC settings: " + ", ".join(
                _count(len(sets[kind][0]), f"{kind} image") for kind in KINDS
            ) + "."
            gone = [_gone(sets[kind][1], kind) for kind in KINDS if sets[kind][1]]
            return gr.update(value=_message(text + (" " + "; ".join(gone) + "." if gone else ""), "error" if gone else "ok"))

        def value(name):
            def restore(params):
                found = _infotext_value(params, name)
                if found is None and name in _ABSENT_MEANS_DEFAULT and _has_fabric_keys(params):
                    found = _ABSENT_MEANS_DEFAULT[name]
                return gr.update() if found is None else gr.update(value=found)
            return restore

        fields = [(self.enabled, enabled), (self.liked, image_set("liked")), (self.disliked, image_set("disliked"))]
        for name in SLIDER_FIELDS:
            fields.append((getattr(self, name), value(name)))
        fields.append((self.status, status))
        # "Send to img2img/inpaint" under txt2img's gallery copies, component to component, the
        # fields whose key is a name in the scripts' paste_field_names; a callable never matches
        # (modules/infotext_utils.connect_paste_params_buttons). So every control is listed once
        # more under a name no infotext contains, which pasting infotext leaves alone.
        for name in ("enabled", "liked", "disliked", *SLIDER_FIELDS):
            fields.append((getattr(self, name), SEND_TO_PREFIX + name))
        return fields

    @property
    def paste_field_names(self) -> List[str]:
        """The names under which "Send to" carries FABRIC's controls from txt2img to img2img."""
        return [key for _, key in self.infotext_fields if isinstance(key, str) and key.startswith(SEND_TO_PREFIX)]

    # -- internals ----------------------------------------------------------------------------

    def _restored_set(self, params: dict, kind: str) -> Tuple[List[dict], int]:
        """The ``kind`` set named in parsed infotext: the entries the store has, and how many it lacks."""
        entries = _entries(_infotext_value(params, kind) or [])
        try:
            store = self._get_store()
            kept = [e for e in entries if store.has(e["id"])]
        except Exception:
            kept = []
        return kept, len(entries) - len(kept)

    def _added(self, text: str) -> Tuple[str, dict]:
        """Status line and switch for images just added to a set: FABRIC goes on, a toast says so."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                gr.Info(f"FABRIC: {text} FABRIC is on.")
            except Exception:
                pass
        return _message(text, "ok"), gr.update(value=True)

    def _refuse(self, reason) -> str:
        text = _text(reason)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                gr.Warning(f"FABRIC: {text}")
            except Exception:
                pass
        return _message(text, "error")

    @staticmethod
    def _check_room(kind: str, entries: list, limits) -> None:
        limit = limits.max_images_per_set
        if len(entries) >= limit:
            raise _Refusal(
                f"The {kind} set is full ({limit} image{'' if limit == 1 else 's'}, the limit): remove one first."
            )

    def _preset_names(self, store=None) -> List[str]:
        try:
            store = store or self._get_store()
            return [p["name"] for p in store.list_presets()]
        except Exception:
            return []

    def _thumbnail(self, store, ident: str):
        folder = getattr(store, "images_dir", None)
        if folder is not None:
            path = os.path.join(str(folder), f"{ident}.png")
            if os.path.isfile(path):
                return path
        if store is not None:
            try:
                return store.get(ident)
            except Exception:
                pass
        return _missing_image()

    def _gradio_dirs(self) -> List[str]:
        dirs = [os.environ.get("GRADIO_TEMP_DIR") or os.path.join(tempfile.gettempdir(), "gradio")]
        dirs.extend(gradio_file_dirs([*self.galleries.values(), *self.uploads.values()]))
        try:
            dirs.extend(self._allowed_dirs() or ())
        except Exception:
            log.exception("FABRIC: allowed_dirs failed")
        return [d for d in dirs if d]

    def _output_allowed(self) -> Callable[[str], bool]:
        def allowed(name: str) -> bool:
            if _in_file_sets(name, self._root) or _in_dirs(name, self._gradio_dirs()):
                return True
            if self._is_allowed_path is not None:
                try:
                    return bool(self._is_allowed_path(name))
                except Exception:
                    return False
            return False
        return allowed

    def _upload_allowed(self) -> Callable[[str], bool]:
        return lambda name: _in_dirs(name, self._gradio_dirs())

    def _read_item(self, item: Any, limits, allowed: Callable[[str], bool]) -> Image.Image:
        """A gallery or upload entry as a checked RGB image (FabricInputError / _Refusal otherwise)."""
        source = image_source(item)
        if isinstance(source, Image.Image):  # pixels that came from no file (gradio 4, numpy)
            if source.width * source.height > limits.max_pixels:
                raise _Refusal(f"The image has {source.width}x{source.height} pixels, over the limit of {limits.max_pixels}.")
            return to_rgb(source)
        if "data" in source:
            return decode_image(source["data"], field="image", max_pixels=limits.max_pixels, max_bytes=limits.max_image_bytes)
        name = source.get("path")
        if not isinstance(name, str) or not name or "\0" in name:
            raise _Refusal("That gallery item is not an image file.")
        if not allowed(name):
            raise _Refusal("That file is not one this page served; only images shown in the page can be added.")
        path = _strip_query(name)
        max_file = limits.max_image_bytes * 3 // 4 + 3
        try:
            if not os.path.isfile(path):
                raise _Refusal("The image file is gone (a new generation or a restart removed it).")
            size = os.path.getsize(path)
            if size > max_file:
                raise _Refusal(f"The file is {_mb(size)}, over the limit of {_mb(max_file)}.")
            with open(path, "rb") as handle:
                raw = handle.read(max_file + 1)
        except OSError as exc:
            raise _Refusal(f"The image file could not be read ({exc.strerror or exc}).") from None
        if len(raw) > max_file:
            raise _Refusal(f"The file is over the limit of {_mb(max_file)}.")
        return decode_image(
            base64.b64encode(raw).decode("ascii"), field="image",
            max_pixels=limits.max_pixels, max_bytes=limits.max_image_bytes,
        )


# -- helpers -------------------------------------------------------------------------------------


def _preset_name(name: Any) -> Optional[str]:
    """The preset name the user typed or picked, stripped; None when there is none."""
    return name.strip() if isinstance(name, str) and name.strip() else None


def _entries(value: Any) -> List[dict]:
    """A set from the page as a clean list of ``{"id", "weight"}`` (junk dropped, ids unique)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if not isinstance(value, (list, tuple)):
        return []
    out, seen = [], set()
    for entry in value:
        if isinstance(entry, str):
            entry = {"id": entry}
        if not isinstance(entry, dict):
            continue
        ident = entry.get("id")
        if not isinstance(ident, str) or not ID_PATTERN.fullmatch(ident) or ident in seen:
            continue
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            weight = 1.0
        seen.add(ident)
        out.append({"id": ident, "weight": min(max(float(weight), 0.0), MAX_WEIGHT)})
    return out


def _index(selection: Any) -> int:
    if isinstance(selection, dict):
        selection = selection.get("index")
    if isinstance(selection, bool):
        return -1
    if isinstance(selection, float) and selection.is_integer():
        selection = int(selection)
    return selection if isinstance(selection, int) else -1


def _index_of_first_image(info: Any) -> Optional[int]:
    if isinstance(info, str) and info.strip():
        try:
            info = json.loads(info)
        except ValueError:
            return None
    if isinstance(info, dict):
        first = info.get("index_of_first_image")
        if isinstance(first, int) and not isinstance(first, bool) and first >= 0:
            return first
    return None


def _pick_output_item(gallery: Any, index: Any, info: Any) -> Any:
    """The output gallery item the user means: the selected one, or the only one; never the grid."""
    items = list(gallery) if isinstance(gallery, (list, tuple)) else []
    if not items:
        raise _Refusal("The output gallery is empty: generate an image first.")
    first = _index_of_first_image(info)
    index = _index({"index": index})
    if index < 0:
        if len(items) == 1:
            index = 0
        elif first is not None and len(items) == first + 1:
            index = first
        else:
            raise _Refusal("Select an image in the output gallery first (click it), then press the button.")
    if index >= len(items):
        raise _Refusal("The selected image is no longer in the gallery: select it again.")
    if first is not None and index < first:
        raise _Refusal("That is the grid of the batch: select one of the images.")
    return items[index]


def _strip_query(name: str) -> str:
    return name.rsplit("?", 1)[0] if "?" in name else name


def _in_file_sets(name: str, root) -> bool:
    """Whether gradio itself produced this file (the webui's check, ``ui_tempdir.check_tmp_file``)."""
    sets = getattr(root, "temp_file_sets", None) or []
    return any(name in files or _strip_query(name) in files for files in sets)


def _in_dirs(name: str, dirs: Iterable[str]) -> bool:
    """Whether the file ``name`` (symlinks resolved) lies inside one of ``dirs``."""
    try:
        real = os.path.realpath(_strip_query(name))
    except (OSError, ValueError):
        return False
    for folder in dirs:
        try:
            base = os.path.realpath(folder)
        except (OSError, ValueError):
            continue
        try:
            inside = os.path.commonpath([real, base]) == base and real != base
        except ValueError:  # different drives on Windows
            continue
        if inside:
            return True
    return False


def _has_fabric_keys(params: Any) -> bool:
    return isinstance(params, dict) and any(key in params for key in INFOTEXT_KEYS.values())


def _infotext_value(params: Any, name: str):
    """One setting from parsed infotext, or None when it is absent or invalid."""
    key = INFOTEXT_KEYS[name]
    if not isinstance(params, dict) or key not in params:
        return None
    try:
        return settings_from_infotext({key: params[key]}).get(name)
    except FabricInputError:
        return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _gone(n: int, kind: str) -> str:
    return f"{_count(n, kind + ' image')} {'is' if n == 1 else 'are'} no longer in the store"


def _hint_html(kind: str) -> str:
    how = "👍" if kind == "liked" else "👎"
    return (
        f'<div class="fabric-hint-text"><b>{_TITLES[kind]} images</b>: none yet. {how} under the output '
        f"gallery adds the image selected there; or drop image files below.</div>"
    )


def _gallery_label(kind: str, count: int) -> str:
    return f"{_TITLES[kind]} images ({count})"


def _summary_html(liked: Sequence, disliked: Sequence) -> str:
    return (
        f'<span class="fabric-summary" title="FABRIC feedback images">'
        f'👍 <span class="fabric-count-liked">{len(liked)}</span> · '
        f'👎 <span class="fabric-count-disliked">{len(disliked)}</span></span>'
    )


def _message(text: str, level: str) -> str:
    # data-t makes every message a new value, so the line updates (and flashes) even when the
    # text repeats, and a page or a test can tell one message from the next.
    return f'<div class="fabric-msg fabric-msg-{level}" data-t="{time.time_ns()}">{html.escape(text)}</div>'


def _text(reason: Any) -> str:
    if isinstance(reason, FabricInputError):
        return reason.message
    return str(reason)



def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _missing_image() -> Image.Image:
    """A grey tile shown for an id the store no longer has (so gallery and set stay aligned)."""
    return Image.new("RGB", (64, 64), (128, 128, 128))
