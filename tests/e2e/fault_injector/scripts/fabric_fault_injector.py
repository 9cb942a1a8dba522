"""A test-only webui extension: a FABRIC job that fails mid-way, in a real webui.

Link this folder into the webui's extensions/ (`ln -s <repo>/tests/e2e/fault_injector
<webui>/extensions/fabric-fault-injector`) to run the e2e test of what a caller is told when
FABRIC is turned off mid-job (tests/e2e/test_e2e_notes.py). It is an AlwaysOn script that does
nothing unless a request names it:

    "alwayson_scripts": {"FABRIC fault injector": {"args": [N]}}

Then, for that job only, FABRIC's weighted attention on reference tokens raises after N calls
(one call per attn1 layer and UNet call), through the module attribute FABRIC's host calls it by:
fabric.engine.unet_hooks (AUTOMATIC1111) or fabric.hosts.forge (Forge). Everything is put back in
postprocess, and again at the start of the next job if a job died before it.
"""
import sys

import gradio as gr
from modules import scripts

_TARGETS = ("fabric.engine.unet_hooks", "fabric.hosts.forge")
_saved: dict = {}


def _restore() -> None:
    for module, original in _saved.items():
        module.attend_with_references = original
    _saved.clear()


class FabricFaultInjector(scripts.Script):
    def title(self):
        return "FABRIC fault injector"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        # One (hidden) input, because the webui's API hands an AlwaysOn script only as many of
        # the request's args as the script has inputs (A1111 modules/api/api.py:359-360).
        return [gr.Number(value=0, visible=False)]

    def process(self, p, *args):
        _restore()
        after = int(args[0]) if args and args[0] else 0
        if after <= 0:
            return
        calls = [0]
        for name in _TARGETS:
            module = sys.modules.get(name)
            if module is None or not hasattr(module, "attend_with_references"):
                continue
            original = module.attend_with_references
            _saved[module] = original

            def failing(*a, _original=original, **k):
                calls[0] += 1
                if calls[0] > after:
                    raise RuntimeError(f"injected fault after {after} attention calls")
                return _original(*a, **k)

            module.attend_with_references = failing

    def postprocess(self, p, processed, *args):
        _restore()
