"""modules/scripts.py (v1.10.1), reduced: the Script base class, loading, and the AlwaysOn runner.

Facts encoded (webui-host-api.md §1):
- `AlwaysVisible` is a module constant; `show()` returning it makes a script AlwaysOn (§1.1).
- `load_scripts(script_files)`: for each file, `sys.path` is prefixed with the file's base dir (the
  extension root) only while the file is imported, the file is loaded by
  `script_loading.load_module`, and every `Script` subclass in the module's globals is registered in
  `scripts_data` as `ScriptClassData(script_class, path, basedir, module)`; loading errors are
  reported, not raised; `script_callbacks.clear_callbacks()` runs first (§1.1, §3.3).
- `ScriptRunner.initialize_scripts(is_img2img)` creates a new instance of every class per tab and
  sets `filename`, `is_txt2img`, `is_img2img`, `tabname` (§1.1).
- Hooks get `p.script_args[args_from:args_to]` positionally after `p` (§1.2). Each hook runs inside
  try/except and reports errors, so generation goes on (§1.4). v1.9+ dispatch: only scripts whose
  class overrides the hook are called (§1.4 "Dispatch").
- `Script.on_before_component` / `on_after_component(callback, *, elem_id)` (v1.6+, §1.5) collect
  (elem_id, callback) pairs; callbacks receive an `OnComponent(component)`.
- `ScriptRunner.setup_ui()` (create_script_ui / create_script_ui_inner, §1.2): `inputs` starts as
  `[None]` (the "Script" dropdown); each script gets `args_from = len(inputs)`, its `ui()` controls
  are appended and `args_to = len(inputs)`; `controls`, `name = title().lower()` and each control's
  `custom_script_source` are set; `infotext_fields` are collected.
- `ScriptRunner.default_script_args()` (modules/api/api.py `init_default_script_args`, §2): `[None]
  * max(args_to)`, slot 0 = 0, each script's slice filled with the `.value` of the controls a
  **second** `ui()` call returns inside a throwaway `gr.Blocks()` — what a job gets for a script
  the request does not mention.
Not mirrored: sections and UI categories, the gradio component patch (before/after_component
dispatch to `on_after_component` callbacks).
"""
import inspect
import os
import sys
from collections import namedtuple
from dataclasses import dataclass

from modules import errors, script_callbacks, script_loading

AlwaysVisible = object()


@dataclass
class OnComponent:
    component: object


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    on_before_component_elem_id = None
    on_after_component_elem_id = None
    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def before_hr(self, p, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def on_before_component(self, callback, *, elem_id):
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback, *, elem_id):
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def describe(self):
        return ""

    def elem_id(self, item_id):
        import re

        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])

scripts_data: list[ScriptClassData] = []
current_basedir = None


def load_scripts(script_files: list[ScriptFile]) -> None:
    global current_basedir
    scripts_data.clear()
    script_callbacks.clear_callbacks()
    syspath = sys.path

    def register_scripts_from_module(module, scriptfile):
        for script_class in module.__dict__.values():
            if inspect.isclass(script_class) and issubclass(script_class, Script):
                scripts_data.append(ScriptClassData(script_class, scriptfile.path, scriptfile.basedir, module))

    for scriptfile in script_files:
        try:
            sys.path = [scriptfile.basedir] + sys.path
            current_basedir = scriptfile.basedir
            module = script_loading.load_module(scriptfile.path)
            register_scripts_from_module(module, scriptfile)
        except Exception:
            errors.report(f"Error loading script: {scriptfile.filename}", exc_info=True)
        finally:
            sys.path = syspath
            current_basedir = None


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.alwayson_scripts = []
        self.selectable_scripts = []
        self.inputs = [None]
        self.infotext_fields = []
        self.paste_field_names = []

    def initialize_scripts(self, is_img2img):
        self.scripts.clear()
        self.alwayson_scripts.clear()
        for script_data in scripts_data:
            script = script_data.script_class()
            script.filename = script_data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            visibility = script.show(script.is_img2img)
            if visibility == AlwaysVisible:
                script.alwayson = True
                self.scripts.append(script)
                self.alwayson_scripts.append(script)

    def setup_ui(self):
        """Call inside a gr.Blocks(), as modules/ui.py does."""
        self.inputs = [None]
        for script in self.alwayson_scripts:
            script.args_from = script.args_to = len(self.inputs)
            try:
                controls = script.ui(script.is_img2img)
                script.controls = controls
                if controls is None:
                    continue
                script.name = script.title().lower()
                for control in controls:
                    control.custom_script_source = os.path.basename(script.filename)
                if script.infotext_fields is not None:
                    self.infotext_fields += script.infotext_fields
                self.inputs += controls
                script.args_to = len(self.inputs)
            except Exception:
                errors.report(f"Error creating UI for {script.name}: ", exc_info=True)
        return self.inputs

    def default_script_args(self):
        import gradio as gr

        last_arg_index = max([1, *(script.args_to for script in self.scripts)])
        script_args = [None] * last_arg_index
        script_args[0] = 0
        with gr.Blocks():
            for script in self.scripts:
                if script.ui(script.is_img2img):
                    script_args[script.args_from:script.args_to] = [elem.value for elem in script.ui(script.is_img2img)]
        return script_args

    def ordered_scripts(self, method_name):
        return [s for s in self.alwayson_scripts if getattr(type(s), method_name) is not getattr(Script, method_name)]

    def _run(self, method_name, p, *extra, **kwargs):
        for script in self.ordered_scripts(method_name):
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                getattr(script, method_name)(p, *extra, *script_args, **kwargs)
            except Exception:
                errors.report(f"Error running {method_name}: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._run("before_process", p)

    def process(self, p):
        self._run("process", p)

    def before_process_batch(self, p, **kwargs):
        self._run("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._run("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._run("process_before_every_sampling", p, **kwargs)

    def before_hr(self, p):
        self._run("before_hr", p)

    def postprocess_batch(self, p, images, **kwargs):
        self._run("postprocess_batch", p, images=images, **kwargs)

    def postprocess(self, p, processed):
        self._run("postprocess", p, processed)


def basedir():
    return current_basedir or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
